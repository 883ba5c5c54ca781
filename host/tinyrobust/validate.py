"""validate: run a model on the device and compare its raw outputs with TFLM's and TFLite's, each pair against
each other (an X-cross): bit-exact rate, largest absolute difference and top-1 agreement."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from tinyrobust.build.firmware import Firmware, build_firmware
from tinyrobust.compile.compiler import CompiledModel, compile_model
from tinyrobust.device.boards import Board, load_board
from tinyrobust.device.emulator import instructions_per_tick
from tinyrobust.device.link import Device
from tinyrobust.device.targets import EmulatorTarget
from tinyrobust.errors import UserError
from tinyrobust.model import reference, zoo

# The frame header's length field is 16 bits (link.HEADER), and a reply carries 8 bytes of counter before the
# output tensor. Inputs have no such limit: they travel in chunks.
MAX_OUTPUT_BYTES = 0xFFFF - 8
PAIRS = (
    ("device_vs_tflm", "device", "tflm"),
    ("device_vs_tflite", "device", "tflite"),
    ("tflite_vs_tflm", "tflite", "tflm"),
)
LABELS = {"device": "device", "tflm": "TFLM", "tflite": "TFLite"}
# The quantized precision a model's input type stands for.
PRECISION_OF_INPUT = {"int8": "int8", "int16": "int16x8"}


def load_tflite(model: str, precision: str = "int8") -> tuple[str, bytes]:
    """A built-in model's name (quantized to precision), or the path of a .tflite file; returns (name, bytes)."""
    if model.endswith(".tflite"):
        path = Path(model)
        if not path.is_file():
            raise UserError(f"model file {path} does not exist; pass a quantized .tflite file or a built-in name")
        return path.stem, path.read_bytes()
    return model, zoo.load_builtin(model, precision).tflite


def check_precision(compiled: CompiledModel, precision: str) -> None:
    found = PRECISION_OF_INPUT.get(compiled.input.type_name, compiled.input.type_name)
    if found != precision:
        raise UserError(f"the model is quantized to {found}, not {precision}; pass --precision {found}")


def check_link_fits(compiled: CompiledModel) -> None:
    """Refuse, before building, a model whose output cannot travel in one reply frame of the link."""
    if compiled.output.nbytes > MAX_OUTPUT_BYTES:
        raise UserError(
            f"the model's {compiled.output.nbytes}-byte output does not fit a reply frame of the link "
            f"({MAX_OUTPUT_BYTES} bytes at most); choose a model with a smaller output"
        )


def _dtype(compiled: CompiledModel, role: str) -> np.dtype:
    return np.dtype({"int8": np.int8, "int16": np.int16}[getattr(compiled, role).type_name])


def random_inputs(compiled: CompiledModel, count: int, seed: int = 0) -> np.ndarray:
    """count inputs drawn uniformly over the input type's whole range."""
    dtype = _dtype(compiled, "input")
    info = np.iinfo(dtype)
    shape = (count, *compiled.input.shape[1:])
    return np.random.default_rng(seed).integers(info.min, info.max + 1, shape).astype(dtype)


def read_inputs(path: Path, compiled: CompiledModel) -> np.ndarray:
    """Quantized inputs from an .npy file: one sample or a batch, in the model's input type."""
    if not path.is_file():
        raise UserError(f"inputs file {path} does not exist; pass an .npy of quantized inputs")
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise UserError(f"{path} is not an .npy array ({exc}); save quantized inputs with np.save") from None
    dtype, per_sample = _dtype(compiled, "input"), int(np.prod(compiled.input.shape[1:]))
    if x.dtype != dtype:
        raise UserError(
            f"{path} holds {x.dtype} values but the model takes {dtype}; quantize the inputs with the model's "
            "input scale and zero point first"
        )
    if x.size == 0 or x.size % per_sample:
        raise UserError(f"{path} holds {x.size} values, not a whole number of {per_sample}-value inputs")
    return x.reshape(-1, *compiled.input.shape[1:])


def run_on_device(compiled: CompiledModel, board: Board, firmware: Firmware, inputs: np.ndarray) -> tuple:
    """Each input run once on the firmware in the board's emulator: the raw outputs and each inference's
    counter ticks."""
    target = EmulatorTarget(board, firmware.elf, log=firmware.elf.parent / "emulator.log", channel=firmware.channel)
    try:
        target.start()
        device = Device(target.open(), target.bytes_per_s)
        device.handshake(compiled.model_hash)
        replies = [device.infer(x.tobytes()) for x in inputs]
    finally:
        target.close()
    outputs = np.stack([np.frombuffer(raw, dtype=_dtype(compiled, "output")) for raw, _ in replies])
    return outputs, [ticks for _, ticks in replies]


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    """How two engines' raw outputs (one row per sample) agree."""
    return {
        "bit_exact": float(np.mean(np.all(a == b, axis=1))),
        "max_abs_diff": int(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64)))),
        "top1_agreement": float(np.mean(a.argmax(axis=1) == b.argmax(axis=1))),
    }


def validate(
    model: str,
    board_name: str = "qemu-mps2-an386",
    inputs: Path | None = None,
    samples: int | None = None,
    precision: str = "int8",
    seed: int = 0,
) -> dict:
    """Build the model's firmware, run the inputs (given, or random) on the board, and compare every engine."""
    if samples is not None and samples < 1:
        raise UserError(f"--samples must be at least 1, not {samples}")
    board = load_board(board_name)
    name, tflite = load_tflite(model, precision)
    compiled = compile_model(tflite)
    check_precision(compiled, precision)
    check_link_fits(compiled)
    xq = read_inputs(inputs, compiled) if inputs is not None else random_inputs(compiled, samples or 10, seed)
    xq = xq[:samples] if samples else xq
    with tempfile.TemporaryDirectory(prefix="tinyrobust-validate-") as work:
        firmware = build_firmware(compiled, board, Path(work))
        device, ticks = run_on_device(compiled, board, firmware, xq)
    outputs = {
        "device": device,
        "tflm": reference.tflm_outputs(tflite, xq).reshape(len(xq), -1),
        "tflite": reference.tflite_outputs(tflite, xq).reshape(len(xq), -1),
    }
    results = {"model": name, "board": board.name, "precision": precision, "samples": len(xq)}
    for key, a, b in PAIRS:
        results[key] = compare(outputs[a], outputs[b])
    results["latency"] = {"unit": latency_unit(board), "median_per_inference": float(np.median(counts(board, ticks)))}
    return results


def latency_unit(board: Board) -> str:
    return "instructions (emulated)" if board.emulated else "cycles"


def counts(board: Board, ticks: list[int]) -> np.ndarray:
    """Counter ticks in the board's latency unit: executed instructions in the emulator (see emulator.py),
    core clock cycles on a real board, where SysTick counts the core clock."""
    per_tick = instructions_per_tick(board) if board.emulated else 1.0
    return np.array(ticks, dtype=np.float64) * per_tick


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
