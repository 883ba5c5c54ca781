"""The integer arithmetic of TFLite Micro's Prepare functions, written once: requantization multipliers and
shifts, activation ranges, output sizes and padding, input radii, and the lookup tables of the int16 kernels.
Every formula is TFLM's, down to where it computes in float32 and where in double, so that the kernels that
use these values are bit-exact with TFLM."""

from __future__ import annotations

import math

import numpy as np

from tinyrobust.compile.graph import SAME, VALID, Tensor

# Fused activations of the TFLite schema (ActivationFunctionType) the kernels clamp to.
ACTIVATIONS = {0: None, 1: (0.0, None), 2: (-1.0, 1.0), 3: (0.0, 6.0)}
ACTIVATION_NAMES = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}


class Unsupported(Exception):
    """An op, or one of its attributes or types, that the runtime does not implement (or TFLM's Prepare
    refuses)."""


def round_half_away(x: float) -> int:
    """TfLiteRound: to the nearest integer, halves away from zero."""
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLM's QuantizeMultiplier: real = multiplier * 2^(shift - 31), multiplier in [2^30, 2^31)."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = round_half_away(q * (1 << 31))
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q_fixed, shift


def small_multiplier(real: float) -> tuple[int, int]:
    """TFLM's QuantizeMultiplierSmallerThanOneExp, which refuses multipliers outside (0, 1)."""
    if not 0.0 < real < 1.0:
        raise Unsupported(f"a rescaling factor of {real:g} (TFLM needs it in (0, 1))")
    return quantize_multiplier(real)


