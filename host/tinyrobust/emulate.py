"""emulate: leave a model's firmware running in an emulator, its UART on a TCP port, for flash-and-evaluate
--port or any other client."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from tinyrobust.build.firmware import build_firmware
from tinyrobust.compile.model import compile_model
from tinyrobust.device.boards import load_board
from tinyrobust.device.emulator import Emulator
from tinyrobust.errors import UserError
from tinyrobust.model import zoo


def serve(model: str, board_name: str, port: int, ready: Callable[[str], None]) -> None:
    """Build the firmware of model (a built-in name or a .tflite file) for the emulated board and run it,
    its UART on 127.0.0.1:port, until the process is interrupted; the emulator is stopped on the way out."""
    board = load_board(board_name)
    if not board.emulated:
        raise UserError(f"{board.name} is a real board; flash it with flash-and-evaluate --board {board.name} --port")
    tflite = zoo.load_tflite(model)
    with tempfile.TemporaryDirectory(prefix="tinyrobust-emulate-") as work:
        firmware = build_firmware(compile_model(tflite), board, Path(work), "uart")
        with Emulator(board, firmware.elf, port=port, log=Path(work) / "emulator.log") as emulator:
            # QEMU holds the firmware until a first client connects: be that client, then free the place
            # (Renode runs it at once and serves one client after another just the same).
            emulator.start().close()
            ready(emulator.url)
            emulator.process.wait()
