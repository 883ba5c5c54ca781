"""The 15 ImageNet-C corruptions (Hendrycks & Dietterich, ICLR 2019) at severities 1 to 5, applied at the model's
input resolution: the corrupted image is what the model reads. It is never resized afterwards: the study's
published code resized corrupted images a second time, which changes the corruption and confounds clean against
corrupted accuracy.

The severity tables are ImageNet-C's (make_imagenet_c.py). A parameter in pixels of a 224x224 image is scaled by
min(H, W) / 224, so that a blur or a warp covers the same fraction of the image at every size:
- blur kernels take the scaled, fractional sizes; their points are shared bilinearly among the nearest pixels,
  so a blur under a pixel wide still mixes in a little of the neighbours (on 8x8 every blur is faint);
- random layers (elastic displacement, snow, fog, frost) are drawn on a 224-pixel reference grid as ImageNet-C
  draws them and area-resized to the input.
Noise, brightness, contrast, pixelate and jpeg act per pixel or per image and are not scaled.

From albumentations: gaussian_noise (GaussNoise), pixelate (Downscale, area both ways like ImageNet-C's PIL BOX)
and jpeg_compression (ImageCompression); pixelate and jpeg pass through 8 bits, as ImageNet-C's uint8 images did.
Written here, because albumentations' transform computes something else than ImageNet-C's formula:
- shot_noise: Poisson(x c) / c (ShotNoise draws in linear light, gamma 2.2).
- impulse_noise: each channel of each pixel salted or peppered, as skimage's s&p (SaltAndPepper hits pixels).
- defocus_blur: ImageNet-C's disk, then its antialiasing Gaussian (Defocus takes a whole-pixel radius).
- glass_blur: Gaussian blur, local shuffle, Gaussian blur (GlassBlur takes whole-pixel shifts). The shuffle is a
  random local warp: each pixel reads the image at a uniform random offset within max_delta (bilinear), the mean
  shift of ImageNet-C's swaps with a neighbour but not a permutation, and defined for shifts under a pixel.
- motion_blur: ImageMagick's kernel, a one-sided Gaussian along a random angle over 2 ceil(radius) + 1 pixels
  (MotionBlur draws a uniform line).
- zoom_blur: the mean of zooms about the exact centre (ZoomBlur crops whole pixels, which on 32x32 rounds zooms
  under 1.04 to none and moves the centre).
- snow: thresholded, zoomed, motion-blurred noise over a whitened image; fog: a diamond-square plasma fractal
  (RandomSnow and RandomFog are other effects).
- brightness: + c on the HSV value, in float (HueSaturationValue rounds to 8-bit HSV); contrast: toward each
  channel's mean (RandomBrightnessContrast scales toward 0).
- elastic_transform: ImageNet-C's random affine and smoothed displacement field, in one remap (ElasticTransform
  has no affine part and smooths its noise in input pixels).
- frost: ImageNet-C blends crops of frost photographs that do not ship. The texture here is procedural (fern-like
  ice crystals and haze, see _frost_texture) with ImageNet-C's blend weights: a substitute, so frost figures are
  not comparable with ImageNet-C's.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import cv2
import numpy as np

CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast",
    "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip

REFERENCE_SIZE = 224  # the image side ImageNet-C's pixel parameters are given for


def corrupt(x: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """x (float32, N x H x W x C in [0, 1], C = 1 or 3) with corruption `name` at `severity` 1-5: same shape and
    dtype, in [0, 1]. Image i draws its randomness from (seed, i), so a result depends only on the seed."""
    if name not in _APPLY:
        raise ValueError(f"unknown corruption {name!r}: choose one of {', '.join(CORRUPTIONS)}")
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"corruption severity must be 1 to 5, not {severity!r}")
    x = np.asarray(x, np.float32)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"corrupt takes images as N x H x W x C with C = 1 or 3, not shape {x.shape}")
    out = np.empty_like(x)
    for i, image in enumerate(x):
        result = _APPLY[name](image, severity, np.random.default_rng([seed, i]))
        out[i] = np.clip(result.reshape(image.shape), 0.0, 1.0)
    return out


# ---- helpers ----


def _scale(image: np.ndarray) -> float:
    """Input pixels per reference pixel."""
    return min(image.shape[:2]) / REFERENCE_SIZE


def _reference_shape(image: np.ndarray) -> tuple[int, int]:
    """The image's shape on the reference grid (224 x 224 for a square image)."""
    s = _scale(image)
    return round(image.shape[0] / s), round(image.shape[1] / s)


