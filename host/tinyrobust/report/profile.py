"""profile's page: per-layer latency bars (every board side by side), the arena's buffers over the schedule, each
board's layers with the sum check and memory, and the cross-board table."""

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


def arena_plot(profile: dict) -> str:
    """The arena over the schedule: one bar per buffer, over the steps it is live, at its offset in the arena and as
    high as its bytes, labelled with the step that writes it; the planned arena's size as a line."""
    plt = _pyplot()
    arena = profile["arena"]
    steps = len(arena["steps"])
    fig, ax = plt.subplots(figsize=(max(6.0, 2 + 0.42 * steps), 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, b in enumerate(arena["buffers"]):
        left = b["first"] - 0.4
        right = b["last"] + 0.4 if b["last"] < steps else steps - 0.5  # an output: live until the host reads it
        ax.bar(left, b["bytes"], width=right - left, bottom=b["offset"], align="edge", color=colors[j % len(colors)],
               alpha=0.8, edgecolor="black", linewidth=0.5)  # fmt: skip
        if b["bytes"] >= 0.05 * arena["bytes"]:
            label = "input" if b["written_by"] is None else f"{b['written_by']}"
            ax.text((left + right) / 2, b["offset"] + b["bytes"] / 2, label, ha="center", va="center", fontsize=7)
    ax.axhline(arena["bytes"], color="grey", linestyle="--", linewidth=1)
    ax.text(steps - 0.5, arena["bytes"], f"arena {arena['bytes']:,} B", ha="right", va="bottom", fontsize=8)
    ax.set_xticks(range(steps), [f"{s['index']} {s['op']}" for s in arena["steps"]], rotation=60, ha="right",
                  fontsize=7)  # fmt: skip
    ax.set_xlim(-0.6, steps - 0.4)
    ax.set_ylim(0, arena["bytes"] * 1.08)
    ax.set_ylabel("arena offset (bytes)")
    ax.set_xlabel("step of the schedule (a bar is labelled with the step that writes it)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{profile['model']} ({profile['precision']}): arena buffers over the schedule", fontsize=10)
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
        arena=boards[0]["arena"],  # the same on every board: the compiled schedule's
        arena_png=arena_plot(boards[0]),
    )
    path.write_text(html)
