"""Compile a quantized .tflite model into C: constants, a static layer schedule and a planned arena.

This is the "prepare" half of TFLite Micro's kernels, run once on the host: shapes, padding, requantization
multipliers and shifts and activation ranges are computed here with TFLM's own formulas, so the firmware
only runs integer arithmetic.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError
from .graph import Graph, Op, Tensor, live_inputs, read_tflite, remove_dead_ops
from .planner import Buffer, plan_arena

INT8_MIN, INT8_MAX = -128, 127
# Fused activations of the TFLite schema (ActivationFunctionType) the kernels clamp to.
ACTIVATIONS = {0: None, 1: (0.0, None), 2: (-1.0, 1.0), 3: (0.0, 6.0)}
ACTIVATION_NAMES = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
SAME, VALID = 0, 1


class Unsupported(Exception):
    """An op, or one of its attributes or types, that the runtime does not implement."""


@dataclass
class Constant:
    name: str
    ctype: str
    values: np.ndarray
    weight: bool = True  # weights are named tr_w_* so the memory report can count them apart from code


@dataclass
class Step:
    """One kernel call of the schedule."""

    op: Op
    function: str
    struct: str
    fields: dict[str, object]
    input: int
    output: int


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


def activation_range(activation: int, out: Tensor) -> tuple[int, int]:
    """TFLM's CalculateActivationRangeQuantized, with its float32 arithmetic."""
    if activation not in ACTIVATIONS:
        raise Unsupported(f"fused activation {ACTIVATION_NAMES.get(activation, activation)}")
    bounds = ACTIVATIONS[activation]
    if bounds is None:
        return INT8_MIN, INT8_MAX
    scale, zp = np.float32(out.scale[0]), int(out.zero_point[0])

    def quantize(f: float) -> int:
        return zp + round_half_away(float(np.float32(f) / scale))

    lo = max(INT8_MIN, quantize(bounds[0]))
    hi = INT8_MAX if bounds[1] is None else min(INT8_MAX, quantize(bounds[1]))
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


def _require_int8(graph: Graph, op: Op, *tensors: int) -> None:
    for t in tensors:
        if graph.tensors[t].type_name != "int8":
            raise Unsupported(f"{graph.tensors[t].type_name} tensor '{graph.tensors[t].name}'")


def _per_channel_requant(name: str, in_t: Tensor, w: Tensor, out_t: Tensor, channels: int) -> list[Constant]:
    scales = w.scale if len(w.scale) == channels else np.repeat(w.scale, channels)
    pairs = [
        quantize_multiplier(float(in_t.scale[0]) * float(s) / float(out_t.scale[0])) for s in scales.astype(np.float32)
    ]
    return [
        Constant(f"{name}_multiplier", "int32_t", np.array([m for m, _ in pairs], dtype=np.int64), weight=False),
        Constant(f"{name}_shift", "int32_t", np.array([s for _, s in pairs], dtype=np.int64), weight=False),
    ]


