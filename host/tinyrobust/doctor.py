"""What tinyrobust needs on this machine, and the command that installs each missing piece."""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib import metadata

APT = "apt-get install -y"


def _newlib_present() -> bool:
    if shutil.which("arm-none-eabi-gcc") is None:
        return False
    found = subprocess.run(
        ["arm-none-eabi-gcc", "-print-file-name=nano.specs"], capture_output=True, text=True
    ).stdout.strip()
    return found != "nano.specs"  # gcc echoes the bare name when it cannot find the file


def _dependencies() -> list[str]:
    """The package's own run-time requirements, as pyproject.toml states them."""
    specs = metadata.requires("tinyrobust") or []
    return [spec.split(";")[0].strip() for spec in specs if "extra ==" not in spec]


def _installed(distribution: str) -> bool:
    try:
        metadata.version(distribution)
        return True
    except metadata.PackageNotFoundError:
        return False


def checks() -> list[tuple[str, bool, str]]:
    """(what, present, command that installs it)"""
    result = [
        ("arm-none-eabi-gcc (Cortex-M compiler)", shutil.which("arm-none-eabi-gcc") is not None,
         f"{APT} gcc-arm-none-eabi"),
        ("newlib for arm-none-eabi (C library)", _newlib_present(), f"{APT} libnewlib-arm-none-eabi"),
        ("qemu-system-arm (emulated boards)", shutil.which("qemu-system-arm") is not None, f"{APT} qemu-system-arm"),
        ("gcc (native kernel tests, split-evaluate's native decoder)", shutil.which("gcc") is not None, f"{APT} gcc"),
        ("clang with libFuzzer (frame parser fuzz test)", shutil.which("clang") is not None,
         f"{APT} clang libclang-rt-dev"),
    ]  # fmt: skip
    for spec in _dependencies():
        name = re.match(r"[A-Za-z0-9_.\-]+", spec).group(0)
        result.append((f"Python package {name}", _installed(name), f"python3 -m pip install '{spec}'"))
    return result


def optional() -> list[tuple[str, bool, str]]:
    """(what, present, how to get it) for what only some boards need; missing, it is not a failure."""
    from tinyrobust.device.emulator import INSTALL
    from tinyrobust.device.meter import INSTALL as INSTALL_METERS

    return [
        ("renode (optional: the renode-* emulated boards)", shutil.which("renode") is not None, INSTALL["renode"]),
        ("joulescope (optional: profile --meter joulescope)", _installed("joulescope"), INSTALL_METERS),
        ("ppk2-api (optional: profile --meter ppk2)", _installed("ppk2-api"), INSTALL_METERS),
        ("ray (optional: --ray, campaigns on a cluster)", _installed("ray"), "pip install 'tinyrobust[ray]'"),
    ]
