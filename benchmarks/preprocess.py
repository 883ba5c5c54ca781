"""Cost of the device pre-processing stages (defenses) on a built-in model: instructions per inference
(emulated), flash and arena, each against the model without a stage; a markdown table and JSON.

    python benchmarks/preprocess.py [--model digits-cnn] [--board qemu-mps2-an386] [--json preprocess.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from tinyrobust.build.firmware import build_firmware
from tinyrobust.compile.model import compile_model
from tinyrobust.compile.stages import apply_stages_q
from tinyrobust.device.boards import DEFAULT_BOARD, load_board
from tinyrobust.device.counter import latency
from tinyrobust.device.pool import run_on_emulator
from tinyrobust.model import zoo
from tinyrobust.model.reference import quantize_inputs, tflm_outputs

STAGES = {
    "none": [],
    "squeeze_bits 1": [{"stage": "squeeze_bits", "bits": 1}],
    "squeeze_bits 5": [{"stage": "squeeze_bits", "bits": 5}],
    "median 2x2": [{"stage": "median", "k": 2}],
    "median 3x3": [{"stage": "median", "k": 3}],
    "median 5x5": [{"stage": "median", "k": 5}],
    "squeeze_bits 5 + median 2x2": [{"stage": "squeeze_bits", "bits": 5}, {"stage": "median", "k": 2}],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits-cnn")
    parser.add_argument("--board", default=DEFAULT_BOARD)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--json", type=Path, default=Path("preprocess.json"))
    args = parser.parse_args()
    started = time.monotonic()
    model, board = zoo.load_builtin(args.model), load_board(args.board)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, stages in STAGES.items():
            compiled = compile_model(model.tflite, preprocess=stages)
            firmware = build_firmware(compiled, board, Path(tmp) / str(len(rows)), board.default_channel)
            xq = quantize_inputs(model.x_test[: args.samples], compiled.input)
            tensors = [x.tobytes() for x in xq]
            answers = run_on_emulator(board, firmware.elf, firmware.channel, compiled.model_hash, tensors)
            outputs = np.stack([np.frombuffer(raw, compiled.output.dtype) for raw, _ in answers])
            ticks = [t for _, t in answers]
            reference = tflm_outputs(model.tflite, apply_stages_q(xq, stages)).reshape(len(xq), -1)
            exact = bool(np.array_equal(outputs, reference))
            memory = firmware.memory
            rows.append({"stages": name, "instructions_per_inference": latency(board, ticks)["per_inference"]["median"],
                         "flash_bytes": memory.flash_bytes, "arena_bytes": memory.arena_bytes,
                         "ram_bytes": memory.ram_bytes, "bit_exact_with_stage_then_tflm": exact})  # fmt: skip
    base = rows[0]
    print(f"{args.model} on {args.board}, median over {args.samples} test inputs; instructions are emulated")
    print("| stages | instructions per inference | stage instructions | flash (B) | stage flash (B) | arena (B) "
          "| stage arena (B) | device = stage + TFLM |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        extra = [r[k] - base[k] for k in ("instructions_per_inference", "flash_bytes", "arena_bytes")]
        print(
            f"| {r['stages']} | {r['instructions_per_inference']:,.0f} | {extra[0]:+,.0f} | {r['flash_bytes']:,} "
            f"| {extra[1]:+,} | {r['arena_bytes']:,} | {extra[2]:+,} | {r['bit_exact_with_stage_then_tflm']} |"
        )
    results = {"model": args.model, "board": args.board, "unit": "instructions (emulated)", "rows": rows,
               "wall_seconds": round(time.monotonic() - started, 1)}  # fmt: skip
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wall time {results['wall_seconds']} s; written to {args.json}")


if __name__ == "__main__":
    main()
