"""validate: run a model on the device and compare its raw outputs with TFLM's and TFLite's, each pair against
each other (an X-cross): bit-exact rate, largest absolute difference and top-1 agreement. With per_layer, also every
step's output tensor, from a profile build walking the schedule step by step (TENSOR), against the tensor TFLM's
operator wrote, naming the first layer that differs."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from tinyrobust.build.firmware import build_firmware
from tinyrobust.compile.model import CompiledModel, compile_model
from tinyrobust.device.boards import DEFAULT_BOARD, Board, load_board
from tinyrobust.device.counter import latency
from tinyrobust.device.link import check_output_fits
from tinyrobust.device.pool import Worker, run_on_emulator
from tinyrobust.device.stack import stack_for
from tinyrobust.errors import UserError
from tinyrobust.model import reference, zoo
from tinyrobust.model.quantize import check_precision
from tinyrobust.model.reference import random_inputs, tflm_tensors

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
    per_layer: bool = False,
    stack: int | None = None,
) -> dict:
    """Build the model's firmware, run the inputs (given, or random) on the board, and compare every engine; with
    per_layer, every step's output too (compare_layers). stack: the firmware's stack reserve, refused below the
    high-water mark a profile build measures (device.stack.stack_for); the default reserve when None."""
    if samples is not None and samples < 1:
        raise UserError(f"--samples must be at least 1, not {samples}")
    board = load_board(board_name)
    tflite = zoo.load_tflite(model, precision)
    compiled = compile_model(tflite)
    check_precision(compiled.input.type_name, precision)
    check_output_fits(compiled.output.nbytes)
    xq = read_inputs(inputs, compiled) if inputs is not None else random_inputs(compiled.input, samples or 10, seed)
    xq = xq[:samples] if samples else xq
    results = validate_compiled(tflite, compiled, board, xq, per_layer, stack)
    return {"model": zoo.model_name(model), "board": board.name, "precision": precision, **results}


def validate_compiled(
    tflite: bytes, compiled: CompiledModel, board: Board, xq: np.ndarray, per_layer: bool = False,
    stack: int | None = None,
) -> dict:  # fmt: skip
    """validate's work on a compiled model (the .tflite's, or one changed on purpose) and quantized inputs."""
    tensors = [x.tobytes() for x in xq]
    with tempfile.TemporaryDirectory(prefix="tinyrobust-validate-") as work:
        stack_bytes = stack_for(compiled, board, "uart", stack, tensors, Path(work) / "stack")
        firmware = build_firmware(compiled, board, Path(work), stack_bytes=stack_bytes)
        answers = run_on_emulator(board, firmware.elf, firmware.channel, compiled.model_hash, tensors)
        walked = walk_schedule(compiled, board, tensors, Path(work) / "per-layer") if per_layer else None
    outputs = {
        "device": np.stack([np.frombuffer(raw, compiled.output.dtype) for raw, _ in answers]),
        "tflm": reference.tflm_outputs(tflite, xq).reshape(len(xq), -1),
        "tflite": reference.tflite_outputs(tflite, xq).reshape(len(xq), -1),
    }
    results = {"board": board.name, "samples": len(xq)}
    for key, a, b in PAIRS:
        results[key] = compare(outputs[a], outputs[b])
    measured = latency(board, [ticks for _, ticks in answers])
    unit = measured["unit"] + (" (emulated)" if board.emulated else "")
    results["latency"] = {"unit": unit, "median_per_inference": measured["per_inference"]["median"]}
    results["stack_bytes"] = stack_bytes
    if walked is not None:
        results["per_layer"] = compare_layers(tflite, compiled, xq, walked, outputs["device"], outputs["tflm"])
    return results


def walk_schedule(compiled: CompiledModel, board: Board, inputs: list[bytes], out_dir: Path) -> list[list[bytes]]:
    """Every step's output tensor for each input, from a profile build that runs the schedule one step per TENSOR
    request and sends each step's output before the next step runs (docs/protocol.md)."""
    if not board.emulated:
        raise UserError(f"--per-layer runs a profile build in the emulator, and {board.name} is a real board; choose "
                        "an emulated board (see `tinyrobust boards`)")  # fmt: skip
    sizes = {b.key: b.size for b in compiled.buffers}
    steps = [sizes[step.output] for step in compiled.steps]
    channel = board.default_channel
    firmware = build_firmware(compiled, board, out_dir, channel, profile=True)

    def walk(worker: Worker, tensor: bytes) -> list[bytes]:
        return worker.recovering(lambda: worker.device.walk(tensor, steps))

    return run_on_emulator(board, firmware.elf, channel, compiled.model_hash, inputs, walk)


