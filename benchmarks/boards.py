"""One model on every emulated board: executed instructions per inference (median over random inputs) and
whether every output is bit-exact with TFLM; a markdown table and JSON.

    python benchmarks/boards.py [--model digits-cnn] [--samples 20] [--json boards.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tinyrobust.console import status
from tinyrobust.device.boards import board_names, load_board
from tinyrobust.validate import validate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="digits-cnn")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--json", type=Path, default=Path("boards.json"))
    args = parser.parse_args()
    started = time.monotonic()
    rows = []
    for name in board_names():
        board = load_board(name)
        if not board.emulated or board.renode:  # QEMU boards: Renode is not on any registry this runs from
            continue
        status(f"{args.model} on {name}")
        result = validate(args.model, name, samples=args.samples)
        rows.append({"board": name, "core": board.core, "description": board.description,
                     "instructions_per_inference": result["latency"]["median_per_inference"],
                     "device_vs_tflm_bit_exact": result["device_vs_tflm"]["bit_exact"]})  # fmt: skip
    print(f"{args.model}, median over {args.samples} random inputs; instructions are emulated (QEMU -icount)")
    print("| board | core | instructions per inference | device = TFLM |")
    print("|---|---|---:|---:|")
    for r in rows:
        print(f"| {r['board']} | {r['core']} | {r['instructions_per_inference']:,.0f} "
              f"| {r['device_vs_tflm_bit_exact']:.3f} |")  # fmt: skip
    results = {"model": args.model, "samples": args.samples, "unit": "instructions (emulated)", "boards": rows,
               "wall_seconds": round(time.monotonic() - started, 1)}  # fmt: skip
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wall time {results['wall_seconds']} s; written to {args.json}")


if __name__ == "__main__":
    main()