def _to_input(layer: np.ndarray, image: np.ndarray) -> np.ndarray:
    """A layer drawn on the reference grid, area-resized to the image (H x W x 1)."""
    height, width = image.shape[:2]
    return cv2.resize(layer.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)[..., None]


def _like(result: np.ndarray, image: np.ndarray) -> np.ndarray:
    """OpenCV drops a single channel; give it back."""
    return result.reshape(image.shape)


def _gray(image: np.ndarray) -> np.ndarray:
    """Luma (H x W x 1) with OpenCV's RGB2GRAY weights; a gray image is its own."""
    if image.shape[-1] == 1:
        return image
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return _like(cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE), image)


def _zoom(image: np.ndarray, factor: float) -> np.ndarray:
    """Zoom in by `factor` about the centre, bilinear, same size."""
    height, width = image.shape[:2]
    cx, cy = (width - 1) / 2, (height - 1) / 2
    matrix = np.float32([[factor, 0, (1 - factor) * cx], [0, factor, (1 - factor) * cy]])
    zoomed = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return _like(zoomed, image)


def _splat(xs: np.ndarray, ys: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A kernel from weighted points at (xs, ys) input pixels from its centre, each shared bilinearly among its
    four nearest pixels, so that a kernel under a pixel wide still mixes in a little of the neighbours."""
    reach = math.ceil(max(np.abs(xs).max(), np.abs(ys).max())) + 1
    kernel = np.zeros((2 * reach + 1, 2 * reach + 1))
    x0, y0 = np.floor(xs + reach).astype(int), np.floor(ys + reach).astype(int)
    fx, fy = xs + reach - x0, ys + reach - y0
    for dx, dy, share in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(kernel, (y0 + dy, x0 + dx), weights * share)
    return (kernel / kernel.sum()).astype(np.float32)


def _motion_kernel(radius: float, sigma: float, angle: float, scale: float) -> np.ndarray:
    """ImageMagick's MotionBlurImage kernel: weights exp(-i^2 / 2 sigma^2) at i = 0 .. 2 ceil(radius) reference
    pixels along `angle` degrees (one-sided), its points `scale` input pixels apart."""
    steps = np.arange(2 * math.ceil(radius) + 1)
    weights = np.exp(-(steps**2) / (2 * sigma**2))
    angle = math.radians(angle)
    return _splat(steps * scale * math.cos(angle), steps * scale * math.sin(angle), weights)


def _disk_kernel(radius: float) -> np.ndarray:
    """A flat disk of `radius` input pixels: points on a fine grid inside it, splatted."""
    spacing = min(1 / 8, radius / 16)
    t = np.arange(-math.floor(radius / spacing), math.floor(radius / spacing) + 1) * spacing
    xs, ys = np.meshgrid(t, t)
    inside = xs**2 + ys**2 <= radius**2
    return _splat(xs[inside], ys[inside], np.ones(inside.sum()))


def _filter(image: np.ndarray, kernel: np.ndarray, border: int = cv2.BORDER_REFLECT_101) -> np.ndarray:
    """Correlate with `kernel` centred on each pixel: out(p) = sum_k kernel(k) image(p + k)."""
    return _like(cv2.filter2D(image, -1, kernel, borderType=border), image)


def _plasma_fractal(size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """A periodic diamond-square height map (size a power of two) in [0, 1], ImageNet-C's: each level's points
    are the mean of their four neighbours plus uniform noise of amplitude wibble^2, wibble = 100 / decay^level."""
    grid = np.zeros((size, size))
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        corners = grid[0::step, 0::step]
        right, below = np.roll(corners, -1, axis=1), np.roll(corners, -1, axis=0)
        centres = (corners + right + below + np.roll(below, -1, axis=1)) / 4
        grid[half::step, half::step] = centres + wibble * rng.uniform(-wibble, wibble, centres.shape)
        centres = grid[half::step, half::step]
        top = (corners + right + centres + np.roll(centres, 1, axis=0)) / 4  # midpoints of the top edges
        grid[0::step, half::step] = top + wibble * rng.uniform(-wibble, wibble, top.shape)
        left = (corners + below + centres + np.roll(centres, 1, axis=1)) / 4  # midpoints of the left edges
        grid[half::step, 0::step] = left + wibble * rng.uniform(-wibble, wibble, left.shape)
        step, wibble = half, wibble / decay
    grid -= grid.min()
    return grid / grid.max()


def _plasma_layer(shape: tuple[int, int], decay: float, rng: np.random.Generator) -> np.ndarray:
    """A plasma fractal cropped to `shape` on the reference grid (a 256 map cropped to 224, as ImageNet-C)."""
    size = max(256, 1 << (max(shape) - 1).bit_length())
    return _plasma_fractal(size, decay, rng)[: shape[0], : shape[1]]


def _albumentations(transform: str, image: np.ndarray, rng: np.random.Generator, **params) -> np.ndarray:
    """One albumentations transform, always applied, seeded from rng."""
    # unless told otherwise, importing albumentations asks PyPI for a newer version (up to 2 s, and a warning offline)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    apply = getattr(albumentations, transform)(p=1.0, **params)
    apply.set_random_seed(int(rng.integers(2**31)))
    return apply(image=image)["image"]


# ---- noise ----


def _gaussian_noise(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    std = (0.08, 0.12, 0.18, 0.26, 0.38)[severity - 1]
    return _albumentations("GaussNoise", image, rng, std_range=(std, std), mean_range=(0.0, 0.0), per_channel=True)


def _shot_noise(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    photons = (60, 25, 12, 5, 3)[severity - 1]
    return rng.poisson(image * photons) / photons


def _impulse_noise(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    amount = (0.03, 0.06, 0.09, 0.17, 0.27)[severity - 1]
    hit, salt = rng.random(image.shape) < amount, rng.random(image.shape) < 0.5
    return np.where(hit, salt.astype(np.float32), image)


# ---- blur ----


def _defocus_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    radius, alias_blur = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))[severity - 1]
    s = _scale(image)
    kernel = _disk_kernel(radius * s)
    kernel = cv2.GaussianBlur(np.pad(kernel, 2), (3, 3) if radius <= 8 else (5, 5), alias_blur * s)  # antialias
    return _filter(image, kernel / kernel.sum())


def _glass_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    sigma, max_delta, iterations = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))[severity - 1]
    s = _scale(image)
    height, width = image.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    out = _gaussian_blur(image, sigma * s)
    for _ in range(iterations):
        dx, dy = rng.uniform(-max_delta * s, max_delta * s, (2, height, width)).astype(np.float32)
        out = _like(cv2.remap(out, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101), image)
    return _gaussian_blur(out, sigma * s)


def _motion_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    radius, sigma = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))[severity - 1]
    kernel = _motion_kernel(radius, sigma, rng.uniform(-45, 45), _scale(image))
    return _filter(image, kernel, cv2.BORDER_REPLICATE)  # ImageMagick's default virtual pixels: the edge


def _zoom_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    stop, step = ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03))[severity - 1]
    factors = np.arange(1, stop, step)
    return (image + sum(_zoom(image, factor) for factor in factors)) / (len(factors) + 1)


# ---- weather ----


def _snow(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    loc, scale, zoom, threshold, radius, sigma, keep = (
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    )[severity - 1]
    flakes = _zoom(rng.normal(loc, scale, _reference_shape(image)).astype(np.float32), zoom)
    flakes = np.clip(np.where(flakes < threshold, 0, flakes), 0, 1)
    flakes = _filter(flakes, _motion_kernel(radius, sigma, rng.uniform(-135, -45), 1.0), cv2.BORDER_REPLICATE)
    flakes = _to_input(flakes, image)
    whitened = keep * image + (1 - keep) * np.maximum(image, _gray(image) * 1.5 + 0.5)
    return whitened + flakes + np.rot90(flakes, k=2)


def _frost_texture(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Procedural frost on the reference grid (H x W x 3, in [0, 1]): fern-like ice crystals (a stem with side
    branches at 60 degrees, shorter toward its tip) over a grainy haze, both denser where a plasma fractal is high,
    tinted pale blue. A stand-in for ImageNet-C's frost photographs, whose statistics it does not claim to match."""
    density = _plasma_layer(shape, 1.6, rng)
    crystals = np.zeros(shape, np.float32)
    for _ in range(shape[0] * shape[1] // 500):
        y, x = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        if rng.random() > density[int(y), int(x)]:
            continue
        angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(8, 40)
        segments = [((x, y), (x + length * math.cos(angle), y + length * math.sin(angle)))]
        for t in np.arange(0.15, 1, 0.15):
            bx, by, branch = x + t * length * math.cos(angle), y + t * length * math.sin(angle), (1 - t) * length / 2
            for turn in (angle - np.pi / 3, angle + np.pi / 3):
                segments.append(((bx, by), (bx + branch * math.cos(turn), by + branch * math.sin(turn))))
        lines = [np.round(segment).astype(np.int32) for segment in segments]
        cv2.polylines(crystals, lines, False, float(rng.uniform(0.5, 1)), 1)
    haze = density * (0.3 + 0.2 * rng.random(shape))
    ice = np.clip(haze + cv2.GaussianBlur(crystals, (0, 0), 0.5), 0, 1)
    return (ice[..., None] * [0.85, 0.93, 1.0]).astype(np.float32)


def _frost(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    keep, ice = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))[severity - 1]
    texture = cv2.resize(_frost_texture(_reference_shape(image), rng), image.shape[1::-1], interpolation=cv2.INTER_AREA)
    return keep * image + ice * (texture if image.shape[-1] == 3 else _gray(texture))


def _fog(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    thickness, decay = ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4))[severity - 1]
    peak = image.max()
    fogged = image + thickness * _to_input(_plasma_layer(_reference_shape(image), decay, rng), image)
    return fogged * peak / (peak + thickness)


