"""report.html and the CSV tables: accuracy under attack, attacks x defenses, agreement with the host references,
the distance to the decision boundary, randomized smoothing's certificates, examples of adversarial inputs, latency,
memory and what produced the run.
Every table of the report is also written as a CSV file beside results.json (write_csv)."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import numpy as np

from tinyrobust.campaign.config import to_toml
from tinyrobust.templates import render_template


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
    """The runs of the first model, every precision, first seed, transfer mode and no defense."""
    runs = results["runs"]
    if not runs:
        return []
    first = runs[0]
    return [
        r for r in runs
        if (r.get("model"), r.get("seed")) == (first.get("model"), first.get("seed"))
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
    """Accuracy vs eps, one panel per attack, the clean run at eps 0 (first model, transfer attacks without
    defense): the float model, then for each precision the quantized model in TFLite and TFLM and the device.
    Unbounded runs of minimal-perturbation attacks (eps 0) are in the tables, not on the curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = _first_series(results)
    precisions = list(dict.fromkeys(r["precision"] for r in series))
    names = sorted({r["attack"] for r in series if r["attack"] != "none" and r["eps"] > 0})
    if not any(r["attack"] == "none" for r in series):
        return None
    panels = names or ["none"]
    fig, axes = _grid(plt, len(panels))
    for ax, name in zip(axes, panels, strict=False):
        for i, precision in enumerate(precisions):
            runs = sorted((r for r in series if r["precision"] == precision and
                           (r["attack"] == "none" or r["attack"] == name and r["eps"] > 0)),
                          key=lambda r: r["eps"])  # fmt: skip
            eps = [r["eps"] for r in runs]
            lines = engines(precision)[i > 0 :]  # the float model once
            styles = ["-o", "--s", ":^", "-x"][i > 0 :]
            for (key, label), style in zip(lines, styles, strict=True):
                values = [r["accuracy"][key] for r in runs]
                if all(v is not None for v in values):
                    label = f"device {precision}" if key == "device" and len(precisions) > 1 else label
                    ax.plot(eps, values, style, label=label, markersize=5, alpha=0.9)
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

    fig, ax = plt.subplots(figsize=(6.5, 2.1))
    kib = 1024
    left = 0.0
    for key, label, color in (("code_bytes", "code", "#4c72b0"), ("quant_params_bytes", "quantization parameters",
                              "#dd8452"), ("weights_bytes", "weights", "#55a868")):  # fmt: skip
        ax.barh(["flash"], [memory.get(key, 0) / kib], left=[left], label=label, color=color)
        left += memory.get(key, 0) / kib
    other = memory["ram_bytes"] - memory["arena_bytes"]
    ax.barh(["RAM"], [memory["arena_bytes"] / kib], label="arena", color="#c44e52")
    ax.barh(["RAM"], [other / kib], left=[memory["arena_bytes"] / kib], label="stack and other", color="#8172b2")
    ax.set_xlabel("KiB")
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.45))
    png = _png(fig)
    plt.close(fig)
    return png


# ---- labels ---------------------------------------------------------------------------------------------------

CONDITION = ("model", "precision", "attack", "eps", "mode", "defense", "seed")


def defense_label(defense: dict | None) -> str:
    """The defense's name, where it runs ("trained" for a training defense, "given" for one whose trained model is
    given as files) and its parameters; "none" for none."""
    if not defense:
        return "none"
    from tinyrobust.campaign.defenses import DEFENSES

    known = DEFENSES.get(defense["name"])
    place = "trained" if known is not None and known.kind == "training" else defense.get("where", "host")
    place = "given" if defense.get("model") or defense.get("float_model") else place  # its trained model's files
    params = ", ".join(f"{k}={v}" for k, v in sorted((defense.get("params") or {}).items()))
    return f"{defense['name']} ({place}{', ' + params if params else ''})"


def attack_label(run: dict) -> str:
    """The attack with its eps ("unbounded" for a minimal-perturbation attack at eps 0) and its mode."""
    if run["attack"] == "none":
        return "clean"
    from tinyrobust.campaign.attacks import ATTACKS

    bound = run["attack"] in ATTACKS and ATTACKS[run["attack"]].eps == "bound"
    eps = "unbounded" if bound and run["eps"] == 0 else f"eps {run['eps']:g}"
    return f"{run['attack']} {eps}" + (" on-device" if run.get("mode") == "on-device" else "")


