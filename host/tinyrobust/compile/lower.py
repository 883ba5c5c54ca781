"""The lowering of each op: the "prepare" half of its TFLite Micro kernel, run once on the host. A lower_<op>
function checks what the runtime supports, computes the kernel's parameters with TFLM's formulas (see
arithmetic.py) and returns the kernel to call, its parameter struct's fields and the constants it reads.

The fields follow CMSIS-NN's convention, as tr_kernels.h does: in_offset (in1_offset, in2_offset,
weights_offset) is the negated zero point of an input, out_offset the output's zero point; dimensions are
in_h, in_w, in_c, out_h, out_w, out_c and k_h, k_w for a kernel window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from tinyrobust.compile.arithmetic import (
    Unsupported,
    activation_range,
    checked_log2,
    expf,
    input_radius,
    int16_multiplier,
    limits,
    lut_s16,
    one_over_one_plus,
    out_size_and_padding,
    quantize_multiplier,
    requantize,
    round_half_away,
    sigmoid_table_u16,
    small_multiplier,
)
from tinyrobust.compile.graph import Graph, Op, Tensor
from tinyrobust.compile.render import C_TYPES, QUANT_PARAMS_PREFIX, WEIGHTS_PREFIX, Constant, c_list, c_struct

INT8_MIN = -128
# The kernel-name suffix of each activation type (CMSIS-NN's naming: tr_conv_s8 for int8 activations,
# tr_conv_s16 for int16x8).
SUFFIXES = {"int8": "s8", "int16": "s16"}


@dataclass
class Kernel:
    """What a lowering function returns: the kernel to call, its parameters and the tensors it reads."""

    function: str
    struct: str
    fields: dict[str, object]
    constants: list[Constant] = field(default_factory=list)
    inputs: list[int] | None = None  # in call order; None means the op's first input
    variadic: bool = False  # the kernel takes its inputs as one array of pointers (CONCATENATION)


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
    MultiplyByQuantizedMultiplier, unless the bias is int32: then both are 32-bit (the kernels tell by the bias)."""
    bias = graph.tensors[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    fields: dict[str, object] = {"bias": "NULL"}
    if activations == "int16":
        fields["bias64"] = "NULL"
    if bias is None:
        return fields, []
    if bias.data is None:
        raise Unsupported("a bias that is not constant")
    if bias.type_name not in accepted:
        raise Unsupported(f"{bias.type_name} bias")
    fields["bias64" if bias.type_name == "int64" else "bias"] = f"{WEIGHTS_PREFIX}{name}_bias"
    return fields, [Constant(f"{WEIGHTS_PREFIX}{name}_bias", C_TYPES[bias.type_name], bias.data.reshape(-1))]


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
    bias = f"{WEIGHTS_PREFIX}{name}_bias"
    return {**bias_fields, "bias": bias}, [Constant(bias, "int32_t", wrapped)]


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
    weights = Constant(f"{WEIGHTS_PREFIX}{name}_weights", "int8_t", w.data.reshape(-1))
    constants = [weights, *constants, *requant_constants]
    fields = {
        "in_h": in_h, "in_w": in_w, "in_c": in_c, "out_h": out_h, "out_w": out_w, "out_c": out_c,
        "k_h": k_h, "k_w": k_w, "k_c": 1 if depthwise else w.shape[3],
        "stride_h": o.strideH, "stride_w": o.strideW,
        "dilation_h": o.dilationHFactor, "dilation_w": o.dilationWFactor, "pad_h": pad_h, "pad_w": pad_w,
        "in_offset": -int(x.zero_point[0]), "out_offset": int(out.zero_point[0]), "act_min": lo, "act_max": hi,
        "weights": weights.name, **bias_fields,
        "requant": requant,
    }  # fmt: skip
    if not depthwise and in_c % w.shape[3]:
        raise Unsupported(f"{in_c} input channels not a multiple of the filter's {w.shape[3]}")
    return fields, constants, activations


# TR_COLUMN_BYTES in tr_kernels.h: the largest receptive field (k_h * k_w * in_c) tr_conv_s8 gathers on the stack.
COLUMN_BYTES = 1152


def lower_conv_2d(graph: Graph, op: Op, name: str) -> Kernel:
    """int8 convolutions of one group whose receptive field fits a column run on tr_conv_s8, or tr_conv_s8_opt
    where its requantization is exact, the activation range is all of int8, the channels pair up and a group of
    four pixels takes at most BLOCK_LIMIT of stack; the others read the input in place."""
    fields, constants, activations = _conv_common(graph, op, name, depthwise=False)
    function = f"tr_conv_{SUFFIXES[activations]}"
    field_bytes = fields["k_h"] * fields["k_w"] * fields["k_c"]
    if activations == "int8" and (fields["k_c"] != fields["in_c"] or field_bytes > COLUMN_BYTES):
        function = "tr_conv_s8_in_place"
    elif (
        activations == "int8"
        and (fields["act_min"], fields["act_max"]) == (-128, 127)
        and fields["out_c"] % 2 == 0
        and sum(_block_bytes(fields, skip=False)) <= BLOCK_LIMIT
        and doubled_requant_fits(graph, op, name, fields, constants, weight_axes=(1, 2, 3))
    ):
        function = "tr_conv_s8_opt"
        bias = next((c.values for c in constants if c.name == fields["bias"]), np.zeros(fields["out_c"], np.int64))
        weights = next(c for c in constants if c.name == fields["weights"])
        stream = pair_stream(weights, bias, fields["out_c"], rows_first(fields["k_h"], fields["k_w"] * fields["in_c"]))
        constants = [stream, *(c for c in constants if c.name not in (fields["weights"], fields["bias"]))]
        fields["bias"] = "NULL"  # in the stream
    return Kernel(function, "tr_conv_params", fields, constants)


def rows_first(rows: int, row_bytes: int) -> np.ndarray:
    """The receptive field's bytes in the order tr_conv_s8_opt takes them: each row's whole words, then the last
    row_bytes % 4 bytes of every row. The whole words are then widened from the input where they lie (widen_fields_s8),
    not gathered first; a field of whole-word rows keeps its order."""
    whole = row_bytes - row_bytes % 4
    starts = row_bytes * np.arange(rows)[:, None]
    return np.concatenate([(starts + np.arange(whole)).ravel(), (starts + np.arange(whole, row_bytes)).ravel()])


# TR_PAIR_BLOCK in tr_conv.c: the words of a receptive field in a block of tr_conv_s8_opt's filters.
PAIR_BLOCK = 8


def pair_stream(weights: Constant, bias: np.ndarray, out_c: int, order: np.ndarray) -> Constant:
    """tr_conv_s8_opt's filters and biases as one stream, a pair of output channels after another, so that one
    pointer walks all a pair takes: its two biases, doubled as int32 (the DSP extension's loops sum twice the products
    from fields widened doubled, for requantize_doubled), then its filters in blocks of PAIR_BLOCK words of the
    receptive field. The field is padded with zero weights to whole words (conv_s8 pads it with zeros to match),
    and the first block is led by zero weights to a whole block (the loops enter it where the field starts). In a
    block, for each word of the field a word of both filters' weights of its bytes 0 and 2 (c0 x0, c1 x0, c0 x2,
    c1 x2), then for each word those of its bytes 1 and 3: SXTB16 splits such a word into both filters' halfwords
    for one word of the field widened (widen_pixels_s8), and Helium's VLD2 splits each half of a block into both
    filters' weights of the block's even or odd bytes. The field's bytes are taken in order (rows_first)."""
    filters = weights.values.reshape(out_c, -1)[:, order]
    words = -(-filters.shape[1] // 4)
    blocks = -(-words // PAIR_BLOCK)
    lead = 4 * (PAIR_BLOCK * blocks - words)
    padded = np.pad(filters, ((0, 0), (lead, 4 * words - filters.shape[1])))
    # [pair, channel, block, word, byte 2m + h] -> [pair, block, h, word, m, channel]
    shape = (out_c // 2, 2, blocks, PAIR_BLOCK, 2, 2)
    pairs = padded.reshape(shape).transpose(0, 2, 5, 3, 4, 1).reshape(out_c // 2, -1)
    biases = (2 * bias).astype("<i4").view(np.int8).reshape(out_c // 2, 8)
    return Constant(weights.name, weights.ctype, np.concatenate([biases, pairs], axis=1).reshape(-1))


# TR_DEPTHWISE_TAPS and TR_DEPTHWISE_PATCH in tr_kernels.h: the largest window (k_h * k_w) tr_depthwise_conv_s8_opt
# takes, and the words of its patch of input for the windows that cross the border (one word per input position).
DEPTHWISE_TAPS, DEPTHWISE_PATCH = 49, 256
# tr_depthwise3x3_s8_opt's band of input rows (TR_BAND_ROWS in tr_conv.c) of four channels, on the stack: the
# bytes of a column pair, and the most it takes.
DEPTHWISE_BAND_PAIR, DEPTHWISE_BAND_BYTES = 256, 8192


def lower_depthwise_conv_2d(graph: Graph, op: Op, name: str) -> Kernel:
    """TFLM's 16x8 depthwise convolution has only the int64-bias kernel: it always accumulates in 64 bits. int8
    layers go to tr_depthwise_conv_s8_opt where it takes them (see _fits_depthwise_opt)."""
    fields, constants, activations = _conv_common(
        graph, op, name, depthwise=True, bias_types={"int8": ("int32",), "int16": ("int64",)}
    )
    if activations == "int16":  # its bias is int64 or none: 64-bit sums
        return Kernel("tr_depthwise_conv_s16", "tr_conv_params", fields, constants)
    if not _fits_depthwise_opt(graph, op, name, fields, constants):
        return Kernel("tr_depthwise_conv_s8", "tr_conv_params", fields, constants)
    function = "tr_depthwise3x3_s8_opt" if _fits_depthwise3x3(fields) else "tr_depthwise_conv_s8_opt"
    return Kernel(function, "tr_conv_params", fields, constants)


def _fits_depthwise3x3(f: dict) -> bool:
    """Whether tr_depthwise3x3_s8_opt takes a layer that tr_depthwise_conv_s8_opt does: a 3x3 window, no dilation,
    stride 1 or 2 (the same both ways), padding of at most one, the activation range all of int8, and its band on
    the stack within DEPTHWISE_BAND_BYTES."""
    return (
        (f["k_h"], f["k_w"], f["dilation_h"], f["dilation_w"]) == (3, 3, 1, 1)
        and f["stride_h"] == f["stride_w"] in (1, 2)
        and max(f["pad_h"], f["pad_w"]) <= 1
        and (f["act_min"], f["act_max"]) == (-128, 127)
        and _band_bytes(f) <= DEPTHWISE_BAND_BYTES
    )


def _band_bytes(f: dict) -> int:
    """tr_depthwise3x3_s8_opt's band on the stack: it walks the map along its longer side."""
    return DEPTHWISE_BAND_PAIR * (f["stride_w"] * ((max(f["out_h"], f["out_w"]) + 1) // 2) + 1)


# The least stack plan_pixel_groups gives a block of conv_s8_widened, and the most one group of four pixels may
# take (a layer that needs more takes tr_conv_s8): build.firmware.STACK_BYTES holds it.
BLOCK_BYTES, BLOCK_LIMIT = 2048, 12288


def plan_pixel_groups(lowered: list[tuple[Op, Kernel]]) -> list[tuple[Op, Kernel]]:
    """Each tr_conv_s8_opt and tr_conv_add_s8_opt layer with the groups of four pixels it takes a block on the DSP
    extension (conv_s8_widened, pixel_groups): as many as fit in the stack the model's largest layer takes anyway,
    one group's block or a depthwise band, and in BLOCK_BYTES at least. Each pair of channels is set up once a
    block, so larger blocks save instructions in layers of small receptive fields."""
    sizes = {i: _block_bytes(k.fields, k.function == "tr_conv_add_s8_opt") for i, (_, k) in enumerate(lowered)
             if k.function in ("tr_conv_s8_opt", "tr_conv_add_s8_opt")}  # fmt: skip
    bands = [_band_bytes(k.fields) for _, k in lowered if k.function == "tr_depthwise3x3_s8_opt"]
    budget = max([BLOCK_BYTES, *bands, *(fixed + group for fixed, group in sizes.values())])
    planned = list(lowered)
    for i, (fixed, group) in sizes.items():
        op, kernel = lowered[i]
        planned[i] = op, replace(kernel, fields={**kernel.fields, "pixel_groups": (budget - fixed) // group})
    return planned


def _block_bytes(f: dict, skip: bool) -> tuple[int, int]:
    """conv_s8_widened's stack for a block (tr_conv.c), as the bytes of any block and those of each group: 32 for
    each word of a group's field padded to whole blocks of the stream, a group's outputs where the residual ADD
    waits for them (else one group's in all, for a last group of fewer pixels), and a gathered field."""
    words = -(-f["k_h"] * f["k_w"] * f["k_c"] // 4)
    group = 32 * PAIR_BLOCK * -(-words // PAIR_BLOCK) + (4 * f["out_c"] if skip else 0)
    return 4 * words + (0 if skip else 4 * f["out_c"]), group


def _fits_depthwise_opt(graph: Graph, op: Op, name: str, fields: dict, constants: list[Constant]) -> bool:
    """Whether tr_depthwise_conv_s8_opt takes the layer: depth multiplier 1 and four channels or more, a window of
    at most DEPTHWISE_TAPS taps whose input fits DEPTHWISE_PATCH, and a requantization doubled_requant_fits."""
    f = fields
    window = ((f["k_h"] - 1) * f["dilation_h"] + 1) * ((f["k_w"] - 1) * f["dilation_w"] + 1)  # input positions
    if f["out_c"] != f["in_c"] or f["out_c"] < 4 or f["k_h"] * f["k_w"] > DEPTHWISE_TAPS or window > DEPTHWISE_PATCH:
        return False
    return doubled_requant_fits(graph, op, name, fields, constants, weight_axes=(0, 1, 2))


def doubled_requant_fits(
    graph: Graph, op: Op, name: str, fields: dict, constants: list[Constant], weight_axes: tuple[int, ...]
) -> bool:
    """Whether the _opt kernels' requantization from the doubled accumulator is exact for every output channel
    (requantize_doubled in tr_conv.c): a shift right r = -shift >= 1, and sums below 2^31 in magnitude: twice the
    accumulator, and SMMLAR's rounded a2 * multiplier / 2^32 + 2^(r - 1) + the output zero point * 2^r. |acc| is at
    most |bias| + 256 * sum(|weights|) per channel (summed over weight_axes): the kernels multiply raw inputs
    (|x| <= 128) from the folded bias (|in_offset| <= 128)."""
    values = {c.name: c.values.astype(np.int64) for c in constants}
    multipliers = values[f"{QUANT_PARAMS_PREFIX}{name}_multiplier"]
    right = -values[f"{QUANT_PARAMS_PREFIX}{name}_shift"]
    if np.any(right < 1):
        return False
    weight_sums = np.abs(graph.tensors[op.inputs[1]].data.astype(np.int64)).sum(axis=weight_axes)
    bias = np.zeros_like(weight_sums)
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        bias = graph.tensors[op.inputs[2]].data.astype(np.int64).reshape(-1)
    return _doubled_sums_fit(np.abs(bias) + 256 * weight_sums, multipliers, right, fields["out_offset"])


def _doubled_sums_fit(acc, multiplier, right, out_offset: int) -> bool:
    """requantize_doubled's sums below 2^31 in magnitude, for accumulators up to acc (arrays per channel, or one
    value): twice the accumulator, and SMMLAR's rounded a2 * multiplier / 2^32 + 2^(r - 1) + the output zero
    point * 2^r."""
    smmlar = (acc * multiplier >> 31) + 1 + (1 << (right - 1)) + abs(out_offset) * (1 << right)
    return bool(np.all(2 * acc < 2**31) and np.all(smmlar < 2**31))


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
    weights = Constant(f"{WEIGHTS_PREFIX}{name}_weights", "int8_t", w.data.reshape(-1))
    constants = [weights, *bias_constants, *requant_constants]
    lo, hi = activation_range(op.options.fusedActivationFunction, out)
    fields = {
        "rows": rows, "in_n": in_n, "out_n": out_n,
        "in_offset": -int(x.zero_point[0]), "weights_offset": -int(w.zero_point[0]),
        "out_offset": int(out.zero_point[0]), "act_min": lo, "act_max": hi,
        "weights": weights.name, **bias_fields,
        "requant": requant,
    }  # fmt: skip
    function = f"tr_fully_connected_{SUFFIXES[activations]}"
    if (
        activations == "int8"
        and fields["weights_offset"] == 0
        and (lo, hi) == (-128, 127)
        and doubled_requant_fits(graph, op, name, fields, constants, weight_axes=(1,))
    ):
        function = "tr_fully_connected_s8_opt"
    return Kernel(function, "tr_fc_params", fields, constants)


def _lower_pool(graph: Graph, op: Op, function: str) -> Kernel:
    x, out = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    function = f"{function}_{SUFFIXES[_activation_type(graph, op, out.index)]}"
    if (x.scale[0], x.zero_point[0]) != (out.scale[0], out.zero_point[0]):
        raise Unsupported("different input and output quantization")
    o = op.options
    _, in_h, in_w, in_c = x.shape
    _, out_h, out_w, _ = out.shape
    _, pad_h = out_size_and_padding(o.padding, in_h, o.filterHeight, o.strideH, 1)
    _, pad_w = out_size_and_padding(o.padding, in_w, o.filterWidth, o.strideW, 1)
    lo, hi = activation_range(o.fusedActivationFunction, out)
    fields = {
        "in_h": in_h, "in_w": in_w, "in_c": in_c, "out_h": out_h, "out_w": out_w,
        "k_h": o.filterHeight, "k_w": o.filterWidth, "stride_h": o.strideH, "stride_w": o.strideW,
        "pad_h": pad_h, "pad_w": pad_w, "act_min": lo, "act_max": hi,
    }  # fmt: skip
    return Kernel(function, "tr_pool_params", fields)


def lower_max_pool_2d(graph: Graph, op: Op, name: str) -> Kernel:
    return _lower_pool(graph, op, "tr_max_pool")


def lower_average_pool_2d(graph: Graph, op: Op, name: str) -> Kernel:
    return _lower_pool(graph, op, "tr_avg_pool")


# --- Helpers for the elementwise and data-movement ops ------------------------------------------------------

MAX_DIMS = 6  # TR_MAX_DIMS in tr_kernels.h


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


# --- Elementwise arithmetic ---------------------------------------------------------------------------------


# Headroom bits of TFLM's quantized ADD per activation type. Its int16 ADD takes the same general path as int8
# (the power-of-two-scale path of TFLite's int16 ADD is not TFLM's), with 15 bits.
ADD_LEFT_SHIFTS = {"int8": 20, "int16": 15}


def add_quant(graph: Graph, op: Op, first: int = 0) -> dict[str, object]:
    """TFLM's CalculateOpDataAdd: both inputs to twice the larger scale with some bits of headroom. The fields of
    tr_add_quant, with the op's input `first` as in1 (the other as in2)."""
    a, b, out = _tensor(graph, op, first), _tensor(graph, op, 1 - first), _tensor(graph, op, output=True)
    activations = graph.tensors[op.inputs[0]].type_name
    _require_type(graph, activations, a.index, b.index, out.index)
    if activations not in ADD_LEFT_SHIFTS:
        raise Unsupported(f"{activations} activations")
    left_shift = ADD_LEFT_SHIFTS[activations]
    twice_max = 2 * max(_scale(a), _scale(b))
    m1, s1 = small_multiplier(_scale(a) / twice_max)
    m2, s2 = small_multiplier(_scale(b) / twice_max)
    mo, so = small_multiplier(twice_max / ((1 << left_shift) * _scale(out)))
    lo, hi = activation_range(op.options.fusedActivationFunction, out)
    return {
        "in1_offset": -_zp(a), "in2_offset": -_zp(b), "out_offset": _zp(out),
        "left_shift": left_shift, "in1_multiplier": m1, "in1_shift": s1, "in2_multiplier": m2, "in2_shift": s2,
        "out_multiplier": mo, "out_shift": so, "act_min": lo, "act_max": hi,
    }  # fmt: skip


def lower_add(graph: Graph, op: Op, name: str) -> Kernel:
    quant = add_quant(graph, op)
    fields = {**_broadcast(graph, op), "quant": c_struct(quant)}
    activations = SUFFIXES[graph.tensors[op.inputs[0]].type_name]
    return Kernel(f"tr_add_{activations}", "tr_add_params", fields, inputs=op.inputs[:2])


def _residual(quant: dict[str, int], name: str) -> tuple[dict[str, object], list[Constant]]:
    """tr_residual's fields and its two tables: each input's share of TFLM's sum for each of its 256 values."""
    values = np.arange(-128, 128, dtype=np.int64)
    shares = []
    for i in (1, 2):
        x = (values + quant[f"in{i}_offset"]) << quant["left_shift"]
        shares.append(Constant(f"{QUANT_PARAMS_PREFIX}{name}_in{i}_shares", "int32_t",
                               requantize(x, quant[f"in{i}_multiplier"], quant[f"in{i}_shift"])))  # fmt: skip
    fields = {
        "in1_shares": shares[0].name, "in2_shares": shares[1].name,
        **{k: quant[k] for k in ("out_multiplier", "out_shift", "out_offset", "act_min", "act_max")},
        "nudge": _residual_nudge(quant, int(np.abs(shares[0].values).max() + np.abs(shares[1].values).max())),
    }  # fmt: skip
    return fields, shares


def _residual_nudge(quant: dict[str, int], largest_sum: int) -> int:
    """requantize_doubled's nudge for the fused ADD's sum (see tr_conv.c), where it is exact for every sum of the
    two tables: a shift right r >= 1, twice the largest sum and SMMLAR's result below 2^31 in magnitude. 0 (never
    a nudge: 2^(r - 1) * (1 + 2 * zero point) is odd times a power of two) where it is not."""
    right, offset = -quant["out_shift"], quant["out_offset"]
    if right < 1 or not _doubled_sums_fit(largest_sum, quant["out_multiplier"], right, offset):
        return 0
    return int(np.int32(np.uint32(((1 << (right - 1)) + (offset << right)) % 2**32)))


# TR_RESIDUAL_CHANNELS in tr_kernels.h: the most output channels tr_conv_add_s8 takes.
RESIDUAL_CHANNELS = 256

# The convolution kernels that take a fused ADD after them, and the kernel of the two fused.
CONV_ADDS = {"tr_conv_s8": "tr_conv_add_s8", "tr_conv_s8_opt": "tr_conv_add_s8_opt"}


def fuse_residual_adds(graph: Graph, lowered: list[tuple[Op, Kernel]]) -> list[tuple[Op, Kernel]]:
    """An int8 ADD of two tensors of its output's shape, one of them written by a tr_conv_s8 step for this ADD
    alone, after the other (the skip) was written: the convolution's step runs the ADD on each value it writes
    (tr_conv_add_s8), as TFLM's ADD would on the convolution's int8 output, and the ADD's step goes. The planner
    may then write the sum over the skip (planner.in_place_inputs)."""
    steps = {op.outputs[0]: i for i, (op, _) in enumerate(lowered)}
    fused: dict[int, tuple[Op, Kernel]] = {}
    removed: set[int] = set()
    for j, (add, kernel) in enumerate(lowered):
        if kernel.function != "tr_add_s8" or len(add.inputs) != 2:
            continue
        shapes = {graph.tensors[t].shape for t in (*add.inputs, add.outputs[0])}
        for first in (0, 1):
            y, skip = add.inputs[first], add.inputs[1 - first]
            i = steps.get(y)
            if len(shapes) != 1 or i is None or i in fused or lowered[i][1].function not in CONV_ADDS:
                continue
            if graph.consumers.get(y) != [graph.ops.index(add)] or y in graph.outputs or steps.get(skip, -1) >= i:
                continue
            if graph.tensors[skip].is_constant or graph.tensors[y].shape[-1] > RESIDUAL_CHANNELS:
                continue
            conv, conv_kernel = lowered[i]
            residual, constants = _residual(add_quant(graph, add, first), f"l{add.position}_add")
            op = Op(conv.position, "CONV_2D+ADD", conv.inputs, add.outputs, conv.options, conv.version)
            fields = {**conv_kernel.fields, "residual": f"&(const tr_residual){c_struct(residual)}"}
            constants = conv_kernel.constants + constants
            function = CONV_ADDS[conv_kernel.function]
            fused[i] = op, Kernel(function, "tr_conv_params", fields, constants, [conv.inputs[0], skip])
            removed.add(j)
            break
    return [fused.get(i, step) for i, step in enumerate(lowered) if i not in removed]


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
        "size": _size(x), "in_offset": -_zp(x), "out_offset": _zp(out),
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
    fields = {"size": _size(x), "act_min": _zp(x), "act_max": min(max(six, lo), hi)}
    return Kernel(f"tr_clamp_{SUFFIXES[activations]}", "tr_clamp_params", fields)


def _sigmoid(graph: Graph, op: Op, function: str) -> Kernel:
    """TFLM's LOGISTIC and TANH prepare: the input scale times 2^27 as a Q31 multiplier and a left shift."""
    x, out = _unary(graph, op)
    q, left_shift = math.frexp(_scale(x) * float(1 << 27))
    multiplier = round_half_away(q * (1 << 31))
    multiplier = multiplier - (1 << 32) if multiplier >= 1 << 31 else multiplier  # TFLM's int32 cast
    if left_shift < 0:
        raise Unsupported(f"input scale {_scale(x):g}")
    fields = {
        "size": _size(x), "in_offset": -_zp(x), "range_radius": input_radius(4, left_shift),
        "multiplier": multiplier, "left_shift": left_shift,
    }  # fmt: skip
    return Kernel(function, "tr_sigmoid_params", fields)


def lower_logistic(graph: Graph, op: Op, name: str) -> Kernel:
    if _zp(_tensor(graph, op, output=True)) != INT8_MIN:
        raise Unsupported("output zero point other than -128")
    return _sigmoid(graph, op, "tr_logistic_s8")


def lower_tanh(graph: Graph, op: Op, name: str) -> Kernel:
    return _sigmoid(graph, op, "tr_tanh_s8")


def _sigmoid_s16(graph: Graph, op: Op, function: str, power_of_two_shifts: tuple[int, ...]) -> Kernel:
    """TFLM's int16 LOGISTIC and TANH prepare: the input rescaled to units of 1 / (3 * 4096), where the table
    spans [-10.7, 10.7], by an int16 multiplier and a rounding right shift; an input scale of 2^(shift - 12)
    with shift in power_of_two_shifts takes the exact multiplier 3 * 2^shift. The output scale must be 2^-15."""
    x, out = _unary(graph, op, _activation_type(graph, op, op.outputs[0]))
    if checked_log2(out.scale[0]) != -15:
        raise Unsupported("an output scale other than 2^-15")
    log2 = checked_log2(x.scale[0])
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
        "size": _size(x), "in_offset": -_zp(x), "out_offset": _zp(out),
        "out_multiplier": int16_multiplier(out_m), "reluish_multiplier": int16_multiplier(relu_m),
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
    depth = x.shape[-1]
    fields = {
        "outer": _size(x) // depth, "depth": depth, "input_multiplier": multiplier, "input_left_shift": left_shift,
        "diff_min": -input_radius(scaled_diff_integer_bits, left_shift),
    }  # fmt: skip
    return Kernel("tr_softmax_s8", "tr_softmax_params", fields)


def lower_softmax_s16(graph: Graph, op: Op, name: str) -> Kernel:
    """TFLM's int16 SOFTMAX prepare: the input rescaled so that [-65535, 0] spans [-10, 0], and two 513-entry
    tables, exp on [-10, 0] and 1 / (1 + x) on [0, 1], both with outputs on [-1, 1] (shared by every softmax
    of the model)."""
    x, out = _unary(graph, op, "int16")
    if _zp(out) != 0 or abs(np.float32(out.scale[0]) - np.float32(1.0 / 32768)) > np.float32(0.001 / 32768):
        raise Unsupported("output quantization other than scale 1/32768, zero point 0")
    multiplier, shift = quantize_multiplier(_scale(x) * float(np.float32(op.options.beta)) / (10.0 / 65535.0))
    steps = np.float32(65535)  # TFLM's range: int16 max - int16 min
    exp_lut = lut_s16(expf, np.float32(10) / steps, 32767, np.float32(2) / steps)
    reciprocal_lut = lut_s16(one_over_one_plus, np.float32(1) / steps, -32768, np.float32(2) / steps)
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


def _nearest_neighbors(in_size: int, out_size: int, align_corners: bool, half_pixel_centers: bool) -> np.ndarray:
    """TFLM's GetNearestNeighbor for every output index: the source index, from a float32 scale and float32
    products as TFLM computes them, so that the indexes are TFLM's wherever a product falls near an integer."""
    f32 = np.float32
    scale = f32(in_size - 1) / f32(out_size - 1) if align_corners and out_size > 1 else f32(in_size) / f32(out_size)
    offset = f32(0.5) if half_pixel_centers else f32(0.0)
    products = (np.arange(out_size, dtype=f32) + offset) * scale
    # TfLiteRound (halves away from zero) of a nonnegative float32 is floor(x + 0.5), exact in double.
    source = np.floor(products.astype(np.float64) + 0.5) if align_corners else np.floor(products)
    return np.clip(source.astype(np.int64), 0, in_size - 1)


def lower_resize_nearest_neighbor(graph: Graph, op: Op, name: str) -> Kernel:
    """TFLM's RESIZE_NEAREST_NEIGHBOR: the source row of every output row and the source column of every output
    column as tables, and one kernel copying bytes for every type. TFLM copies the values whatever the input and
    output quantization (it checks neither; the converter gives both the same), so any copy is bit-exact."""
    x, out = _tensor(graph, op), _tensor(graph, op, output=True)
    _activation_type(graph, op, out.index)
    size = graph.tensors[op.inputs[1]]
    if len(x.shape) != 4 or x.shape[0] != 1:
        raise Unsupported(f"input shape {x.shape} (batch 1 NHWC expected)")
    if size.type_name != "int32" or size.shape != (2,):
        raise Unsupported(f"a {size.type_name} size of shape {size.shape} (TFLM needs 2 int32 values)")
    if size.data is None:
        raise Unsupported("a size that is not constant")
    (out_h, out_w), (_, in_h, in_w, in_c) = size.data.tolist(), x.shape
    if out_h < 1 or out_w < 1 or tuple(out.shape) != (1, out_h, out_w, in_c):
        raise Unsupported(f"output shape {out.shape} inconsistent with its size [{out_h}, {out_w}]")
    o = op.options
    rows = _nearest_neighbors(in_h, out_h, o.alignCorners, o.halfPixelCenters)
    cols = _nearest_neighbors(in_w, out_w, o.alignCorners, o.halfPixelCenters)
    constants = [Constant(f"{name}_rows", "int32_t", rows), Constant(f"{name}_cols", "int32_t", cols)]
    fields = {
        "in_w": in_w, "out_h": out_h, "out_w": out_w, "pixel_bytes": in_c * x.dtype.itemsize,
        "rows": f"{name}_rows", "cols": f"{name}_cols",
    }  # fmt: skip
    return Kernel("tr_resize_nearest_neighbor", "tr_resize_nearest_neighbor_params", fields, constants)


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
        "in_offset": -_zp(x), "out_offset": _zp(out),
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
    "RESIZE_NEAREST_NEIGHBOR": lower_resize_nearest_neighbor,
}
# int16x8 runs the same prepare for these ops (the kernels differ by suffix); its SOFTMAX, LOGISTIC and TANH
# have their own, with tables.
LOWERINGS_S16 = {
    **{op: LOWERINGS_S8[op] for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D",
                                      "AVERAGE_POOL_2D", "ADD", "MUL", "RELU", "RELU6", "QUANTIZE", "PAD", "PADV2",
                                      "STRIDED_SLICE", "CONCATENATION", "MEAN", "RESIZE_NEAREST_NEIGHBOR")},
    "SOFTMAX": lower_softmax_s16,
    "LOGISTIC": lower_logistic_s16,
    "TANH": lower_tanh_s16,
}  # fmt: skip
LOWERINGS = {"int8": LOWERINGS_S8, "int16": LOWERINGS_S16}


def lowering(graph: Graph, op: Op):
    """The lowering function of the op for its activation type (the type of its first input), or None."""
    return LOWERINGS.get(graph.tensors[op.inputs[0]].type_name, {}).get(op.kind) if op.inputs else None