def _conv_common(graph: Graph, op: Op, name: str, depthwise: bool) -> tuple[dict, list[Constant]]:
    x, w, out = (graph.tensors[i] for i in op.inputs[:2] + op.outputs[:1])
    bias = graph.tensors[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    _require_int8(graph, op, x.index, w.index, out.index)
    if len(x.shape) != 4 or x.shape[0] != 1:
        raise Unsupported(f"input shape {x.shape} (batch 1 NHWC expected)")
    if w.data is None or (bias is not None and bias.data is None):
        raise Unsupported("weights that are not constant")
    if np.any(w.zero_point != 0):
        raise Unsupported("asymmetric weights")
    if bias is not None and bias.type_name != "int32":
        raise Unsupported(f"{bias.type_name} bias")
    o = op.options
    _, in_h, in_w, in_c = x.shape
    _, out_h, out_w, out_c = out.shape
    k_h, k_w = w.shape[1], w.shape[2]
    exp_h, pad_h = out_size_and_padding(o.padding, in_h, k_h, o.strideH, o.dilationHFactor)
    exp_w, pad_w = out_size_and_padding(o.padding, in_w, k_w, o.strideW, o.dilationWFactor)
    if (exp_h, exp_w) != (out_h, out_w):
        raise Unsupported(f"output shape {out.shape} inconsistent with its attributes")
    lo, hi = activation_range(o.fusedActivationFunction, out)
    constants = [Constant(f"tr_w_{name}_weights", "int8_t", w.data.reshape(-1))]
    if bias is not None:
        constants.append(Constant(f"tr_w_{name}_bias", "int32_t", bias.data.reshape(-1)))
    constants += _per_channel_requant(name, x, w, out, out_c)
    fields = {
        "in_h": in_h, "in_w": in_w, "in_c": in_c, "out_h": out_h, "out_w": out_w, "out_c": out_c,
        "k_h": k_h, "k_w": k_w, "k_c": 1 if depthwise else w.shape[3],
        "stride_h": o.strideH, "stride_w": o.strideW,
        "dilation_h": o.dilationHFactor, "dilation_w": o.dilationWFactor, "pad_h": pad_h, "pad_w": pad_w,
        "depth_multiplier": out_c // in_c if depthwise else 1,
        "in_offset": -int(x.zero_point[0]), "out_offset": int(out.zero_point[0]), "act_min": lo, "act_max": hi,
        "weights": f"tr_w_{name}_weights", "bias": f"tr_w_{name}_bias" if bias is not None else "NULL",
        "requant": f"{{{name}_multiplier, {name}_shift}}",
    }  # fmt: skip
    if not depthwise and in_c % w.shape[3]:
        raise Unsupported(f"{in_c} input channels not a multiple of the filter's {w.shape[3]}")
    return fields, constants


def lower_conv_2d(graph: Graph, op: Op, name: str):
    fields, constants = _conv_common(graph, op, name, depthwise=False)
    return "tr_conv_s8", "tr_conv_params", fields, constants


def lower_depthwise_conv_2d(graph: Graph, op: Op, name: str):
    fields, constants = _conv_common(graph, op, name, depthwise=True)
    return "tr_depthwise_conv_s8", "tr_conv_params", fields, constants


def lower_fully_connected(graph: Graph, op: Op, name: str):
    x, w, out = (graph.tensors[i] for i in op.inputs[:2] + op.outputs[:1])
    bias = graph.tensors[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    _require_int8(graph, op, x.index, w.index, out.index)
    if w.data is None or (bias is not None and bias.data is None):
        raise Unsupported("weights that are not constant")
    if op.options.weightsFormat != 0:
        raise Unsupported("shuffled weights format")
    out_n, in_n = w.shape
    rows = int(np.prod(x.shape)) // in_n
    # TFLM multiplies the input and filter scales as doubles (GetQuantizedConvolutionMultipler).
    constants = [Constant(f"tr_w_{name}_weights", "int8_t", w.data.reshape(-1))]
    if bias is not None:
        if bias.type_name != "int32":
            raise Unsupported(f"{bias.type_name} bias")
        constants.append(Constant(f"tr_w_{name}_bias", "int32_t", bias.data.reshape(-1)))
    constants += _per_channel_requant(name, x, w, out, out_n)
    lo, hi = activation_range(op.options.fusedActivationFunction, out)
    fields = {
        "rows": rows, "in_n": in_n, "out_n": out_n,
        "in_offset": -int(x.zero_point[0]), "weights_offset": -int(w.zero_point[0]),
        "out_offset": int(out.zero_point[0]), "act_min": lo, "act_max": hi,
        "weights": f"tr_w_{name}_weights", "bias": f"tr_w_{name}_bias" if bias is not None else "NULL",
        "requant": f"{{{name}_multiplier, {name}_shift}}",
    }  # fmt: skip
    return "tr_fully_connected_s8", "tr_fc_params", fields, constants


def _lower_pool(graph: Graph, op: Op, function: str):
    x, out = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    _require_int8(graph, op, x.index, out.index)
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
    return function, "tr_pool_params", fields, []


def lower_max_pool_2d(graph: Graph, op: Op, name: str):
    return _lower_pool(graph, op, "tr_max_pool_s8")


def lower_average_pool_2d(graph: Graph, op: Op, name: str):
    return _lower_pool(graph, op, "tr_avg_pool_s8")


LOWERINGS = {
    "CONV_2D": lower_conv_2d,
    "DEPTHWISE_CONV_2D": lower_depthwise_conv_2d,
    "FULLY_CONNECTED": lower_fully_connected,
    "MAX_POOL_2D": lower_max_pool_2d,
    "AVERAGE_POOL_2D": lower_average_pool_2d,
}
# Ops that only reinterpret the shape: their output shares the input's bytes in the arena.
ALIASES = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"}


def describe(graph: Graph, op: Op) -> str:
    types = "/".join(sorted({graph.tensors[t].type_name for t in op.inputs + op.outputs if t >= 0}))
    return f"{op.kind} at position {op.position} ({types})"


def compile_model(tflite: bytes) -> CompiledModel:
    """Lower every op, or fail listing every op the runtime does not support."""
    graph = read_tflite(tflite)
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise UserError(
            f"the model has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; one of each is supported"
        )
    x, y = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    for role, t in (("input", x), ("output", y)):
        if t.type_name != "int8":
            raise UserError(
                f"the model's {role} is {t.type_name}, not int8; quantize it with inference_input_type and "
                "inference_output_type set to tf.int8"
            )
    remove_dead_ops(graph)
    steps, constants, problems = [], [], []
    alias_of: dict[int, int] = {}  # aliased tensor -> tensor that owns the bytes
    for op in graph.ops:
        if op.kind in ALIASES:
            src = live_inputs(graph, op)[0]
            if graph.tensors[src].type_name != graph.tensors[op.outputs[0]].type_name:
                problems.append(f"{describe(graph, op)}: changes the type")
            alias_of[op.outputs[0]] = alias_of.get(src, src)
            continue
        lower = LOWERINGS.get(op.kind)
        if lower is None:
            problems.append(describe(graph, op))
            continue
        name = f"l{op.position}_{op.kind.lower()}"
        try:
            function, struct, fields, consts = lower(graph, op, name)
        except Unsupported as exc:
            problems.append(f"{describe(graph, op)}: {exc}")
            continue
        steps.append(Step(op, function, struct, fields, op.inputs[0], op.outputs[0]))
        constants += consts
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
    return CompiledModel(
        steps, constants, arena_bytes, offsets, x, y, hashlib.sha256(tflite).digest(), counts
    )


def _buffers(graph: Graph, steps: list[Step], alias_of: dict[int, int], x: int, y: int) -> list[Buffer]:
    """Activation buffers with their lifetimes in schedule positions; aliases extend their owner's life."""
    first: dict[int, int] = {alias_of.get(x, x): 0}
    last: dict[int, int] = {}
    for i, step in enumerate(steps):
        for t in (step.input,):
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
    from .templates import render_template

    out_dir.mkdir(parents=True, exist_ok=True)
    context = {"model": model, "c_array": c_array}
    paths = []
    for name in ("model.h", "model.c"):
        path = out_dir / name
        path.write_text(render_template(f"{name}.j2", **context))
        paths.append(path)
    return paths
