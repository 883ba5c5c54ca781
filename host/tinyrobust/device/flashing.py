"""Put firmware on an attached board: pyOCD through the board's debug probe (the default), or a copy onto
the drive that an Mbed-enabled board's DAPLink / ST-LINK / J-Link interface mounts (found with mbed-tools).
Also lists what is attached: debug probes, Mbed boards and serial ports."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tinyrobust.device.boards import Board
from tinyrobust.errors import UserError

METHODS = ("pyocd", "mbed")
NOTHING_ATTACHED_FIX = (
    "connect the board's debug USB port (ST-LINK, DAPLink/OpenSDA or J-Link), check that lsusb lists it and "
    "that this user may open it (pyOCD's udev rules; the dialout group for serial ports)"
)


@dataclass
class Attached:
    probes: list[dict]  # pyOCD: {"uid", "description"}
    mbed: list[dict]  # mbed-tools: {"board", "serial_number", "serial_port", "mount_points"}
    ports: list[dict]  # pyserial: {"device", "description", "usb"}

    def found_nothing(self) -> bool:
        return not self.probes and not self.mbed and not any(p["usb"] for p in self.ports)


def detect() -> Attached:
    """Everything attached that could be a board: pyOCD's probe list, mbed-tools' devices, serial ports."""
    from mbed_tools.devices import get_connected_devices
    from pyocd.core.helpers import ConnectHelper
    from serial.tools import list_ports

    probes = [
        {"uid": p.unique_id, "description": p.description}
        for p in ConnectHelper.get_all_connected_probes(blocking=False, print_wait_message=False)
    ]
    mbed = [
        {
            "board": d.mbed_board.board_name,
            "serial_number": d.serial_number,
            "serial_port": d.serial_port,
            "mount_points": [str(m) for m in d.mount_points],
        }
        for d in get_connected_devices().identified_devices
    ]
    ports = [
        {"device": p.device, "description": p.description, "usb": p.vid is not None} for p in list_ports.comports()
    ]
    return Attached(probes, mbed, ports)


def pyocd_command(board: Board, elf: Path, probe: str | None = None) -> list[str]:
    """pyOCD's command that programs the ELF into the board's flash and resets it to run."""
    target = _flashing_name(board, "pyocd")
    command = [sys.executable, "-m", "pyocd", "load", "--target", target, "--format", "elf"]
    if probe:
        command += ["--uid", probe]
    return [*command, str(elf)]


def hex_image(elf: Path) -> Path:
    """The ELF as Intel HEX, which the interface firmware's drive programs at the addresses it holds."""
    image = elf.with_suffix(".hex")
    subprocess.run(["arm-none-eabi-objcopy", "-O", "ihex", str(elf), str(image)], check=True)
    return image


def mbed_destination(board: Board, attached: Attached) -> Path:
    """The drive of an attached Mbed board of this kind, where a copied image gets flashed."""
    name = _flashing_name(board, "mbed")
    for device in attached.mbed:
        if device["board"] == name and device["mount_points"]:
            return Path(device["mount_points"][0])
    seen = ", ".join(d["board"] for d in attached.mbed) or "none"
    raise UserError(
        f"no {name} drive found by mbed-tools (Mbed boards attached: {seen}); {NOTHING_ATTACHED_FIX}, "
        "and that its drive is mounted"
    )


def attached_of(board: Board) -> list[dict]:
    """The boards of this kind attached here that mbed-tools identifies, in serial-number order: what a node
    offers a Ray cluster as board:<name> (`boards detect --ray-resources`)."""
    name = board.flashing.get("mbed")
    found = [d for d in detect().mbed if name and d["board"] == name]
    return sorted(found, key=lambda d: d["serial_number"])


def flash(board: Board, elf: Path, method: str = "pyocd", device: dict | None = None) -> None:
    """Program elf into the attached board with pyOCD or by copying it onto the board's drive; device (one of
    attached_of's) chooses among several attached boards of the kind."""
    if board.emulated:
        raise UserError(f"{board.name} is emulated: there is nothing to flash; run it with `tinyrobust emulate`")
    if method not in METHODS:
        raise UserError(f"there is no flashing method '{method}'; choose one of: {', '.join(METHODS)}")
    attached = detect()
    if method == "mbed":
        destination = Path(device["mount_points"][0]) if device else mbed_destination(board, attached)
        shutil.copy(hex_image(elf), destination)
        time.sleep(2.0)  # the interface programs the chip, then remounts its drive and resets the target
        return
    if not attached.probes:
        raise UserError(
            f"pyOCD found no debug probe to flash {board.name}: {NOTHING_ATTACHED_FIX}, "
            "or copy the firmware onto its drive with --flash-with mbed"
        )
    _check_pyocd_target(board)
    probe = device["serial_number"] if device else None  # a DAPLink or ST-LINK probe's uid is its serial number
    result = subprocess.run(pyocd_command(board, elf, probe), capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise UserError(f"pyOCD could not flash {board.name} ({detail[-1] if detail else 'no message'})")


def _flashing_name(board: Board, method: str) -> str:
    name = board.flashing.get(method)
    if not name:
        raise UserError(f"board {board.name} names no {method} target; add [flashing] {method} = ... to its file")
    return name


def _check_pyocd_target(board: Board) -> None:
    """pyOCD knows some chips itself; others (the STM32s) come in a CMSIS pack installed once."""
    target = _flashing_name(board, "pyocd")
    listing = subprocess.run(
        [sys.executable, "-m", "pyocd", "list", "--targets"], capture_output=True, text=True
    ).stdout.split()
    if target not in listing:
        raise UserError(f"pyOCD does not know target {target}; install its CMSIS pack: pyocd pack install {target}")
