"""Models to evaluate: the built-in ones described in models/*.toml, or a user's own files."""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import ROOT
from .errors import UserError

MODELS_DIR = ROOT / "models"


@dataclass
class Model:
    name: str
    tflite: bytes  # the quantized model that the device runs
    keras: object | None  # the float model, needed by white-box attacks and the float reference
    x_test: np.ndarray  # float inputs in the float model's domain
    y_test: np.ndarray  # integer class labels


def builtin_names() -> list[str]:
    return sorted(p.stem for p in MODELS_DIR.glob("*.toml"))


def builtin_spec(name: str) -> dict:
    path = MODELS_DIR / f"{name}.toml"
    if not path.is_file():
        raise UserError(f"there is no built-in model '{name}'; choose one of: {', '.join(builtin_names())}")
    return tomllib.loads(path.read_text())


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tinyrobust"


def load_dataset(spec: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and test splits, deterministic for the spec's seed."""
    if spec["dataset"] != "sklearn-digits":
        raise UserError(f"data set '{spec['dataset']}' is not available on this machine")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=spec["training"]["test_fraction"], random_state=spec["seed"], stratify=y
    )
    return x_train, y_train, x_test, y_test


def build_keras(spec: dict):
    import keras

    layers = [keras.Input(shape=tuple(spec["input_shape"]))]
    for layer in spec["layers"]:
        kwargs = dict(layer)
        kind = kwargs.pop("type")
        if not hasattr(keras.layers, kind):
            raise UserError(f"model layer type '{kind}' is not a Keras layer")
        layers.append(getattr(keras.layers, kind)(**kwargs))
    return keras.Sequential(layers)


def train_keras(spec: dict, x_train: np.ndarray, y_train: np.ndarray):
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(spec["seed"])
    tf.config.experimental.enable_op_determinism()
    model = build_keras(spec)
    training = spec["training"]
    model.compile(
        optimizer=keras.optimizers.Adam(training["learning_rate"]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, epochs=training["epochs"], batch_size=training["batch_size"], verbose=0)
    return model


def load_builtin(name: str, precision: str = "int8") -> Model:
    """Train (once, cached) and quantize a built-in model."""
    import keras

    from .quantize import quantize

    spec = builtin_spec(name)
    x_train, y_train, x_test, y_test = load_dataset(spec)
    spec_hash = hashlib.sha256((MODELS_DIR / f"{name}.toml").read_bytes()).hexdigest()[:12]
    folder = cache_dir() / "models" / f"{name}-{spec_hash}"
    keras_path = folder / "float.keras"
    tflite_path = folder / f"{precision}.tflite"
    if keras_path.is_file():
        float_model = keras.models.load_model(keras_path)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        float_model = train_keras(spec, x_train, y_train)
        float_model.save(keras_path)
    if not tflite_path.is_file():
        tflite_path.write_bytes(quantize(float_model, x_train, precision))
    return Model(name, tflite_path.read_bytes(), float_model, x_test, y_test)


def load_user(tflite: Path, float_model: Path | None, data: Path | None) -> Model:
    """A user's quantized model, optional float model and test data (arrays x and y in an .npz)."""
    if not tflite.is_file():
        raise UserError(f"model file {tflite} does not exist; pass an int8 .tflite file with --model")
    if data is None:
        raise UserError("a user model needs test data: pass --data file.npz with arrays x (inputs) and y (labels)")
    if not data.is_file():
        raise UserError(f"data file {data} does not exist; pass an .npz with arrays x and y")
    try:
        with np.load(data, allow_pickle=False) as arrays:
            x, y = arrays["x"].astype(np.float32), arrays["y"].astype(np.int64).reshape(-1)
    except (KeyError, ValueError, OSError) as exc:
        raise UserError(f"{data} is not an .npz with numeric arrays x and y ({exc}); save it with np.savez") from None
    if len(x) != len(y):
        raise UserError(f"{data} has {len(x)} inputs x but {len(y)} labels y; they must match")
    keras_model = None
    if float_model is not None:
        if not float_model.is_file():
            raise UserError(f"float model {float_model} does not exist; pass a .keras or .h5 file")
        import keras

        try:
            keras_model = keras.models.load_model(float_model, compile=False, safe_mode=True)
        except Exception as exc:  # Keras raises many kinds for a bad file
            raise UserError(f"cannot load {float_model} as a Keras model ({exc})") from None
    return Model(tflite.stem, tflite.read_bytes(), keras_model, x, y)
