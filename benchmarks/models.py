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

# The engines to beat on MLPerf Tiny's models, int8: TFLM with CMSIS-NN in executed instructions on
# qemu-mps2-an386 (measured once with TFLM's own firmware, not rebuilt here), and the best published Cortex-M4
# result (MLPerf Tiny, STM32L4R5 at 120 MHz), in cycles, of which an emulator's instruction count is a lower bound.
ENGINES = {
    "resnet8-cifar10": {"tflm_cmsis_nn_instructions": 29.9e6, "best_published_m4_cycles": 19.8e6},
    "mobilenetv1-vww": {"tflm_cmsis_nn_instructions": 25.0e6, "best_published_m4_cycles": 10.7e6},
    "dscnn-kws": {"tflm_cmsis_nn_instructions": 7.7e6, "best_published_m4_cycles": 5.2e6},
    "fc-autoencoder-ad": {"tflm_cmsis_nn_instructions": 0.68e6, "best_published_m4_cycles": 0.49e6},
}


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
    if args.precision == "int8" and args.board == "qemu-mps2-an386":
        against_engines(results)
    if args.compare:
        compare(results, json.loads(args.compare.read_text()))
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wall time {results['wall_seconds']} s; written to {args.json}")


def against_engines(results: dict) -> None:
    """Each MLPerf Tiny model's instructions over TFLM + CMSIS-NN's and over the best published M4's cycles."""
    for r in results["models"]:
        engines = ENGINES.get(r["name"])
        if engines and r["instructions_per_inference"]:
            n = r["instructions_per_inference"]
            r["against"] = {key: round(n / value, 3) for key, value in engines.items()}
            print(f"{r['name']}: {n / 1e6:.2f} M instructions, {r['against']['tflm_cmsis_nn_instructions']:.2f} x "
                  f"TFLM + CMSIS-NN's {engines['tflm_cmsis_nn_instructions'] / 1e6:g} M, "
                  f"{r['against']['best_published_m4_cycles']:.2f} x the best published M4's "
                  f"{engines['best_published_m4_cycles'] / 1e6:g} M cycles")  # fmt: skip


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
