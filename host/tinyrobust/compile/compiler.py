"""Compile a quantized .tflite model into C: constants, a static layer schedule and a planned arena.

This is the "prepare" half of TFLite Micro's kernels, run once on the host: shapes, padding, requantization
multipliers and shifts and activation ranges are computed here with TFLM's own formulas, so the firmware
only runs integer arithmetic.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyrobust.compile.graph import (
    Graph,
    Op,
    Tensor,
    fold_shape_arithmetic,
    live_inputs,
    read_tflite,
    reindex,
    remove_dead_ops,
)
from tinyrobust.compile.planner import Buffer, plan_arena
from tinyrobust.errors import UserError

INT8_MIN, INT8_MAX = -128, 127
# C element types of the tensor types the generated code declares, and the kernel-name suffix of each
# activation type (CMSIS-NN's naming: tr_conv_s8 for int8 activations, tr_conv_s16 for int16x8).
C_TYPES = {"int8": "int8_t", "int16": "int16_t", "int32": "int32_t", "int64": "int64_t"}
SUFFIXES = {"int8": "s8", "int16": "s16"}
# Fused activations of the TFLite schema (ActivationFunctionType) the kernels clamp to.
ACTIVATIONS = {0: None, 1: (0.0, None), 2: (-1.0, 1.0), 3: (0.0, 6.0)}
ACTIVATION_NAMES = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
SAME, VALID = 0, 1


class Unsupported(Exception):
    """An op, or one of its attributes or types, that the runtime does not implement."""


# Name prefixes by which the memory report counts constants apart from code: the model's weights and biases,
# and the per-channel requantization multipliers and shifts.
WEIGHTS_PREFIX, QUANT_PARAMS_PREFIX = "tr_w_", "tr_q_"


@dataclass
class Constant:
    name: str
    ctype: str
    values: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.values.size * np.dtype(self.ctype[:-2]).itemsize  # int8_t .. int64_t, uint16_t

    @property
    def weight(self) -> bool:
        return self.name.startswith(WEIGHTS_PREFIX)


@dataclass
class Kernel:
    """What a lowering function returns: the kernel to call, its parameters and the tensors it reads."""

    function: str
    struct: str
    fields: dict[str, object]
    constants: list[Constant] = field(default_factory=list)
    inputs: list[int] | None = None  # in call order; None means the op's first input
    variadic: bool = False  # the kernel takes its inputs as one array of pointers (CONCATENATION)


@dataclass
class Step:
    """One kernel call of the schedule."""

    op: Op
    function: str
    struct: str
    fields: dict[str, object]
    inputs: list[int]  # tensors the kernel reads, in call order: arena buffers, or constants (C arrays)
    output: int
    variadic: bool = False


@dataclass
class CompiledModel:
    steps: list[Step]
    constants: list[Constant]
    arena_bytes: int
    offsets: dict[int, int]  # tensor index -> byte offset in the arena
    input: Tensor
    output: Tensor
    model_hash: bytes
    op_counts: dict[str, int] = field(default_factory=dict)
    element_types: dict[int, str] = field(default_factory=dict)  # tensor index -> C type, for arena tensors
    preprocess: list[dict] = field(default_factory=list)  # device pre-processing stages before the network


def round_half_away(x: float) -> int:
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


def _require_type(graph: Graph, type_name: str, *tensors: int) -> None:
    for t in tensors:
        if graph.tensors[t].type_name != type_name:
            raise Unsupported(f"{graph.tensors[t].type_name} tensor '{graph.tensors[t].name}'")


def _activation_type(graph: Graph, op: Op, *tensors: int) -> str:
    """The type of the op's activations (its first input), which the other given tensors must share. int16
    activations (int16x8) must be symmetric: TFLM's 16-bit kernels have no input or output offsets."""
    type_name = graph.tensors[op.inputs[0]].type_name
    if type_name not in SUFFIXES:
        raise Unsupported(f"{type_name} activations")
    _require_type(graph, type_name, op.inputs[0], *tensors)
    if type_name == "int16":
        for t in (op.inputs[0], *tensors):
            if np.any(graph.tensors[t].zero_point != 0):
                raise Unsupported(f"int16 tensor '{graph.tensors[t].name}' with a nonzero zero point")
    return type_name