def _condition(run: dict) -> dict:
    row = {k: run.get(k) for k in CONDITION}
    row["defense"] = defense_label(run.get("defense"))
    return row


def _build_label(model: str, precision: str, several: bool) -> str:
    return f"{model} {precision}" if several else ""


# ---- result cards ---------------------------------------------------------------------------------------------


def _eps_label(norm: str, eps: float) -> str:
    return "unbounded" if norm == "unbounded" else f"{norm} eps {eps:g}"


def _params_label(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def cards_table(results: dict) -> dict:
    """The result cards (results["cards"]) as a leaderboard, one row per model, precision and defense: clean accuracy
    of the float model and the device, the device's robust accuracy under each attack at each eps, the per-sample
    worst case over the attacks of each threat model (norm, eps), and the device's bit-exactness with TFLM."""
    cards = results.get("cards") or []
    made: dict = {}  # (attack, mode) -> the parameter sets it was run with, to tell them apart when several
    for card in cards:
        for r in card["robust"]:
            params = json.dumps(r["params"], sort_keys=True)
            made.setdefault((r["attack"], r["mode"]), [])
            if params not in made[(r["attack"], r["mode"])]:
                made[(r["attack"], r["mode"])].append(params)

    def robust_column(r: dict) -> str:
        name = r["attack"] + (" on-device" if r["mode"] == "on-device" else "")
        if len(made[(r["attack"], r["mode"])]) > 1:
            name += f" ({_params_label(r['params'])})"
        return f"{name} {_eps_label(r['norm'], r['eps'])}"

    rows, robust, worst = [], [], []
    for card in cards:
        tm = card["threat_model"]
        lo, hi = tm["input"]["range"] if tm.get("input") else (None, None)
        row = {
            "model": card["model"], "precision": card["precision"], "defense": defense_label(card["defense"]),
            "samples": tm["samples"], "seeds": ", ".join(map(str, tm["seeds"])),
            "input range": f"[{lo:g}, {hi:g}]" if lo is not None else None,
            "clean float": card["clean"].get("float"), "clean device": card["clean"].get("device"),
        }  # fmt: skip
        for r in card["robust"]:
            robust.append(robust_column(r))
            row[robust[-1]] = r["device"]
        for w in card["worst_case"]:
            worst.append(f"worst case {_eps_label(w['norm'], w['eps'])}")
            row[worst[-1]] = w["device"]
        row["device = TFLM (bit-exact)"] = card["device_vs_tflm_bit_exact"]
        row["inferences"] = card["inferences"]
        rows.append(row)
    columns = ["model", "precision", "defense", "samples", "seeds", "input range", "clean float", "clean device",
               *dict.fromkeys(robust), *sorted(set(worst), key=worst.index), "device = TFLM (bit-exact)",
               "inferences"]  # fmt: skip
    return {"columns": columns, "rows": [dict.fromkeys(columns) | row for row in rows]}


def threat_model_table(results: dict) -> dict:
    """The threat model of the result cards, one row per model, precision and attack (and mode), shared by the cards
    whose input tensor and attack parameters are the same (the defenses column names them): the norm eps bounds, eps
    in input units and in steps of the input tensor's quantization (eps / its scale), the attack's own norm, the valid
    input range, the attack's parameters (its preset with the config's overrides), the query budget and the queries
    made per sample of an on-device attack, the samples and seeds, and the ART version."""
    groups: dict = {}
    for card in results.get("cards") or []:
        tm = card["threat_model"]
        for a in tm["attacks"]:
            key = (card["model"], card["precision"], json.dumps(tm.get("input"), sort_keys=True), a["attack"],
                   a["mode"], json.dumps(a["params"], sort_keys=True), json.dumps(a["eps"]))  # fmt: skip
            group = groups.setdefault(key, {"card": card, "attack": a, "defenses": [], "queries": []})
            group["defenses"].append(defense_label(card["defense"]))
            same = (a["attack"], a["mode"], a["params"])
            made = [r["queries_per_sample"] for r in card["robust"] if (r["attack"], r["mode"], r["params"]) == same]
            group["queries"] += [q for q in made if q is not None]
    rows = []
    for group in groups.values():
        card, a = group["card"], group["attack"]
        tm, tensor = card["threat_model"], card["threat_model"].get("input") or {}
        eps = a["eps"]
        rows.append({
            "model": card["model"], "precision": card["precision"], "attack": a["attack"], "mode": a["mode"],
            "norm": ", ".join(dict.fromkeys(e["norm"] for e in eps)),
            "eps (input units)": ", ".join(f"{e['eps']:g}" for e in eps),
            "eps (input steps)": ", ".join("-" if e["steps"] is None else f"{e['steps']:.3g}" for e in eps),
            "attack's norm": a["attack_norm"] + (" (eps bounds it in Linf)" if a["eps_kind"] == "bound"
                                                 and any(e["eps"] > 0 for e in eps) else ""),
            "input": f"{tensor.get('dtype')}, scale {tensor.get('scale', float('nan')):.4g}, zero point "
                     f"{tensor.get('zero_point')}" if tensor else None,
            "input range": f"[{tensor['range'][0]:g}, {tensor['range'][1]:g}]" if tensor else None,
            "parameters": _params_label(a["params"]),
            "max queries per sample": a["max_queries"],
            "queries made per sample": float(np.mean(group["queries"])) if group["queries"] else None,
            "samples": tm["samples"], "seeds": ", ".join(map(str, tm["seeds"])), "ART": tm["art_version"],
            "defenses": ", ".join(group["defenses"]),
        })  # fmt: skip
    columns = ["model", "precision", "attack", "mode", "norm", "eps (input units)", "eps (input steps)",
               "attack's norm", "input", "input range", "parameters", "max queries per sample",
               "queries made per sample", "samples", "seeds", "ART", "defenses"]  # fmt: skip
    return {"columns": columns, "rows": rows}


# ---- attacks x defenses ---------------------------------------------------------------------------------------


def heatmap(results: dict) -> dict:
    """Device robust accuracy, one row per (model, precision, attack, eps, mode), one column per defense ("none"
    first), averaged over seeds; None where that condition was not run."""
    cells: dict = {}
    defenses = ["none"]
    for r in results["runs"]:
        label = defense_label(r.get("defense"))
        if label not in defenses:
            defenses.append(label)
        key = (r.get("model"), r.get("precision"), r["attack"], r["eps"], r.get("mode", "transfer"))
        cells.setdefault(key, {}).setdefault(label, []).append(r["accuracy"]["device"])
    rows = []
    for (model, precision, attack, eps, mode), values in cells.items():
        row = {"model": model, "precision": precision, "attack": attack, "eps": eps, "mode": mode}
        row.update({d: float(np.mean(values[d])) if d in values else None for d in defenses})
        rows.append(row)
    return {"columns": ["model", "precision", "attack", "eps", "mode", *defenses], "rows": rows, "defenses": defenses}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heatmap_plot(results: dict) -> str | None:
    """The heat map of heatmap(): attacks (rows) x defenses (columns), one panel per model and precision."""
    table = heatmap(results)
    if not table["rows"]:
        return None
    plt = _pyplot()
    defenses = table["defenses"]
    groups: dict = {}
    for row in table["rows"]:
        groups.setdefault((row["model"], row["precision"]), []).append(row)
    height = sum(0.34 * len(rows) + 1.0 for rows in groups.values())
    fig, axes = plt.subplots(len(groups), 1, figsize=(2.6 + 1.25 * len(defenses), height), squeeze=False,
                             gridspec_kw={"height_ratios": [len(rows) for rows in groups.values()]})  # fmt: skip
    cmap = plt.get_cmap("RdYlGn").with_extremes(bad="#dddddd")
    for ax, ((model, precision), rows) in zip(axes[:, 0], groups.items(), strict=True):
        values = np.array([[np.nan if r[d] is None else r[d] for d in defenses] for r in rows], dtype=float)
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=1, aspect="auto")
        for (i, j), v in np.ndenumerate(values):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="black")
        ax.set_yticks(range(len(rows)), [attack_label(r) for r in rows], fontsize=8)
        ax.set_xticks(range(len(defenses)), [d.replace(" (", "\n(", 1).replace(", ", ",\n") for d in defenses],
                      fontsize=8)  # fmt: skip
        ax.xaxis.tick_top()
        ax.set_title(f"{model} {precision}: device top-1 accuracy", fontsize=9, pad=36)
        fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    fig.tight_layout()
    png = _png(fig)
    plt.close(fig)
    return png


