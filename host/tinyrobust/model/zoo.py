"""Models to evaluate: the built-in ones described in models/*.toml, or a user's own files."""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyrobust.assets import MODELS
from tinyrobust.errors import UserError
from tinyrobust.model import datasets, shipped


@dataclass
class Model:
    name: str
    tflite: bytes  # the quantized model that the device runs
    keras: object | None  # the float model, needed by white-box attacks and the float reference
    x_test: np.ndarray  # float inputs in the float model's domain
    y_test: np.ndarray  # integer class labels
    # What a built-in model was trained and quantized on, for the training defenses and for re-quantizing.
    x_train: np.ndarray | None = None
    y_train: np.ndarray | None = None
    input_range: tuple[float, float] | None = None  # the float inputs' domain, when known


def _specs() -> dict[str, dict]:
    return {p.stem: tomllib.loads(p.read_text()) for p in sorted(MODELS.glob("*.toml"))}


def builtin_names() -> list[str]:
    """The built-in classifiers (split networks, which have a [split] table, are tinyrobust.split's)."""
    return [name for name, spec in _specs().items() if "split" not in spec]


def split_names() -> list[str]:
    return [name for name, spec in _specs().items() if "split" in spec]


def builtin_spec(name: str) -> dict:
    path = MODELS / f"{name}.toml"
    if not path.is_file():
        raise UserError(f"there is no built-in model '{name}'; choose one of: {', '.join(builtin_names())}")
    return tomllib.loads(path.read_text())


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tinyrobust"


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32)[..., None], digits.target.astype(np.int64)


def _sklearn_digits_32() -> tuple[np.ndarray, np.ndarray]:
    """The digits upsampled (bilinear) to 32 x 32: the smallest camera-like images that ship offline, for the
    split networks, whose byte counts need more than 8 x 8 pixels."""
    from scipy.ndimage import zoom

    x, y = _sklearn_digits()
    return np.clip(zoom(x, (1, 4, 4, 1), order=1), 0.0, 1.0).astype(np.float32), y


# Data sets this machine can load without a download, by the name a model's "dataset" field gives.
DATASETS = {"sklearn-digits": _sklearn_digits, "sklearn-digits-32": _sklearn_digits_32}


def dataset_available(spec: dict) -> bool:
    return spec["dataset"] in DATASETS


def load_dataset(spec: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and test splits, deterministic for the spec's seed."""
    if not dataset_available(spec):
        raise UserError(f"data set '{spec['dataset']}' is not available on this machine")
    from sklearn.model_selection import train_test_split

    x, y = DATASETS[spec["dataset"]]()
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=spec["training"]["test_fraction"], random_state=spec["seed"], stratify=y
    )
    return x_train, y_train, x_test, y_test


