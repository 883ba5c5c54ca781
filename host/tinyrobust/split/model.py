"""Split networks: a head that runs on the device, its latent entropy-coded into the bytes the device sends,
and a tail (decoder and classifier) on the host. Trained jointly with a rate term, beta x bits per input pixel,
once per beta and cached by the spec's hash, the data's and beta.

A spec is a models/*.toml with a [split] table, `head` and `tail` layer lists (as a classifier's `layers`), and
the betas to train. The head is quantized to int8 with its output at scale 1 and zero point 0, so the int8
values the device computes are the latent's symbols: round(y) as the entropy model was trained to code them."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyrobust.errors import UserError
from tinyrobust.model import zoo
from tinyrobust.model.quantize import quantize
from tinyrobust.split.coder import Coding, table_from_pmf

ENTROPY_MODELS = ("factorized",)


@dataclass
class SplitModel:
    name: str
    beta: float
    head: object  # the float Keras head: input -> latent y
    tail: object  # the float Keras tail: the latent's symbols -> logits
    prior: object  # entropy.FactorizedPrior over the latent's channels
    head_tflite: bytes  # int8; its output tensor holds the symbols (scale 1, zero point 0)
    coding: Coding  # the coder's tables for the symbols, one per channel
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.head.output_shape[1:])


def split_spec(name: str) -> dict:
    if name not in zoo.split_names():
        raise UserError(f"there is no split model '{name}'; choose one of: {', '.join(zoo.split_names())}")
    spec = zoo.builtin_spec(name)
    model = spec["split"].get("entropy_model", "factorized")
    if model not in ENTROPY_MODELS:
        raise UserError(f"split model {name} asks for entropy model '{model}'; the device codes "
                        f"{', '.join(ENTROPY_MODELS)}")  # fmt: skip
    return spec


def _networks(spec: dict):
    """The float head, the tail reading its latent, and the prior over the latent's channels."""
    from tinyrobust.split.entropy import FactorizedPrior

    head = zoo.build_keras({"input_shape": spec["input_shape"], "layers": spec["head"]})
    latent = head.output_shape[1:]
    tail = zoo.build_keras({"input_shape": list(latent), "layers": spec["tail"]})
    return head, tail, FactorizedPrior(latent[-1], seed=spec["seed"])


def train(spec: dict, beta: float, x: np.ndarray, y: np.ndarray):
    """Head, tail and prior trained on cross-entropy + beta x bits per input pixel, the latent relaxed with
    uniform noise (Ballé et al.) so that the rate has a gradient."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(spec["seed"])
    tf.config.experimental.enable_op_determinism()
    head, tail, prior = _networks(spec)
    training = spec["training"]
    pixels = math.prod(spec["input_shape"][:2])
    variables = [*head.trainable_variables, *tail.trainable_variables, *prior.trainable_variables]
    optimizer = keras.optimizers.Adam(training["learning_rate"])
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            y_hat, bits = prior(head(xb, training=True), training=True)
            loss = cross_entropy(yb, tail(y_hat, training=True)) + beta * tf.reduce_mean(bits) / pixels
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))

    batches = tf.data.Dataset.from_tensor_slices((x, y))
    for epoch in range(training["epochs"]):
        for xb, yb in batches.shuffle(len(x), seed=spec["seed"] + epoch).batch(training["batch_size"]):
            step(xb, yb)
    return head, tail, prior


def coding_for(prior) -> Coding:
    """The coder's tables of a factorized prior: one per channel, the channel's learned density quantized."""
    from tinyrobust.split.entropy import factorized_tables

    tables = [table_from_pmf(pmf, offset) for pmf, offset in factorized_tables(prior)]
    return Coding(tables, list(range(len(tables))))


def load_split(name: str, beta: float | None = None, data: Path | None = None) -> SplitModel:
    """A split model trained (once, cached) at beta (default: the spec's first) on its data set or the user's
    (an .npz, as for a built-in classifier), its head quantized with the latent's symbols as output."""
    import keras

    from tinyrobust.split.entropy import FactorizedPrior
    from tinyrobust.split.head import with_symbol_output

    spec = split_spec(name)
    beta = spec["split"]["betas"][0] if beta is None else float(beta)
    if data is not None:
        x_train, y_train, x_test, y_test = zoo.load_npz(Path(data), spec)
        tag = f"-data-{hashlib.sha256(Path(data).read_bytes()).hexdigest()[:12]}"
    elif zoo.dataset_available(spec):
        x_train, y_train, x_test, y_test = zoo.load_dataset(spec)
        tag = ""
    else:
        raise UserError(f"split model {name} needs its data set {spec['dataset']}, which is not on this machine; "
                        "pass one with --data")  # fmt: skip
    spec_hash = hashlib.sha256((zoo.MODELS / f"{name}.toml").read_bytes()).hexdigest()[:12]
    folder = zoo.cache_dir() / "split" / f"{name}-{spec_hash}{tag}-beta{beta:g}"
    paths = {part: folder / f"{part}.keras" for part in ("head", "tail")}
    prior_path, tflite_path = folder / "prior.npz", folder / "head-int8.tflite"
    if all(p.is_file() for p in (*paths.values(), prior_path)):
        head, tail = (keras.models.load_model(paths[part]) for part in ("head", "tail"))
        prior = FactorizedPrior(head.output_shape[-1], seed=spec["seed"])
        with np.load(prior_path, allow_pickle=False) as weights:
            prior.set_weights([weights[f"w{i}"] for i in range(len(weights.files))])
    else:
        head, tail, prior = train(spec, beta, x_train, y_train)
        folder.mkdir(parents=True, exist_ok=True)
        for part, network in (("head", head), ("tail", tail)):
            network.save(paths[part])
        np.savez(prior_path, **{f"w{i}": w for i, w in enumerate(prior.get_weights())})
    if not tflite_path.is_file():
        tflite_path.write_bytes(with_symbol_output(quantize(head, x_train, "int8")))
    return SplitModel(name, beta, head, tail, prior, tflite_path.read_bytes(), coding_for(prior), x_train, y_train,
                      x_test, y_test)  # fmt: skip