# ---- disagreement ---------------------------------------------------------------------------------------------


def disagreement_table(results: dict) -> dict:
    """Per condition: the share of samples where the device's top-1 differs from the float model's and from the
    desktop TFLite interpreter's, how many, and the device's mean top-1 margin on them."""
    rows = []
    for r in results["runs"]:
        row = _condition(r)
        row["samples"] = r.get("samples")
        for other in ("float", "tflite"):
            d = (r.get("disagreement") or {}).get(f"device_vs_{other}") or {}
            row[f"vs {other}: rate"] = d.get("rate")
            row[f"vs {other}: samples"] = d.get("samples")
            row[f"vs {other}: device margin"] = d.get("device_margin_mean")
        rows.append(row)
    columns = [*CONDITION, "samples"] + [f"vs {o}: {k}" for o in ("float", "tflite")
                                           for k in ("rate", "samples", "device margin")]  # fmt: skip
    return {"columns": columns, "rows": rows}


def on_device_table(results: dict) -> dict:
    """Per on-device run: the device queries the attack made, and the zero density of finite-difference gradient
    estimates on the device at each probe step h (campaign.GRADIENT_PROBE)."""
    rows, steps = [], []
    for r in results["runs"]:
        if r.get("mode") != "on-device":
            continue
        row = {**_condition(r), "queries": r.get("queries"), "device accuracy": r["accuracy"]["device"]}
        for h in (r.get("gradient_probe") or {}).get("h", []):
            column = f"zero gradients, h = {h['h']:.2g} ({h['input_steps']:.2g} input steps)"
            steps.append(column)
            row[column] = h["zero_density"]
        rows.append(row)
    columns = [*CONDITION, "queries", "device accuracy", *dict.fromkeys(steps)]
    return {"columns": columns, "rows": [dict.fromkeys(columns) | row for row in rows]}


