"""profile's page: per-layer latency bars (every board side by side), each board's layers with the sum check and
memory, and the cross-board table."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyrobust.report.html import _png, _pyplot
from tinyrobust.templates import render_template


def latency_bars(boards: list[dict]) -> str:
    """Each layer's count as a horizontal bar, first layer on top, one bar per board; shares of each board's
    inference instead when the boards count in different units."""
    plt = _pyplot()
    units = {b["unit"] for b in boards}
    key = "count" if len(units) == 1 else "share"
    layers = boards[0]["layers"]
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.32 * len(layers) * max(1, len(boards) * 0.6)))
    height = 0.8 / len(boards)
    rows = np.arange(len(layers))
    for j, board in enumerate(boards):
        values = [layer[key] for layer in board["layers"]]
        ax.barh(rows + (j - (len(boards) - 1) / 2) * height, values, height, label=board["board"])
    ax.set_yticks(rows, [f"{layer['index']} {layer['op']}" for layer in layers], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{next(iter(units))} per layer" if key == "count" else "share of the inference")
    ax.grid(axis="x", alpha=0.3)
    if len(boards) > 1:
        ax.legend(fontsize=8)
    ax.set_title(f"{boards[0]['model']} ({boards[0]['precision']})", fontsize=10)
    fig.tight_layout()
    png = _png(fig)
    plt.close(fig)
    return png


def write_profile_page(results: dict, path: Path) -> None:
    """The page of `tinyrobust profile --html`: results as profile.profile returns them, one board or several."""
    boards = results.get("boards", [results])
    html = render_template(
        "profile.html.j2",
        results=results,
        boards=boards,
        cross=results.get("cross_board"),
        bars_png=latency_bars(boards),
    )
    path.write_text(html)
