"""Entropy models of the split network's latent y, and the tables its rANS coder codes y with.

Two models, as in Zhang et al. (ECCV 2024):

- `FactorizedPrior`: a learned non-parametric density per channel (Ballé et al. 2018, appendix 6.1).
- `Hyperprior`: the mean-scale hyperprior of Minnen et al. 2018. A hyper-encoder turns y into a side latent z,
  coded with a `FactorizedPrior`; a hyper-decoder turns z back into a mean and a scale per element of y, and y is
  coded with a `GaussianConditional`.

Both count bits on the same relaxation as tensorflow-compression and compressai: in training (and in an attack)
y is y + U(-1/2, 1/2), whose likelihood has a gradient; at inference y is rounded. Every likelihood is the mass
of a unit bin, so rounded values cost what the coder spends on them, up to its 16-bit quantized probabilities.

The coder's tables are made here at compile time (`factorized_tables`, `gaussian_tables`, `scale_index`): each
one is a (pmf, offset) pair, the probabilities of the symbols offset, offset + 1, ... followed by the mass of
everything outside them (coded through the escape), ready for `coder.table_from_pmf`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import keras
import numpy as np
from keras import ops

LIKELIHOOD_BOUND = 1e-9  # at most -log2(1e-9) = 29.9 bits per element
SCALE_BOUND = 0.11  # tensorflow-compression's: a unit bin then holds 1 - 5.6e-6 of the mass
TAIL_MASS = 1e-9
SCALE_TABLE = np.exp(np.linspace(np.log(SCALE_BOUND), np.log(256.0), 64))  # tensorflow-compression's default


def noisy(y, seed=None):
    """y + U(-1/2, 1/2): the differentiable stand-in for rounding (training, attacks)."""
    y = ops.convert_to_tensor(y)
    return y + keras.random.uniform(ops.shape(y), -0.5, 0.5, dtype=y.dtype, seed=seed)


def _lower_bound(x, bound: float):
    """max(x, bound), whose gradient is the identity's wherever x is above the bound or descent would raise it
    (tensorflow-compression's "identity_if_towards"): a bounded likelihood or scale still learns, so training
    does not stall, and a scale below the bound is not pushed further down for nothing."""

    @ops.custom_gradient
    def bounded(x):
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            passes = ops.logical_or(ops.greater_equal(x, bound), ops.less(upstream, 0))
            return ops.where(passes, upstream, ops.zeros_like(upstream))

        return ops.maximum(x, bound), grad

    return bounded(x)


def _bits(likelihood):
    """-log2 of the product of the likelihoods of each sample (every axis but the first)."""
    return ops.sum(-ops.log2(likelihood), axis=tuple(range(1, len(likelihood.shape))))


def _cumulative_logits(x, matrices, biases, factors):
    """Logits of Ballé et al.'s cumulative c(x) per channel, x of shape (..., channels).

    Each layer is h <- softplus(H) h + b, all but the last followed by h <- h + tanh(a) tanh(h): positive
    matrices and |tanh(a)| < 1 make every step increasing in h, so c is a cumulative distribution in x.
    """
    h = ops.expand_dims(x, -1)  # (..., channels, 1)
    for i, (matrix, bias) in enumerate(zip(matrices, biases, strict=True)):
        h = ops.einsum("...ci,coi->...co", h, ops.softplus(matrix)) + bias
        if i < len(factors):
            h = h + ops.tanh(factors[i]) * ops.tanh(h)
    return ops.squeeze(h, -1)


def _factorized_mass(y, matrices, biases, factors):
    """c(y + 1/2) - c(y - 1/2), taken on the side where both sigmoids are small, so that it does not cancel to 0
    in the upper tail (tensorflow-compression's sign trick)."""
    lower = _cumulative_logits(y - 0.5, matrices, biases, factors)
    upper = _cumulative_logits(y + 0.5, matrices, biases, factors)
    ones = ops.ones_like(lower)
    sign = ops.stop_gradient(ops.where(ops.greater(lower + upper, 0), -ones, ones))
    return ops.abs(ops.sigmoid(sign * upper) - ops.sigmoid(sign * lower))


def _gaussian_mass(residual, scale):
    """Mass of the unit bin around `residual` under N(0, scale): Phi((1/2 - |r|)/s) - Phi((-1/2 - |r|)/s), both
    on the lower tail, where erfc keeps its relative precision."""
    r = ops.abs(residual)
    denominator = scale * math.sqrt(2.0)
    return 0.5 * (ops.erfc((r - 0.5) / denominator) - ops.erfc((r + 0.5) / denominator))


@keras.saving.register_keras_serializable(package="tinyrobust")
class FactorizedPrior(keras.layers.Layer):
    """A learned density per channel of the last axis (Ballé et al. 2018, appendix 6.1).

    `call(y, training)` returns (y_hat, bits per sample): y_hat is y + U(-1/2, 1/2) in training and round(y)
    otherwise. `likelihood(y)` and `bits(y)` take y as it is (already rounded or noisy).
    """

    def __init__(
        self,
        channels: int,
        filters: tuple[int, ...] = (3, 3, 3),
        init_scale: float = 10.0,
        likelihood_bound: float = LIKELIHOOD_BOUND,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.channels, self.filters, self.init_scale = channels, tuple(filters), init_scale
        self.likelihood_bound, self.seed = likelihood_bound, seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        widths = (1, *self.filters, 1)
        # Initialized so that c starts as a wide logistic of scale about init_scale.
        layer_scale = init_scale ** (1 / (len(widths) - 1))
        self.matrices, self.biases, self.factors = [], [], []
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            matrix_init = math.log(math.expm1(1 / layer_scale / fan_out))
            self.matrices.append(
                self.add_weight(
                    (channels, fan_out, fan_in), keras.initializers.Constant(matrix_init), name=f"matrix{i}"
                )
            )
            bias_init = keras.initializers.RandomUniform(-0.5, 0.5, seed=None if seed is None else seed + i)
            self.biases.append(self.add_weight((channels, fan_out), bias_init, name=f"bias{i}"))
            if i < len(self.filters):
                self.factors.append(self.add_weight((channels, fan_out), "zeros", name=f"factor{i}"))
        self.built = True

    def cumulative_logits(self, x):
        """Logits of the cumulative c(x) of each channel; x has the channels on its last axis."""
        x = ops.convert_to_tensor(x, self.compute_dtype)
        return _cumulative_logits(x, self.matrices, self.biases, self.factors)

    def cumulative(self, x):
        """c(x) of each channel."""
        return ops.sigmoid(self.cumulative_logits(x))

    def likelihood(self, y):
        """c(y + 1/2) - c(y - 1/2), at least `likelihood_bound`."""
        y = ops.convert_to_tensor(y, self.compute_dtype)
        return _lower_bound(_factorized_mass(y, self.matrices, self.biases, self.factors), self.likelihood_bound)

    def bits(self, y):
        """-log2 of the likelihood of each sample (the sum over every axis but the first)."""
        return _bits(self.likelihood(y))

    def call(self, y, training=False):
        y_hat = noisy(y, self.seed_generator) if training else ops.round(y)
        return y_hat, self.bits(y_hat)

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "filters": self.filters,
            "init_scale": self.init_scale,
            "likelihood_bound": self.likelihood_bound,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class GaussianConditional:
    """y under N(mean, scale) discretized to unit bins, with the scale and the likelihood bounded below."""

    scale_bound: float = SCALE_BOUND
    likelihood_bound: float = LIKELIHOOD_BOUND

    def likelihood(self, y, mean, scale):
        """Phi((y - mean + 1/2) / scale) - Phi((y - mean - 1/2) / scale), at least `likelihood_bound`."""
        scale = _lower_bound(ops.convert_to_tensor(scale), self.scale_bound)
        return _lower_bound(_gaussian_mass(y - mean, scale), self.likelihood_bound)

    def bits(self, y, mean, scale):
        """-log2 of the likelihood of each sample (the sum over every axis but the first)."""
        return _bits(self.likelihood(y, mean, scale))


@keras.saving.register_keras_serializable(package="tinyrobust")
class Hyperprior(keras.layers.Layer):
    """The mean-scale hyperprior (Minnen et al. 2018) of a latent y of shape (batch, height, width, channels),
    in the form the device runs.

    The hyper-encoder is one convolution per entry of `strides` (ReLU between them, `hidden_channels` wide, the
    last one `z_channels` wide); it takes y itself, not |y| as Ballé's scale-only hyperprior does, since the
    means need y's sign. The hyper-decoder mirrors it: where the encoder has a stride above 1, a nearest-neighbour
    resize back to the encoder's size at that point, then a convolution (the runtime has no transposed
    convolution, and resize-convolution avoids its checkerboard). Its last layer gives a mean and a softplus scale
    (bounded below) per element of y: the means on its first `channels` outputs, the scales before the softplus
    on the others. z is coded with a `FactorizedPrior`.

    At inference the latent is integer, as on the device: the hyper-encoder reads round(y), and y is coded as the
    symbols round(y) - round(mean) under a zero-mean Gaussian of the predicted scale, so that y_hat = round(y),
    which the tail reads. In training both y - mean and z carry uniform noise instead.
    `call(y, training)` returns (y_hat, bits per sample, y's and z's together).
    """

    def __init__(
        self,
        channels: int,
        z_channels: int = 8,
        hidden_channels: int = 16,
        strides: tuple[int, ...] = (1, 2),
        kernel_size: int = 3,
        filters: tuple[int, ...] = (3, 3, 3),
        scale_bound: float = SCALE_BOUND,
        likelihood_bound: float = LIKELIHOOD_BOUND,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.channels, self.z_channels, self.hidden_channels = channels, z_channels, hidden_channels
        self.strides, self.kernel_size, self.filters = tuple(strides), kernel_size, tuple(filters)
        self.scale_bound, self.likelihood_bound, self.seed = scale_bound, likelihood_bound, seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.z_prior = FactorizedPrior(z_channels, filters, likelihood_bound=likelihood_bound, seed=seed)
        self.conditional = GaussianConditional(scale_bound, likelihood_bound)
        last = len(self.strides) - 1
        self.hyper_encoder = [
            keras.layers.Conv2D(
                z_channels if i == last else hidden_channels,
                kernel_size,
                stride,
                padding="same",
                activation=None if i == last else "relu",
            )
            for i, stride in enumerate(self.strides)
        ]
        self.hyper_decoder: list = []  # made in build: its resizes need y's height and width

    def build(self, y_shape):
        shape, sizes = tuple(y_shape), []
        for layer in self.hyper_encoder:
            sizes.append(shape[1:3])
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        last = len(self.strides) - 1
        for i, (stride, size) in enumerate(zip(reversed(self.strides), reversed(sizes), strict=True)):
            if stride > 1:
                self.hyper_decoder.append(keras.layers.Resizing(*size, interpolation="nearest"))
            self.hyper_decoder.append(
                keras.layers.Conv2D(
                    2 * self.channels if i == last else self.hidden_channels,
                    self.kernel_size,
                    padding="same",
                    activation=None if i == last else "relu",
                )
            )
        for layer in self.hyper_decoder:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.built = True

    def _built_for(self, y):
        if not self.built:
            self.build(y.shape)

    def hyper_encode(self, y):
        """The side latent z (continuous) of y."""
        z = ops.convert_to_tensor(y, self.compute_dtype)
        self._built_for(z)
        for layer in self.hyper_encoder:
            z = layer(z)
        return z

    def hyper_decode(self, z_hat):
        """(mean, scale) of every element of y from the coded z; the scale is at least `scale_bound`."""
        h = ops.convert_to_tensor(z_hat, self.compute_dtype)
        for layer in self.hyper_decoder:
            h = layer(h)
        return self.mean_and_scale(h)

    def mean_and_scale(self, h):
        """The hyper-decoder's last output split into (mean, scale): what the device's lookup tables compute."""
        mean, scale = ops.split(h, 2, axis=-1)
        return mean, _lower_bound(ops.softplus(scale), self.scale_bound)

    @staticmethod
    def y_symbols(y, mean):
        """The integers the device codes for y: round(y) - round(mean), under N(0, scale)."""
        return ops.round(y) - ops.round(mean)

    def _forward(self, y, training):
        y = ops.convert_to_tensor(y, self.compute_dtype)
        self._built_for(y)
        if training:
            z_hat = noisy(self.hyper_encode(y), self.seed_generator)
            mean, scale = self.hyper_decode(z_hat)
            residual = noisy(y - mean, self.seed_generator)
            y_hat = residual + mean
        else:
            y_hat = ops.round(y)
            z_hat = ops.round(self.hyper_encode(y_hat))
            mean, scale = self.hyper_decode(z_hat)
            residual = self.y_symbols(y_hat, mean)
        y_likelihood = self.conditional.likelihood(residual, 0.0, scale)
        return y_hat, y_likelihood, self.z_prior.likelihood(z_hat)

    def likelihoods(self, y, training=False):
        """(likelihood of each element of y, of each element of z), with noise in training, rounded otherwise."""
        _, y_likelihood, z_likelihood = self._forward(y, training)
        return y_likelihood, z_likelihood

    def likelihood(self, y):
        """The likelihood of each element of y at inference, as a factorized prior's `likelihood` gives it."""
        return self.likelihoods(y)[0]

    def bits(self, y, training=False):
        """Bits per sample of y and z together."""
        y_likelihood, z_likelihood = self.likelihoods(y, training)
        return _bits(y_likelihood) + _bits(z_likelihood)

    def call(self, y, training=False):
        y_hat, y_likelihood, z_likelihood = self._forward(y, training)
        return y_hat, _bits(y_likelihood) + _bits(z_likelihood)

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "z_channels": self.z_channels,
            "hidden_channels": self.hidden_channels,
            "strides": self.strides,
            "kernel_size": self.kernel_size,
            "filters": self.filters,
            "scale_bound": self.scale_bound,
            "likelihood_bound": self.likelihood_bound,
            "seed": self.seed,
        }


def factorized_tables(prior: FactorizedPrior, tail_mass: float = TAIL_MASS) -> list[tuple[np.ndarray, int]]:
    """One (pmf, offset) per channel of `prior`: the smallest support [lower, upper] that leaves at most
    tail_mass / 2 below and above it, pmf[k - lower] = c(k + 1/2) - c(k - 1/2) over it and the mass outside it
    last. Computed in float64 from the learned parameters."""
    params = [[np.asarray(v.numpy(), np.float64) for v in vs] for vs in (prior.matrices, prior.biases, prior.factors)]
    target = math.log(2 / tail_mass - 1)  # c(x) = 1 - tail_mass / 2 where its logit is `target`
    half = 64
    while True:
        symbols = np.arange(-half, half + 1, dtype=np.float64)
        edges = np.append(symbols - 0.5, half + 0.5)  # edges[i] = symbols[i] - 1/2
        logits = ops.convert_to_numpy(_cumulative_logits(np.repeat(edges[:, None], prior.channels, 1), *params))
        if np.all(logits[0] <= -target) and np.all(logits[-1] >= target):
            break
        if half >= 2**15:
            raise ValueError(
                f"the factorized prior leaves more than {tail_mass} of its mass outside [-{half}, {half}]: "
                "train it longer or give a larger tail_mass"
            )
        half *= 2
    mass = ops.convert_to_numpy(_factorized_mass(np.repeat(symbols[:, None], prior.channels, 1), *params))
    tables = []
    for channel in range(prior.channels):
        channel_logits = logits[:, channel]
        first = int(np.searchsorted(channel_logits, -target, side="right")) - 1  # last edge with c <= tail_mass / 2
        last = int(np.searchsorted(channel_logits, target, side="left"))  # first edge with c >= 1 - tail_mass / 2
        tail = _sigmoid(channel_logits[first]) + _sigmoid(-channel_logits[last])
        tables.append((np.append(mass[first:last, channel], tail), int(symbols[first])))
    return tables


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def gaussian_tables(
    scale_table: np.ndarray = SCALE_TABLE, tail_mass: float = TAIL_MASS
) -> list[tuple[np.ndarray, int]]:
    """One (pmf, offset) per scale: the zero-mean Gaussian of that scale over the smallest symmetric support
    [-n, n] that leaves at most tail_mass outside, and that mass last. Computed in float64."""
    quantile = -NormalDist().inv_cdf(tail_mass / 2)
    tables = []
    for scale in np.asarray(scale_table, np.float64):
        # The mass outside [-n, n] is 2 Phi(-(n + 1/2) / scale), at most tail_mass once n + 1/2 >= scale * quantile.
        n = max(0, math.ceil(scale * quantile - 0.5))
        symbols = np.arange(-n, n + 1, dtype=np.float64)
        pmf = ops.convert_to_numpy(_gaussian_mass(symbols, float(scale)))
        tail = math.erfc((n + 0.5) / (scale * math.sqrt(2.0)))
        tables.append((np.append(pmf, tail), -n))
    return tables


def scale_index(scale, scale_table: np.ndarray = SCALE_TABLE) -> np.ndarray:
    """Index of the table the device codes a symbol with: the smallest table scale at least the predicted one
    (clipped to the last), so a symbol is never coded with a narrower Gaussian than predicted."""
    index = np.searchsorted(np.asarray(scale_table), np.asarray(scale, np.float64), side="left")
    return np.minimum(index, len(scale_table) - 1)
