"""The README's tables of the split-network study, from split-evaluate's results.json files: per entropy model
and beta, clean bytes and accuracy, each attack's overhead at the study's budgets, the defenses, the coder's
cost; and the corruptions' overhead at severities 1 to 5.

    python benchmarks/split_tables.py benchmarks/results/split-digits-factorized.json \\
        benchmarks/results/split-digits-hyperprior.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _find(rows: list[dict], name: str, eps: float | None = None, severity: int | None = None) -> dict | None:
    return next((r for r in rows if r["name"] == name and (eps is None or abs(r["eps"] - eps) < 1e-9)
                 and r["severity"] == severity), None)  # fmt: skip


def _pct(row: dict | None) -> str:
    return "-" if row is None or row["overhead_vs_clean"] is None else f"{100 * row['overhead_vs_clean']:+.1f}%"


def _acc(row: dict | None) -> str:
    return "-" if row is None or row["accuracy"] is None else f"{row['accuracy']:.2f}"


def bytes_table(results: list[dict]) -> str:
    lines = [
        "| entropy model | beta | clean bytes (accuracy) | entropy attack 2 / 8 / 32 | accuracy attack 32 (accuracy) "
        "| sign noise 32 | TV defense: clean / entropy 32 / adaptive 32 (accuracy) "
        "| device median: clean / entropy 32 / adaptive 32 | bytes over ideal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows = r["conditions"]
        for beta in dict.fromkeys(c["beta"] for c in rows):
            at = [c for c in rows if c["beta"] == beta]
            clean = _find(at, "clean")
            entropy = " / ".join(_pct(_find(at, "entropy", e / 255)) for e in (2, 8, 32))
            accuracy = _find(at, "accuracy", 32 / 255)
            tv = [_find(at, n, e) for n, e in (("defended clean", 0.0), ("defended entropy", 32 / 255),
                                               ("defended adaptive entropy", 32 / 255))]  # fmt: skip
            median = [_find(at, n, e) for n, e in (("device-defended clean", 0.0),
                                                   ("device-defended entropy", 32 / 255),
                                                   ("device-defended adaptive entropy", 32 / 255))]  # fmt: skip
            over = [c["bytes"]["mean"] - c["ideal_bytes_mean"] for c in at if c["ideal_bytes_mean"] is not None]
            lines.append(
                f"| {at[0]['entropy_model']} | {beta:g} | {clean['bytes']['mean']:.1f} ({_acc(clean)}) | {entropy} "
                f"| {_pct(accuracy)} ({_acc(accuracy)}) | {_pct(_find(at, 'sign noise', 32 / 255))} "
                f"| {' / '.join(_pct(c) for c in tv)} ({_acc(tv[0])}) | {' / '.join(_pct(c) for c in median)} "
                f"| {min(over):.1f}-{max(over):.1f} |"
            )
    return "\n".join(lines)


def coder_table(results: list[dict]) -> str:
    lines = ["| entropy model | beta | symbols | head | coder per symbol (share of head) | tables' flash "
             "| head behind the device median |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        model = r["conditions"][0]["entropy_model"]
        for c in r["coder"]:
            defended = c.get("device_defended_head_instructions")
            extra = "-" if defended is None else f"{defended:,.0f} ({defended / c['head_instructions'] - 1:+.0%})"
            lines.append(f"| {model} | {c['beta']:g} | {c['symbols_per_inference']} | {c['head_instructions']:,.0f} "
                         f"| {c['instructions_per_symbol']:.1f} ({c['coder_share_of_head']:.1%}) "
                         f"| {c['table_flash_bytes']:,} B | {extra} |")  # fmt: skip
    return "\n".join(lines)


def corruption_table(results: list[dict], beta: float) -> str:
    lines = ["| entropy model | corruption | severity 1 / 2 / 3 / 4 / 5 |", "|---|---|---|"]
    for r in results:
        at = [c for c in r["conditions"] if c["beta"] == beta]
        for name in dict.fromkeys(c["name"] for c in at if c["kind"] == "corruption"):
            cells = " / ".join(_pct(_find(at, name, 0.0, s)) for s in range(1, 6))
            lines.append(f"| {at[0]['entropy_model']} | {name} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="split-evaluate results.json files")
    parser.add_argument("--corruption-beta", type=float, default=0.01)
    args = parser.parse_args()
    results = [json.loads(p.read_text()) for p in args.results]
    exact = min(c["round_trip_exact"] for r in results for c in r["conditions"])
    streams = sum(c["samples"] for r in results for c in r["conditions"])
    print(f"{streams:,} streams from the device; the lowest round_trip_exact of any condition: {exact}\n")
    print(bytes_table(results), coder_table(results), corruption_table(results, args.corruption_beta), sep="\n\n")


if __name__ == "__main__":
    main()
