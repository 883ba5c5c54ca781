"""Split networks: a head that runs on the device, its latent entropy-coded into the bytes the device sends,
and a tail (decoder and classifier) on the host. Trained jointly with a rate term, beta x bits per input pixel,
once per beta and cached by the spec's hash, the data's and beta.

A spec is a models/*.toml with a [split] table, `head` and `tail` layer lists (as a classifier's `layers`), and
the betas to train. The head is quantized to int8 with its output at scale 1 and zero point 0, so the int8
values the device computes are the latent's symbols: round(y) as the entropy model was trained to code them.

With a hyperprior ([split] entropy_model = "hyperprior", or asked for by the caller; its sizes in
[split.hyperprior]) the device model is the
head followed by the hyper-encoder and the hyper-decoder, one int8 graph with three outputs: y, the side latent
z (both at scale 1) and the hyper-decoder's means and scales, from which the coder's lookup tables pick y's
Gaussian tables."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from tinyrobust.errors import UserError
from tinyrobust.model import zoo
from tinyrobust.model.quantize import quantize
from tinyrobust.split.coder import Coding, HyperpriorCoding, table_from_pmf

ENTROPY_MODELS = ("factorized", "hyperprior")


@dataclass
class SplitModel:
    name: str
    beta: float
    head: object  # the float Keras head: input -> latent y
    tail: object  # the float Keras tail: the latent's symbols -> logits
    prior: object  # entropy.FactorizedPrior over the latent's channels, or entropy.Hyperprior
    head_tflite: bytes  # int8; its symbol outputs (y, and z with a hyperprior) at scale 1 and zero point 0
    coding: Coding | HyperpriorCoding
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    hyper_decoder_tflite: bytes | None = None  # the receiver's part of head_tflite: z -> the means and scales

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.head.output_shape[1:])

    @cached_property  # read once from the flatbuffer: every condition asks
    def output_shapes(self) -> list[tuple[int, ...]]:
        """The shapes (batch dropped) of head_tflite's outputs, the ones the device computes per input."""
        from tinyrobust.compile.graph import read_tflite

        graph = read_tflite(self.head_tflite)
        return [tuple(graph.tensors[t].shape[1:]) for t in graph.outputs]

    def hyper_decoder(self):
        """The receiver's hyper-decoder, z's int8 values -> the means' and scales' (TFLite Micro on
        hyper_decoder_tflite, bit-exact with the device's), or None for a factorized prior."""
        if self.hyper_decoder_tflite is None:
            return None
        from tflite_micro import runtime

        interpreter = runtime.Interpreter.from_bytes(self.hyper_decoder_tflite)

        def run(z: np.ndarray) -> np.ndarray:
            interpreter.set_input(z.astype(np.int8)[None], 0)
            interpreter.invoke()
            return interpreter.get_output(0)[0].copy()

        return run


def split_spec(name: str, entropy_model: str | None = None) -> dict:
    """The split model's spec, its entropy model the given one (default: the spec's own, else factorized)."""
    if name not in zoo.split_names():
        raise UserError(f"there is no split model '{name}'; choose one of: {', '.join(zoo.split_names())}")
    spec = zoo.builtin_spec(name)
    model = entropy_model or spec["split"].get("entropy_model", "factorized")
    if model not in ENTROPY_MODELS:
        raise UserError(f"there is no entropy model '{model}'; the device codes {', '.join(ENTROPY_MODELS)}")
    spec["split"]["entropy_model"] = model
    return spec


def _prior(spec: dict, latent: tuple[int, ...]):
    """The entropy model of the spec over a latent of this shape (batch dropped), built."""
    from tinyrobust.split.entropy import FactorizedPrior, Hyperprior

    if spec["split"]["entropy_model"] == "factorized":
        return FactorizedPrior(latent[-1], seed=spec["seed"])
    sizes = spec["split"].get("hyperprior", {})
    prior = Hyperprior(latent[-1], **{k: tuple(v) if k == "strides" else v for k, v in sizes.items()},
                       seed=spec["seed"])  # fmt: skip
    prior.build((None, *latent))
    return prior


def _networks(spec: dict):
    """The float head, the tail reading its latent, and the entropy model of the latent."""
    head = zoo.build_keras({"input_shape": spec["input_shape"], "layers": spec["head"]})
    latent = head.output_shape[1:]
    tail = zoo.build_keras({"input_shape": list(latent), "layers": spec["tail"]})
    return head, tail, _prior(spec, latent)


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