def _bias(graph: Graph, op: Op, name: str, activations: str, accepted: tuple[str, ...]) -> tuple[dict, list]:
    """The bias operand as a constant. TFLM's 16x8 kernels accumulate in 64 bits and requantize with the 64-bit
    MultiplyByQuantizedMultiplier, unless the bias is int32: then both are 32-bit (acc64 0)."""
    bias = graph.tensors[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    fields: dict[str, object] = {"bias": "NULL"}
    if activations == "int16":
        fields |= {"bias64": "NULL", "acc64": int(bias is None or bias.type_name != "int32")}
    if bias is None:
        return fields, []
    if bias.data is None:
        raise Unsupported("a bias that is not constant")
    if bias.type_name not in accepted:
        raise Unsupported(f"{bias.type_name} bias")
    fields["bias64" if bias.type_name == "int64" else "bias"] = f"tr_w_{name}_bias"
    return fields, [Constant(f"tr_w_{name}_bias", C_TYPES[bias.type_name], bias.data.reshape(-1))]


def _fold_input_offset(
    name: str, bias_fields: dict, bias_constants: list, weight_sums: np.ndarray, in_offset: int, constant: int = 0
) -> tuple[dict, list]:
    """CMSIS-NN's kernel sum for the int8 kernels: bias + in_offset * sum(weights) (+ constant) per output channel,
    so that their inner loops multiply the raw int8 input. Exact: the int32 sums are the same, in another order;
    wrapped to int32 as the device's accumulator would."""
    bias = bias_constants[0].values.astype(np.int64) if bias_constants else np.zeros(len(weight_sums), np.int64)
    folded = bias + in_offset * weight_sums.astype(np.int64) + constant
    if not bias_constants and not folded.any():
        return bias_fields, bias_constants
    wrapped = (folded + 2**31) % 2**32 - 2**31
    return {**bias_fields, "bias": f"tr_w_{name}_bias"}, [Constant(f"tr_w_{name}_bias", "int32_t", wrapped)]


# Bias types of TFLM's kernels per activation type: int16x8 convolutions take both (see _bias).
BIAS_TYPES = {"int8": ("int32",), "int16": ("int32", "int64")}


def _per_channel_requant(name: str, in_t: Tensor, w: Tensor, out_t: Tensor, channels: int) -> tuple[str, list]:
    """The requant field and its constants, one multiplier and shift per output channel. Shifts are in
    [-31, 31] (quantize_multiplier flushes smaller multipliers to 0), so they are stored as int8."""
    scales = w.scale if len(w.scale) == channels else np.repeat(w.scale, channels)
    pairs = [
        quantize_multiplier(float(in_t.scale[0]) * float(s) / float(out_t.scale[0])) for s in scales.astype(np.float32)
    ]
    multiplier, shift = f"{QUANT_PARAMS_PREFIX}{name}_multiplier", f"{QUANT_PARAMS_PREFIX}{name}_shift"
    if any(not -31 <= s <= 31 for _, s in pairs):
        raise Unsupported("a requantization factor of 2^31 or more")
    return f"{{{multiplier}, {shift}}}", [
        Constant(multiplier, "int32_t", np.array([m for m, _ in pairs], dtype=np.int64)),
        Constant(shift, "int8_t", np.array([s for _, s in pairs], dtype=np.int64)),
    ]


def _conv_common(
    graph: Graph, op: Op, name: str, depthwise: bool, bias_types: dict[str, tuple[str, ...]] = BIAS_TYPES
) -> tuple[dict, list[Constant], str]:
    """CONV_2D and DEPTHWISE_CONV_2D fields and constants, and the activation type."""
    x, w, out = (graph.tensors[i] for i in op.inputs[:2] + op.outputs[:1])
    activations = _activation_type(graph, op, out.index)
    _require_type(graph, "int8", w.index)
    if len(x.shape) != 4 or x.shape[0] != 1:
        raise Unsupported(f"input shape {x.shape} (batch 1 NHWC expected)")
    if w.data is None:
        raise Unsupported("weights that are not constant")
    if np.any(w.zero_point != 0):
        raise Unsupported("asymmetric weights")
    bias_fields, constants = _bias(graph, op, name, activations, bias_types[activations])
    o = op.options
    _, in_h, in_w, in_c = x.shape
    _, out_h, out_w, out_c = out.shape
    k_h, k_w = w.shape[1], w.shape[2]
    exp_h, pad_h = out_size_and_padding(o.padding, in_h, k_h, o.strideH, o.dilationHFactor)
    exp_w, pad_w = out_size_and_padding(o.padding, in_w, k_w, o.strideW, o.dilationWFactor)
    if getattr(o, "explicit_padding", None):  # a fused SPACE_TO_BATCH_ND pattern
        pad_h, pad_w = o.explicit_padding
    elif (exp_h, exp_w) != (out_h, out_w):
        raise Unsupported(f"output shape {out.shape} inconsistent with its attributes")
    lo, hi = activation_range(o.fusedActivationFunction, out)
    if activations == "int8":  # weights: [out_c, k_h, k_w, k_c], or [1, k_h, k_w, out_c] for depthwise
        sums = w.data.astype(np.int64).sum(axis=(0, 1, 2) if depthwise else (1, 2, 3))
        bias_fields, constants = _fold_input_offset(name, bias_fields, constants, sums, -int(x.zero_point[0]))
    requant, requant_constants = _per_channel_requant(name, x, w, out, out_c)
    constants = [Constant(f"tr_w_{name}_weights", "int8_t", w.data.reshape(-1)), *constants, *requant_constants]
    fields = {
        "in_h": in_h, "in_w": in_w, "in_c": in_c, "out_h": out_h, "out_w": out_w, "out_c": out_c,
        "k_h": k_h, "k_w": k_w, "k_c": 1 if depthwise else w.shape[3],
        "stride_h": o.strideH, "stride_w": o.strideW,
        "dilation_h": o.dilationHFactor, "dilation_w": o.dilationWFactor, "pad_h": pad_h, "pad_w": pad_w,
        "depth_multiplier": out_c // in_c if depthwise else 1,
        "in_offset": -int(x.zero_point[0]), "out_offset": int(out.zero_point[0]), "act_min": lo, "act_max": hi,
        "weights": f"tr_w_{name}_weights", **bias_fields,
        "requant": requant,
    }  # fmt: skip
    if not depthwise and in_c % w.shape[3]:
        raise Unsupported(f"{in_c} input channels not a multiple of the filter's {w.shape[3]}")
    return fields, constants, activations


# TR_COLUMN_BYTES in tr_kernels.h: the largest receptive field (k_h * k_w * in_c) tr_conv_s8 gathers on the stack.
COLUMN_BYTES = 1152


def lower_conv_2d(graph: Graph, op: Op, name: str) -> Kernel:
    """int8 convolutions of one group whose receptive field fits a column run on tr_conv_s8; the others read the
    input in place."""
    fields, constants, activations = _conv_common(graph, op, name, depthwise=False)
    function = f"tr_conv_{SUFFIXES[activations]}"
    field_bytes = fields["k_h"] * fields["k_w"] * fields["k_c"]
    if activations == "int8" and (fields["k_c"] != fields["in_c"] or field_bytes > COLUMN_BYTES):
        function = "tr_conv_s8_in_place"
    return Kernel(function, "tr_conv_params", fields, constants)


def lower_depthwise_conv_2d(graph: Graph, op: Op, name: str) -> Kernel:
    """TFLM's 16x8 depthwise convolution has only the int64-bias kernel: it always accumulates in 64 bits."""
    fields, constants, activations = _conv_common(
        graph, op, name, depthwise=True, bias_types={"int8": ("int32",), "int16": ("int64",)}
    )
    if activations == "int16":
        fields["acc64"] = 1
    return Kernel(f"tr_depthwise_conv_{SUFFIXES[activations]}", "tr_conv_params", fields, constants)


def lower_fully_connected(graph: Graph, op: Op, name: str) -> Kernel:
    x, w, out = (graph.tensors[i] for i in op.inputs[:2] + op.outputs[:1])
    activations = _activation_type(graph, op, out.index)
    _require_type(graph, "int8", w.index)
    if w.data is None:
        raise Unsupported("weights that are not constant")
    if op.options.weightsFormat != 0:
        raise Unsupported("shuffled weights format")
    out_n, in_n = w.shape
    rows = int(np.prod(x.shape)) // in_n
    bias_fields, bias_constants = _bias(graph, op, name, activations, BIAS_TYPES[activations])
    if activations == "int8":
        in_offset, weights_offset = -int(x.zero_point[0]), -int(w.zero_point[0])
        sums = w.data.astype(np.int64).sum(axis=1)
        bias_fields, bias_constants = _fold_input_offset(
            name, bias_fields, bias_constants, sums, in_offset, in_n * weights_offset * in_offset
        )
    # TFLM multiplies the input and filter scales as doubles (GetQuantizedConvolutionMultipler).
    requant, requant_constants = _per_channel_requant(name, x, w, out, out_n)
    constants = [Constant(f"tr_w_{name}_weights", "int8_t", w.data.reshape(-1)), *bias_constants, *requant_constants]
    lo, hi = activation_range(op.options.fusedActivationFunction, out)
    fields = {
        "rows": rows, "in_n": in_n, "out_n": out_n,
        "in_offset": -int(x.zero_point[0]), "weights_offset": -int(w.zero_point[0]),
        "out_offset": int(out.zero_point[0]), "act_min": lo, "act_max": hi,
        "weights": f"tr_w_{name}_weights", **bias_fields,
        "requant": requant,
    }  # fmt: skip
    return Kernel(f"tr_fully_connected_{SUFFIXES[activations]}", "tr_fc_params", fields, constants)


def _lower_pool(graph: Graph, op: Op, function: str) -> Kernel:
    x, out = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    function = f"{function}_{SUFFIXES[_activation_type(graph, op, out.index)]}"
    if (x.scale[0], x.zero_point[0]) != (out.scale[0], out.zero_point[0]):
        raise Unsupported("different input and output quantization")
    o = op.options
    _, in_h, in_w, c = x.shape
    _, out_h, out_w, _ = out.shape
    _, pad_h = out_size_and_padding(o.padding, in_h, o.filterHeight, o.strideH, 1)
    _, pad_w = out_size_and_padding(o.padding, in_w, o.filterWidth, o.strideW, 1)
    lo, hi = activation_range(o.fusedActivationFunction, out)
    fields = {
        "in_h": in_h, "in_w": in_w, "c": c, "out_h": out_h, "out_w": out_w,
        "f_h": o.filterHeight, "f_w": o.filterWidth, "stride_h": o.strideH, "stride_w": o.strideW,
        "pad_h": pad_h, "pad_w": pad_w, "act_min": lo, "act_max": hi,
    }  # fmt: skip
    return Kernel(function, "tr_pool_params", fields)


def lower_max_pool_2d(graph: Graph, op: Op, name: str) -> Kernel:
    return _lower_pool(graph, op, "tr_max_pool")


def lower_average_pool_2d(graph: Graph, op: Op, name: str) -> Kernel:
    return _lower_pool(graph, op, "tr_avg_pool")


# --- Helpers for the elementwise and data-movement ops ------------------------------------------------------

MAX_DIMS = 6  # TR_MAX_DIMS in tr_kernels.h


def c_list(values) -> str:
    return "{" + ", ".join(str(int(v)) for v in values) + "}"


def _strides(shape: tuple[int, ...]) -> list[int]:
    """Row-major element strides of a shape."""
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= d
    return strides[::-1]


def _merge(dims: list[int], *stride_sets: list[int]) -> tuple[list[int], list[list[int]]]:
    """Drop unit dimensions and merge neighbours that every stride set walks contiguously."""
    out_dims: list[int] = []
    out_sets: list[list[int]] = [[] for _ in stride_sets]
    for i, d in enumerate(dims):
        if d == 1:
            continue
        if out_dims and all(s[-1] == ss[i] * d for s, ss in zip(out_sets, stride_sets, strict=True)):
            out_dims[-1] *= d
            for s, ss in zip(out_sets, stride_sets, strict=True):
                s[-1] = ss[i]
            continue
        out_dims.append(d)
        for s, ss in zip(out_sets, stride_sets, strict=True):
            s.append(ss[i])
    if not out_dims:
        return [1], [[0] for _ in stride_sets]
    if len(out_dims) > MAX_DIMS:
        raise Unsupported(f"more than {MAX_DIMS} dimensions")
    return out_dims, out_sets


def _tensor(graph: Graph, op: Op, i: int = 0, output: bool = False) -> Tensor:
    return graph.tensors[(op.outputs if output else op.inputs)[i]]


def _zp(t: Tensor) -> int:
    return int(t.zero_point[0])


def _scale(t: Tensor) -> float:
    """The tensor's float32 scale as the double TFLM widens it to."""
    return float(np.float32(t.scale[0]))


def _size(t: Tensor) -> int:
    return int(np.prod(t.shape, dtype=np.int64))


def _unary(graph: Graph, op: Op, type_name: str = "int8") -> tuple[Tensor, Tensor]:
    x, out = _tensor(graph, op), _tensor(graph, op, output=True)
    _require_type(graph, type_name, x.index, out.index)
    if _size(x) != _size(out):
        raise Unsupported(f"output shape {out.shape} differs from input shape {x.shape}")
    return x, out


def _constant_ints(graph: Graph, t: int, what: str) -> np.ndarray:
    tensor = graph.tensors[t]
    if tensor.data is None:
        raise Unsupported(f"{what} that are not constant")
    return tensor.data.astype(np.int64)


def _broadcast(graph: Graph, op: Op) -> dict[str, object]:
    """NumPy broadcasting of the two inputs over the output, as merged dimensions and strides."""
    a, b, out = _tensor(graph, op, 0), _tensor(graph, op, 1), _tensor(graph, op, output=True)
    rank = len(out.shape)
    if max(len(a.shape), len(b.shape)) > rank:
        raise Unsupported(f"output shape {out.shape} inconsistent with its inputs")
    stride_sets = []
    for t in (a, b):
        shape = (1,) * (rank - len(t.shape)) + tuple(t.shape)
        strides = _strides(shape)
        for d, (n, m) in enumerate(zip(shape, out.shape, strict=True)):
            if n == 1 and m != 1:
                strides[d] = 0
            elif n != m:
                raise Unsupported(f"shapes {a.shape} and {b.shape} that do not broadcast to {out.shape}")
        stride_sets.append(strides)
    dims, (s1, s2) = _merge(list(out.shape), *stride_sets)
    return {"shape": f"{{{len(dims)}, {c_list(dims)}, {c_list(s1)}, {c_list(s2)}}}"}


def _small_multiplier(real: float) -> tuple[int, int]:
    """TFLM's QuantizeMultiplierSmallerThanOneExp, which refuses multipliers outside (0, 1)."""
    if not 0.0 < real < 1.0:
        raise Unsupported(f"a rescaling factor of {real:g} (TFLM needs it in (0, 1))")
    return quantize_multiplier(real)


# --- Elementwise arithmetic ---------------------------------------------------------------------------------


# Headroom bits of TFLM's quantized ADD per activation type. Its int16 ADD takes the same general path as int8
# (the power-of-two-scale path of TFLite's int16 ADD is not TFLM's), with 15 bits.
ADD_LEFT_SHIFTS = {"int8": 20, "int16": 15}


def lower_add(graph: Graph, op: Op, name: str) -> Kernel:
    """TFLM's CalculateOpDataAdd: both inputs to twice the larger scale with some bits of headroom."""
    a, b, out = _tensor(graph, op, 0), _tensor(graph, op, 1), _tensor(graph, op, output=True)
    activations = graph.tensors[op.inputs[0]].type_name
    _require_type(graph, activations, a.index, b.index, out.index)
    if activations not in ADD_LEFT_SHIFTS:
        raise Unsupported(f"{activations} activations")
    left_shift = ADD_LEFT_SHIFTS[activations]
    twice_max = 2 * max(_scale(a), _scale(b))
    m1, s1 = _small_multiplier(_scale(a) / twice_max)
    m2, s2 = _small_multiplier(_scale(b) / twice_max)
    mo, so = _small_multiplier(twice_max / ((1 << left_shift) * _scale(out)))
    lo, hi = activation_range(op.options.fusedActivationFunction, out)
    fields = {
        **_broadcast(graph, op), "in1_offset": -_zp(a), "in2_offset": -_zp(b), "out_offset": _zp(out),
        "left_shift": left_shift, "in1_multiplier": m1, "in1_shift": s1, "in2_multiplier": m2, "in2_shift": s2,
        "out_multiplier": mo, "out_shift": so, "act_min": lo, "act_max": hi,
    }  # fmt: skip
    return Kernel(f"tr_add_{SUFFIXES[activations]}", "tr_add_params", fields, inputs=op.inputs[:2])


def lower_mul(graph: Graph, op: Op, name: str) -> Kernel:
    """TFLM's CalculateOpDataMul; its int16 MUL is the int8 one without offsets."""
    a, b, out = _tensor(graph, op, 0), _tensor(graph, op, 1), _tensor(graph, op, output=True)
    activations = _activation_type(graph, op, b.index, out.index)
    m, s = quantize_multiplier(_scale(a) * _scale(b) / _scale(out))
    lo, hi = activation_range(op.options.fusedActivationFunction, out)
    fields = {
        **_broadcast(graph, op), "in1_offset": -_zp(a), "in2_offset": -_zp(b), "out_offset": _zp(out),
        "out_multiplier": m, "out_shift": s, "act_min": lo, "act_max": hi,
    }  # fmt: skip
    return Kernel(f"tr_mul_{SUFFIXES[activations]}", "tr_mul_params", fields, inputs=op.inputs[:2])


# --- Activations --------------------------------------------------------------------------------------------


def _rescale(x: Tensor, out: Tensor, lo: int, hi: int) -> dict[str, object]:
    m, s = quantize_multiplier(_scale(x) / _scale(out))
    return {
        "size": _size(x), "in_zero_point": _zp(x), "out_zero_point": _zp(out),
        "multiplier": m, "shift": s, "act_min": lo, "act_max": hi,
    }  # fmt: skip


def lower_relu(graph: Graph, op: Op, name: str) -> Kernel:
    """TFLM's CalculateReluOpData: requantize, then clamp below at the output's zero point."""
    activations = _activation_type(graph, op, op.outputs[0])
    x, out = _unary(graph, op, activations)
    lo, hi = limits(out)
    return Kernel(f"tr_rescale_{SUFFIXES[activations]}", "tr_rescale_params", _rescale(x, out, max(lo, _zp(out)), hi))


def lower_quantize(graph: Graph, op: Op, name: str) -> Kernel:
    """int8 -> int8 and int16 -> int16 QUANTIZE are TFLM's Requantize."""
    activations = _activation_type(graph, op, op.outputs[0])
    x, out = _unary(graph, op, activations)
    return Kernel(f"tr_rescale_{SUFFIXES[activations]}", "tr_rescale_params", _rescale(x, out, *limits(out)))


def lower_relu6(graph: Graph, op: Op, name: str) -> Kernel:
    """TFLM clamps RELU6 in the input's quantization and ignores the output's (FloatToQuantizedType)."""
    activations = _activation_type(graph, op, op.outputs[0])
    x, out = _unary(graph, op, activations)
    lo, hi = limits(x)
    six = round_half_away(float(np.float32(6.0) / np.float32(x.scale[0]))) + _zp(x)
    fields = {"size": _size(x), "lo": _zp(x), "hi": min(max(six, lo), hi)}
    return Kernel(f"tr_clamp_{SUFFIXES[activations]}", "tr_clamp_params", fields)


def _sigmoid(graph: Graph, op: Op, function: str) -> Kernel:
    """TFLM's LOGISTIC and TANH prepare: the input scale times 2^27 as a Q31 multiplier and a left shift."""
    x, out = _unary(graph, op)
    q, left_shift = math.frexp(_scale(x) * float(1 << 27))
    multiplier = round_half_away(q * (1 << 31))
    multiplier = multiplier - (1 << 32) if multiplier >= 1 << 31 else multiplier  # TFLM's int32 cast
    if left_shift < 0:
        raise Unsupported(f"input scale {_scale(x):g}")
    radius = math.floor(15 * (1 << 27) / (1 << left_shift))  # CalculateInputRadius(4, left_shift, 31)
    fields = {
        "size": _size(x), "in_zero_point": _zp(x), "range_radius": radius,
        "multiplier": multiplier, "left_shift": left_shift,
    }  # fmt: skip
    return Kernel(function, "tr_sigmoid_params", fields)


def lower_logistic(graph: Graph, op: Op, name: str) -> Kernel:
    if _zp(_tensor(graph, op, output=True)) != INT8_MIN:
        raise Unsupported("output zero point other than -128")
    return _sigmoid(graph, op, "tr_logistic_s8")


def lower_tanh(graph: Graph, op: Op, name: str) -> Kernel:
    return _sigmoid(graph, op, "tr_tanh_s8")


def _checked_log2(scale: float) -> int | None:
    """TFLM's CheckedLog2, in float32: log2 of the scale rounded, or None if the scale is not a power of two."""
    f32 = np.float32
    log2 = f32(np.log(f32(scale))) * (f32(1) / f32(np.log(f32(2))))
    rounded = round_half_away(float(log2))
    return rounded if abs(log2 - f32(rounded)) < f32(1e-3) else None


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


def _sigmoid_s16(graph: Graph, op: Op, function: str, power_of_two_shifts: tuple[int, ...]) -> Kernel:
    """TFLM's int16 LOGISTIC and TANH prepare: the input rescaled to units of 1 / (3 * 4096), where the table
    spans [-10.7, 10.7], by an int16 multiplier and a rounding right shift; an input scale of 2^(shift - 12)
    with shift in power_of_two_shifts takes the exact multiplier 3 * 2^shift. The output scale must be 2^-15."""
    x, out = _unary(graph, op, _activation_type(graph, op, op.outputs[0]))
    if _checked_log2(out.scale[0]) != -15:
        raise Unsupported("an output scale other than 2^-15")
    log2 = _checked_log2(x.scale[0])
    if log2 is not None and 12 + log2 in power_of_two_shifts:
        multiplier, shift = 3 << (12 + log2), 0
    else:
        real, shift = _scale(x) * 4096.0 * 3.0, 0
        while real <= 32767.0 / 2.0 and shift <= 30:
            real, shift = real * 2.0, shift + 1
        multiplier = int(real)
        if multiplier > 32767:
            raise Unsupported(f"input scale {_scale(x):g} (TFLM needs it below 32767 / 12288)")
    table = Constant("tr_sigmoid_table_u16", "uint16_t", sigmoid_table_u16())
    fields = {"size": _size(x), "multiplier": multiplier, "shift": shift, "table": table.name}
    return Kernel(function, "tr_sigmoid_s16_params", fields, [table])


def lower_logistic_s16(graph: Graph, op: Op, name: str) -> Kernel:
    return _sigmoid_s16(graph, op, "tr_logistic_s16", (0,))


def lower_tanh_s16(graph: Graph, op: Op, name: str) -> Kernel:
    return _sigmoid_s16(graph, op, "tr_tanh_s16", (0, 1))


def _int16_multiplier(m: int) -> int:
    """TFLM's DownScaleInt32ToInt16Multiplier."""
    return 32767 if m >= (1 << 31) - 1 - (1 << 15) else (m + (1 << 15)) >> 16


def lower_hard_swish(graph: Graph, op: Op, name: str) -> Kernel:
    """TFLM's HardSwishPrepare, whose scales are float32 products and quotients."""
    x, out = _unary(graph, op)
    hires = np.float32(1.0 / 128.0) * np.float32(x.scale[0])
    reluish_scale = np.float32(3.0) / np.float32(32768.0)
    out_m, out_exp = quantize_multiplier(float(np.float32(hires / np.float32(out.scale[0]))))
    if out_exp > 0:
        raise Unsupported("an output scale below 1/128 of the input scale")
    relu_m, relu_exp = quantize_multiplier(float(np.float32(hires / reluish_scale)))
    fields = {
        "size": _size(x), "in_zero_point": _zp(x), "out_zero_point": _zp(out),
        "out_multiplier": _int16_multiplier(out_m), "reluish_multiplier": _int16_multiplier(relu_m),
        "out_exponent": out_exp, "reluish_exponent": relu_exp,
    }  # fmt: skip
    return Kernel("tr_hard_swish_s8", "tr_hard_swish_params", fields)


def lower_softmax(graph: Graph, op: Op, name: str) -> Kernel:
    """TFLM's CalculateSoftmaxParams for int8: PreprocessSoftmaxScaling with 5 integer bits and diff_min."""
    x, out = _unary(graph, op)
    if _zp(out) != INT8_MIN or np.float32(out.scale[0]) != np.float32(1.0 / 256):
        raise Unsupported("output quantization other than scale 1/256, zero point -128")
    scaled_diff_integer_bits = 5
    real = min(
        float(np.float32(op.options.beta)) * _scale(x) * float(1 << (31 - scaled_diff_integer_bits)),
        float((1 << 31) - 1),
    )
    if real <= 1.0:
        raise Unsupported(f"beta times input scale too small ({real:g} after scaling)")
    multiplier, left_shift = quantize_multiplier(real)
    radius = ((1 << scaled_diff_integer_bits) - 1) * (1 << (31 - scaled_diff_integer_bits)) / (1 << left_shift)
    depth = x.shape[-1]
    fields = {
        "outer": _size(x) // depth, "depth": depth,
        "input_multiplier": multiplier, "input_left_shift": left_shift, "diff_min": -math.floor(radius),
    }  # fmt: skip
    return Kernel("tr_softmax_s8", "tr_softmax_params", fields)


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


def _expf(x: np.ndarray) -> np.ndarray:
    """expf as exp in double rounded to float32. glibc's expf (0.502 ULP) differs from that on about 1 input in
    1500, once among the exp table's 1,025 inputs, but the table comes out the same (checked)."""
    return np.exp(x.astype(np.float64)).astype(np.float32)


def _one_over_one_plus(x: np.ndarray) -> np.ndarray:
    return np.float32(1) / (np.float32(1) + x)


def lower_softmax_s16(graph: Graph, op: Op, name: str) -> Kernel:
    """TFLM's int16 SOFTMAX prepare: the input rescaled so that [-65535, 0] spans [-10, 0], and two 513-entry
    tables, exp on [-10, 0] and 1 / (1 + x) on [0, 1], both with outputs on [-1, 1] (shared by every softmax
    of the model)."""
    x, out = _unary(graph, op, "int16")
    if _zp(out) != 0 or abs(np.float32(out.scale[0]) - np.float32(1.0 / 32768)) > np.float32(0.001 / 32768):
        raise Unsupported("output quantization other than scale 1/32768, zero point 0")
    multiplier, shift = quantize_multiplier(_scale(x) * float(np.float32(op.options.beta)) / (10.0 / 65535.0))
    steps = np.float32(65535)  # TFLM's range: int16 max - int16 min
    exp_lut = lut_s16(_expf, np.float32(10) / steps, 32767, np.float32(2) / steps)
    reciprocal_lut = lut_s16(_one_over_one_plus, np.float32(1) / steps, -32768, np.float32(2) / steps)
    constants = [
        Constant("tr_softmax_s16_exp_lut", "int16_t", exp_lut),
        Constant("tr_softmax_s16_one_over_one_plus_x_lut", "int16_t", reciprocal_lut),
    ]
    depth = x.shape[-1]
    fields = {
        "outer": _size(x) // depth, "depth": depth, "input_multiplier": multiplier, "input_shift": shift,
        "exp_lut": "tr_softmax_s16_exp_lut", "one_over_one_plus_x_lut": "tr_softmax_s16_one_over_one_plus_x_lut",
    }  # fmt: skip
    return Kernel("tr_softmax_s16", "tr_softmax_s16_params", fields, constants)


# --- Data movement ------------------------------------------------------------------------------------------


def _copy_fields(
    dims: list[int], in_strides: list[int], out_strides: list[int], in_start: int, out_start: int
) -> dict[str, object]:
    dims, (si, so) = _merge(dims, in_strides, out_strides)
    return {
        "ndims": len(dims), "dims": c_list(dims), "in_stride": c_list(si), "out_stride": c_list(so),
        "in_start": in_start, "out_start": out_start,
    }  # fmt: skip


def lower_pad(graph: Graph, op: Op, name: str) -> Kernel:
    """PAD and PADV2: TFLM copies the input elements and fills with the output zero point or the constant."""
    x, out = _tensor(graph, op), _tensor(graph, op, output=True)
    activations = _activation_type(graph, op, out.index)
    paddings = _constant_ints(graph, op.inputs[1], "paddings").reshape(-1, 2)
    if len(paddings) != len(x.shape) or np.any(paddings < 0):
        raise Unsupported(f"paddings {paddings.tolist()}")
    fill = _zp(out)
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        if graph.tensors[op.inputs[2]].type_name != x.type_name:  # the int16x8 converter leaves it float32
            raise Unsupported(f"a {graph.tensors[op.inputs[2]].type_name} pad value (TFLM needs {x.type_name})")
        fill = int(_constant_ints(graph, op.inputs[2], "pad values").reshape(-1)[0])
    expected = tuple(int(n + before + after) for n, (before, after) in zip(x.shape, paddings, strict=True))
    if expected != tuple(out.shape):
        raise Unsupported(f"output shape {out.shape} inconsistent with its paddings")
    out_strides = _strides(out.shape)
    start = int(sum(before * s for (before, _), s in zip(paddings, out_strides, strict=True)))
    fields = _copy_fields(list(x.shape), _strides(x.shape), out_strides, 0, start)
    fields |= {"fill_size": _size(out), "fill_value": fill}
    return Kernel(f"tr_pad_{SUFFIXES[activations]}", "tr_copy_params", fields)


def lower_strided_slice(graph: Graph, op: Op, name: str) -> Kernel:
    """TFLM's StridedSlice with begin/end masks and shrink_axis_mask, as Python slicing computes it."""
    x, out = _tensor(graph, op), _tensor(graph, op, output=True)
    activations = _activation_type(graph, op, out.index)
    o = op.options
    if o.ellipsisMask or o.newAxisMask or getattr(o, "offset", False):
        raise Unsupported("ellipsis, new-axis or offset masks")
    begin, end, strides = (_constant_ints(graph, t, "slice bounds") for t in op.inputs[1:4])
    if len(begin) != len(x.shape):
        raise Unsupported("slice bounds that do not cover every dimension")
    starts, counts, steps, kept = [], [], [], []
    for d, n in enumerate(x.shape):
        if o.shrinkAxisMask >> d & 1:
            start = int(begin[d]) + (n if begin[d] < 0 else 0)
            if not 0 <= start < n:
                raise Unsupported(f"index {int(begin[d])} out of range")
            starts.append(start), counts.append(1), steps.append(1)
            continue
        s = slice(None if o.beginMask >> d & 1 else int(begin[d]), None if o.endMask >> d & 1 else int(end[d]),
                  int(strides[d]))  # fmt: skip
        start, stop, step = s.indices(n)
        starts.append(start), counts.append(len(range(start, stop, step))), steps.append(step)
        kept.append(counts[-1])
    if tuple(kept) != tuple(out.shape):
        raise Unsupported(f"output shape {out.shape} inconsistent with the slice ({kept})")
    in_strides = _strides(x.shape)
    fields = _copy_fields(
        counts, [s * st for s, st in zip(in_strides, steps, strict=True)], _strides(tuple(counts)),
        int(sum(a * s for a, s in zip(starts, in_strides, strict=True))), 0,
    )  # fmt: skip
    fields |= {"fill_size": 0, "fill_value": 0}
    return Kernel(f"tr_strided_slice_{SUFFIXES[activations]}", "tr_copy_params", fields)


def lower_concatenation(graph: Graph, op: Op, name: str) -> Kernel:
    """TFLM's CONCATENATION copies the input elements as they are, whatever their quantization: one kernel
    copying bytes serves every type."""
    out = _tensor(graph, op, output=True)
    _activation_type(graph, op, out.index, *op.inputs)
    if op.options.fusedActivationFunction:
        raise Unsupported("a fused activation")
    axis = op.options.axis + (len(out.shape) if op.options.axis < 0 else 0)
    sizes = [int(np.prod(graph.tensors[t].shape[axis:], dtype=np.int64)) for t in op.inputs]
    outer = int(np.prod(out.shape[:axis], dtype=np.int64))
    if outer * sum(sizes) != _size(out):
        raise Unsupported(f"output shape {out.shape} inconsistent with its inputs")
    constants = [Constant(f"{name}_sizes", "int32_t", np.array(sizes, dtype=np.int64) * out.dtype.itemsize)]
    fields = {"n_inputs": len(sizes), "outer": outer, "copy_bytes": f"{name}_sizes"}
    return Kernel("tr_concatenation", "tr_concatenation_params", fields, constants, op.inputs, variadic=True)


def lower_mean(graph: Graph, op: Op, name: str) -> Kernel:
    """TFLM's int8 MEAN (QuantizedMeanOrSum), with the 1/count factor folded into the multiplier as its eval
    does. This TFLM takes that path even when the input and output quantization are equal, and for int16 too."""
    x, out = _tensor(graph, op), _tensor(graph, op, output=True)
    activations = _activation_type(graph, op, out.index)
    axes = {int(a) + (len(x.shape) if a < 0 else 0) for a in _constant_ints(graph, op.inputs[1], "axes").reshape(-1)}
    strides = _strides(x.shape)
    kept = [d for d in range(len(x.shape)) if d not in axes]
    reduced = sorted(axes)
    kept_dims, (kept_strides,) = _merge([x.shape[d] for d in kept], [strides[d] for d in kept])
    red_dims, (red_strides,) = _merge([x.shape[d] for d in reduced], [strides[d] for d in reduced])
    count = int(np.prod([x.shape[d] for d in reduced], dtype=np.int64))
    if int(np.prod(kept_dims)) != _size(out) or count == 0:
        raise Unsupported(f"output shape {out.shape} inconsistent with the axes")
    multiplier, shift = quantize_multiplier(_scale(x) / _scale(out))
    extra = min(count.bit_length() - 1, 32, 31 + shift)
    multiplier, shift = (multiplier << extra) // count, shift - extra

    def walk(dims: list[int], steps: list[int]) -> str:
        return f"{{{len(dims)}, {c_list(dims)}, {c_list(steps)}}}"

    fields = {
        "kept": walk(kept_dims, kept_strides), "reduced": walk(red_dims, red_strides), "count": count,
        "in_zero_point": _zp(x), "out_zero_point": _zp(out),
        "multiplier": multiplier, "shift": shift,
    }  # fmt: skip
    return Kernel(f"tr_mean_{SUFFIXES[activations]}", "tr_mean_params", fields)


# The lowering of each op, per activation type (the type of its first input).
LOWERINGS_S8 = {
    "CONV_2D": lower_conv_2d,
    "DEPTHWISE_CONV_2D": lower_depthwise_conv_2d,
    "FULLY_CONNECTED": lower_fully_connected,
    "MAX_POOL_2D": lower_max_pool_2d,
    "AVERAGE_POOL_2D": lower_average_pool_2d,
    "ADD": lower_add,
    "MUL": lower_mul,
    "SOFTMAX": lower_softmax,
    "LOGISTIC": lower_logistic,
    "TANH": lower_tanh,
    "RELU": lower_relu,
    "RELU6": lower_relu6,
    "HARD_SWISH": lower_hard_swish,
    "QUANTIZE": lower_quantize,
    "PAD": lower_pad,
    "PADV2": lower_pad,
    "STRIDED_SLICE": lower_strided_slice,
    "CONCATENATION": lower_concatenation,
    "MEAN": lower_mean,
}
# int16x8 runs the same prepare for these ops (the kernels differ by suffix); its SOFTMAX, LOGISTIC and TANH
# have their own, with tables.
LOWERINGS_S16 = {
    **{op: LOWERINGS_S8[op] for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D",
                                      "AVERAGE_POOL_2D", "ADD", "MUL", "RELU", "RELU6", "QUANTIZE", "PAD", "PADV2",
                                      "STRIDED_SLICE", "CONCATENATION", "MEAN")},
    "SOFTMAX": lower_softmax_s16,
    "LOGISTIC": lower_logistic_s16,
    "TANH": lower_tanh_s16,
}  # fmt: skip
LOWERINGS = {"int8": LOWERINGS_S8, "int16": LOWERINGS_S16}
# Ops that only reinterpret the shape: their output shares the input's bytes in the arena.
ALIASES = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"}


