"""validate: run a model on the device and compare its raw outputs with TFLM's and TFLite's, each pair against
each other (an X-cross): bit-exact rate, largest absolute difference and top-1 agreement."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from tinyrobust.build.firmware import build_firmware
from tinyrobust.compile.model import CompiledModel, compile_model
from tinyrobust.device.boards import DEFAULT_BOARD, load_board
from tinyrobust.device.counter import latency
from tinyrobust.device.link import check_output_fits
from tinyrobust.device.pool import run_on_emulator
from tinyrobust.errors import UserError
from tinyrobust.model import reference, zoo
from tinyrobust.model.quantize import check_precision
from tinyrobust.model.reference import random_inputs

PAIRS = (
    ("device_vs_tflm", "device", "tflm"),
    ("device_vs_tflite", "device", "tflite"),
    ("tflite_vs_tflm", "tflite", "tflm"),
)
LABELS = {"device": "device", "tflm": "TFLM", "tflite": "TFLite"}
def read_inputs(path: Path, compiled: CompiledModel) -> np.ndarray:
    """Quantized inputs from an .npy file: one sample or a batch, in the model's input type."""
    if not path.is_file():
        raise UserError(f"inputs file {path} does not exist; pass an .npy of quantized inputs")
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise UserError(f"{path} is not an .npy array ({exc}); save quantized inputs with np.save") from None
    dtype, per_sample = compiled.input.dtype, int(np.prod(compiled.input.shape[1:]))
    if x.dtype != dtype:
        raise UserError(
            f"{path} holds {x.dtype} values but the model takes {dtype}; quantize the inputs with the model's "
            "input scale and zero point first"
        )
    if x.size == 0 or x.size % per_sample:
        raise UserError(f"{path} holds {x.size} values, not a whole number of {per_sample}-value inputs")
    return x.reshape(-1, *compiled.input.shape[1:])


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    """How two engines' raw outputs (one row per sample) agree."""
    return {
        "bit_exact": float(np.mean(np.all(a == b, axis=1))),
        "max_abs_diff": int(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64)))),
        "top1_agreement": float(np.mean(a.argmax(axis=1) == b.argmax(axis=1))),
    }


def validate(
    model: str,
    board_name: str = DEFAULT_BOARD,
    inputs: Path | None = None,
    samples: int | None = None,
    precision: str = "int8",
    seed: int = 0,
) -> dict:
    """Build the model's firmware, run the inputs (given, or random) on the board, and compare every engine."""
    if samples is not None and samples < 1:
        raise UserError(f"--samples must be at least 1, not {samples}")
    board = load_board(board_name)
    tflite = zoo.load_tflite(model, precision)
    compiled = compile_model(tflite)
    check_precision(compiled.input.type_name, precision)
    check_output_fits(compiled.output.nbytes)
    xq = read_inputs(inputs, compiled) if inputs is not None else random_inputs(compiled.input, samples or 10, seed)
    xq = xq[:samples] if samples else xq
    with tempfile.TemporaryDirectory(prefix="tinyrobust-validate-") as work:
        firmware = build_firmware(compiled, board, Path(work))
        answers = run_on_emulator(board, firmware.elf, firmware.channel, compiled.model_hash, [x.tobytes() for x in xq])
    outputs = {
        "device": np.stack([np.frombuffer(raw, compiled.output.dtype) for raw, _ in answers]),
        "tflm": reference.tflm_outputs(tflite, xq).reshape(len(xq), -1),
        "tflite": reference.tflite_outputs(tflite, xq).reshape(len(xq), -1),
    }
    results = {"model": zoo.model_name(model), "board": board.name, "precision": precision, "samples": len(xq)}
    for key, a, b in PAIRS:
        results[key] = compare(outputs[a], outputs[b])
    measured = latency(board, [ticks for _, ticks in answers])
    unit = measured["unit"] + (" (emulated)" if board.emulated else "")
    results["latency"] = {"unit": unit, "median_per_inference": measured["per_inference"]["median"]}
    return results


def format_table(results: dict) -> str:
    """The X-cross as a text table, one row per pair of engines."""
    lines = [
        f"{results['model']} ({results['precision']}) on {results['board']}, {results['samples']} inputs",
        f"{'':<18} {'bit-exact':>9} {'max |diff|':>10} {'top-1':>6}",
    ]
    for key, a, b in PAIRS:
        r = results[key]
        pair = f"{LABELS[a]} vs {LABELS[b]}"
        lines.append(f"{pair:<18} {r['bit_exact']:9.3f} {r['max_abs_diff']:10d} {r['top1_agreement']:6.3f}")
    lat = results["latency"]
    lines.append(f"latency: {lat['median_per_inference']:,.0f} {lat['unit']} per inference (median)")
    return "\n".join(lines)