def _series_name(row: dict, several_builds: bool, several_seeds: bool) -> str:
    parts = [_build_label(row["model"], row["precision"], several_builds), attack_label(row)]
    if row["defense"] != "none":
        parts.append(f"+ {row['defense']}")
    if several_seeds:
        parts.append(f"seed {row['seed']}")
    return " ".join(p for p in parts if p)


def _several(rows: list[dict]) -> tuple[bool, bool]:
    return len({(r["model"], r["precision"]) for r in rows}) > 1, len({r["seed"] for r in rows}) > 1


def disagreement_plot(results: dict) -> str | None:
    """Per condition, the device's disagreement rate with the float model and with TFLite (left) and its mean top-1
    margin on the disagreeing samples (right): small margins mean the disagreements sit at the boundary."""
    rows = disagreement_table(results)["rows"]
    if not rows:
        return None
    plt = _pyplot()
    builds, seeds = _several(rows)
    names = [_series_name(r, builds, seeds) for r in rows]
    y = np.arange(len(rows))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.28 * len(rows) + 1.4), sharey=True)
    for ax, key, title in ((left, "rate", "share of samples"), (right, "device margin", "device top-1 margin")):
        for k, (other, color) in enumerate((("float", "#4c72b0"), ("tflite", "#dd8452"))):
            values = [np.nan if r[f"vs {other}: {key}"] is None else r[f"vs {other}: {key}"] for r in rows]
            ax.barh(y + (k - 0.5) * 0.38, values, height=0.38, color=color,
                    label=f"device vs {'float (Keras)' if other == 'float' else 'TFLite'}")  # fmt: skip
            if key == "rate":
                for i, r in enumerate(rows):
                    if r[f"vs {other}: samples"]:
                        ax.text(values[i], i + (k - 0.5) * 0.38, f" {r[f'vs {other}: samples']}/{r['samples']}",
                                va="center", fontsize=6)  # fmt: skip
        ax.set_xlabel(title)
        ax.grid(axis="x", alpha=0.3)
    left.set_title("device top-1 differs", fontsize=9)
    right.set_title("margin on the samples that differ", fontsize=9)
    left.set_yticks(y, names, fontsize=7)
    left.invert_yaxis()
    left.set_xlim(0, 1)
    left.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    png = _png(fig)
    plt.close(fig)
    return png


# ---- distance to the decision boundary ------------------------------------------------------------------------


