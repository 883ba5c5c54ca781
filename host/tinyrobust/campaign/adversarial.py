"""Making a condition's inputs: transfer attacks made on the float model, on-device attacks that query the
device, each bounded to its eps; host input defenses; and the zero-gradient probe of on-device runs."""

from __future__ import annotations

import json

import numpy as np

from tinyrobust.campaign import attacks
from tinyrobust.campaign.builds import Build, Condition
from tinyrobust.campaign.config import DefenseSpec
from tinyrobust.device.pool import Pool
from tinyrobust.model import reference, zoo

# On-device attacks query the device for this many samples at a time, each group with its share of the budget.
QUERY_GROUP = 10
# The zero-gradient probe of on-device mode: this many samples and input coordinates per sample, with
# finite-difference steps h of ZOO's default 1e-4 (in the float model's input units) and of one and four input
# quantization steps.
GRADIENT_PROBE = {"samples": 8, "coordinates": 16, "zoo_h": 1e-4, "input_steps": (1, 4)}
# Made attacks kept for reuse by later conditions, at most this many bytes of inputs.
MADE_BYTES = 1 << 30
# A transfer attack is made this many samples at a time (on a cluster, each batch is a Ray task), each batch seeded
# with the condition's seed plus its first sample's index; the default job's 200 samples make one batch.
ATTACK_BATCH = 200


class QueryBudgetSpent(Exception):
    pass


def attack_batches(x, y, seed: int):
    """A transfer attack's batches of ATTACK_BATCH samples, each with its seed: the condition's plus the index of
    its first sample, so that the batches are the same on one machine and on a cluster."""
    for start in range(0, len(x), ATTACK_BATCH):
        yield x[start : start + ATTACK_BATCH], y[start : start + ATTACK_BATCH], seed + start


def input_domain(build: Build) -> tuple[float, float]:
    """Where attacks keep their inputs: what the input tensor can represent, within the model's own input
    range when it has one (an int16x8 input's symmetric range reaches far below a pixel's 0)."""
    tensor = build.compiled.input
    limits = np.iinfo(tensor.dtype)
    lo, hi = reference.dequantize(np.array([limits.min, limits.max]), tensor).tolist()
    if build.model.input_range is not None:
        lo, hi = max(lo, build.model.input_range[0]), min(hi, build.model.input_range[1])
    return lo, hi


def probe_key(build: Build, condition: Condition) -> str:
    """The store's meta key of a build's gradient probe, for one defense and seed."""
    defense = None if condition.defense is None else condition.defense.key()
    return "gradient_probe " + json.dumps([build.name, build.precision, build.slug, defense, condition.seed])