def _same_quantization(a: Tensor, b: Tensor) -> bool:
    return a.scale is not None and b.scale is not None and (a.scale[0], _zp(a)) == (b.scale[0], _zp(b))


def fuse_dilated_convolutions(graph: Graph) -> None:
    """Keras 3 emits a dilated convolution as SPACE_TO_BATCH_ND -> CONV_2D (or DEPTHWISE_CONV_2D) with VALID
    padding -> BATCH_TO_SPACE_ND. With batch 1 that is one convolution whose dilation is the block shape and
    whose padding is the SPACE_TO_BATCH padding minus the BATCH_TO_SPACE crop. It is exact: TFLM pads with the
    zero point, which contributes nothing, as taps outside the input contribute nothing here. Patterns that do
    not match stay as they are (and are reported unsupported)."""
    ops = graph.ops
    replaced: dict[int, Op] = {}
    removed: set[int] = set()
    for i, s2b in enumerate(ops):
        if s2b.kind != "SPACE_TO_BATCH_ND" or s2b.outputs[0] in graph.outputs:
            continue
        x = graph.tensors[s2b.inputs[0]]
        users = graph.consumers.get(s2b.outputs[0], [])
        if len(x.shape) != 4 or x.shape[0] != 1 or len(users) != 1 or ops[users[0]].kind not in CONVOLUTIONS:
            continue
        j = users[0]
        conv, o = ops[j], ops[j].options
        users = graph.consumers.get(conv.outputs[0], [])
        if conv.outputs[0] in graph.outputs or len(users) != 1 or ops[users[0]].kind != "BATCH_TO_SPACE_ND":
            continue
        k = users[0]
        b2s = ops[k]
        constant = [graph.tensors[t].data for t in (*s2b.inputs[1:3], *b2s.inputs[1:3])]
        if any(c is None for c in constant) or (o.padding, o.strideH, o.strideW) != (VALID, 1, 1):
            continue
        block, paddings, block2, crops = (c.astype(np.int64).reshape(-1) for c in constant)
        if (o.dilationHFactor, o.dilationWFactor) != (1, 1) or list(block) != list(block2) or len(block) != 2:
            continue
        pairs = (graph.tensors[s2b.outputs[0]], x), (graph.tensors[b2s.inputs[0]], graph.tensors[b2s.outputs[0]])
        if not all(_same_quantization(a, b) for a, b in pairs):
            continue
        options = copy.copy(o)
        options.dilationHFactor, options.dilationWFactor = int(block[0]), int(block[1])
        options.explicit_padding = (int(paddings[0] - crops[0]), int(paddings[2] - crops[2]))
        replaced[j] = Op(conv.position, conv.kind, [x.index, *conv.inputs[1:]], b2s.outputs, options, conv.version)
        removed |= {i, k}
    graph.ops = [replaced.get(i, op) for i, op in enumerate(ops) if i not in removed]
    reindex(graph)