def compare_layers(
    tflite: bytes,
    compiled: CompiledModel,
    xq: np.ndarray,
    walked: list[list[bytes]],
    device_outputs: np.ndarray,
    tflm_outputs: np.ndarray,
) -> dict:
    """Each step's output on the device against the tensor TFLM's operator wrote (reference.tflm_tensors): its
    largest absolute difference and the share of its values that differ over every input, and the first step that
    differs. Also checked: the TFLM that keeps every tensor gives the outputs the usual TFLM gives, and the walk's
    last step gives the outputs a whole inference (INFER) gives."""
    reference_tensors, reference_outputs = tflm_tensors(tflite, xq, [step.output for step in compiled.steps])
    layers = []
    for i, (step, expected) in enumerate(zip(compiled.steps, reference_tensors, strict=True)):
        device = np.stack([np.frombuffer(per_input[i], expected.dtype) for per_input in walked])
        device, expected = device.reshape(expected.shape).astype(np.int64), expected.astype(np.int64)
        differs = device != expected
        layers.append({
            "index": i,
            "op": step.op.kind,
            "kernel": step.function,
            "output_shape": list(expected.shape[1:]),
            "max_abs_diff": int(np.max(np.abs(device - expected), initial=0)),
            "share_differing": float(np.mean(differs)),
        })  # fmt: skip
    first = next((layer for layer in layers if layer["max_abs_diff"]), None)
    last = np.stack([np.frombuffer(per_input[-1], device_outputs.dtype) for per_input in walked])
    return {
        "reference": "TFLM with kPreserveAllTensors: every tensor as its operator wrote it",
        "reference_outputs_equal_tflm": bool(np.array_equal(reference_outputs, tflm_outputs)),
        "last_step_equals_infer": bool(np.array_equal(last.reshape(len(xq), -1), device_outputs)),
        "layers": layers,
        "first_differing": first,
    }


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
    if "per_layer" in results:
        lines += ["", *format_layers(results["per_layer"], results["samples"])]
    return "\n".join(lines)


def format_layers(per_layer: dict, samples: int) -> list[str]:
    """The per-layer table, the first layer that differs and the checks of the comparison itself."""
    lines = [
        f"per layer: each step's output on the device (walked step by step) vs TFLM's tensor, {samples} inputs",
        f"{'#':>3}  {'op':<18} {'output shape':<14} {'max |diff|':>10} {'differing':>9}",
    ]
    for layer in per_layer["layers"]:
        shape = "x".join(map(str, layer["output_shape"])) or "-"
        lines.append(
            f"{layer['index']:>3}  {layer['op']:<18} {shape:<14} {layer['max_abs_diff']:>10} "
            f"{layer['share_differing']:>9.1%}"
        )
    first = per_layer["first_differing"]
    if first is None:
        lines.append(f"every layer is exact: all {len(per_layer['layers'])} steps' outputs equal TFLM's")
    else:
        lines.append(
            f"first layer that differs: {first['index']} {first['op']} ({first['kernel']}), max |diff| "
            f"{first['max_abs_diff']}, {first['share_differing']:.1%} of its values differ"
        )
    checks = [("TFLM keeping every tensor gives TFLM's outputs", per_layer["reference_outputs_equal_tflm"]),
              ("the walk's last step gives INFER's outputs", per_layer["last_step_equals_infer"])]  # fmt: skip
    lines.append("; ".join(f"{what}: {'yes' if ok else 'NO'}" for what, ok in checks))
    return lines
