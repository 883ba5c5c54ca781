"""split-evaluate's report.html: the bytes the device sent under each condition, per beta, against clean inputs
(a summary, their distributions, overhead against eps, the corruptions' heat map, accuracy against bytes) and
what the coder costs on the device. Every figure names the model, its data set and the board."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tinyrobust.report.html import _png, _pyplot
from tinyrobust.templates import render_template

# Condition kinds in the order they are run, with their colour in every figure.
KINDS = {"clean": "#4c72b0", "attack": "#c44e52", "noise": "#8172b2", "corruption": "#dd8452", "defense": "#55a868"}
MARKERS = "osD^vPX*"


def betas(results: dict) -> list[float]:
    return list(dict.fromkeys(c["beta"] for c in results["conditions"]))


def _at(results: dict, beta: float) -> list[dict]:
    return [c for c in results["conditions"] if c["beta"] == beta]


def _largest(conditions: list[dict]) -> dict | None:
    """The condition of the largest overhead against clean, None if none has one."""
    measured = [c for c in conditions if c["overhead_vs_clean"] is not None]
    return max(measured, key=lambda c: c["overhead_vs_clean"]) if measured else None


def summary(results: dict) -> dict:
    """Per beta: clean bytes and accuracy; for each attack its largest overhead against clean, with its eps and
    accuracy there; the corruption and severity of the largest overhead; for each defended condition, at its largest
    eps, its overhead beside the undefended one's; the worst round_trip_exact of the beta's conditions."""
    conditions = results["conditions"]
    attacks = list(dict.fromkeys(c["name"] for c in conditions if c["kind"] in ("attack", "noise")))
    defended = list(dict.fromkeys(c["name"] for c in conditions if c["kind"] == "defense"))
    rows = []
    for beta in betas(results):
        at = _at(results, beta)
        clean = next((c for c in at if c["kind"] == "clean"), None)
        row = {
            "beta": beta,
            "clean_bytes": clean["bytes"]["mean"] if clean else None,
            "clean_accuracy": clean["accuracy"] if clean else None,
            "round_trip_exact": min(c["round_trip_exact"] for c in at),
            "attacks": {name: _largest([c for c in at if c["name"] == name]) for name in attacks},
            "corruption": _largest([c for c in at if c["kind"] == "corruption"]),
            "defended": {},
        }
        for name in defended:
            runs = [c for c in at if c["name"] == name]
            if not runs:
                row["defended"][name] = None
                continue
            top = max(runs, key=lambda c: c["eps"])
            plain = name.split(" ")[-1]  # defended [adaptive] entropy, device-defended clean: against the plain one
            undefended = next((c for c in at if c["name"] == plain and c["eps"] == top["eps"]), None)
            row["defended"][name] = {"defended": top, "undefended": undefended}
        rows.append(row)
    return {"attacks": attacks, "defended": defended, "rows": rows}


# ---- figures --------------------------------------------------------------------------------------------------


def _label(fig, results: dict, what: str) -> None:
    """The figure's title: what it shows, then the model, the data set it was measured on and the board."""
    fig.suptitle(f"{what}\n{results['model']} on {results['data_set']}, {results['board']}", fontsize=10)


def _finish(plt, fig) -> str:
    png = _png(fig)
    plt.close(fig)
    return png


