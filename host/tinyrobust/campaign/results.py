"""A campaign's results, computed from what its store holds: results.json, the CSV tables and report.html.

A row of `runs` is one condition of one build; `builds` has each build's memory and latency."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import TypedDict

import numpy as np

from tinyrobust import __version__
from tinyrobust.campaign import attacks, cards, metrics
from tinyrobust.campaign.adversarial import input_domain, probe_key
from tinyrobust.campaign.builds import Build, Condition
from tinyrobust.campaign.config import Campaign
from tinyrobust.campaign.store import Store
from tinyrobust.device.boards import Board
from tinyrobust.device.counter import count_unit, latency
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
    smoothing: dict | None  # a smoothing build's certificates and cost (Results._smoothing)


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
        (results are assembled after each one); None without its clean condition, or when stages or noise on the
        device change the inputs (the stored inputs are then not what the network reads)."""
        compiled = build.compiled
        if clean is None or len(clean["labels"]) != len(outputs["labels"]) or compiled.preprocess or compiled.smoothing:
            return None
        if cid not in self.boundaries:
            self.boundaries[cid] = metrics.boundary_distance(clean["input"], outputs["input"], build.compiled.input,
                                                             build.model.tflite, build.model.keras)  # fmt: skip
        return self.boundaries[cid]

    def _smoothing(self, build: Build, condition: Condition, cid: int, outputs: dict) -> dict:
        """metrics.smoothing_metrics of a smoothing build's condition on the device's votes, with its cost: the
        device's median count per input (all n copies, in the counter's unit), per copy, and against the undefended
        build's on its clean inputs of the same seed."""
        s = build.compiled.smoothing
        largest = float(metrics.certify(np.array([[s.n]]), s.sigma, s.alpha)[2][0])  # every copy voting one class
        if np.isnan(largest):
            self.notes.append(f"{build.name} {build.precision} randomized-smoothing: {s.n} copies certify nothing "
                              f"at alpha {s.alpha:g} (alpha^(1/n) <= 0.5), so every sample abstains")  # fmt: skip
        result = {"sigma": s.sigma, "n": s.n, "alpha": s.alpha,
                  "radius_largest": None if np.isnan(largest) else largest}  # fmt: skip
        result.update(metrics.smoothing_metrics(outputs["device"], outputs["labels"], s.sigma, s.alpha))
        unit, per_tick, _ = count_unit(self.board, build.counter)
        per_input = float(np.median(self.store.ticks([cid]))) * per_tick
        plain = [c for b, k, c in self.conditions if (b.name, b.precision, b.defense, k.attack, k.defense, k.seed)
                 == (build.name, build.precision, None, "none", None, condition.seed)]  # fmt: skip
        plain_ticks = self.store.ticks(plain)
        undefended = float(np.median(plain_ticks)) * per_tick if plain_ticks else None
        result["cost"] = {"unit": unit, "per_input": per_input, "per_copy": per_input / s.n,
                          "undefended_per_input": undefended,
                          "ratio": None if not undefended else per_input / undefended}  # fmt: skip
        return result

    def _runs(self) -> tuple[list[Run], list[dict]]:
        """Every condition measured in full, and the adversarial examples the report shows."""
        store = self.store
        runs, examples = [], []
        clean: dict = {}
        self.worst = cards.WorstCase()
        for build, condition, cid in self.conditions:
            if store.pending(cid) or not store.has_samples(cid):
                continue
            outputs = store.outputs(cid, build.compiled.device_output.dtype, build.compiled.input.dtype)
            defense = None if condition.defense is None else condition.defense.key()
            clean_key = (build.name, build.precision, condition.seed, json.dumps(defense, sort_keys=True))
            if condition.attack == "none":
                clean[clean_key] = outputs
            row = Run(model=build.name, precision=build.precision, attack=condition.attack, eps=condition.eps,
                      mode=condition.mode, defense=defense, seed=condition.seed, params=condition.params,
                      samples=len(outputs["labels"]))  # fmt: skip
            row.update(metrics.condition_metrics(outputs, clean.get(clean_key), build.compiled, condition.mode))
            self.worst.add(row, outputs)
            if condition.mode == "on-device":
                row["queries"] = store.queries(cid)
                row["gradient_probe"] = store.get_meta(probe_key(build, condition))
            if build.compiled.smoothing is not None:
                row["smoothing"] = self._smoothing(build, condition, cid, outputs)
            if condition.attack != "none" and attacks.ATTACKS[condition.attack].eps == "bound":
                row["boundary"] = self._boundary(build, cid, outputs, clean.get(clean_key))
            if condition.attack != "none" and condition.seed == self.campaign.seeds[0] and clean_key in clean:
                shown = metrics.examples(outputs, clean[clean_key], build.compiled.input)  # for the report's figure
                if shown:
                    examples.append({k: row[k] for k in ("model", "precision", "attack", "eps", "mode", "defense")})
                    examples[-1].update(shown)
            runs.append(row)
        return runs, examples

    def _card_inputs(self) -> dict[tuple, cards.CardInput]:
        """Each card's input tensor and the range its attacks keep inputs in, from the build its conditions ran on."""
        found = {}
        for build, condition, _ in self.conditions:
            defense = None if condition.defense is None else condition.defense.key()
            card = cards.key(build.name, build.precision, defense)
            if card not in found:
                tensor, (lo, hi) = build.compiled.input, input_domain(build)
                scale, zero = float(tensor.scale[0]), int(tensor.zero_point[0])
                found[card] = cards.CardInput(dtype=tensor.type_name, scale=scale, zero_point=zero, range=[lo, hi])
        return found

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
            "cards": cards.cards(runs, self.worst, self._card_inputs(), self.campaign.attacks,
                                 versions()["adversarial-robustness-toolbox"]),
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