def load_data(path: Path, spec: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A user's data set for a built-in model (see datasets.read): an .npz of x_train, y_train, x_test and y_test
    (or x and y) in the float model's domain, CIFAR-10's binary version, or a folder of images with one sub-folder
    per class, as pixels / 255 at the model's input shape. Labels are class numbers. Without a test part of its
    own, the data is split like a built-in data set."""
    data = datasets.read(Path(path), tuple(spec["input_shape"]), cache_dir() / "data")
    if data.x_test is None:
        from sklearn.model_selection import train_test_split

        try:
            x_train, x_test, y_train, y_test = train_test_split(
                data.x, data.y, test_size=spec["training"]["test_fraction"], random_state=spec["seed"]
            )
        except ValueError as exc:
            raise UserError(f"{path}: its {len(data.x)} inputs and {len(data.y)} labels cannot be split into "
                            f"training and test parts ({exc})") from None  # fmt: skip
    else:
        x_train, y_train, x_test, y_test = data.x, data.y, data.x_test, data.y_test
    shape = tuple(spec["input_shape"])
    for x, y, part in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if x.shape[1:] != shape or len(x) != len(y) or not len(x):
            raise UserError(f"{path}: the {part} inputs are {x.shape} with {len(y)} labels; this model takes "
                            f"inputs of shape (N, {', '.join(map(str, shape))}) with N labels")  # fmt: skip
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= spec["classes"]:
            raise UserError(f"{path}: the {part} labels must be class numbers 0..{spec['classes'] - 1}")
    return (x_train.astype(np.float32), y_train.astype(np.int64).reshape(-1), x_test.astype(np.float32),
            y_test.astype(np.int64).reshape(-1))  # fmt: skip


def data_tag(path: Path, spec: dict) -> str:
    """What a cache folder's name says of the user's data set a model was trained on."""
    return f"-data-{datasets.source_key(Path(path), tuple(spec['input_shape']))[:12]}"


def synthetic_inputs(spec: dict, count: int, seed: int) -> np.ndarray:
    """Random inputs spread over the data's range (the spec's input_range), standing in for a missing data set."""
    lo, hi = spec.get("input_range", [0.0, 1.0])
    rng = np.random.default_rng(seed)
    return rng.uniform(lo, hi, (count, *spec["input_shape"])).astype(np.float32)


def build_keras(spec: dict):
    """The float model of the spec's layers: each layer reads the previous one's output, or, when it lists
    inputs = ["a", "b"], the outputs of the layers named "a" and "b" ("input" is the model's input)."""
    import keras

    inputs = keras.Input(shape=tuple(spec["input_shape"]))
    named, x = {"input": inputs}, inputs
    graph = any("inputs" in layer for layer in spec["layers"])
    layers = []
    for layer in spec["layers"]:
        kwargs = dict(layer)
        kind = kwargs.pop("type")
        sources = kwargs.pop("inputs", None)
        if not hasattr(keras.layers, kind):
            raise UserError(f"model layer type '{kind}' is not a Keras layer")
        try:
            made = getattr(keras.layers, kind)(**kwargs)
        except (TypeError, ValueError) as exc:
            raise UserError(f"model layer {kind} cannot be made from its arguments ({exc})") from None
        if not graph:
            layers.append(made)
            continue
        unknown = [s for s in sources or [] if s not in named]
        if unknown:
            raise UserError(f"model layer {kind} reads {', '.join(unknown)}, which no earlier layer is named")
        x = made(x if sources is None else [named[s] for s in sources] if len(sources) > 1 else named[sources[0]])
        if "name" in kwargs:
            named[kwargs["name"]] = x
    return keras.Model(inputs, x) if graph else keras.Sequential([inputs, *layers])


def untrained_keras(spec: dict):
    """The model with seeded random weights, for exactness, latency and memory when its data set is missing.
    Batch norm statistics are drawn too, so that folding them into the weights is not a no-op."""
    import keras

    keras.utils.set_random_seed(spec["seed"])
    model = build_keras(spec)
    rng = np.random.default_rng(spec["seed"])
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.gamma.assign(rng.uniform(0.5, 1.5, shape))
            layer.beta.assign(rng.normal(0.0, 0.1, shape))
            layer.moving_mean.assign(rng.normal(0.0, 0.1, shape))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, shape))
    return model


LOSSES = {  # the spec's training.loss -> Keras loss and whether the targets are the inputs
    "logits": (lambda keras: keras.losses.SparseCategoricalCrossentropy(from_logits=True), False),
    "probabilities": (lambda keras: keras.losses.SparseCategoricalCrossentropy(), False),
    "reconstruction": (lambda keras: keras.losses.MeanSquaredError(), True),
}