def bytes_plot(results: dict) -> str | None:
    """The bytes of each exactly decoded stream, pooled over the conditions of each kind, one box a kind, one panel
    per beta (each its own scale: the betas differ by a factor of three); None without per-sample byte counts."""
    if not any(c.get("bytes_per_sample") for c in results["conditions"]):
        return None
    plt = _pyplot()
    panels = betas(results)
    fig, axes = plt.subplots(1, len(panels), figsize=(0.6 + 3.0 * len(panels), 3.8), squeeze=False,
                             layout="constrained")  # fmt: skip
    for ax, beta in zip(axes[0], panels, strict=True):
        at = [c for c in _at(results, beta) if c.get("bytes_per_sample")]
        kinds = [k for k in KINDS if any(c["kind"] == k for c in at)]
        pooled = [[b for c in at if c["kind"] == k for b in c["bytes_per_sample"]] for k in kinds]
        boxes = ax.boxplot(pooled, patch_artist=True, widths=0.6, flierprops={"markersize": 2, "alpha": 0.5},
                           medianprops={"color": "black"})  # fmt: skip
        for box, kind in zip(boxes["boxes"], kinds, strict=True):
            box.set_facecolor(KINDS[kind])
            box.set_alpha(0.75)
        counts = [sum(c["kind"] == k for c in at) for k in kinds]
        ax.set_xticks(range(1, len(kinds) + 1), [f"{k}\n({n} cond.)" for k, n in zip(kinds, counts, strict=True)],
                      fontsize=7)  # fmt: skip
        ax.set_title(f"beta {beta:g}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_ylabel("bytes sent per inference")
    _label(fig, results, "Bytes per inference by condition kind")
    return _finish(plt, fig)


def overhead_plot(results: dict) -> str | None:
    """Mean bytes against clean vs eps, one line per attack (the defended ones dashed), one panel per beta."""
    bounded = [c for c in results["conditions"] if c["eps"] > 0 and c["overhead_vs_clean"] is not None]
    if not bounded:
        return None
    plt = _pyplot()
    names = list(dict.fromkeys(c["name"] for c in bounded))
    colors = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(names)}
    ticks = sorted({c["eps"] * 255 for c in bounded})
    panels = betas(results)
    fig, axes = plt.subplots(1, len(panels), figsize=(0.6 + 3.3 * len(panels), 3.5), squeeze=False, sharey=True,
                             layout="constrained")  # fmt: skip
    for ax, beta in zip(axes[0], panels, strict=True):
        for name in names:
            points = sorted((c["eps"] * 255, 100 * c["overhead_vs_clean"]) for c in bounded
                            if c["beta"] == beta and c["name"] == name)  # fmt: skip
            if points:
                dashed = any(c["kind"] == "defense" for c in bounded if c["name"] == name)
                ax.plot(*zip(*points, strict=True), "--o" if dashed else "-o", color=colors[name], label=name,
                        markersize=4)  # fmt: skip
        ax.axhline(0, color="#555", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("eps (L-inf, in 1/255 of the input range)", fontsize=8)
        ax.set_title(f"beta {beta:g}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("mean bytes vs clean (%)")
    axes[0, -1].legend(fontsize=7)
    _label(fig, results, "Overhead against clean vs eps")
    return _finish(plt, fig)


def corruption_plot(results: dict) -> str | None:
    """Corruption (rows) x severity (columns), the colour and the figure the mean bytes against clean in percent,
    one panel per beta on one colour scale; None without corruptions."""
    corrupted = [c for c in results["conditions"] if c["kind"] == "corruption"]
    if not corrupted:
        return None
    plt = _pyplot()
    names = list(dict.fromkeys(c["name"] for c in corrupted))
    severities = sorted({c["severity"] for c in corrupted})
    panels = betas(results)
    grids = []
    for beta in panels:
        grid = np.full((len(names), len(severities)), np.nan)
        for c in corrupted:
            if c["beta"] == beta and c["overhead_vs_clean"] is not None:
                grid[names.index(c["name"]), severities.index(c["severity"])] = 100 * c["overhead_vs_clean"]
        grids.append(grid)
    measured = np.abs(np.concatenate([g.ravel() for g in grids]))
    measured = measured[np.isfinite(measured)]
    limit = float(measured.max()) if measured.size and measured.max() > 0 else 1.0  # symmetric: white is clean
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#dddddd")
    fig, axes = plt.subplots(1, len(panels), figsize=(2.0 + 2.4 * len(panels), 0.3 * len(names) + 1.9),
                             squeeze=False, sharey=True, layout="constrained")  # fmt: skip
    for ax, beta, grid in zip(axes[0], panels, grids, strict=True):
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=-limit, vmax=limit, aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            if not np.isnan(v):
                ax.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=6,
                        color="white" if abs(v) > 0.6 * limit else "black")  # fmt: skip
        ax.set_xticks(range(len(severities)), [str(s) for s in severities], fontsize=8)
        ax.set_xlabel("severity", fontsize=8)
        ax.set_title(f"beta {beta:g}", fontsize=9)
    axes[0, 0].set_yticks(range(len(names)), names, fontsize=8)
    fig.colorbar(image, ax=axes[0].tolist(), label="mean bytes vs clean (%)", shrink=0.8)
    _label(fig, results, "Corruptions: overhead against clean")
    return _finish(plt, fig)


def accuracy_plot(results: dict) -> str | None:
    """Each condition a point, its mean bytes against its accuracy, coloured by kind, one marker per beta (its
    clean point named)."""
    points = [c for c in results["conditions"] if c["bytes"]["mean"] is not None and c["accuracy"] is not None]
    if not points:
        return None
    plt = _pyplot()
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(8, 4.8), layout="constrained")
    panels = betas(results)
    for i, beta in enumerate(panels):
        for kind, color in KINDS.items():
            chosen = [c for c in points if c["beta"] == beta and c["kind"] == kind]
            if chosen:
                # The clean point on top, outlined: the others are read against it.
                clean = kind == "clean"
                ax.scatter([c["bytes"]["mean"] for c in chosen], [c["accuracy"] for c in chosen], color=color,
                           marker=MARKERS[i % len(MARKERS)], s=40 if clean else 24, alpha=1 if clean else 0.75,
                           edgecolors="black" if clean else "none", zorder=3 if clean else 2)  # fmt: skip
        clean = next((c for c in points if c["beta"] == beta and c["kind"] == "clean"), None)
        if clean:
            ax.annotate(f"beta {beta:g}", (clean["bytes"]["mean"], clean["accuracy"]), xytext=(4, 6),
                        textcoords="offset points", fontsize=7)  # fmt: skip
    present = [k for k in KINDS if any(c["kind"] == k for c in points)]
    handles = [Line2D([], [], linestyle="", marker="o", color=KINDS[k], label=k) for k in present]
    handles += [Line2D([], [], linestyle="", marker=MARKERS[i % len(MARKERS)], color="#555", label=f"beta {b:g}")
                for i, b in enumerate(panels)]  # fmt: skip
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_xlabel("mean bytes sent per inference")
    ax.set_ylabel("top-1 accuracy of the tail on the decoded latent")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    _label(fig, results, "Accuracy against bytes, each condition a point")
    return _finish(plt, fig)


