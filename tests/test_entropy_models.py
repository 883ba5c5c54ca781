"""The split network's entropy models against the mathematics they stand for: Ballé et al.'s factorized density
(computed again here in float64 from the layer's parameters), the discretized normal (math.erfc), the
entropy of a known discrete distribution, and the tables the coder gets."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tinyrobust.split import entropy
from tinyrobust.split.entropy import (
    SCALE_TABLE,
    FactorizedPrior,
    GaussianConditional,
    Hyperprior,
    factorized_tables,
    gaussian_tables,
    noisy,
    scale_index,
)


def reference_logits(prior: FactorizedPrior, x: np.ndarray) -> np.ndarray:
    """Ballé et al. 2018, appendix 6.1, in float64: per channel f_K o ... o f_1 with f_k(h) = g_k(H_k h + b_k),
    H_k = softplus(matrix), g_k(h) = h + tanh(a_k) tanh(h) for all but the last. x (n,) -> (n, channels)."""
    params = [[np.asarray(v.numpy(), np.float64) for v in vs] for vs in (prior.matrices, prior.biases, prior.factors)]
    columns = []
    for channel in range(prior.channels):
        h = np.asarray(x, np.float64)[None, :]
        for k, (matrix, bias) in enumerate(zip(params[0], params[1], strict=True)):
            h = np.logaddexp(0, matrix[channel]) @ h + bias[channel][:, None]
            if k < len(params[2]):
                h = h + np.tanh(params[2][k][channel])[:, None] * np.tanh(h)
        columns.append(h[0])
    return np.stack(columns, -1)


def sigmoid(x):
    return np.exp(-np.logaddexp(0, -x))


def normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def discretized_normal(y: float, mean: float, scale: float) -> float:
    """P(Y in [y - 1/2, y + 1/2]) for Y ~ N(mean, scale), taken on the lower tail so float64 resolves it."""
    v = -abs(y - mean)
    return normal_cdf((v + 0.5) / scale) - normal_cdf((v - 0.5) / scale)


def train(prior: FactorizedPrior, sample, steps: int, learning_rate: float) -> None:
    """Minimize the mean bits of noisy samples, as the split network's training does."""
    optimizer = keras.optimizers.Adam(learning_rate)

    @tf.function
    def step(y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(prior.bits(noisy(y, prior.seed_generator)))
        gradients = tape.gradient(loss, prior.trainable_variables)
        optimizer.apply_gradients(zip(gradients, prior.trainable_variables, strict=True))

    for _ in range(steps):
        step(sample())


def rounded_laplace(scale: float, k: np.ndarray) -> np.ndarray:
    """P(round(Y) = k) for Y ~ Laplace(0, scale)."""

    def cdf(x):
        return np.where(x < 0, 0.5 * np.exp(-np.abs(x) / scale), 1 - 0.5 * np.exp(-np.abs(x) / scale))

    return cdf(k + 0.5) - cdf(k - 0.5)


LAPLACE_SCALES = (0.7, 2.0, 6.0)


@pytest.fixture(scope="module")
def laplace_prior() -> FactorizedPrior:
    """A prior trained for 300 steps on rounded Laplace samples, one scale per channel (about 5 s)."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    prior = FactorizedPrior(len(LAPLACE_SCALES), seed=0)
    train(prior, lambda: np.round(rng.laplace(0, LAPLACE_SCALES, (1024, 3))).astype("float32"), 300, 0.01)
    return prior


@pytest.fixture(scope="module")
def shaken_prior() -> FactorizedPrior:
    """A prior after a few large optimizer steps on a random bimodal sample, its gates pushed far from 0."""
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    prior = FactorizedPrior(4, seed=1)

    def sample():
        return (rng.choice([-20.0, 5.0], (256, 4)) + rng.normal(0, 2, (256, 4))).astype("float32")

    train(prior, sample, 20, 0.2)
    assert np.abs(np.tanh(prior.factors[0].numpy())).max() > 0.1
    return prior


def test_the_cumulative_is_balles_density_recomputed_in_float64(shaken_prior):
    x = np.linspace(-80, 80, 1601)
    logits = shaken_prior.cumulative_logits(np.repeat(x[:, None], 4, 1)).numpy()
    np.testing.assert_allclose(logits, reference_logits(shaken_prior, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("trained", [False, True], ids=["at-init", "after-steps"])
def test_the_cumulative_never_decreases_in_any_channel(trained, shaken_prior):
    prior = shaken_prior if trained else FactorizedPrior(4, seed=2)
    x = np.repeat(np.arange(-300, 300, 0.05, dtype=np.float32)[:, None], 4, 1)
    logits = prior.cumulative_logits(x).numpy()
    assert np.all(np.diff(logits, axis=0) >= 0)
    assert np.all(np.diff(prior.cumulative(x).numpy(), axis=0) >= 0)


@pytest.mark.parametrize("trained", [False, True], ids=["at-init", "after-steps"])
def test_factorized_likelihoods_of_all_integers_sum_to_one_per_channel(trained, shaken_prior):
    prior = shaken_prior if trained else FactorizedPrior(4, seed=2)
    y = np.repeat(np.arange(-2000, 2001, dtype=np.float32)[:, None], 4, 1)
    np.testing.assert_allclose(prior.likelihood(y).numpy().sum(0), 1.0, atol=1e-5)


def test_factorized_likelihood_is_the_difference_of_the_cumulative_and_stays_exact_in_the_tails(shaken_prior):
    y = np.arange(-400, 401, dtype=np.float32)
    likelihood = shaken_prior.likelihood(np.repeat(y[:, None], 4, 1)).numpy()
    # Where c(y +- 1/2) is away from 0 and 1, the naive difference in float32 is accurate.
    upper = shaken_prior.cumulative(np.repeat(y[:, None] + 0.5, 4, 1)).numpy()
    lower = shaken_prior.cumulative(np.repeat(y[:, None] - 0.5, 4, 1)).numpy()
    stable = (lower > 1e-3) & (upper < 1 - 1e-3)
    assert stable.sum() > 20
    np.testing.assert_allclose(likelihood[stable], (upper - lower)[stable], atol=1e-6)
    # Everywhere, and above all in the upper tail where the naive difference is 1 - 1 = 0, it is the float64
    # difference of the reference (down to the lower bound).
    exact = sigmoid(reference_logits(shaken_prior, y + 0.5)) - sigmoid(reference_logits(shaken_prior, y - 0.5))
    assert np.sum((upper - lower == 0) & (exact > 1e-9)) > 20
    np.testing.assert_allclose(likelihood, np.maximum(exact, 1e-9), rtol=2e-3, atol=1e-12)


def test_factorized_bits_are_minus_log2_of_the_product_of_the_likelihoods(shaken_prior):
    y = np.round(np.random.default_rng(3).normal(0, 20, (2, 3, 5, 4))).astype("float32")
    y[1, 0, 0, 0] = 1e6  # beyond the lower bound: costs -log2(1e-9)
    likelihood = shaken_prior.likelihood(y).numpy().astype(np.float64)
    assert likelihood[1, 0, 0, 0] == pytest.approx(1e-9)
    expected = -np.log2(np.prod(likelihood.reshape(2, -1) * 1e3, axis=1)) + 60 * np.log2(1e3)
    np.testing.assert_allclose(shaken_prior.bits(y).numpy(), expected, rtol=1e-5)


def test_a_factorized_prior_trained_on_rounded_laplace_codes_it_within_3_percent_of_its_entropy(laplace_prior):
    k = np.arange(-1000, 1001)
    model = laplace_prior.likelihood(np.repeat(k[:, None].astype(np.float32), 3, 1)).numpy().astype(np.float64)
    for channel, scale in enumerate(LAPLACE_SCALES):
        p = rounded_laplace(scale, k)
        entropy_bits = -np.sum(p[p > 0] * np.log2(p[p > 0]))
        cross_entropy_bits = -np.sum(p * np.log2(model[:, channel]))  # what coding with the model costs
        assert entropy_bits <= cross_entropy_bits <= 1.03 * entropy_bits, (scale, entropy_bits, cross_entropy_bits)


def test_a_factorized_prior_trained_on_rounded_laplace_learns_a_sensible_support(laplace_prior):
    for (pmf, offset), scale in zip(factorized_tables(laplace_prior), LAPLACE_SCALES, strict=True):
        lower, upper = offset, offset + len(pmf) - 2
        # It holds everything the samples showed (P(|k| > n) = exp(-(n + 1/2) / scale) below 1e-4)...
        seen = math.ceil(-scale * math.log(1e-4) - 0.5)
        assert lower <= -seen and upper >= seen
        # ... and its width is of the order of the true 1e-9 support, not the init's +-217.
        true = math.ceil(-scale * math.log(1e-9) - 0.5)
        assert max(-lower, upper) <= 2.5 * true + 5, (scale, lower, upper, true)


@pytest.mark.parametrize("scale", [0.05, 0.11, 0.3, 1.0, 3.7, 40.0, 900.0])
def test_gaussian_likelihood_is_the_discretized_normal_out_to_the_far_tails(scale):
    rng = np.random.default_rng(4)
    mean = rng.uniform(-10, 10, 400)
    y = np.round(mean + rng.choice([-1, 1], 400) * np.geomspace(1e-2, 60 * max(scale, 0.11), 400))
    likelihood = GaussianConditional().likelihood(y.astype(np.float32), mean.astype(np.float32), scale).numpy()
    assert np.all(np.isfinite(likelihood)) and np.all(likelihood >= 1e-9)
    # float32 inputs: y - mean is exact to about 1e-6 relative, which the far tail magnifies by (y - mean) / scale^2.
    bounded = max(scale, 0.11)
    expected = np.array([max(discretized_normal(a, b, bounded), 1e-9) for a, b in zip(y, mean, strict=True)])
    assert np.sum(expected > 1e-9) > 50 and np.sum(expected == 1e-9) > 50
    np.testing.assert_allclose(likelihood, expected, rtol=1e-3)


@pytest.mark.parametrize(("mean", "scale"), [(0.0, 0.05), (0.3, 0.11), (-2.5, 1.0), (7.4, 13.0), (-100.2, 256.0)])
def test_gaussian_likelihoods_of_all_integers_sum_to_one(mean, scale):
    # Not too many integers beyond the support: each one costs at least the 1e-9 bound.
    reach = 8 * max(scale, 0.11) + 20
    y = np.arange(round(mean - reach), round(mean + reach) + 1, dtype=np.float32)
    likelihood = GaussianConditional().likelihood(y, np.float32(mean), np.float32(scale)).numpy()
    assert likelihood.astype(np.float64).sum() == pytest.approx(1.0, abs=1e-5)


def test_noise_stays_within_half_a_step():
    y = np.linspace(-5, 5, 10000, dtype=np.float32)
    residual = noisy(y, keras.random.SeedGenerator(0)).numpy() - y
    assert residual.min() >= -0.5 and residual.max() <= 0.5 and residual.std() > 0.25


def test_factorized_tables_hold_all_but_the_tail_mass_in_the_smallest_support(shaken_prior):
    tail_mass = 1e-9
    target = math.log(2 / tail_mass - 1)
    for channel, (pmf, offset) in enumerate(factorized_tables(shaken_prior, tail_mass)):
        lower, upper = offset, offset + len(pmf) - 2
        assert np.all(pmf >= 0) and pmf.sum() == pytest.approx(1.0, abs=1e-12)
        edges = reference_logits(shaken_prior, np.array([lower - 0.5, lower + 0.5, upper - 0.5, upper + 0.5]))
        below, above = sigmoid(edges[0, channel]), sigmoid(-edges[3, channel])
        assert below <= tail_mass / 2 * (1 + 1e-4) and above <= tail_mass / 2 * (1 + 1e-4)
        assert pmf[-1] == pytest.approx(below + above, rel=1e-4)
        assert edges[1, channel] > -target and edges[2, channel] < target  # one symbol less would not do
        k = np.arange(lower, upper + 1, dtype=np.float64)
        exact = sigmoid(reference_logits(shaken_prior, k + 0.5)) - sigmoid(reference_logits(shaken_prior, k - 0.5))
        np.testing.assert_allclose(pmf[:-1], exact[:, channel], rtol=1e-4, atol=1e-14)


@pytest.mark.parametrize("tail_mass", [1e-9, 1e-4])
def test_gaussian_tables_hold_all_but_the_tail_mass_in_the_smallest_symmetric_support(tail_mass):
    tables = gaussian_tables(SCALE_TABLE, tail_mass)
    assert len(tables) == len(SCALE_TABLE) == 64
    for (pmf, offset), scale in zip(tables, SCALE_TABLE, strict=True):
        n = -offset
        assert len(pmf) == 2 * n + 2
        assert np.all(pmf >= 0) and pmf.sum() == pytest.approx(1.0, abs=1e-12)
        outside = math.erfc((n + 0.5) / (scale * math.sqrt(2)))
        assert outside <= tail_mass and pmf[-1] == pytest.approx(outside, rel=1e-9)
        assert n == 0 or math.erfc((n - 0.5) / (scale * math.sqrt(2))) > tail_mass
        expected = [discretized_normal(k, 0.0, scale) for k in range(-n, n + 1)]
        np.testing.assert_allclose(pmf[:-1], expected, rtol=1e-9, atol=1e-300)


def test_scale_index_picks_the_smallest_table_scale_at_least_the_predicted_one():
    scales = np.concatenate([[0.0, 0.01, 300.0, 1e6], SCALE_TABLE, np.geomspace(0.05, 400, 1000)])
    index = scale_index(scales)
    assert index.shape == scales.shape and index.min() >= 0 and index.max() == 63
    for scale, i in zip(scales, index, strict=True):
        if scale <= SCALE_TABLE[-1]:
            assert SCALE_TABLE[i] >= scale and (i == 0 or SCALE_TABLE[i - 1] < scale)
        else:
            assert i == 63
    assert scale_index(1.0) == int(np.argmax(SCALE_TABLE >= 1.0))


def test_gaussian_bits_have_gradients_in_y_the_mean_and_the_scale_under_noise():
    # Within 8 scales of the mean: further out the bin's mass underflows float32, and so does its gradient.
    rng = np.random.default_rng(5)
    y_value, scale_value = rng.normal(0, 4, (3, 50)), rng.uniform(0.2, 8, (3, 50))
    y = tf.Variable(y_value.astype("float32"))
    mean = tf.Variable((y_value + scale_value * rng.uniform(-8, 8, (3, 50))).astype("float32"))
    scale = tf.Variable(scale_value.astype("float32"))
    with tf.GradientTape() as tape:
        bits = GaussianConditional().bits(noisy(y, keras.random.SeedGenerator(0)), mean, scale)
    for gradient in tape.gradient(bits, [y, mean, scale]):
        assert np.all(np.isfinite(gradient)) and np.all(gradient.numpy() != 0)


@pytest.fixture(scope="module")
def hyperprior_and_latent():
    keras.utils.set_random_seed(6)
    y = np.random.default_rng(6).normal(0, 3, (2, 5, 7, 6)).astype("float32")  # odd sizes: cropped after stride 2
    return Hyperprior(6, z_channels=4, hidden_channels=8, strides=(1, 2), seed=6), y


def test_hyperprior_bits_have_gradients_through_y_the_means_the_scales_and_z(hyperprior_and_latent):
    hyperprior, y_value = hyperprior_and_latent
    y = tf.Variable(y_value)
    with tf.GradientTape(persistent=True) as tape:
        y_likelihood, z_likelihood = hyperprior.likelihoods(y, training=True)
        y_bits = tf.reduce_sum(-tf.math.log(y_likelihood)) / math.log(2)
        z_bits = tf.reduce_sum(-tf.math.log(z_likelihood)) / math.log(2)
        bits = tf.reduce_sum(hyperprior.bits(y, training=True))

    def assert_reaches(gradient):
        assert gradient is not None and np.all(np.isfinite(gradient)) and np.any(gradient.numpy() != 0)

    # y's bits reach y itself (every element), and the means and the scales: the last hyper-decoder layer's
    # output channels are the 6 means, then the 6 scales.
    gradient_y = tape.gradient(y_bits, y)
    assert np.all(np.isfinite(gradient_y)) and np.all(gradient_y.numpy() != 0)
    output_bias = tape.gradient(y_bits, hyperprior.hyper_decoder[-1].bias).numpy()
    assert np.all(np.isfinite(output_bias)) and np.all(output_bias[:6] != 0) and np.all(output_bias[6:] != 0)
    # z's bits reach z (the hyper-encoder) and z's prior.
    for layer in hyperprior.hyper_encoder:
        assert_reaches(tape.gradient(z_bits, layer.kernel))
    for variable in hyperprior.z_prior.trainable_variables:
        assert_reaches(tape.gradient(z_bits, variable))
    # The total counts both: every trainable variable and y receive a gradient from it.
    for variable in [y, *hyperprior.trainable_variables]:
        assert_reaches(tape.gradient(bits, variable))
    assert len(hyperprior.trainable_variables) == len(hyperprior.z_prior.trainable_variables) + 8


def test_hyperprior_at_inference_codes_round_y_minus_round_mean_under_a_zero_mean_gaussian(hyperprior_and_latent):
    hyperprior, y = hyperprior_and_latent
    y_int = np.round(y)
    z_hat = np.round(hyperprior.hyper_encode(y_int).numpy())
    assert z_hat.shape == (2, 3, 4, 4)
    mean, scale = (t.numpy() for t in hyperprior.hyper_decode(z_hat))
    assert mean.shape == scale.shape == y.shape and scale.min() >= 0.11
    symbols = hyperprior.y_symbols(y, mean).numpy()
    assert np.array_equal(symbols, y_int - np.round(mean))
    y_likelihood, z_likelihood = (t.numpy() for t in hyperprior.likelihoods(y))
    pairs = zip(symbols.flat, scale.flat, strict=True)
    expected = [max(discretized_normal(s, 0.0, float(sc)), 1e-9) for s, sc in pairs]
    np.testing.assert_allclose(y_likelihood.ravel(), expected, rtol=1e-4)
    np.testing.assert_allclose(hyperprior.likelihood(y).numpy(), y_likelihood)
    np.testing.assert_allclose(z_likelihood, hyperprior.z_prior.likelihood(z_hat).numpy())
    y_hat, bits = hyperprior(y)
    assert np.array_equal(y_hat.numpy(), y_int)  # the integer latent the device sends and the tail reads
    expected_bits = -np.log2(y_likelihood.astype(np.float64)).sum((1, 2, 3))
    expected_bits += -np.log2(z_likelihood.astype(np.float64)).sum((1, 2, 3))
    np.testing.assert_allclose(bits.numpy(), expected_bits, rtol=1e-5)
    np.testing.assert_allclose(hyperprior.bits(y).numpy(), expected_bits, rtol=1e-5)


def test_the_hyper_decoder_resizes_back_to_the_encoders_sizes_where_it_strides(hyperprior_and_latent):
    hyperprior, _ = hyperprior_and_latent
    kinds = [(type(layer).__name__, getattr(layer, "height", None), getattr(layer, "width", None))
             for layer in hyperprior.hyper_decoder]  # fmt: skip
    # strides (1, 2) on 5 x 7: the encoder's second convolution halves 5 x 7 to 3 x 4, so the decoder resizes
    # 3 x 4 back to 5 x 7 before its first convolution.
    assert kinds == [("Resizing", 5, 7), ("Conv2D", None, None), ("Conv2D", None, None)]
    assert all(layer.strides == (1, 1) for layer in hyperprior.hyper_decoder[1:])


def test_the_module_keeps_tensorflow_compressions_defaults():
    assert SCALE_TABLE[0] == pytest.approx(0.11) and SCALE_TABLE[-1] == pytest.approx(256.0)
    assert entropy.LIKELIHOOD_BOUND == 1e-9 and entropy.TAIL_MASS == 1e-9


def test_a_hyperprior_without_strides_is_made_of_plain_convolutions_the_device_runs():
    hyperprior = Hyperprior(4, z_channels=2, hidden_channels=4, strides=(1, 1))
    mean, scale = hyperprior.hyper_decode(hyperprior.hyper_encode(np.zeros((1, 3, 3, 4), np.float32)))
    assert mean.shape == scale.shape == (1, 3, 3, 4)
    assert all(type(layer) is keras.layers.Conv2D for layer in hyperprior.hyper_encoder + hyperprior.hyper_decoder)