def train_keras(spec: dict, x_train: np.ndarray, y_train: np.ndarray):
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(spec["seed"])
    tf.config.experimental.enable_op_determinism()
    model = build_keras(spec)
    training = spec["training"]
    loss, autoencoder = LOSSES[training.get("loss", "logits")]
    model.compile(
        optimizer=keras.optimizers.Adam(training["learning_rate"]),
        loss=loss(keras),
        metrics=[] if autoencoder else ["accuracy"],
    )
    targets = x_train if autoencoder else y_train
    model.fit(x_train, targets, epochs=training["epochs"], batch_size=training["batch_size"], verbose=0)
    return model


# Without its data set a built-in model is quantized on this many random inputs and tested on as many more.
SYNTHETIC_REPRESENTATIVE, SYNTHETIC_TEST = 100, 100


def load_builtin(
    name: str, precision: str = "int8", data: Path | None = None, shipped_folder: Path = shipped.FOLDER
) -> Model:
    """Train (once, cached) and quantize a built-in model, on its data set or the user's (data: see load_data).
    Without either, the model keeps seeded random weights and is quantized on random inputs in the data's range:
    enough for exactness, latency and memory, not for accuracy. Its labels are then the float model's own
    classes. A model that ships trained from this very spec (in shipped_folder, see shipped.py) is used as it is."""
    import keras

    from tinyrobust.model.quantize import quantize

    spec = builtin_spec(name)
    trained = data is not None or dataset_available(spec)
    spec_hash = hashlib.sha256((MODELS / f"{name}.toml").read_bytes()).hexdigest()[:12]
    tag = "" if trained else "-untrained"
    if data is not None:
        splits = load_data(Path(data), spec)
        tag = data_tag(Path(data), spec)
    folder = cache_dir() / "models" / f"{name}-{spec_hash}{tag}"
    if data is None:
        folder = shipped.find(name, shipped_folder) or folder
    keras_path = folder / "float.keras"
    tflite_path = folder / f"{precision}.tflite"
    if trained:
        x_train, y_train, x_test, y_test = splits if data is not None else load_dataset(spec)
    else:
        x_train = synthetic_inputs(spec, SYNTHETIC_REPRESENTATIVE, spec["seed"])
        x_test = synthetic_inputs(spec, SYNTHETIC_TEST, spec["seed"] + 1)
    if keras_path.is_file():
        float_model = keras.models.load_model(keras_path)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        float_model = train_keras(spec, x_train, y_train) if trained else untrained_keras(spec)
        float_model.save(keras_path)
    if not tflite_path.is_file():
        tflite_path.write_bytes(quantize(float_model, x_train, precision))
    if not trained:
        y_train, y_test = (np.asarray(float_model.predict(x, batch_size=32, verbose=0)).reshape(len(x), -1).argmax(1)
                           for x in (x_train, x_test))  # fmt: skip
    lo, hi = spec.get("input_range", [0.0, 1.0])
    return Model(name, tflite_path.read_bytes(), float_model, x_test, y_test, x_train, y_train, (lo, hi))


def load_user(tflite: Path, float_model: Path | None, data: Path | None) -> Model:
    """A user's quantized model, optional float model and test data: arrays x and y in an .npz, or CIFAR-10 or an
    image folder (see load_data) as pixels / 255 at the model's input shape, of which the test part is taken when
    the source has one, or every image."""
    if not tflite.is_file():
        raise UserError(f"model file {tflite} does not exist; pass an int8 .tflite file with --model")
    if data is None:
        raise UserError("a user model needs test data: pass --data file.npz with arrays x (inputs) and y (labels)")
    if data.suffix != ".npz":
        images = datasets.read(data, _tflite_input_shape(tflite), cache_dir() / "data")
        x, y = (images.x, images.y) if images.x_test is None else (images.x_test, images.y_test)
    elif not data.is_file():
        raise UserError(f"data file {data} does not exist; pass an .npz with arrays x and y")
    else:
        try:
            with np.load(data, allow_pickle=False) as arrays:
                x, y = arrays["x"].astype(np.float32), arrays["y"].astype(np.int64).reshape(-1)
        except (KeyError, ValueError, OSError) as exc:
            raise UserError(f"{data} is not an .npz with numeric arrays x and y ({exc}); save it with "
                            "np.savez") from None  # fmt: skip
    if len(x) != len(y):
        raise UserError(f"{data} has {len(x)} inputs x but {len(y)} labels y; they must match")
    keras_model = load_keras(float_model) if float_model is not None else None
    return Model(tflite.stem, tflite.read_bytes(), keras_model, x, y, input_range=_pixel_range(data))


KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def load_keras(path: Path):
    """A user's float Keras model, read as untrusted: no pickle (Keras files hold none), no Python code from the
    file (a Lambda layer is refused before anything is loaded; Keras 3's safe_mode refuses it too, but tf-keras
    ignores safe_mode for .h5 and would unmarshal the lambda's bytecode). Keras 3 reads the file where it can;
    where it rejects a Keras 2 file's config (DepthwiseConv2D's `groups`, for example), tf-keras (Keras 2 on the
    same TensorFlow) reads it, and the model stays a tf-keras model, which the converter, ART and predict take."""
    if not path.is_file():
        raise UserError(f"float model {path} does not exist; pass a .keras or .h5 file")
    if path.suffix not in KERAS_SUFFIXES:
        raise UserError(f"{path} is not a Keras model file; pass a .keras or .h5 (.hdf5) file saved with model.save")
    lambdas = _lambda_layers(_keras_config(path))
    if lambdas:
        raise UserError(f"{path} has a Lambda layer ('{lambdas[0]}'), whose Python code tinyrobust does not run "
                        "from a file; rebuild the model from Keras layers only")  # fmt: skip
    import keras

    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many kinds for a file it cannot read
        keras3 = _short(exc)
    import tf_keras

    try:
        return tf_keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:
        raise UserError(f"cannot load {path} as a Keras model (Keras 3: {keras3}; tf-keras: {_short(exc)}); save "
                        "it with model.save as .keras or .h5") from None  # fmt: skip


def _keras_config(path: Path) -> dict:
    """The model's architecture as the file stores it: config.json in a .keras zip, the model_config attribute of
    an .h5 file (read with h5py, which runs nothing)."""
    import json
    import zipfile

    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as archive:
                text = archive.read("config.json")
        else:
            import h5py

            with h5py.File(path, "r") as f:
                text = f.attrs.get("model_config")
        if text is None:
            raise UserError(f"{path} holds weights only, no model; save the whole model with model.save")
        return json.loads(text.decode() if isinstance(text, bytes) else text)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path} is not a Keras model file ({_short(exc)}); save it with model.save") from None


def _lambda_layers(config) -> list[str]:
    """The names of the Lambda layers anywhere in a model config (nested models and wrappers included)."""
    found = []
    if isinstance(config, dict):
        if config.get("class_name") == "Lambda":
            found.append(str((config.get("config") or {}).get("name", "lambda")))
        for value in config.values():
            found += _lambda_layers(value)
    elif isinstance(config, list):
        for value in config:
            found += _lambda_layers(value)
    return found


