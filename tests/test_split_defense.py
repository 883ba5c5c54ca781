"""The entropy study's defense: TV denoising that keeps its fidelity term (the published code lost it by updating
the input in place), smooths where its weights are high, and the entropy model's likelihood map that weights it."""

from types import SimpleNamespace

import keras
import numpy as np
import pytest

from tinyrobust.split.defense import _divergence, _gradient, defend, denoise, likelihood_map
from tinyrobust.split.entropy import FactorizedPrior


def total_variation(u: np.ndarray) -> float:
    gy, gx = _gradient(np.asarray(u, np.float64))
    return float(np.hypot(gy, gx).sum())


def blocks(n: int = 2, size: int = 32) -> np.ndarray:
    """Clean images the size of the digits: squares of 0.3 and 0.7, away from the bounds so that sign noise is not
    clipped."""
    tile = np.kron(np.array([[0.3, 0.7], [0.7, 0.3]]), np.ones((size // 2, size // 2)))
    return np.broadcast_to(tile[None, :, :, None], (n, size, size, 1)).astype(np.float32).copy()


def sign_noise(x: np.ndarray, eps: float = 8 / 255, seed: int = 0) -> np.ndarray:
    return np.clip(x + eps * np.sign(np.random.default_rng(seed).normal(size=x.shape)), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def split_model():
    """A random head (one stride-2 convolution to 4 linear channels) and a fresh prior over its latent."""
    keras.utils.set_random_seed(0)
    head = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Conv2D(4, 3, 2, padding="same")])
    return SimpleNamespace(head=head, prior=FactorizedPrior(4, seed=0))


def test_divergence_is_minus_the_adjoint_of_the_gradient():
    rng = np.random.default_rng(1)
    u, qy, qx = (rng.normal(size=(2, 5, 7, 3)) for _ in range(3))
    qy[:, -1], qx[:, :, -1] = 0, 0
    gy, gx = _gradient(u)
    assert np.isclose(np.sum(gy * qy + gx * qx), -np.sum(u * _divergence(qy, qx)))


def test_zero_weights_or_zero_strength_return_the_input_unchanged():
    x = sign_noise(blocks())
    np.testing.assert_array_equal(denoise(x, np.zeros(x.shape[:3])), x)
    np.testing.assert_array_equal(denoise(x, np.ones(x.shape[:3]), strength=0.0), x)


def test_a_small_strength_stays_close_to_the_input():
    x = sign_noise(blocks())
    out = denoise(x, np.ones(x.shape[:3]), strength=1e-4)
    assert 0 < np.abs(out - x).max() <= 4e-4  # |div q| <= 4 x strength


def test_denoising_leaves_its_input_as_it_was():
    x = sign_noise(blocks())
    before = x.copy()
    out = denoise(x, np.ones(x.shape[:3]))
    np.testing.assert_array_equal(x, before)
    assert out is not x and not np.shares_memory(out, x) and out.dtype == x.dtype


def test_denoising_minimizes_fidelity_plus_weighted_total_variation():
    """Without the fidelity term more iterations would keep flattening the image; with it they barely move it."""
    x = sign_noise(blocks())
    weights = np.ones(x.shape[:3])

    def energy(u):
        return 0.5 * np.sum((np.float64(u) - x) ** 2) + 0.1 * total_variation(u)

    out, longer = denoise(x, weights, 0.1), denoise(x, weights, 0.1, iterations=400)
    assert np.abs(out - longer).max() < 0.01
    flat = np.full_like(x, x.mean())
    assert energy(out) < 1.02 * energy(longer) and energy(out) < min(energy(x), energy(flat)) / 2


def test_denoising_lowers_total_variation_and_moves_the_noisy_image_toward_the_clean_one():
    clean = blocks()
    noisy = sign_noise(clean)
    out = denoise(noisy, np.ones(clean.shape[:3]))
    assert total_variation(out) < 0.5 * total_variation(noisy)
    assert np.linalg.norm(out - clean) < 0.6 * np.linalg.norm(noisy - clean)
    assert out.min() >= 0 and out.max() <= 1


def test_pixels_of_weight_one_are_smoothed_more_than_pixels_of_weight_zero():
    noisy = sign_noise(np.full((2, 16, 16, 1), 0.5, np.float32))
    weights = np.zeros((2, 16, 16))
    weights[:, :, :8] = 1
    out = denoise(noisy, weights)
    left, right = total_variation(out[:, :, :7]), total_variation(out[:, :, 9:])  # away from the seam
    assert left < 0.2 * right
    assert right > 0.8 * total_variation(noisy[:, :, 9:])


def test_the_likelihood_map_is_one_value_in_zero_one_per_pixel(split_model):
    x = np.random.default_rng(2).uniform(size=(3, 16, 16, 1)).astype(np.float32)
    m = likelihood_map(split_model, x)
    assert m.shape == (3, 16, 16) and np.all(np.isfinite(m))
    assert m.min() >= 0 and m.max() <= 1
    assert np.allclose(m.min(axis=(1, 2)), 0) and np.allclose(m.max(axis=(1, 2)), 1)


def test_defend_denoises_with_the_likelihood_map(split_model):
    x = sign_noise(blocks(2, 16))
    np.testing.assert_allclose(defend(split_model, x), denoise(x, likelihood_map(split_model, x)))