def boundary_table(results: dict) -> dict:
    """Per condition of a minimal-perturbation attack: the float and the quantized model's distance to their
    decision boundary along the attack's direction (metrics.boundary_distance)."""
    rows = []
    for r in results["runs"]:
        b = r.get("boundary")
        if not b:
            continue
        row = _condition(r)
        row.update({"samples": b["samples"], "perturbed": b["perturbed"]})
        for model in ("float", "quantized"):
            m = b.get(model) or {}
            row[f"{model}: flipped"] = m.get("samples")
            for norm in ("l2", "linf"):
                for stat in ("mean", "median"):
                    row[f"{model}: {norm} {stat}"] = (m.get(norm) or {}).get(stat)
        both = b.get("both") or {}
        row["both: flipped"] = both.get("samples")
        row["both: float l2 median"] = (both.get("float_l2") or {}).get("median")
        row["both: quantized l2 median"] = (both.get("quantized_l2") or {}).get("median")
        row["both: quantized closer"] = both.get("quantized_closer")
        rows.append(row)
    columns = [*CONDITION, "samples", "perturbed"]
    for model in ("float", "quantized"):
        columns += [f"{model}: flipped"] + [f"{model}: {n} {s}" for n in ("l2", "linf") for s in ("mean", "median")]
    columns += ["both: flipped", "both: float l2 median", "both: quantized l2 median", "both: quantized closer"]
    return {"columns": columns, "rows": rows}


def boundary_plot(results: dict) -> str | None:
    """Median distance to the decision boundary, float vs quantized, L2 and L-inf, one pair of bars per condition
    with the number of samples each median is over; and, on the samples that flip both models, the share where
    the quantized model's boundary is the closer one."""
    rows = boundary_table(results)["rows"]
    if not rows:
        return None
    plt = _pyplot()
    builds, seeds = _several(rows)
    names = [_series_name(r, builds, seeds) for r in rows]
    y = np.arange(len(rows))
    fig, axes = plt.subplots(1, 3, figsize=(13, 0.42 * len(rows) + 1.6), sharey=True,
                             gridspec_kw={"width_ratios": [2, 2, 1.2]})  # fmt: skip
    for ax, norm, title in ((axes[0], "l2", "L2"), (axes[1], "linf", "L-inf")):
        models = (("float", "#4c72b0", "float (Keras)"), ("quantized", "#c44e52", "quantized (TFLM, = device)"))
        for k, (model, color, label) in enumerate(models):
            values = np.array([np.nan if r[f"{model}: {norm} median"] is None else r[f"{model}: {norm} median"]
                               for r in rows])  # fmt: skip
            offset = (k - 0.5) * 0.38
            ax.barh(y + offset, values, height=0.38, color=color, label=label)
            for i, (v, r) in enumerate(zip(values, rows, strict=True)):
                if not np.isnan(v):
                    ax.text(v, i + offset, f" n={r[f'{model}: flipped']}", va="center", fontsize=6)
        ax.set_xlabel(f"median {title} distance (input units)")
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.15)
    closer = np.array([np.nan if r["both: quantized closer"] is None else r["both: quantized closer"] for r in rows])
    axes[2].barh(y, closer, height=0.5, color="#8172b2")
    for i, (v, r) in enumerate(zip(closer, rows, strict=True)):
        if not np.isnan(v):
            axes[2].text(v, i, f" n={r['both: flipped']}", va="center", fontsize=6)
    axes[2].axvline(0.5, color="#555", linewidth=0.8, linestyle=":")
    axes[2].set_xlim(0, 1.15)
    axes[2].set_xlabel("share, quantized boundary closer\n(samples flipping both)")
    axes[2].grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, names, fontsize=8)
    axes[0].invert_yaxis()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=2, fontsize=8, bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    png = _png(fig)
    plt.close(fig)
    return png


# ---- randomized smoothing ------------------------------------------------------------------------------------