CONVOLUTIONS = {"CONV_2D", "DEPTHWISE_CONV_2D"}


def describe(graph: Graph, op: Op) -> str:
    types = "/".join(sorted({graph.tensors[t].type_name for t in op.inputs + op.outputs if t >= 0}))
    return f"{op.kind} at position {op.position} ({types})"


# Input pre-processing stages the device can run before the network (defenses.py holds their numpy reference):
# stage name -> (kernel, parameter struct, the stage's parameters and their allowed values).
PREPROCESS_STAGES = {
    "squeeze_bits": ("tr_squeeze_bits_s8", "tr_squeeze_bits_params", {"bits": range(1, 9)}),
    "median": ("tr_median_s8", "tr_median_params", {"k": range(1, 8)}),  # TR_MEDIAN_MAX_K
}


def canonical_preprocess(stages: list[dict]) -> list[dict]:
    """The stages with their parameters checked, in one canonical form (the model hash covers it)."""
    canonical = []
    for stage in stages:
        name = stage.get("stage")
        if name not in PREPROCESS_STAGES:
            raise UserError(f"there is no device pre-processing stage '{name}'; choose from: "
                            f"{', '.join(PREPROCESS_STAGES)}")  # fmt: skip
        allowed = PREPROCESS_STAGES[name][2]
        params = {k: v for k, v in stage.items() if k != "stage"}
        if set(params) != set(allowed) or any(not isinstance(v, int) or v not in allowed[k] for k, v in params.items()):
            wanted = ", ".join(f"{k} in {r.start}..{r.stop - 1}" for k, r in allowed.items())
            raise UserError(f"pre-processing stage {name} takes {wanted}, not {params}")
        canonical.append({"stage": name, **{k: int(params[k]) for k in sorted(allowed)}})
    return canonical


