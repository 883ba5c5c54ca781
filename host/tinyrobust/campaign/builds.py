"""What a campaign runs on the device: builds (a model, a precision and the defense built into its firmware) and
the conditions each build is measured under (attack, eps, mode, input defense, seed)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from tinyrobust.build.firmware import Firmware, build_firmware
from tinyrobust.campaign.config import Campaign, DefenseSpec
from tinyrobust.compile.model import CompiledModel, compile_model
from tinyrobust.device.boards import Board
from tinyrobust.device.stack import MEASURED_INPUTS, stack_for
from tinyrobust.model import zoo
from tinyrobust.model.quantize import check_precision, quantize
from tinyrobust.model.reference import random_inputs


@dataclass
class Build:
    """One (model, precision, build defense): the firmware and everything measured with it. The build defense
    is None, a stage on the device, or a training defense (then the model is the retrained one)."""

    name: str
    precision: str
    model: zoo.Model
    compiled: CompiledModel
    firmware: Firmware
    counter: str = "systick"
    conditions: list[int] = field(default_factory=list)  # the store's ids of the conditions measured with it
    defense: DefenseSpec | None = None
    slug: str = ""  # the build defense's slug, "" for none


@dataclass
class Condition:
    attack: str
    eps: float
    mode: str = "transfer"
    params: dict = field(default_factory=dict)
    defense: DefenseSpec | None = None
    seed: int = 0
    max_queries: int = 0

    def key(self, build: Build) -> dict:
        """The condition as the store identifies it."""
        return {
            "attack": self.attack,
            "eps": self.eps,
            "model": build.name,
            "precision": build.precision,
            "mode": self.mode,
            "params": json.dumps(self.params, sort_keys=True),
            "defense": json.dumps(None if self.defense is None else self.defense.key(), sort_keys=True),
            "seed": self.seed,
        }


def model_for(base: zoo.Model, precision: str, defense: DefenseSpec | None, seed: int) -> zoo.Model:
    """The model a build runs: the base one, or for a training defense the retrained float model (cached)
    quantized again on the same representative data. A training defense given as files (its model and
    float_model) is loaded instead: the given .tflite, or the given float model quantized as a retrained one is."""
    if defense is None or not defense.trains:
        return base
    if defense.given:
        tflite, float_model = defense.files(base.name, precision)
        keras = zoo.load_keras(float_model) if float_model is not None else None
        quantized = tflite.read_bytes() if tflite is not None else quantize(keras, base.x_train, precision)
        return replace(base, tflite=quantized, keras=keras)
    trained = defense.configured().train(base.keras, base.x_train, base.y_train, seed=seed)
    return replace(base, tflite=quantize(trained, base.x_train, precision), keras=trained)


def compile_for(model: zoo.Model, precision: str, defense: DefenseSpec | None) -> CompiledModel:
    """The model compiled, with the defense's stages or smoothing when it runs on the device."""
    configured = defense.configured() if defense is not None and defense.where == "device" else None
    stages = configured.device_stages() if configured else []
    compiled = compile_model(model.tflite, stages, configured.smoothing() if configured else None)
    check_precision(compiled.input.type_name, precision)
    return compiled


def make_build(name: str, precision: str, model: zoo.Model, compiled: CompiledModel, defense: DefenseSpec | None,
               slug: str, board: Board, folder: Path, channel: str, stack: int | None = None) -> Build:  # fmt: skip
    """The build with its firmware; a stack reserve given is first checked against a profile build's measurement."""
    inputs = [x.tobytes() for x in random_inputs(compiled.input, MEASURED_INPUTS)]
    stack_bytes = stack_for(compiled, board, channel, stack, inputs, folder / "stack")
    firmware = build_firmware(compiled, board, folder, channel, stack_bytes=stack_bytes)
    return Build(zoo.model_name(name), precision, model, compiled, firmware, board.counter, defense=defense, slug=slug)


def firmware_dir(out: Path, model: str, precision: str, slug: str, several: bool) -> Path:
    """out/firmware, or with several builds a folder in it for each: model-precision[-defense]."""
    name = "-".join(filter(None, (Path(model).stem, precision, slug)))
    return out / "firmware" / name if several else out / "firmware"


def conditions(build: Build, campaign: Campaign) -> list[Condition]:
    """The build's conditions, each attack's eps next to each other and each defense's next to the undefended
    one, so one made attack serves them all (a transfer attack ignores input defenses). Transfer attacks need
    the float model, so a model without one has none."""
    c = campaign
    defenses = [build.defense] if build.defense else [None, *(d for d in c.defenses if not d.builds_apart)]
    result = []
    for seed in c.seeds:
        result += [Condition("none", 0.0, defense=d, seed=seed) for d in defenses]
        for a in c.attacks:
            if a.mode == "transfer" and build.model.keras is None:
                continue
            queries = a.max_queries if a.mode == "on-device" else 0
            for eps in a.eps:
                result += [Condition(a.name, float(eps), a.mode, a.params, d, seed, queries) for d in defenses]
    return result