def smoothing_table(results: dict) -> dict:
    """Per condition of a smoothing build (runs[].smoothing): the smoothed classifier's accuracy (an abstention
    counts as wrong), the share it abstains on, the mean certified radius (0 for a wrong or abstained sample) and
    the mean over the samples it certifies right, certified accuracy at each radius (the largest radius being what
    n votes all for one class certify), whether the device's votes
    equal TFLM's, and the device's count per input and per copy against the undefended build's per input."""
    rows, radii = [], []
    for r in results["runs"]:
        s = r.get("smoothing")
        if not s:
            continue
        row = {
            **_condition(r),
            "sigma": s["sigma"],
            "n": s["n"],
            "alpha": s["alpha"],
            "largest radius": s["radius_largest"],
            "samples": r.get("samples"),
            "smoothed accuracy": s["accuracy"],
            "abstained": s["abstained"],
            "mean certified radius": s["radius_mean"],
            "mean radius, certified right": s["radius_mean_right"],
        }
        for radius, value in s["certified_accuracy"].items():
            radii.append(f"certified accuracy at {radius}")
            row[radii[-1]] = value
        cost = s["cost"]
        row.update({"votes = TFLM (bit-exact)": r["agreement"]["device_vs_tflm_bit_exact"], "unit": cost["unit"],
                    "per input": cost["per_input"], "per copy": cost["per_copy"],
                    "undefended per input": cost["undefended_per_input"], "x undefended": cost["ratio"]})  # fmt: skip
        rows.append(row)
    columns = [*CONDITION, "sigma", "n", "alpha", "largest radius", "samples", "smoothed accuracy", "abstained",
               "mean certified radius", "mean radius, certified right", *dict.fromkeys(radii),
               "votes = TFLM (bit-exact)", "unit", "per input", "per copy", "undefended per input",
               "x undefended"]  # fmt: skip
    return {"columns": columns, "rows": [dict.fromkeys(columns) | row for row in rows]}


# ---- examples of adversarial inputs ---------------------------------------------------------------------------


def example_groups(results: dict) -> list[dict]:
    """results["examples"] grouped for one figure each: per (model, precision, defense), no defense first."""
    groups: dict = {}
    for entry in results.get("examples") or []:
        key = (entry["model"], entry["precision"], json.dumps(entry.get("defense"), sort_keys=True))
        groups.setdefault(key, {"model": entry["model"], "precision": entry["precision"],
                                "defense": defense_label(entry.get("defense")), "conditions": []})  # fmt: skip
        groups[key]["conditions"].append(entry)
    return sorted(groups.values(), key=lambda g: g["defense"] != "none")


def _show(ax, image: np.ndarray, lo: float, hi: float) -> None:
    """An input (H, W, 1 or 3) over the input tensor's whole range [lo, hi]."""
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=lo, vmax=hi)
    else:
        ax.imshow(np.clip((image - lo) / (hi - lo), 0, 1))


def examples_plot(group: dict) -> str | None:
    """A few samples of each attack in one (model, precision, defense) group: the clean input, the adversarial
    input as the device received it (its quantized input, dequantized) and the perturbation between them, with
    the true label and the device's top-1 on each."""
    from tinyrobust.campaign.metrics import decode

    conditions = [c for c in group["conditions"] if c["samples"]]
    if not conditions:
        return None
    plt = _pyplot()
    per_row = max(len(c["samples"]) for c in conditions)
    cols = 3 * per_row
    fig, axes = plt.subplots(len(conditions), cols, figsize=(1.05 * cols + 1.2, 1.3 * len(conditions) + 0.3),
                             squeeze=False)  # fmt: skip
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    for row, condition in enumerate(conditions):
        info = np.iinfo(condition["dtype"])
        lo, hi = ((np.array([info.min, info.max], float) - condition["zero_point"]) * condition["scale"]).tolist()
        axes[row, 0].set_ylabel(attack_label(condition).replace(" ", "\n", 1), fontsize=8, rotation=0,
                                ha="right", va="center", labelpad=8)  # fmt: skip
        for k, sample in enumerate(condition["samples"]):
            clean, adversarial = decode(condition, sample, "clean"), decode(condition, sample, "input")
            delta = adversarial - clean
            scale = float(np.abs(delta).max()) or 1.0
            a_clean, a_adv, a_delta = axes[row, 3 * k : 3 * k + 3]
            _show(a_clean, clean, lo, hi)
            _show(a_adv, adversarial, lo, hi)
            if clean.shape[-1] == 1:
                a_delta.imshow(delta[..., 0], cmap="RdBu_r", vmin=-scale, vmax=scale)
            else:
                a_delta.imshow(np.clip(0.5 + delta / (2 * scale), 0, 1))
            wrong = sample["device_top1"] != sample["label"]
            a_clean.set_title(f"true {sample['label']}, dev {sample['clean_top1']}", fontsize=7)
            a_adv.set_title(f"dev {sample['device_top1']}", fontsize=7, color="#b00" if wrong else "black",
                            fontweight="bold" if wrong else "normal")  # fmt: skip
            a_delta.set_title(f"\u00b1{float(np.abs(delta).max()):.2g}", fontsize=7)
            if row == 0:
                for ax, what in zip((a_clean, a_adv, a_delta), ("clean", "adversarial", "perturbation"), strict=True):
                    ax.set_xlabel(what, fontsize=6)
                    ax.xaxis.set_label_position("top")
    fig.subplots_adjust(wspace=0.08, hspace=0.55)
    png = _png(fig)
    plt.close(fig)
    return png


