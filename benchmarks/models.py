"""The built-in models on a board: instructions per inference, our arena against TFLM's (head: planned
activations; total: with the interpreter's bookkeeping), flash code, weights and quantization parameters; a
markdown table and JSON.

    python benchmarks/models.py [--board qemu-mps2-an386] [--models a,b] [--json benchmarks/models.json]
                                [--compare earlier.json]

--compare prints each model's instructions against an earlier run's JSON (e.g. before a kernel change).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tinyrobust.bench import bench, markdown
from tinyrobust.device.boards import DEFAULT_BOARD


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--board", default=DEFAULT_BOARD)
    parser.add_argument("--models", help="comma-separated built-in names or .tflite files (default: all built-in)")
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--json", type=Path, default=Path("models.json"))
    parser.add_argument("--compare", type=Path, help="an earlier run's JSON: print each model's speed-up over it")
    args = parser.parse_args()
    names = [m.strip() for m in args.models.split(",")] if args.models else None
    started = time.monotonic()
    results = bench(names, args.board, args.precision, progress=lambda text: print(text, file=sys.stderr))
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    print(markdown(results))
    for r in results["models"]:
        head, total = (r["arena_bytes"] / r[key] for key in ("tflm_arena_bytes", "tflm_arena_total_bytes"))
        line = f"{r['name']}: our arena is {head:.1%} of TFLM's head, {total:.1%} of its total"
        if r["flash_code_bytes"] is not None:  # the target: everything but the weights under 24 KB
            line += f"; flash without the weights {r['flash_code_bytes'] + r['flash_quant_params_bytes']:,} B"
        print(line)
    if args.compare:
        compare(results, json.loads(args.compare.read_text()))
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wall time {results['wall_seconds']} s; written to {args.json}")


def compare(results: dict, earlier: dict) -> None:
    """Each model's instructions per inference against the earlier run's, for the same name and precision."""
    key = "instructions_per_inference"
    before = {(r["name"], r["precision"]): r[key] for r in earlier["models"]}
    for r in results["models"]:
        was = before.get((r["name"], r["precision"]))
        if was and r[key]:
            print(f"{r['name']} ({r['precision']}): {r[key]:,.0f} instructions, {was:,.0f} before: {was / r[key]:.2f}x")


if __name__ == "__main__":
    main()
