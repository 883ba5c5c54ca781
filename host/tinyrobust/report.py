"""report.html: accuracy under attack, agreement with the host references, latency and memory."""

from __future__ import annotations

import base64
import io
from pathlib import Path

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


def accuracy_plot(results: dict) -> str | None:
    """Accuracy vs eps, one panel per attack, the clean run at eps 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clean = next((r for r in results["runs"] if r["attack"] == "none"), None)
    names = sorted({r["attack"] for r in results["runs"] if r["attack"] != "none"})
    if clean is None:
        return None
    panels = names or ["none"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], panels, strict=True):
        runs = [clean] + sorted((r for r in results["runs"] if r["attack"] == name), key=lambda r: r["eps"])
        eps = [r["eps"] for r in runs]
        labels = engines(results["settings"]["precision"])
        for (key, label), style in zip(labels, ["-o", "--s", ":^", "-x"], strict=True):
            values = [r["accuracy"][key] for r in runs]
            if all(v is not None for v in values):
                ax.plot(eps, values, style, label=label, markersize=5)
        ax.set_title(name.upper() if name != "none" else "clean")
        ax.set_xlabel("eps (L-inf, input units)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("top-1 accuracy")
    axes[0][-1].legend(loc="lower left", fontsize=8)
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
        engines=engines(results["settings"]["precision"]),
        accuracy_png=accuracy_plot(results),
        memory_png=memory_plot(results["memory"]),
    )
    path.write_text(html)
