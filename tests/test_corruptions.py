"""The ImageNet-C corruptions on small images built here (smooth random shapes with some fine detail, well inside
[0, 1] so that no corruption is a no-op on them): the contract of corrupt, growth with severity, and ImageNet-C's
parameters where they can be measured."""

import math

import cv2
import numpy as np
import pytest

from tinyrobust.split.corruptions import _APPLY, CORRUPTIONS, corrupt

NOISE = ("gaussian_noise", "shot_noise", "impulse_noise")
BLUR = ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur")
# the same on a gray image given with one channel or three (the others draw noise or tint per channel)
CHANNEL_BLIND = BLUR + ("snow", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression")


def images(channels: int, count: int = 8, size: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng([seed, channels])
    coarse = rng.random((count, 6, 6, channels), dtype=np.float32)
    smooth = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_CUBIC) for c in coarse])
    smooth = smooth.reshape(count, size, size, channels)
    return np.clip(0.15 + 0.7 * smooth + 0.1 * rng.random(smooth.shape, dtype=np.float32), 0, 1)


def change(x: np.ndarray, name: str, severity: int) -> float:
    return float(np.abs(corrupt(x, name, severity) - x).mean())


def test_the_registry_holds_the_fifteen_imagenet_c_corruptions():
    assert len(CORRUPTIONS) == 15 and tuple(_APPLY) == CORRUPTIONS


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_a_corruption_keeps_shape_dtype_and_range_changes_every_image_and_repeats_for_a_seed(name):
    for channels in (1, 3):
        x = images(channels)
        for severity in range(1, 6):
            out = corrupt(x, name, severity, seed=7)
            assert out.shape == x.shape and out.dtype == np.float32
            assert out.min() >= 0.0 and out.max() <= 1.0
            assert (np.abs(out - x).reshape(len(x), -1).mean(axis=1) > 1e-3).all(), (channels, severity)
            np.testing.assert_array_equal(out, corrupt(x, name, severity, seed=7))


@pytest.mark.parametrize("name", NOISE + BLUR)
def test_noise_and_blur_change_the_images_more_at_each_severity(name):
    for channels in (1, 3):
        changes = [change(images(channels), name, severity) for severity in range(1, 6)]
        assert all(b >= a - 1e-4 for a, b in zip(changes, changes[1:], strict=False)), changes
        assert changes[-1] > 1.5 * changes[0], changes


def test_jpeg_at_severity_5_changes_the_images_more_than_at_1():
    for channels in (1, 3):
        assert change(images(channels), "jpeg_compression", 5) > 1.2 * change(images(channels), "jpeg_compression", 1)


def test_an_image_depends_only_on_the_seed_and_its_index():
    x = images(3)
    np.testing.assert_array_equal(corrupt(x[:3], "snow", 2, seed=4), corrupt(x, "snow", 2, seed=4)[:3])
    assert not np.array_equal(corrupt(x, "snow", 2, seed=4), corrupt(x, "snow", 2, seed=5))


@pytest.mark.parametrize("name", CHANNEL_BLIND)
def test_a_gray_image_gives_the_same_result_with_one_channel_or_three(name):
    gray = images(1, count=2)
    for severity in (1, 5):
        as_rgb = corrupt(np.repeat(gray, 3, axis=-1), name, severity)
        np.testing.assert_allclose(as_rgb, np.repeat(corrupt(gray, name, severity), 3, axis=-1), atol=1e-5)


def clipped_poisson_variance(rate: float, photons: int) -> float:
    """The variance of min(k / photons, 1) for k ~ Poisson(rate)."""
    ks = range(200)
    p = [math.exp(k * math.log(rate) - rate - math.lgamma(k + 1)) for k in ks]
    v = [min(k / photons, 1.0) for k in ks]
    mean = sum(pk * vk for pk, vk in zip(p, v, strict=True))
    return sum(pk * vk * vk for pk, vk in zip(p, v, strict=True)) - mean**2


def test_noise_brightness_and_contrast_follow_imagenet_cs_parameters():
    flat = np.full((4, 64, 64, 3), 0.5, np.float32)
    for severity, sigma in enumerate((0.08, 0.12, 0.18), 1):  # beyond, clipping at 0 and 1 narrows it
        assert abs(float(corrupt(flat, "gaussian_noise", severity).std()) - sigma) < 0.05 * sigma
    for severity, photons in enumerate((60, 25, 12, 5, 3), 1):  # min(Poisson(x c) / c, 1)
        expected = clipped_poisson_variance(0.5 * photons, photons)
        assert abs(float(corrupt(flat, "shot_noise", severity).var()) - expected) < 0.05 * expected
    for severity, amount in enumerate((0.03, 0.06, 0.09, 0.17, 0.27), 1):  # each channel of each pixel
        assert abs(float((corrupt(flat, "impulse_noise", severity) != 0.5).mean()) - amount) < 0.1 * amount
    x = images(3)
    for severity, shift in enumerate((0.1, 0.2, 0.3, 0.4, 0.5), 1):  # + shift on the HSV value: max(R, G, B)
        expected = np.minimum(x.max(axis=-1) + shift, 1)
        np.testing.assert_allclose(corrupt(x, "brightness", severity).max(axis=-1), expected, atol=1e-5)
    for severity, factor in enumerate((0.4, 0.3, 0.2, 0.1, 0.05), 1):
        means = x.mean(axis=(1, 2), keepdims=True)
        np.testing.assert_allclose(corrupt(x, "contrast", severity), (x - means) * factor + means, atol=1e-5)


def shrink(x: np.ndarray) -> np.ndarray:
    """N x 2H x 2W x 1 -> N x H x W x 1, area-resized."""
    return np.stack([cv2.resize(i, (i.shape[1] // 2, i.shape[0] // 2), interpolation=cv2.INTER_AREA) for i in x])[
        ..., None
    ]


@pytest.mark.parametrize("name", ("defocus_blur", "motion_blur", "zoom_blur"))
def test_a_blur_covers_the_same_fraction_of_the_image_at_every_size(name):
    """Pixel parameters scale with the image: a blurred 64x64 image, area-resized to 32x32, is close to the
    32x32 image blurred directly. (glass_blur draws a random shift per pixel, so its two sizes differ pixel by
    pixel.)"""
    big = images(1, count=4, size=64)
    small = shrink(big)
    direct = corrupt(small, name, 5)
    assert float(np.abs(shrink(corrupt(big, name, 5)) - direct).mean()) < 0.3 * float(np.abs(direct - small).mean())


def test_an_unknown_corruption_or_severity_is_refused_in_one_sentence():
    x = images(1, count=1)
    with pytest.raises(ValueError, match="unknown corruption 'rain'"):
        corrupt(x, "rain", 1)
    for severity in (0, 6):
        with pytest.raises(ValueError, match="severity must be 1 to 5"):
            corrupt(x, "fog", severity)
    with pytest.raises(ValueError, match="N x H x W x C"):
        corrupt(x[0], "fog", 1)