def coding_for(prior, head_tflite: bytes) -> Coding | HyperpriorCoding:
    """The coder's tables: for a factorized prior one per channel, the channel's learned density quantized; for a
    hyperprior, z's so, and the Gaussian tables of the scales that the device's int8 hyper-decoder output
    (head_tflite's last output) can give, with the lookup tables from its values to means and tables."""
    from tinyrobust.compile.graph import read_tflite
    from tinyrobust.split.entropy import (
        SCALE_BOUND,
        SCALE_TABLE,
        Hyperprior,
        factorized_tables,
        gaussian_tables,
        scale_index,
    )

    def factorized(factorized_prior) -> Coding:
        tables = [table_from_pmf(pmf, offset) for pmf, offset in factorized_tables(factorized_prior)]
        return Coding(tables, list(range(len(tables))))

    if not isinstance(prior, Hyperprior):
        return factorized(prior)
    graph = read_tflite(head_tflite)
    h = graph.tensors[graph.outputs[-1]]
    # What the float model makes of each int8 value of h (Hyperprior.mean_and_scale and y_symbols), in float64.
    value = float(h.scale[0]) * (np.arange(-128, 128, dtype=np.float64) - int(h.zero_point[0]))
    scale = np.maximum(np.logaddexp(0.0, value), SCALE_BOUND)
    index = scale_index(scale)
    used = np.unique(index)  # only the tables the lookup can pick go to flash
    gaussian = [table_from_pmf(pmf, offset) for pmf, offset in gaussian_tables(SCALE_TABLE[used])]
    return HyperpriorCoding(factorized(prior.z_prior), gaussian, np.round(value), np.searchsorted(used, index))


def device_model(head, prior):
    """The float graph the device runs: the head, and with a hyperprior its hyper-encoder and hyper-decoder on
    the head's latent, as outputs (y, z, h)."""
    import keras

    from tinyrobust.split.entropy import Hyperprior

    if not isinstance(prior, Hyperprior):
        return head
    x = keras.Input(head.input_shape[1:])
    y = z = head(x)
    for layer in prior.hyper_encoder:
        z = layer(z)
    h = z
    for layer in prior.hyper_decoder:
        h = layer(h)
    return keras.Model(x, [y, z, h])


def load_split(
    name: str, beta: float | None = None, data: Path | None = None, entropy_model: str | None = None
) -> SplitModel:
    """A split model with the given entropy model (default: the spec's), trained (once, cached) at beta (default:
    the spec's first) on its data set or the user's (as for a built-in classifier, see zoo.load_data), its head
    quantized with the latent's symbols as output."""
    import keras

    from tinyrobust.split.head import hyper_decoder_part, with_symbol_output

    spec = split_spec(name, entropy_model)
    entropy_model = spec["split"]["entropy_model"]
    beta = spec["split"]["betas"][0] if beta is None else float(beta)
    if data is not None:
        x_train, y_train, x_test, y_test = zoo.load_data(Path(data), spec)
        tag = zoo.data_tag(Path(data), spec)
    elif zoo.dataset_available(spec):
        x_train, y_train, x_test, y_test = zoo.load_dataset(spec)
        tag = ""
    else:
        raise UserError(f"split model {name} needs its data set {spec['dataset']}, which is not on this machine; "
                        "pass one with --data")  # fmt: skip
    spec_hash = hashlib.sha256((zoo.MODELS / f"{name}.toml").read_bytes()).hexdigest()[:12]
    folder = zoo.cache_dir() / "split" / f"{name}-{entropy_model}-{spec_hash}{tag}-beta{beta:g}"
    paths = {part: folder / f"{part}.keras" for part in ("head", "tail")}
    prior_path, tflite_path = folder / "prior.npz", folder / "head-int8.tflite"
    if all(p.is_file() for p in (*paths.values(), prior_path)):
        head, tail = (keras.models.load_model(paths[part]) for part in ("head", "tail"))
        prior = _prior(spec, head.output_shape[1:])
        with np.load(prior_path, allow_pickle=False) as weights:
            prior.set_weights([weights[f"w{i}"] for i in range(len(weights.files))])
    else:
        head, tail, prior = train(spec, beta, x_train, y_train)
        folder.mkdir(parents=True, exist_ok=True)
        for part, network in (("head", head), ("tail", tail)):
            network.save(paths[part])
        np.savez(prior_path, **{f"w{i}": w for i, w in enumerate(prior.get_weights())})
    if not tflite_path.is_file():
        device = device_model(head, prior)
        symbol_outputs = 2 if len(device.outputs) == 3 else 1  # y, and a hyperprior's z
        tflite_path.write_bytes(with_symbol_output(quantize(device, x_train, "int8"), symbol_outputs))
    head_tflite = tflite_path.read_bytes()
    hyper_decoder = hyper_decoder_part(head_tflite) if entropy_model == "hyperprior" else None
    return SplitModel(name, beta, head, tail, prior, head_tflite, coding_for(prior, head_tflite), x_train, y_train,
                      x_test, y_test, hyper_decoder)  # fmt: skip