def requantize(x: np.ndarray, multiplier: int, shift: int) -> np.ndarray:
    """TFLM's MultiplyByQuantizedMultiplier of int32 values whose x * 2^max(shift, 0) stays in int32 (tr_requantize
    in tr_support.h): the rounded high half of 2 * x * multiplier, then a shift right rounding half away from zero."""
    product = (np.asarray(x, dtype=np.int64) << max(shift, 0)) * multiplier
    nudged = product + np.where(product >= 0, 1 << 30, 1 - (1 << 30))
    high = np.where(nudged >= 0, nudged // (1 << 31), -(-nudged // (1 << 31)))
    right = max(-shift, 0)
    mask = (1 << right) - 1
    return (high >> right) + ((high & mask) > (mask >> 1) + (high < 0))


def int16_multiplier(m: int) -> int:
    """TFLM's DownScaleInt32ToInt16Multiplier."""
    return 32767 if m >= (1 << 31) - 1 - (1 << 15) else (m + (1 << 15)) >> 16


def input_radius(integer_bits: int, left_shift: int) -> int:
    """TFLM's CalculateInputRadius(integer_bits, left_shift, 31): inputs at or beyond it saturate."""
    return math.floor(((1 << integer_bits) - 1) * (1 << (31 - integer_bits)) / (1 << left_shift))


def checked_log2(scale: float) -> int | None:
    """TFLM's CheckedLog2, in float32: log2 of the scale rounded, or None if the scale is not a power of two."""
    f32 = np.float32
    log2 = f32(np.log(f32(scale))) * (f32(1) / f32(np.log(f32(2))))
    rounded = round_half_away(float(log2))
    return rounded if abs(log2 - f32(rounded)) < f32(1e-3) else None


def limits(t: Tensor) -> tuple[int, int]:
    """The range of the tensor's integer type."""
    info = np.iinfo(t.dtype)
    return int(info.min), int(info.max)


def activation_range(activation: int, out: Tensor) -> tuple[int, int]:
    """TFLM's CalculateActivationRangeQuantized, with its float32 arithmetic, in the output type's range."""
    if activation not in ACTIVATIONS:
        raise Unsupported(f"fused activation {ACTIVATION_NAMES.get(activation, activation)}")
    q_min, q_max = limits(out)
    bounds = ACTIVATIONS[activation]
    if bounds is None:
        return q_min, q_max
    scale, zp = np.float32(out.scale[0]), int(out.zero_point[0])

    def quantize(f: float) -> int:
        return zp + round_half_away(float(np.float32(f) / scale))

    lo = max(q_min, quantize(bounds[0]))
    hi = q_max if bounds[1] is None else min(q_max, quantize(bounds[1]))
    return lo, hi


def out_size_and_padding(padding: int, size: int, k: int, stride: int, dilation: int) -> tuple[int, int]:
    """TFLM's ComputeOutSize and ComputePaddingWithOffset: output size and padding before the first element."""
    effective = (k - 1) * dilation + 1
    if padding == SAME:
        out = (size + stride - 1) // stride
    elif padding == VALID:
        out = (size + stride - effective) // stride
    else:
        raise Unsupported(f"padding type {padding}")
    total = max(0, (out - 1) * stride + effective - size)
    return out, total // 2


# --- Tables of the int16 kernels ----------------------------------------------------------------------------


def sigmoid_table_u16() -> np.ndarray:
    """The table of TFLM's int16 LOGISTIC and TANH: sigmoid(i / 24) for i in 0..255 in Q0.16, each entry lowered
    by half the error of linear interpolation at the midpoint to the next, and the last one 65535."""

    def sigmoid(i: np.ndarray) -> np.ndarray:
        return 65536 / (1 + np.exp(-i / 24))

    i = np.arange(256.0)
    midpoint_error = (sigmoid(i) + sigmoid(i + 1)) / 2 - sigmoid(i + 0.5)
    table = np.floor(sigmoid(i) - midpoint_error / 2 + 0.5)
    table[-1] = 65535
    return table.astype(np.int64)


def _round_f32(x: np.ndarray) -> np.ndarray:
    """TfLiteRound on float32 values: half away from zero (exact, in double)."""
    x = x.astype(np.float64)
    return (np.sign(x) * np.floor(np.abs(x) + 0.5)).astype(np.float32)


def lut_s16(transform, input_scale: float, input_zero_point: int, output_scale: float) -> np.ndarray:
    """TFLM's LUTPopulate<int16_t> (float version, output zero point 0): 512 samples of transform over the input
    range, each biased by half the error of linear interpolation at the midpoint, and the end point; every step
    in float32 as TFLM computes it. transform maps a float32 array to a float32 array."""
    f32 = np.float32
    scale_in, scale_out = f32(input_scale), f32(output_scale)
    input_min = scale_in * f32(-32768 - input_zero_point)
    input_max = scale_in * f32(32767 - input_zero_point)
    step = (input_max - input_min) / f32(512)
    half_step = step / f32(2)
    scaling_inv = f32(65536) / (scale_out * f32(32767) - scale_out * f32(-32768))
    i = np.arange(512, dtype=np.float32)
    val = transform(input_min + i * step)
    val_midpoint = transform(input_min + i * step + half_step)
    val_next = transform(input_min + (i + f32(1)) * step)
    sample = _round_f32(val * scaling_inv)
    midpoint_interp = _round_f32((val_next * scaling_inv + sample) / f32(2))
    midpoint_err = midpoint_interp - _round_f32(val_midpoint * scaling_inv)
    lut = sample - _round_f32(midpoint_err / f32(2))
    last = _round_f32(transform(np.array([input_max], dtype=np.float32)) * scaling_inv)
    return np.clip(np.concatenate([lut, last]), -32768, 32767).astype(np.int64)


def expf(x: np.ndarray) -> np.ndarray:
    """expf as exp in double rounded to float32. glibc's expf (0.502 ULP) differs from that on about 1 input in
    1500, once among the exp table's 1,025 inputs, but the table comes out the same (checked)."""
    return np.exp(x.astype(np.float64)).astype(np.float32)


def one_over_one_plus(x: np.ndarray) -> np.ndarray:
    return np.float32(1) / (np.float32(1) + x)