# ---- what produced the run ------------------------------------------------------------------------------------


def provenance_table(results: dict) -> dict:
    """The versions, seeds, board, host and model hashes of the run, one item a row."""
    rows = [{"item": k, "value": v} for k, v in (results.get("versions") or {}).items()]
    if not rows:
        rows.append({"item": "tinyrobust", "value": results.get("tinyrobust_version")})
    seeds = results.get("seeds", [results.get("settings", {}).get("seed")])
    rows.append({"item": "seeds", "value": ", ".join(str(s) for s in seeds)})
    board = results.get("board") or {}
    rows.append({"item": "board", "value": f"{board.get('name')} ({board.get('core')}"
                                           f"{', emulated' if board.get('emulated') else ''})"})  # fmt: skip
    host = results.get("host") or {}
    if host:
        rows.append({"item": "host", "value": f"Python {host.get('python')} on {host.get('machine')}"})
    rows.append({"item": "jobs", "value": results.get("jobs", 1)})
    for b in results.get("builds") or []:
        name = " ".join(str(p) for p in (b["model"], b["precision"], b.get("defense")) if p)
        rows.append({"item": f"model SHA-256 {name}", "value": b["sha256"]})
    rows.append({"item": "wall seconds", "value": results.get("wall_seconds")})
    return {"columns": ["item", "value"], "rows": rows}


# ---- the report and the tables --------------------------------------------------------------------------------


def tables(results: dict) -> dict[str, dict]:
    """Every table of the report, by CSV file name: {"columns": [...], "rows": [{column: value}]}."""
    found = {}
    for name, table in (("runs", results["runs"]), ("builds", results.get("builds", []))):
        flat = rows(table)
        found[name] = {"columns": list(dict.fromkeys(k for row in flat for k in row)), "rows": flat}
    found["cards"] = cards_table(results)
    found["threat_model"] = threat_model_table(results)
    found["heatmap"] = heatmap(results)
    found["disagreement"] = disagreement_table(results)
    found["boundary"] = boundary_table(results)
    found["smoothing"] = smoothing_table(results)
    found["on_device"] = on_device_table(results)
    found["provenance"] = provenance_table(results)
    return found


def write_report(results: dict, path: Path) -> None:
    found = tables(results)
    groups = example_groups(results)
    for group in groups:
        group["png"] = examples_plot(group)
    campaign = results.get("campaign")
    html = render_template(
        "report.html.j2",
        results=results,
        engines=engines(precision_of(results)),
        accuracy_png=accuracy_plot(results),
        robust_png=robust_plot(results),
        memory_png=memory_plot(results["memory"]),
        heatmap_png=heatmap_plot(results),
        disagreement_png=disagreement_plot(results),
        boundary_png=boundary_plot(results),
        examples=[g for g in groups if g["png"]],
        tables=found,
        campaign_json=json.dumps(campaign or results["settings"], indent=2),
        campaign_toml=to_toml(campaign) if campaign else None,
        settings_json=json.dumps(results["settings"], indent=2) if results.get("settings") != campaign else None,
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
    """Every table of the report as a CSV file beside results.json: runs.csv (one row per condition, nested values
    flattened), builds.csv (one row per build), cards.csv (the result cards as a leaderboard, one row per model,
    precision and defense) and threat_model.csv (what the cards were measured under), heatmap.csv (attacks x
    defenses), disagreement.csv, boundary.csv
    (minimal-perturbation attacks), smoothing.csv (smoothing builds) and provenance.csv (versions, seeds, hashes); a
    table without rows is left out, except runs and builds."""
    for name, table in tables(results).items():
        if not table["rows"] and name not in ("runs", "builds"):
            (out / f"{name}.csv").unlink(missing_ok=True)
            continue
        with open(out / f"{name}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, table["columns"])
            writer.writeheader()
            writer.writerows(table["rows"])