class Adversary:
    """Makes inputs for the conditions, keeping made attacks and host defenses for the conditions that reuse
    them: the other eps of a minimal-perturbation attack, and every input defense of a transfer attack."""

    def __init__(self):
        self.made: dict = {}  # made attacks by key: (inputs, queries, unattacked), or a cluster's tasks making them
        self.defending: dict = {}  # host input defenses, made once (PixelDefend trains a PixelCNN)
        self.cluster = None  # a Ray cluster (campaign.cluster.Cluster) that makes transfer attacks as tasks

    def forget_attacks(self) -> None:
        """Drop the made attacks (a new model makes its own)."""
        self.made = {}

    def defense(self, spec: DefenseSpec | None, model: zoo.Model):
        """The function a host-side input defense applies to float inputs before quantization (identity for
        none, and for the defenses that are part of the build: on the device, or a retrained model).
        PixelDefend gets a PixelCNN trained on the model's training data (cached)."""
        key = (model.name, json.dumps(None if spec is None else spec.key(), sort_keys=True))
        if key not in self.defending:
            if spec is None or spec.builds_apart:
                self.defending[key] = lambda x: x
            else:
                configured = spec.configured()
                if spec.name == "pixeldefend" and configured.params["pixel_cnn"] is None:
                    from tinyrobust.campaign.defenses import pixel_cnn

                    configured.params["pixel_cnn"] = pixel_cnn(model.x_train)
                self.defending[key] = configured.apply
        return self.defending[key]

    def inputs(self, pool: Pool, build: Build, condition: Condition, x, y) -> tuple[np.ndarray, int, int]:
        """The condition's float inputs, before its host defense: x itself when clean, else the attack's
        output bounded to eps; with the device queries it made and the samples it left clean."""
        if condition.attack == "none":
            return x, 0, 0
        clip = input_domain(build)
        x_adv, queries, unattacked = self._unbounded(pool, build, condition, x, y, clip)
        return attacks.bound(condition.attack, x, x_adv, condition.eps, clip), queries, unattacked

    def _key(self, build: Build, condition: Condition) -> str:
        """What a made attack serves. A minimal-perturbation attack runs once for all its eps, which only bound
        its output. A transfer attack, made on the float model, serves every defense that keeps that model."""
        eps_free = attacks.ATTACKS[condition.attack].eps == "bound"
        on_device = condition.mode == "on-device"
        retrained = build.defense is not None and build.defense.where != "device"
        attacked = build.slug if on_device or retrained else ""  # the float model's, or the device's, build
        defense = condition.defense.key() if on_device and condition.defense else None
        return json.dumps([build.name, build.precision, attacked, condition.attack, condition.mode, condition.params,
                           defense, condition.seed, condition.max_queries, None if eps_free else condition.eps],
                          sort_keys=True)  # fmt: skip

    def submit(self, build: Build, condition: Condition, x, y) -> None:
        """On a cluster, start making a transfer attack's batches as Ray tasks, so that they are made on other
        nodes while the devices measure the conditions before it."""
        if self.cluster is None or condition.mode != "transfer" or condition.attack == "none":
            return
        key = self._key(build, condition)
        if key not in self.made:
            clip = input_domain(build)
            self.made[key] = [self.cluster.attack(build.model.keras, condition.attack, xs, ys, condition.eps, seed,
                                                  condition.params, clip)
                              for xs, ys, seed in attack_batches(x, y, condition.seed)]  # fmt: skip

    def _unbounded(self, pool: Pool, build: Build, condition: Condition, x, y, clip):
        """The attack's own output with the device queries it made and the samples it left clean."""
        key = self._key(build, condition)
        if key not in self.made:
            if condition.mode == "transfer" and self.cluster is not None:
                self.submit(build, condition, x, y)
            elif condition.mode == "transfer":
                classifier = attacks.classifier(build.model.keras, clip)
                made = np.concatenate([attacks.unbounded(condition.attack, classifier, xs, ys, condition.eps, seed,
                                                         condition.params)
                                       for xs, ys, seed in attack_batches(x, y, condition.seed)])  # fmt: skip
                self.made[key] = (made, 0, 0)
            else:
                self.made[key] = self._attack_device(pool, build, condition, x, y, clip)
        if isinstance(self.made[key], list):  # a cluster's tasks
            self.made[key] = (np.concatenate([self.cluster.attack_result(r) for r in self.made[key]]), 0, 0)
        made = self.made[key]
        kept = [k for k, m in self.made.items() if isinstance(m, tuple)]
        while len(kept) > 1 and sum(self.made[k][0].nbytes for k in kept) > MADE_BYTES:
            del self.made[kept.pop(0)]  # the oldest
        return made

    def _attack_device(self, pool: Pool, build: Build, condition: Condition, x, y, clip):
        """A gradient-free attack that queries the device: each query is quantized, sent, and its output
        dequantized; groups of QUERY_GROUP samples each get max_queries per sample."""
        compiled = build.compiled
        defend = self.defense(condition.defense, build.model)
        spent = {"queries": 0, "budget": 0}

        def predict(batch: np.ndarray) -> np.ndarray:
            if spent["queries"] + len(batch) > spent["budget"]:
                raise QueryBudgetSpent
            spent["queries"] += len(batch)
            xq = reference.quantize_inputs(defend(batch.astype(np.float32)), compiled.input)
            answers = pool.infer_all([q.tobytes() for q in xq], kind="queries")
            out = np.stack([np.frombuffer(a[0], compiled.device_output.dtype) for a in answers])
            return reference.dequantize(out, compiled.device_output).reshape(len(batch), -1)

        classes = int(np.prod(compiled.device_output.shape[1:]))
        classifier = attacks.query_classifier(predict, tuple(x.shape[1:]), classes, clip)
        x_adv, unattacked = x.astype(np.float32).copy(), 0
        for start in range(0, len(x), QUERY_GROUP):
            part = slice(start, start + QUERY_GROUP)
            spent["budget"] = spent["queries"] + condition.max_queries * len(x[part])
            try:
                x_adv[part] = attacks.unbounded(condition.attack, classifier, x[part], y[part], condition.eps,
                                               condition.seed + start, condition.params)  # fmt: skip
            except QueryBudgetSpent:
                unattacked += len(x[part])
        return x_adv, spent["queries"], unattacked

    def probe_gradients(self, pool: Pool, build: Build, condition: Condition, x: np.ndarray) -> dict:
        """The zero density of finite-difference gradient estimates on the device: at the clean inputs of the
        first samples, for random input coordinates i, the device's outputs at x + h e_i and x - h e_i; an
        estimate is zero when the two outputs are equal, which is what a gradient-estimating attack (ZOO,
        HopSkipJump) sees of a quantized network."""
        tensor, defend = build.compiled.input, self.defense(condition.defense, build.model)
        lo, hi = input_domain(build)
        step = float(tensor.scale[0])
        hs = [GRADIENT_PROBE["zoo_h"], *(k * step for k in GRADIENT_PROBE["input_steps"])]
        rng = np.random.default_rng(condition.seed)
        n, size = min(GRADIENT_PROBE["samples"], len(x)), int(np.prod(x.shape[1:]))
        coordinates = np.stack([rng.choice(size, min(GRADIENT_PROBE["coordinates"], size), replace=False)
                                for _ in range(n)])  # fmt: skip
        probes = []
        for h in hs:
            for j, i in np.ndindex(coordinates.shape):
                for sign in (1.0, -1.0):
                    probe = x[j].reshape(-1).astype(np.float32).copy()
                    probe[coordinates[j, i]] = np.clip(probe[coordinates[j, i]] + sign * h, lo, hi)
                    probes.append(probe.reshape(x.shape[1:]))
        xq = reference.quantize_inputs(defend(np.stack(probes)), tensor)
        answers = pool.infer_all([q.tobytes() for q in xq], kind="queries")
        outputs = np.stack([np.frombuffer(a[0], np.uint8) for a in answers])
        pairs = outputs.reshape(len(hs), coordinates.size, 2, -1)
        zero = np.all(pairs[:, :, 0] == pairs[:, :, 1], axis=2)
        return {
            "samples": n, "coordinates": int(coordinates.shape[1]), "queries": len(probes),
            "h": [{"h": h, "input_steps": h / step, "zero_density": float(z.mean())}
                  for h, z in zip(hs, zero, strict=True)],
        }  # fmt: skip