def model_hash(tflite: bytes, preprocess: list[dict] | None = None) -> bytes:
    """SHA-256 of the .tflite bytes, followed by the pre-processing stages when there are any, so that a device
    whose stage differs from the host's cannot pass the handshake."""
    digest = hashlib.sha256(tflite)
    if preprocess:
        digest.update(b"\0tinyrobust-preprocess\0" + json.dumps(canonical_preprocess(preprocess)).encode())
    return digest.digest()


def _preprocess_steps(graph: Graph, stages: list[dict]) -> list[Step]:
    """The stages as the schedule's first steps, each writing a new int8 tensor shaped like the input; the
    network then reads the last one. The planner gives the new tensors arena space like any activation."""
    x = graph.tensors[graph.inputs[0]]
    if x.type_name != "int8":
        raise UserError(f"device pre-processing runs on int8 inputs; this model's input is {x.type_name}")
    steps, source = [], x.index
    size = int(np.prod(x.shape))
    for i, stage in enumerate(stages):
        name = stage["stage"]
        function, struct, _ = PREPROCESS_STAGES[name]
        if name == "median":
            if len(x.shape) != 4:
                raise UserError(f"the median stage needs an image input (1, H, W, C), not shape {x.shape}")
            fields = {"h": x.shape[1], "w": x.shape[2], "c": x.shape[3], "k": stage["k"]}
        else:
            fields = {"size": size, "levels": (1 << stage["bits"]) - 1}
        out = Tensor(len(graph.tensors), f"preprocess{i}_{name}", x.shape, "int8", x.scale, x.zero_point)
        graph.tensors.append(out)
        op = Op(-1, f"PREPROCESS_{name.upper()}", [source], [out.index])
        steps.append(Step(op, function, struct, fields, [source], out.index))
        source = out.index
    for op in graph.ops:
        op.inputs = [source if t == x.index else t for t in op.inputs]
    reindex(graph)
    return steps


