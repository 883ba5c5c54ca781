"""Result cards: one per model, precision and defense, read as a row of a robustness leaderboard (RobustBench's:
clean accuracy, robust accuracy under each attack at each eps, and the worst case over the attacks) beside the
threat model that produced it: the norm and eps of each attack, in input units and in steps of the input tensor's
quantization, the valid input range, each attack's parameters (its preset with the config's overrides) and the ART
version, the samples and seeds, and for on-device attacks the queries per sample; and the device's bit-exactness
with TFLM on every inference of the card."""

from __future__ import annotations

import json
from typing import TypedDict

import numpy as np

from tinyrobust.campaign import attacks

NORMS = {"inf": "Linf", "2": "L2", "1": "L1", "0": "L0"}  # attacks.py's norms, as leaderboards name them
UNBOUNDED = "unbounded"


def threat(attack: str, eps: float) -> tuple[str, float]:
    """The threat model an attack at eps measures, as (norm, eps): a budget attack's eps is a budget in its own norm;
    a minimal-perturbation attack's eps bounds it in L-inf (attacks.bound), and at eps 0 it is unbounded."""
    spec = attacks.ATTACKS[attack]
    if spec.eps == "budget":
        return NORMS[spec.norm], float(eps)
    return ("Linf", float(eps)) if eps > 0 else (UNBOUNDED, 0.0)


def key(model: str, precision: str, defense: dict | None) -> tuple[str, str, str]:
    """The card a run belongs to: its model, precision and defense."""
    return model, precision, json.dumps(defense, sort_keys=True)


class CardInput(TypedDict):
    """The input tensor of a card's build and the range attacks keep their inputs in (adversarial.input_domain)."""

    dtype: str
    scale: float
    zero_point: int
    range: list[float]


class Card(TypedDict):
    model: str
    precision: str
    defense: dict | None
    threat_model: dict  # input (CardInput), samples, seeds, art_version, attacks
    clean: dict[str, float | None]  # accuracy of each engine, mean over seeds
    robust: list[dict]  # device accuracy per attack, mode and eps, mean over seeds
    worst_case: list[dict]  # device accuracy per threat model, the per-sample worst case over its attacks
    device_vs_tflm_bit_exact: float | None  # share of the card's inferences whose outputs all equal TFLM's
    inferences: int


class WorstCase:
    """The per-sample worst case over attacks. At a threat model (norm, eps) a sample counts as robust only when the
    device classifies it right under every attack made at that threat model, as RobustBench counts AutoAttack's
    ensemble; the minimum of the attacks' accuracies would overstate it. Every condition of a seed runs the same
    samples in the same order, so the samples line up per seed."""

    def __init__(self):
        self.right: dict = {}  # (card, seed, norm, eps) -> whether the device is right on each sample
        self.attacks: dict = {}  # (card, norm, eps) -> the attacks made at that threat model

    def add(self, run: dict, outputs: dict) -> None:
        """A measured run (a row of results.json's runs) with its outputs (Store.outputs)."""
        if run["attack"] == "none":
            return
        card = key(run["model"], run["precision"], run.get("defense"))
        norm, eps = threat(run["attack"], run["eps"])
        right = outputs["device"].argmax(axis=1) == outputs["labels"]
        at = (card, run["seed"], norm, eps)
        self.right[at] = right & self.right[at] if at in self.right and len(self.right[at]) == len(right) else right
        name = run["attack"] + (" on-device" if run.get("mode") == "on-device" else "")
        self.attacks.setdefault((card, norm, eps), [])
        if name not in self.attacks[(card, norm, eps)]:
            self.attacks[(card, norm, eps)].append(name)

    def accuracy(self, card: tuple, norm: str, eps: float) -> float | None:
        """The share of samples robust at the threat model, mean over seeds."""
        shares = [float(np.mean(r)) for (c, _, n, e), r in self.right.items() if (c, n, e) == (card, norm, eps)
                  and len(r)]  # fmt: skip
        return float(np.mean(shares)) if shares else None


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def cards(runs: list[dict], worst: WorstCase, inputs: dict[tuple, CardInput], attack_specs: list,
          art_version: str) -> list[Card]:  # fmt: skip
    """One card per model, precision and defense of the runs (results.json's), in the runs' order. inputs maps a
    card (key) to its CardInput; attack_specs are the campaign's AttackSpecs (for their on-device query budgets)."""
    groups: dict = {}
    for r in runs:
        groups.setdefault(key(r["model"], r["precision"], r.get("defense")), []).append(r)
    found = []
    for card, rows in groups.items():
        model, precision, _ = card
        card_input = inputs.get(card)
        scale = card_input["scale"] if card_input else None

        def steps(eps: float, scale=scale) -> float | None:
            return eps / scale if scale and eps > 0 else None  # eps 0: an unbounded attack

        attacked: dict = {}
        for r in rows:
            if r["attack"] != "none":
                made = (r["attack"], r.get("mode", "transfer"), json.dumps(r.get("params") or {}, sort_keys=True))
                attacked.setdefault(made, {}).setdefault(float(r["eps"]), []).append(r)
        threat_attacks, robust = [], []
        for (name, mode, overrides), by_eps in attacked.items():
            params = attacks.parameters(name, json.loads(overrides))
            spec = next((a for a in attack_specs if (a.name, a.mode, json.dumps(a.params, sort_keys=True))
                         == (name, mode, overrides)), None)  # fmt: skip
            threat_attacks.append({
                "attack": name, "mode": mode, "eps_kind": attacks.ATTACKS[name].eps,
                "attack_norm": NORMS[attacks.ATTACKS[name].norm],
                "eps": [{"eps": eps, "norm": threat(name, eps)[0], "steps": steps(eps)} for eps in by_eps],
                "params": params,
                "max_queries": spec.max_queries if spec is not None and mode == "on-device" else None,
            })  # fmt: skip
            for eps, same in by_eps.items():
                queries = [r["queries"] / r["samples"] for r in same if r.get("queries") is not None and r["samples"]]
                robust.append({
                    "attack": name, "mode": mode, "params": params, "norm": threat(name, eps)[0],
                    "eps": eps, "eps_steps": steps(eps), "device": _mean(r["accuracy"]["device"] for r in same),
                    "queries_per_sample": _mean(queries),
                })  # fmt: skip
        threats = sorted({(r["norm"], r["eps"]) for r in robust}, key=lambda t: (t[0] == UNBOUNDED, t[0], t[1]))
        clean = [r for r in rows if r["attack"] == "none"]
        engines = list(clean[0]["accuracy"]) if clean else []
        inferences = sum(r["samples"] for r in rows)
        found.append(Card(
            model=model, precision=precision, defense=rows[0].get("defense"),
            threat_model={"input": card_input, "samples": max(r["samples"] for r in rows),
                          "seeds": sorted({r["seed"] for r in rows}), "art_version": art_version,
                          "attacks": threat_attacks},
            clean={e: _mean(r["accuracy"][e] for r in clean) for e in engines},
            robust=robust,
            worst_case=[{"norm": norm, "eps": eps, "eps_steps": steps(eps), "attacks": worst.attacks[(card, norm, eps)],
                         "device": worst.accuracy(card, norm, eps)} for norm, eps in threats
                        if (card, norm, eps) in worst.attacks],
            device_vs_tflm_bit_exact=sum(r["agreement"]["device_vs_tflm_bit_exact"] * r["samples"] for r in rows)
            / inferences if inferences else None,
            inferences=inferences,
        ))  # fmt: skip
    return found
