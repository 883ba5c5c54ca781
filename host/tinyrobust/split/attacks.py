"""Inputs that change what a split network's device must send: L-inf PGD on the float head and its entropy
model (the entropy attack: maximize the latent's bits; the accuracy attack: maximize the tail's cross-entropy)
and random sign noise, all at eps in input units, kept inside the input's range.

The attacks see the device's input quantization: the input passes through quantize-dequantize with the
gradient taken straight through, so what they optimize is what the int8 head reads. The latent is relaxed with
uniform noise as in training, averaged over `eot` draws per step (expectation over transformation).

Against a defense (an input transformation, on the host or the device) the attack is adaptive: it optimizes
what the head reads after the defense, with the defense's gradient taken as the identity's (BPDA, Athalye et
al. 2018), since neither TV denoising's iterations nor a median filter give a useful one."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tinyrobust.compile.graph import Tensor
from tinyrobust.split.model import SplitModel

KINDS = ("entropy", "accuracy", "noise")


def _device_input(x, tensor: Tensor):
    """x as the int8 head reads it (quantized, clipped, dequantized), with the gradient of the identity."""
    import tensorflow as tf

    scale, zero = float(tensor.scale[0]), float(tensor.zero_point[0])
    q = tf.clip_by_value(tf.round(x / scale) + zero, -128.0, 127.0)
    return x + tf.stop_gradient((q - zero) * scale - x)


def pgd(model: SplitModel, kind: str, x: np.ndarray, y: np.ndarray, eps: float, tensor: Tensor,
        iterations: int = 20, eot: int = 16, step_fraction: float = 0.25, seed: int = 0,
        input_range: tuple[float, float] = (0.0, 1.0),
        defense: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:  # fmt: skip
    """L-inf PGD from x within eps, sign steps of step_fraction x eps: "entropy" maximizes the latent's bits
    under the prior (what the device will send), "accuracy" the tail's cross-entropy on the latent. With a
    defense (float inputs -> the float inputs the head reads), through it, by BPDA."""
    import keras
    import tensorflow as tf

    if kind not in ("entropy", "accuracy"):
        raise ValueError(f"pgd makes the entropy or the accuracy attack, not {kind!r}")
    lo, hi = input_range
    keras.utils.set_random_seed(seed)
    # The entropy model draws its noise from a generator of its own: restart it, so that an attack makes the same
    # inputs whenever it runs, not depending on what ran before it.
    model.prior.seed_generator.state.assign(keras.random.SeedGenerator(seed).state.value)
    x0 = tf.constant(x, tf.float32)
    labels = tf.constant(y)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")

    def loss(x_adv, defended):
        read = x_adv if defended is None else x_adv + tf.stop_gradient(defended - x_adv)  # BPDA
        latent = model.head(_device_input(read, tensor), training=False)
        total = 0.0
        for _ in range(eot):
            relaxed, bits = model.prior(latent, training=True)  # the noise relaxation: a gradient through round
            if kind == "entropy":
                total += tf.reduce_sum(bits)
            else:
                total += cross_entropy(labels, model.tail(relaxed, training=False))
        return total / eot

    x_adv = x0
    for _ in range(iterations):
        defended = None if defense is None else tf.constant(defense(x_adv.numpy()), tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            value = loss(x_adv, defended)
        step = step_fraction * eps * tf.sign(tape.gradient(value, x_adv))
        x_adv = tf.clip_by_value(tf.clip_by_value(x_adv + step, x0 - eps, x0 + eps), lo, hi)
    return x_adv.numpy()


def sign_noise(x: np.ndarray, eps: float, seed: int = 0, input_range: tuple[float, float] = (0.0, 1.0)):
    """x moved by +-eps in every element, the signs drawn at random: the baseline an attack must beat."""
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=x.shape).astype(np.float32)
    return np.clip(x + eps * signs, *input_range).astype(np.float32)