def compile_model(tflite: bytes, preprocess: list[dict] | None = None) -> CompiledModel:
    """Lower every op, or fail listing every op the runtime does not support. preprocess: device pre-processing
    stages run on the quantized input before the network, e.g. [{"stage": "median", "k": 3}]."""
    preprocess = canonical_preprocess(preprocess or [])
    graph = read_tflite(tflite)
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise UserError(
            f"the model has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; one of each is supported"
        )
    x, y = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    for role, t in (("input", x), ("output", y)):
        if t.type_name not in ("int8", "int16"):
            raise UserError(
                f"the model's {role} is {t.type_name}, not int8 or int16; quantize it with inference_input_type "
                "and inference_output_type set to tf.int8 (tf.int16 for 16-bit activations)"
            )
    fold_shape_arithmetic(graph)
    remove_dead_ops(graph)
    fuse_dilated_convolutions(graph)
    steps = _preprocess_steps(graph, preprocess) if preprocess else []
    constants, problems = [], []
    operand_constants: set[int] = set()
    alias_of: dict[int, int] = {}  # aliased tensor -> tensor that owns the bytes
    for op in graph.ops:
        if op.kind in ALIASES:
            src = live_inputs(graph, op)[0]
            if graph.tensors[src].type_name != graph.tensors[op.outputs[0]].type_name:
                problems.append(f"{describe(graph, op)}: changes the type")
            alias_of[op.outputs[0]] = alias_of.get(src, src)
            continue
        lower = LOWERINGS.get(graph.tensors[op.inputs[0]].type_name, {}).get(op.kind) if op.inputs else None
        if lower is None:
            problems.append(describe(graph, op))
            continue
        name = f"l{op.position}_{op.kind.lower()}"
        try:
            kernel = lower(graph, op, name)
        except Unsupported as exc:
            problems.append(f"{describe(graph, op)}: {exc}")
            continue
        inputs = list(kernel.inputs if kernel.inputs is not None else op.inputs[:1])
        for t in inputs:  # constant operands (an ADD's bias, a CONCATENATION's table) become C arrays
            if graph.tensors[t].is_constant and t not in operand_constants:
                operand_constants.add(t)
                tensor = graph.tensors[t]
                constants.append(Constant(operand_name(t), C_TYPES[tensor.type_name], tensor.data.reshape(-1)))
        steps.append(Step(op, kernel.function, kernel.struct, kernel.fields, inputs, op.outputs[0], kernel.variadic))
        names = {c.name for c in constants}
        constants += [c for c in kernel.constants if c.name not in names]  # tables shared by several steps
    if problems:
        raise UserError("the model uses operators the runtime does not support: " + "; ".join(problems))

    buffers = _buffers(graph, steps, alias_of, x.index, y.index)
    arena_bytes, buffer_offsets = plan_arena(buffers)
    offsets = {}
    for t in graph.tensors:
        owner = alias_of.get(t.index, t.index)
        if owner in buffer_offsets:
            offsets[t.index] = buffer_offsets[owner]
    counts: dict[str, int] = {}
    for op in graph.ops:
        counts[op.kind] = counts.get(op.kind, 0) + 1
    types = {t: C_TYPES.get(graph.tensors[t].type_name, "int8_t") for t in offsets}
    digest = model_hash(tflite, preprocess)
    return CompiledModel(steps, constants, arena_bytes, offsets, x, y, digest, counts, types, preprocess)


