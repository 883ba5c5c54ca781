"""report.html: accuracy under attack, agreement with the host references, latency and memory."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import numpy as np

from .templates import render_template


def engines(precision: str) -> list[tuple[str, str]]:
    """The four engines of a run, as (results key, label)."""
    return [
        ("float", "float (Keras)"),
        ("tflite", f"TFLite {precision}"),
        ("tflm", f"TFLM reference {precision}"),
        ("device", "device"),
    ]


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _first_series(results: dict) -> list[dict]:
    """The runs of the first model and precision, first seed, transfer mode and no defense."""
    runs = results["runs"]
    if not runs:
        return []
    first = runs[0]
    return [
        r for r in runs
        if (r.get("model"), r.get("precision"), r.get("seed")) == (first.get("model"), first.get("precision"),
                                                                   first.get("seed"))
        and r.get("mode", "transfer") == "transfer" and r.get("defense") is None
    ]  # fmt: skip


def precision_of(results: dict) -> str:
    builds = results.get("builds") or []
    return builds[0]["precision"] if builds else results["settings"].get("precision", "int8")


def _grid(plt, panels: int, columns: int = 4):
    """A figure of one panel per attack, at most `columns` a row; the axes as a flat list."""
    cols = min(columns, panels)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False, sharey=True)
    return fig, list(axes.flat)


def accuracy_plot(results: dict) -> str | None:
    """Accuracy vs eps of every engine, one panel per attack, the clean run at eps 0 (first model and precision,
    transfer attacks without defense)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = _first_series(results)
    clean = next((r for r in series if r["attack"] == "none"), None)
    names = sorted({r["attack"] for r in series if r["attack"] != "none"})
    if clean is None:
        return None
    panels = names or ["none"]
    fig, axes = _grid(plt, len(panels))
    for ax, name in zip(axes, panels, strict=False):
        runs = [clean] + sorted((r for r in series if r["attack"] == name and r["eps"] > 0), key=lambda r: r["eps"])
        eps = [r["eps"] for r in runs]
        labels = engines(precision_of(results))
        for (key, label), style in zip(labels, ["-o", "--s", ":^", "-x"], strict=True):
            values = [r["accuracy"][key] for r in runs]
            if all(v is not None for v in values):
                ax.plot(eps, values, style, label=label, markersize=5)
        ax.set_title(name.upper() if name != "none" else "clean")
        ax.set_xlabel("eps (L-inf, input units)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 accuracy")
    axes[len(panels) - 1].legend(loc="lower left", fontsize=8)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.tight_layout()
    png = _png(fig)
    plt.close(fig)
    return png


def series_label(run: dict) -> str:
    defense = run.get("defense")
    parts = [run.get("model", ""), run.get("precision", ""), run.get("mode", "transfer")]
    if defense:
        parts.append(f"{defense['name']} ({defense['where']})")
    return " ".join(p for p in parts if p)


def robust_plot(results: dict) -> str | None:
    """Robust accuracy on the device vs eps, one panel per attack, one line per (model, precision, mode,
    defense), averaged over seeds; each line starts at its clean accuracy (eps 0). Unbounded runs of
    minimal-perturbation attacks (eps 0) are in the table, not on the curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    names = sorted({r["attack"] for r in runs if r["attack"] != "none" and r["eps"] > 0})
    if not names:
        return None
    clean: dict = {}
    for r in runs:
        if r["attack"] == "none":
            clean.setdefault((r.get("model"), r.get("precision"), json.dumps(r.get("defense"))), []).append(
                r["accuracy"]["device"]
            )
    fig, axes = _grid(plt, len(names))
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    for ax, name in zip(axes, names, strict=False):
        lines: dict = {}
        for r in runs:
            if r["attack"] == name and r["eps"] > 0:
                lines.setdefault(series_label(r), {}).setdefault(r["eps"], []).append(r["accuracy"]["device"])
                lines[series_label(r)]["_key"] = (r.get("model"), r.get("precision"), json.dumps(r.get("defense")))
        for label, points in sorted(lines.items()):
            key = points.pop("_key")
            eps = sorted(points)
            values = [float(np.mean(points[e])) for e in eps]
            if key in clean:
                eps, values = [0.0, *eps], [float(np.mean(clean[key])), *values]
            ax.plot(eps, values, "-o", label=label, markersize=4)
        ax.set_title(name)
        ax.set_xlabel("eps")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=7)
    axes[0].set_ylabel("device top-1 accuracy")
    fig.tight_layout()
    png = _png(fig)
    plt.close(fig)
    return png


def memory_plot(memory: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 1.9))
    kib = 1024
    ax.barh(["flash"], [memory["code_bytes"] / kib], label="code", color="#4c72b0")
    ax.barh(["flash"], [memory["weights_bytes"] / kib], left=[memory["code_bytes"] / kib], label="weights",
            color="#55a868")  # fmt: skip
    other = memory["ram_bytes"] - memory["arena_bytes"]
    ax.barh(["RAM"], [memory["arena_bytes"] / kib], label="arena", color="#c44e52")
    ax.barh(["RAM"], [other / kib], left=[memory["arena_bytes"] / kib], label="stack and other", color="#8172b2")
    ax.set_xlabel("KiB")
    ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.45))
    png = _png(fig)
    plt.close(fig)
    return png


def write_report(results: dict, path: Path) -> None:
    html = render_template(
        "report.html.j2",
        results=results,
        engines=engines(precision_of(results)),
        accuracy_png=accuracy_plot(results),
        robust_png=robust_plot(results),
        memory_png=memory_plot(results["memory"]),
        campaign_json=json.dumps(results.get("campaign", results["settings"]), indent=2),
        fmt=_cell,
    )
    path.write_text(html)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _flat(prefix: str, value, row: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}{k}.", v, row)
    else:
        row[prefix.rstrip(".")] = json.dumps(value) if isinstance(value, list) else value


def rows(table: list[dict]) -> list[dict]:
    """Nested dicts flattened to one level, keys joined with dots (params and defense kept as JSON)."""
    flat = []
    for entry in table:
        row: dict = {}
        for key, value in entry.items():
            if key in ("params", "defense"):
                row[key] = json.dumps(value, sort_keys=True)
            else:
                _flat(f"{key}.", value, row)
        flat.append(row)
    return flat


def write_csv(results: dict, out: Path) -> None:
    """runs.csv (one row per condition) and builds.csv (one row per model and precision) beside results.json."""
    for name, table in (("runs", results["runs"]), ("builds", results.get("builds", []))):
        flat = rows(table)
        columns = list(dict.fromkeys(k for row in flat for k in row))
        with open(out / f"{name}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(flat)
