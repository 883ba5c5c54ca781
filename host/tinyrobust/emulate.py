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
from tinyrobust.device.stack import MEASURED_INPUTS, stack_for
from tinyrobust.errors import UserError
from tinyrobust.model import zoo
from tinyrobust.model.reference import random_inputs


def serve(model: str, board_name: str, port: int, ready: Callable[[str], None], stack: int | None = None) -> None:
    """Build the firmware of model (a built-in name or a .tflite file) for the emulated board and run it,
    its UART on 127.0.0.1:port, until the process is interrupted; the emulator is stopped on the way out.
    stack: the stack reserve, checked against a measurement (device.stack.stack_for); the default when None."""
    board = load_board(board_name)
    if not board.emulated:
        raise UserError(f"{board.name} is a real board; flash it with flash-and-evaluate --board {board.name} --port")
    tflite = zoo.load_tflite(model)
    with tempfile.TemporaryDirectory(prefix="tinyrobust-emulate-") as work:
        compiled = compile_model(tflite)
        inputs = [x.tobytes() for x in random_inputs(compiled.input, MEASURED_INPUTS)]
        stack_bytes = stack_for(compiled, board, "uart", stack, inputs, Path(work) / "stack")
        firmware = build_firmware(compiled, board, Path(work), "uart", stack_bytes=stack_bytes)
        with Emulator(board, firmware.elf, port=port, log=Path(work) / "emulator.log") as emulator:
            # QEMU holds the firmware until a first client connects: be that client, then free the place
            # (Renode runs it at once and serves one client after another just the same).
            emulator.start().close()
            ready(emulator.url)
            emulator.process.wait()