def operand_name(tensor: int) -> str:
    """The C array of a constant kernel operand."""
    return f"tr_w_t{tensor}"


def _buffers(graph: Graph, steps: list[Step], alias_of: dict[int, int], x: int, y: int) -> list[Buffer]:
    """Activation buffers with their lifetimes in schedule positions; aliases extend their owner's life."""
    first: dict[int, int] = {alias_of.get(x, x): 0}
    last: dict[int, int] = {}
    for i, step in enumerate(steps):
        for t in step.inputs:
            if graph.tensors[t].is_constant:
                continue
            owner = alias_of.get(t, t)
            first.setdefault(owner, i)
            last[owner] = i
        owner = alias_of.get(step.output, step.output)
        first.setdefault(owner, i)
        last[owner] = max(last.get(owner, i), i)
    out_owner = alias_of.get(y, y)
    last[out_owner] = len(steps)  # the output is read after the last step
    return [Buffer(t, graph.tensors[t].nbytes, first[t], last[t]) for t in first]


def c_array(values: np.ndarray, per_line: int = 24) -> str:
    items = [str(int(v)) for v in values.reshape(-1)]
    return ",\n    ".join(", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line))


def render(model: CompiledModel, out_dir: Path) -> list[Path]:
    """Write model.h and model.c for the compiled model."""
    from tinyrobust.templates import render_template

    def pointer(t: int) -> str:
        """A tensor in the byte arena as a pointer to its elements."""
        return f"({model.element_types.get(t, 'int8_t')} *)(arena + {model.offsets[t]})"

    def operand(t: int) -> str:
        return pointer(t) if t in model.offsets else operand_name(t)

    def arguments(step: Step) -> str:
        reads = ", ".join(operand(t) for t in step.inputs)
        return f"(const void *const[]){{{reads}}}" if step.variadic else reads

    out_dir.mkdir(parents=True, exist_ok=True)
    context = {"model": model, "c_array": c_array, "arguments": arguments, "pointer": pointer}
    paths = []
    for name in ("model.h", "model.c"):
        path = out_dir / name
        path.write_text(render_template(f"{name}.j2", **context))
        paths.append(path)
    return paths