def _short(exc: Exception) -> str:
    """An exception's first line, cut short: Keras puts whole layer configs in its messages."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def load_float(path: Path, precision: str, data: Path | None) -> Model:
    """A user's float Keras model, quantized like a built-in one (cached by the file's and the data's contents):
    on the training part of the data (an .npz's x_train; without one, on its test inputs themselves), and tested on
    its test part (x_test, a test/ folder), or on everything when there is none."""
    from tinyrobust.model.quantize import quantize

    if data is None:
        raise UserError(f"a float model needs data to be quantized on and tested with: pass --data with {path}")
    keras_model = load_keras(path)
    shape = tuple(int(d) for d in keras_model.input_shape[1:])
    source = datasets.read(Path(data), shape, cache_dir() / "data")
    x_train, y_train = source.x.astype(np.float32), source.y.astype(np.int64).reshape(-1)
    x_test, y_test = (x_train, y_train) if source.x_test is None else (source.x_test.astype(np.float32),
                                                                       source.y_test.astype(np.int64).reshape(-1))
    for x, y in ((x_train, y_train), (x_test, y_test)):
        if x.shape[1:] != shape or len(x) != len(y) or not len(x):
            raise UserError(f"{data}: its inputs are {x.shape} with {len(y)} labels; {path} takes inputs of shape "
                            f"(N, {', '.join(map(str, shape))}) with N labels")  # fmt: skip
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    tflite_path = cache_dir() / "models" / f"{path.stem}-{digest}-data-{source.key[:12]}" / f"{precision}.tflite"
    if not tflite_path.is_file():
        tflite_path.parent.mkdir(parents=True, exist_ok=True)
        partial = tflite_path.with_suffix(f".{os.getpid()}.partial")
        partial.write_bytes(quantize(keras_model, x_train, precision))
        partial.replace(tflite_path)
    return Model(path.stem, tflite_path.read_bytes(), keras_model, x_test, y_test, x_train, y_train, _pixel_range(data))


def _pixel_range(data: Path) -> tuple[float, float] | None:
    """The float inputs' domain when the data are images (pixels / 255, see load_data); an .npz's is not known."""
    return None if Path(data).suffix == ".npz" else (0.0, 1.0)


def _tflite_input_shape(tflite: Path) -> tuple[int, ...]:
    """The input shape of a .tflite model, without its batch dimension."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        return tuple(int(s) for s in Interpreter(model_path=str(tflite)).get_input_details()[0]["shape"][1:])
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"cannot read {tflite} as a .tflite model ({exc}); pass a quantized .tflite file") from None


def is_file(model: str) -> bool:
    """Whether a model named on the command line or in a config is a user's file (a quantized .tflite, or a float
    Keras model to quantize), not a built-in name."""
    return model.endswith((".tflite", *KERAS_SUFFIXES))


def is_float_file(model: str) -> bool:
    return model.endswith(KERAS_SUFFIXES)


def default_precision(model: str) -> str:
    """The precision a model runs at when none is asked for: a .tflite file's own, int8 for the others."""
    from tinyrobust.model.quantize import precision_of

    if not model.endswith(".tflite"):
        return "int8"
    if not Path(model).is_file():
        raise UserError(f"model file {model} does not exist; pass a quantized .tflite file or a built-in name")
    return precision_of(Path(model).read_bytes())


def model_name(model: str) -> str:
    """The name results give a model: a built-in's name, or a file's stem."""
    return Path(model).stem if is_file(model) else model


def load(model: str, precision: str = "int8", float_model: str | None = None, data: str | None = None) -> Model:
    """A built-in model by name, a user's .tflite file with its optional float model and test data, or a user's
    float Keras model with the data to quantize it on (load_float)."""
    if float_model and not model.endswith(".tflite"):
        raise UserError("--float-model goes with a .tflite file passed to --model, not a built-in or float model")
    if is_float_file(model):
        return load_float(Path(model), precision, Path(data) if data else None)
    if is_file(model):
        return load_user(Path(model), *(Path(p) if p else None for p in (float_model, data)))
    return load_builtin(model, precision, Path(data) if data else None)


def load_tflite(model: str, precision: str = "int8") -> bytes:
    """Only the quantized model, for commands that need no data: a built-in name or a .tflite path."""
    if not is_file(model):
        return load_builtin(model, precision).tflite
    if is_float_file(model):
        raise UserError(f"{model} is a float model, and this command takes a quantized .tflite or a built-in name; "
                        "quantize it first (flash-and-evaluate --model with --data does, into the cache)")  # fmt: skip
    if not Path(model).is_file():
        raise UserError(f"model file {model} does not exist; pass a quantized .tflite file or a built-in name")
    return Path(model).read_bytes()
