"""bench: per model, the instructions per inference on a board, our arena against TFLM's for the same model,
and the firmware's flash split into code, weights and quantization parameters."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

from tinyrobust.build.firmware import build_firmware
from tinyrobust.compile.model import compile_model
from tinyrobust.compile.render import QUANT_PARAMS_PREFIX
from tinyrobust.device.boards import load_board
from tinyrobust.device.counter import latency
from tinyrobust.device.link import check_output_fits
from tinyrobust.device.pool import run_on_emulator
from tinyrobust.device.stack import stack_for
from tinyrobust.errors import UserError
from tinyrobust.model import zoo
from tinyrobust.model.quantize import check_precision
from tinyrobust.model.reference import random_inputs

INFERENCES = 3  # random inputs per model; the latency is their median
ARENA_LINE = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


def _stderr_of(action) -> str:
    """What action writes to file descriptor 2, where TFLM's C++ code prints."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            action()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        return captured.read().decode(errors="replace")


def tflm_arena(tflite: bytes) -> dict[str, int]:
    """TFLM's arena for the model, from its interpreter's allocation report: head (the planned activations),
    tail (the interpreter's own bookkeeping: tensor structs, node structs, persistent buffers) and total."""
    from tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(tflite)
    report = _stderr_of(interpreter.print_allocations)
    sizes = {kind: int(n) for kind, n in ARENA_LINE.findall(report)}
    if set(sizes) != {"total", "head", "tail"}:
        raise RuntimeError(f"TFLM's allocation report has no arena head, tail and total:\n{report[-2000:]}")
    return sizes


def bench_model(
    model: str, board_name: str, precision: str = "int8", inferences: int = INFERENCES, stack: int | None = None
) -> dict:
    """One model's row; stack: the firmware's stack reserve, checked against a measurement (device.stack.stack_for)."""
    board = load_board(board_name)
    tflite = zoo.load_tflite(model, precision)
    compiled = compile_model(tflite)
    check_precision(compiled.input.type_name, precision)
    tflm = tflm_arena(tflite)
    instructions, code, weights, quant_params, note = None, None, None, None, None
    inputs = [x.tobytes() for x in random_inputs(compiled.input, inferences)]
    with tempfile.TemporaryDirectory(prefix="tinyrobust-bench-") as work:
        try:  # a model the board cannot hold, or a stack below what it uses, is refused: a note under the table
            check_output_fits(compiled.output.nbytes)
            stack_bytes = stack_for(compiled, board, "uart", stack, inputs, Path(work) / "stack")
            firmware = build_firmware(compiled, board, Path(work), stack_bytes=stack_bytes)
        except UserError as exc:
            note = str(exc)
        else:
            answers = run_on_emulator(board, firmware.elf, firmware.channel, compiled.model_hash, inputs)
            instructions = latency(board, [ticks for _, ticks in answers])["per_inference"]["median"]
            memory = firmware.memory
            code, weights, quant_params = memory.code_bytes, memory.weights_bytes, memory.quant_params_bytes
    if weights is None:  # a model the board cannot hold has no ELF: count its constants from the compiled model
        weights = sum(c.nbytes for c in compiled.constants if c.weight)
        quant_params = sum(c.nbytes for c in compiled.constants if c.name.startswith(QUANT_PARAMS_PREFIX))
    return {
        "name": zoo.model_name(model),
        "precision": precision,
        "instructions_per_inference": instructions,
        "arena_bytes": compiled.arena_bytes,
        "tflm_arena_bytes": tflm["head"],
        "tflm_arena_total_bytes": tflm["total"],
        "flash_code_bytes": code,
        "flash_weight_bytes": weights,
        "flash_quant_params_bytes": quant_params,
        "note": note,
    }


def bench(
    models: list[str] | None, board_name: str, precision: str = "int8", progress=None, stack: int | None = None
) -> dict:
    """Every model's figures on the board; models are built-in names or .tflite paths (default: all built-in)."""
    board = load_board(board_name)
    rows = []
    for model in models or zoo.builtin_names():
        if progress:
            progress(f"bench {model} on {board.name}")
        rows.append(bench_model(model, board.name, precision, stack=stack))
    unit = "instructions (emulated)" if board.emulated else "cycles"
    return {"board": board.name, "unit": unit, "models": rows}


def markdown(results: dict) -> str:
    """The figures as a markdown table; a dash where the firmware could not be run (see the notes below it)."""
    lines = [
        f"| model | precision | {results['unit']} per inference | arena (B) | TFLM arena head (B) "
        "| TFLM arena total (B) | flash code (B) | flash weights (B) | flash quant params (B) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for r in results["models"]:
        latency, code = (
            "-" if r[key] is None else f"{r[key]:,.0f}" for key in ("instructions_per_inference", "flash_code_bytes")
        )
        lines.append(
            f"| {r['name']} | {r['precision']} | {latency} | {r['arena_bytes']:,} | {r['tflm_arena_bytes']:,} "
            f"| {r['tflm_arena_total_bytes']:,} | {code} | {r['flash_weight_bytes']:,} "
            f"| {r['flash_quant_params_bytes']:,} |"
        )
        if r["note"]:
            notes.append(f"{r['name']}: {r['note']}")
    return "\n".join(lines + ([""] + notes if notes else []))