# ---- digital ----


def _brightness(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    shift = (0.1, 0.2, 0.3, 0.4, 0.5)[severity - 1]
    if image.shape[-1] == 1:  # a gray pixel's HSV value is itself
        return image + shift
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    hsv[..., 2] = np.clip(hsv[..., 2] + shift, 0, 1)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _contrast(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    factor = (0.4, 0.3, 0.2, 0.1, 0.05)[severity - 1]
    means = image.mean(axis=(0, 1), keepdims=True)
    return (image - means) * factor + means


def _elastic_transform(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    # ImageNet-C's table, in units of 244 reference pixels ("should have been 224", its authors note)
    alpha, sigma, shift = np.array(((2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02),
                                    (0.12, 0.01, 0.02))[severity - 1]) * 244  # fmt: skip
    ref_h, ref_w = _reference_shape(image)
    # a random affine: three points a third of the side from the centre, each moved up to `shift`
    centre, side = np.float32([ref_w // 2, ref_h // 2]), min(ref_h, ref_w) // 3
    points = np.float32([centre + side, [centre[0] + side, centre[1] - side], centre - side])
    moved = (points + rng.uniform(-shift, shift, points.shape)).astype(np.float32)
    inverse = cv2.invertAffineTransform(cv2.getAffineTransform(points, moved))
    # a displacement field: uniform noise smoothed with sigma (truncated at 3 sigma), times alpha
    ksize = 2 * math.ceil(3 * sigma) + 1
    dx, dy = (
        cv2.GaussianBlur(rng.uniform(-1, 1, (ref_h, ref_w)).astype(np.float32), (ksize, ksize), sigma,
                         borderType=cv2.BORDER_REFLECT) * alpha
        for _ in range(2)
    )  # fmt: skip
    # each input pixel p reads the image at inverse_affine(p + displacement(p)), computed in reference pixels
    s = _scale(image)
    height, width = image.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    xr = (xs + 0.5) / s - 0.5 + _to_input(dx, image)[..., 0]
    yr = (ys + 0.5) / s - 0.5 + _to_input(dy, image)[..., 0]
    map_x, map_y = (row[0] * xr + row[1] * yr + row[2] for row in inverse)
    map_x, map_y = ((m + 0.5) * s - 0.5 for m in (map_x, map_y))  # back to input pixels
    warped = cv2.remap(image, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REFLECT_101)  # fmt: skip
    return _like(warped, image)


def _pixelate(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    factor = (0.6, 0.5, 0.4, 0.3, 0.25)[severity - 1]
    area = {"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_AREA}  # PIL's BOX both ways, as ImageNet-C
    return _albumentations("Downscale", image, rng, scale_range=(factor, factor), interpolation_pair=area)


def _jpeg_compression(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    quality = (25, 18, 15, 10, 7)[severity - 1]
    return _albumentations("ImageCompression", image, rng, compression_type="jpeg", quality_range=(quality, quality))


# name -> f(image H x W x C, severity, rng) -> the corrupted image, clipped by corrupt
_APPLY: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur,
    "glass_blur": _glass_blur,
    "motion_blur": _motion_blur,
    "zoom_blur": _zoom_blur,
    "snow": _snow,
    "frost": _frost,
    "fog": _fog,
    "brightness": _brightness,
    "contrast": _contrast,
    "elastic_transform": _elastic_transform,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
}
