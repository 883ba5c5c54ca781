"""The stack a firmware needs, measured: a profile build of the same model, board and channel paints its stack at
reset and reports the deepest word written since (PROFILE), run in the emulator. A build takes the default reserve,
or one the user gives, which is refused when it is below that measurement."""

from __future__ import annotations

from pathlib import Path

from tinyrobust.build.firmware import STACK_BYTES, build_firmware, check_stack_alignment, recommended_stack
from tinyrobust.compile.model import CompiledModel
from tinyrobust.device.boards import Board
from tinyrobust.device.pool import Worker, run_on_emulator
from tinyrobust.errors import UserError

MEASURED_INPUTS = 3  # the kernels' stack does not depend on the values: a few inputs see every path INFER takes


def infer_and_profile(steps: int):
    """A pool operation: INFER on a profile build, then PROFILE for its steps' ticks and the stack's high water."""

    def operation(worker: Worker, tensor: bytes) -> tuple[bytes, list[int], int]:
        def both():
            output, _ = worker.device.infer(tensor)  # its ticks cover the last step only: each step restarts
            ticks, stack_bytes = worker.device.profile(steps)
            return output, ticks, stack_bytes

        return worker.recovering(both)

    return operation


def run_profile_build(
    compiled: CompiledModel, board: Board, channel: str, inputs: list[bytes], out_dir: Path, stack_bytes: int
) -> list[tuple[bytes, list[int], int]]:
    """Build the profile firmware with a stack_bytes reserve and run the inputs on it in the emulator: per input its
    output, each step's ticks and the stack's high water so far."""
    firmware = build_firmware(compiled, board, out_dir, channel, profile=True, stack_bytes=stack_bytes)
    operation = infer_and_profile(len(compiled.steps))
    return run_on_emulator(board, firmware.elf, channel, compiled.model_hash, inputs, operation)


def stack_for(
    compiled: CompiledModel, board: Board, channel: str, stack: int | None, inputs: list[bytes], out_dir: Path
) -> int:
    """The stack to reserve in a build: STACK_BYTES when none is given; a given one once a profile build, run on the
    first inputs in the emulator, shows that it holds the stack's high-water mark."""
    if stack is not None:
        measure_stack(compiled, board, channel, stack, inputs[:MEASURED_INPUTS], out_dir)
    return STACK_BYTES if stack is None else stack


def measure_stack(
    compiled: CompiledModel, board: Board, channel: str, stack: int | None, inputs: list[bytes], out_dir: Path
) -> list[tuple[bytes, list[int], int]]:
    """run_profile_build's answers with a reserve of at least the stack given (STACK_BYTES when none is), the stack
    given refused if the high-water mark they report is above it."""
    if stack is None:
        return run_profile_build(compiled, board, channel, inputs, out_dir, STACK_BYTES)
    check_stack_alignment(stack)
    if not board.emulated:
        raise UserError(f"--stack is checked against the stack measured in the emulator, and {board.name} is a real "
                        f"board; leave --stack out to reserve the default {STACK_BYTES} bytes")  # fmt: skip
    reserve = max(stack, STACK_BYTES)  # room to spare, so that a stack deeper than the one given is measured in full
    try:
        answers = run_profile_build(compiled, board, channel, inputs, out_dir, reserve)
    except UserError:
        if reserve == stack:
            raise
        reserve = stack  # the board's RAM holds only the reserve given: measure in that (enough when not filled)
        answers = run_profile_build(compiled, board, channel, inputs, out_dir, reserve)
    check_stack(stack, max(high for _, _, high in answers), reserve, board)
    return answers


def check_stack(stack: int, high_water: int, reserve: int, board: Board) -> None:
    """Refuse a stack below the high-water mark measured with a reserve of `reserve` bytes."""
    if high_water >= reserve:  # the paint at the stack's bottom is gone: the mark is the reserve, not the use
        raise UserError(f"the stack filled the whole {reserve}-byte reserve it was measured in on {board.name}, so "
                        f"{stack} bytes are not known to hold it; give a larger --stack")  # fmt: skip
    if stack < high_water:
        raise UserError(f"a {stack}-byte stack is below the {high_water} bytes this firmware's stack reached when "
                        f"measured on {board.name}; give --stack {recommended_stack(high_water)} (the measurement "
                        f"plus its margin) or more")  # fmt: skip
