"""The default job (flash-and-evaluate on its built-in default, which ships trained), timed twice: once with an
empty cache, once with the cache the first run left; the accuracy table, instructions per inference and memory; a
markdown table and JSON.

    python benchmarks/default_job.py [--json default_job.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENGINES = ("float", "tflite", "tflm", "device")


def run(out: Path, cache: Path) -> float:
    """Seconds that `tinyrobust flash-and-evaluate --out out` takes with the given cache folder."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "tinyrobust", "flash-and-evaluate", "--out", str(out)], env=env,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=Path("default_job.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        cache = Path(work) / "cache"
        empty = run(Path(work) / "first", cache)
        cached = run(Path(work) / "second", cache)
        first, second = (json.loads((Path(work) / n / "results.json").read_text()) for n in ("first", "second"))
    same = [r["accuracy"] for r in first["runs"]] == [r["accuracy"] for r in second["runs"]]
    rows = [{"attack": r["attack"], "eps": r["eps"], **{e: r["accuracy"][e] for e in ENGINES},
             "device_vs_tflm_bit_exact": r["agreement"]["device_vs_tflm_bit_exact"]}
            for r in second["runs"]]  # fmt: skip
    results = {
        "settings": second["settings"],
        "seconds_empty_cache": round(empty, 1),
        "seconds_cached": round(cached, 1),
        "same_results_both_runs": same,
        "inferences": sum(r["samples"] for r in second["runs"]),
        "runs": rows,
        "latency": second["latency"],
        "memory": second["memory"],
    }
    print("| run | float | TFLite | TFLM | device | device = TFLM |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        name = "clean" if r["attack"] == "none" else f"{r['attack'].upper()} {r['eps']:g}"
        cells = " | ".join(f"{r[e]:.3f}" for e in ENGINES)
        print(f"| {name} | {cells} | {r['device_vs_tflm_bit_exact']:.3f} |")
    median = results["latency"]["per_inference"]["median"]
    print(f"{results['inferences']:,} inferences; {median:,.0f} {results['latency']['unit']} per inference "
          f"(median); {empty:.1f} s with an empty cache, {cached:.1f} s cached; same results: {same}")
    memory = results["memory"]
    print(f"flash {memory['flash_bytes']:,} B ({memory['weights_bytes']:,} weights, {memory['quant_params_bytes']:,}"
          f" quantization parameters), RAM {memory['ram_bytes']:,} B, arena {memory['arena_bytes']:,} B")
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
