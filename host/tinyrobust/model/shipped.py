"""Built-in models that ship trained (models/trained/NAME/: float.keras, one .tflite per precision and
manifest.toml with their SHA-256 and the spec they were trained from).

TensorFlow's CPU kernels (oneDNN) choose their code paths by the CPU's instruction set, so training is repeatable
on one machine but not across machines, even with op determinism: the same spec gave another machine other
weights and other figures. Shipping the trained files gives every machine the same model."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

from tinyrobust.assets import MODELS
from tinyrobust.errors import UserError
from tinyrobust.model.quantize import PRECISIONS

FOLDER = MODELS / "trained"
MANIFEST = "manifest.toml"
# Every precision ships, so that --precision never trains the float model again.
FILES = ("float.keras", *(f"{p}.tflite" for p in PRECISIONS))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def spec_sha256(name: str) -> str:
    return _sha256(MODELS / f"{name}.toml")


def find(name: str, folder: Path = FOLDER) -> Path | None:
    """The folder of NAME's shipped trained files, each checked against its SHA-256; None when none ship or the
    spec changed since they were trained (the model is then trained from the spec as any other)."""
    manifest_path = folder / name / MANIFEST
    if not manifest_path.is_file():
        return None
    try:
        manifest = tomllib.loads(manifest_path.read_text())
        expected, files = manifest["spec_sha256"], manifest["files"]
    except (tomllib.TOMLDecodeError, KeyError, UnicodeDecodeError) as exc:
        raise UserError(f"{manifest_path} is not a manifest of trained model files ({exc}); reinstall tinyrobust or "
                        f"run tinyrobust models --retrain {name}") from None  # fmt: skip
    if expected != spec_sha256(name):
        return None
    for file in FILES:
        path = folder / name / file
        if not path.is_file() or _sha256(path) != files.get(file):
            raise UserError(f"the shipped trained model file {path} is missing or does not match its SHA-256 in "
                            f"{manifest_path}; reinstall tinyrobust or run tinyrobust models --retrain "
                            f"{name}")  # fmt: skip
    return folder / name


def retrain(name: str, folder: Path = FOLDER) -> Path:
    """Train NAME from its spec, as the zoo does, quantize it to every precision and replace its shipped files and
    manifest in folder / NAME."""
    from tinyrobust.model import zoo

    if name not in zoo.builtin_names():
        raise UserError(f"there is no built-in model '{name}'; choose one of: {', '.join(zoo.builtin_names())}")
    spec = zoo.builtin_spec(name)
    if not zoo.dataset_available(spec):
        raise UserError(f"{name} cannot be retrained here: its data set '{spec['dataset']}' is not on this machine")
    import keras
    import tensorflow as tf

    from tinyrobust import __version__
    from tinyrobust.model.quantize import quantize

    x_train, y_train, _, _ = zoo.load_dataset(spec)
    model = zoo.train_keras(spec, x_train, y_train)
    target = folder / name
    tflites = {f"{p}.tflite": quantize(model, x_train, p) for p in PRECISIONS}
    try:
        target.mkdir(parents=True, exist_ok=True)
        # Without a manifest the folder is ignored, so files half written are never used.
        (target / MANIFEST).unlink(missing_ok=True)
        model.save(target / "float.keras")
        for file, data in tflites.items():
            (target / file).write_bytes(data)
        lines = [
            f"# Written by tinyrobust models --retrain {name}; used while models/{name}.toml has this SHA-256.",
            f"model = {json.dumps(name)}",
            f"spec_sha256 = {json.dumps(spec_sha256(name))}",
            f"tinyrobust = {json.dumps(__version__)}",
            f"tensorflow = {json.dumps(tf.__version__)}",
            f"keras = {json.dumps(keras.__version__)}",
            "",
            "[files]",
            *(f"{json.dumps(file)} = {json.dumps(_sha256(target / file))}" for file in FILES),
        ]
        (target / MANIFEST).write_text("\n".join(lines) + "\n")
    except OSError as exc:
        raise UserError(f"cannot write {name}'s trained files to {target} ({exc}); retrain from a clone of the "
                        "repository, where they are models/trained/") from None  # fmt: skip
    return target