# ---- the report -----------------------------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.1f}%"


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def write_split_report(results: dict, path: Path) -> None:
    html = render_template(
        "split.html.j2",
        results=results,
        summary=summary(results),
        bytes_png=bytes_plot(results),
        overhead_png=overhead_plot(results),
        corruption_png=corruption_plot(results),
        accuracy_png=accuracy_plot(results),
        settings_json=json.dumps(results["settings"], indent=2),
        percent=_percent,
        number=_number,
    )
    path.write_text(html)


def write_split_csv(results: dict, out: Path) -> None:
    """The report's tables as CSV beside results.json: summary.csv (one row per beta, as the report's summary)
    and coder.csv (the coder's cost per beta); conditions.csv is written with the results."""
    import csv

    table = summary(results)
    rows = []
    for row in table["rows"]:
        flat = {k: row[k] for k in ("beta", "clean_bytes", "clean_accuracy", "round_trip_exact")}
        for name, c in row["attacks"].items():
            key = name.replace(" ", "_")
            flat |= {f"{key}_max_overhead": c and c["overhead_vs_clean"], f"{key}_eps": c and c["eps"],
                     f"{key}_accuracy": c and c["accuracy"]}  # fmt: skip
        c = row["corruption"]
        flat |= {"corruption_max_overhead": c and c["overhead_vs_clean"], "corruption": c and c["name"],
                 "corruption_severity": c and c["severity"]}  # fmt: skip
        for name, d in row["defended"].items():
            key = name.replace(" ", "_")
            top = d and d["defended"]
            flat |= {f"{key}_overhead": top and top["overhead_vs_clean"], f"{key}_eps": top and top["eps"],
                     f"{key}_accuracy": top and top["accuracy"]}  # fmt: skip
        rows.append(flat)
    for name, table_rows in (("summary", rows), ("coder", results["coder"])):
        if not table_rows:
            continue
        with open(out / f"{name}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, list(table_rows[0]))
            writer.writeheader()
            writer.writerows(table_rows)
