"""What tinyrobust needs on this machine, and the command that installs each missing piece."""

from __future__ import annotations

import shutil
import subprocess
from importlib import metadata

APT = "apt-get install -y"
PACKAGES = [
    ("tensorflow-cpu", "tensorflow-cpu==2.21.0"),
    ("ai-edge-litert", "ai-edge-litert"),
    ("tflite-micro", "tflite-micro"),
    ("adversarial-robustness-toolbox", "adversarial-robustness-toolbox"),
    ("scikit-learn", "scikit-learn"),
    ("pyserial", "pyserial"),
    ("pyelftools", "pyelftools"),
    ("jinja2", "jinja2"),
    ("matplotlib", "matplotlib"),
    ("tqdm", "tqdm"),
]


def _newlib_present() -> bool:
    if shutil.which("arm-none-eabi-gcc") is None:
        return False
    found = subprocess.run(
        ["arm-none-eabi-gcc", "-print-file-name=nano.specs"], capture_output=True, text=True
    ).stdout.strip()
    return found != "nano.specs"  # gcc echoes the bare name when it cannot find the file


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
        ("gcc (native kernel tests)", shutil.which("gcc") is not None, f"{APT} gcc"),
    ]  # fmt: skip
    for dist, spec in PACKAGES:
        result.append((f"Python package {dist}", _installed(dist), f"python3 -m pip install '{spec}'"))
    return result
