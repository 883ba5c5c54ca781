"""A campaign's results, computed from what its store holds: results.json, the CSV tables and report.html.

A row of `runs` is one condition of one build; `builds` has each build's memory and latency."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import TypedDict

from tinyrobust import __version__
from tinyrobust.campaign import attacks, metrics
from tinyrobust.campaign.adversarial import probe_key
from tinyrobust.campaign.builds import Build, Condition
from tinyrobust.campaign.config import Campaign
from tinyrobust.campaign.store import Store
from tinyrobust.device.boards import Board
from tinyrobust.device.counter import latency
from tinyrobust.device.pool import LinkStats


class Run(TypedDict, total=False):
    """One row of results.json's runs (metrics.condition_metrics adds the measured figures)."""

    model: str
    precision: str
    attack: str
    eps: float
    mode: str
    defense: dict | None
    seed: int
    params: dict
    samples: int
    accuracy: dict[str, float | None]
    agreement: dict[str, float]
    queries: int | None  # on-device runs: the device queries the attack made
    gradient_probe: dict | None  # on-device runs
    boundary: dict | None  # minimal-perturbation attacks


def versions() -> dict:
    import art
    import numpy
    import tensorflow

    return {
        "tinyrobust": __version__,
        "adversarial-robustness-toolbox": art.__version__,
        "tensorflow": tensorflow.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


class Results:
    """The builds and conditions a run measured, and the notes it made, assembled into results from the store."""

    def __init__(self, store: Store, campaign: Campaign, board: Board, settings: dict | None, jobs: int):
        self.store, self.campaign, self.board, self.settings, self.jobs = store, campaign, board, settings, jobs
        self.builds: list[Build] = []
        self.conditions: list[tuple[Build, Condition, int]] = []
        self.notes: list[str] = []
        self.boundaries: dict = {}  # condition id -> its distances to the decision boundary

    def _boundary(self, build: Build, cid: int, outputs: dict, clean: dict | None) -> dict | None:
        """metrics.boundary_distance of a minimal-perturbation attack's condition, computed once per condition
        (results are assembled after each one); None without its clean condition, or when stages on the device
        pre-process the inputs (the stored inputs are then not what the network reads)."""
        if clean is None or len(clean["labels"]) != len(outputs["labels"]) or build.compiled.preprocess:
            return None
        if cid not in self.boundaries:
            self.boundaries[cid] = metrics.boundary_distance(clean["input"], outputs["input"], build.compiled.input,
                                                             build.model.tflite, build.model.keras)  # fmt: skip
        return self.boundaries[cid]

    def _runs(self) -> tuple[list[Run], list[dict]]:
        """Every condition measured in full, and the adversarial examples the report shows."""
        store = self.store
        runs, examples = [], []
        clean: dict = {}
        for build, condition, cid in self.conditions:
            if store.pending(cid) or not store.has_samples(cid):
                continue
            outputs = store.outputs(cid, build.compiled.output.dtype, build.compiled.input.dtype)
            defense = None if condition.defense is None else condition.defense.key()
            clean_key = (build.name, build.precision, condition.seed, json.dumps(defense, sort_keys=True))
            if condition.attack == "none":
                clean[clean_key] = outputs
            row = Run(model=build.name, precision=build.precision, attack=condition.attack, eps=condition.eps,
                      mode=condition.mode, defense=defense, seed=condition.seed, params=condition.params,
                      samples=len(outputs["labels"]))  # fmt: skip
            row.update(metrics.condition_metrics(outputs, clean.get(clean_key), build.compiled, condition.mode))
            if condition.mode == "on-device":
                row["queries"] = store.queries(cid)
                row["gradient_probe"] = store.get_meta(probe_key(build, condition))
            if condition.attack != "none" and attacks.ATTACKS[condition.attack].eps == "bound":
                row["boundary"] = self._boundary(build, cid, outputs, clean.get(clean_key))
            if condition.attack != "none" and condition.seed == self.campaign.seeds[0] and clean_key in clean:
                shown = metrics.examples(outputs, clean[clean_key], build.compiled.input)  # for the report's figure
                if shown:
                    examples.append({k: row[k] for k in ("model", "precision", "attack", "eps", "mode", "defense")})
                    examples[-1].update(shown)
            runs.append(row)
        return runs, examples

    def assemble(self, link: LinkStats, wall_seconds: float) -> dict:
        runs, examples = self._runs()
        builds = [
            {
                "model": b.name,
                "precision": b.precision,
                "defense": b.slug or None,
                "sha256": b.compiled.model_hash.hex(),
                "input": {
                    "shape": list(b.compiled.input.shape),
                    "scale": float(b.compiled.input.scale[0]),
                    "zero_point": int(b.compiled.input.zero_point[0]),
                },
                "operators": b.compiled.op_counts,
                "memory": b.firmware.memory.as_dict(),
                "latency": latency(self.board, self.store.ticks(b.conditions), b.counter),
            }
            for b in self.builds
        ]
        first = self.builds[0] if self.builds else None
        board = self.board
        return {
            "tinyrobust_version": __version__,
            "model": None if first is None else {"name": first.model.name, **{k: builds[0][k] for k in
                                                                                ("sha256", "input", "operators")}},
            "board": {"name": board.name, "core": board.core, "fpu": board.fpu, "emulated": board.emulated},
            "memory": None if first is None else builds[0]["memory"],
            "latency": None if first is None else builds[0]["latency"],
            "builds": builds,
            "runs": runs,
            "examples": examples,
            "link": vars(link).copy(),
            "settings": self.settings or self.campaign.recorded(),
            "campaign": self.campaign.recorded(),
            "seeds": self.campaign.seeds,
            "versions": versions(),
            "jobs": self.jobs,
            "notes": list(dict.fromkeys(self.notes)),
            "host": {"python": platform.python_version(), "machine": platform.machine()},
            "wall_seconds": round(wall_seconds, 2),
        }  # fmt: skip


def save_results(results: dict, out: Path, report: bool = True) -> None:
    """results.json and the CSV tables; report.html (its plots take seconds) when asked."""
    from tinyrobust.report.html import write_csv, write_report

    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_csv(results, out)
    if report:
        write_report(results, out / "report.html")
