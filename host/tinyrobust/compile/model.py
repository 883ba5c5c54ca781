"""Compile a quantized .tflite model: a static schedule of kernel calls, the constants they read and a planned
arena.

This is the "prepare" half of TFLite Micro's kernels, run once on the host (lower.py): shapes, padding,
requantization multipliers and shifts and activation ranges are computed with TFLM's own formulas, so the
firmware only runs integer arithmetic. render.py writes the result as C.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from tinyrobust.compile import stages as device_stages
from tinyrobust.compile.arithmetic import Unsupported
from tinyrobust.compile.graph import (
    Graph,
    Op,
    Tensor,
    describe,
    fold_float_io,
    fold_shape_arithmetic,
    fuse_dilated_convolutions,
    live_inputs,
    read_tflite,
    remove_dead_ops,
)
from tinyrobust.compile.lower import DEPTHWISE_PATCH, Kernel, fuse_residual_adds, lowering, plan_pixel_groups
from tinyrobust.compile.planner import ALIGNMENT, Buffer, Tie, plan_arena
from tinyrobust.compile.render import C_TYPES, Constant, operand_name
from tinyrobust.compile.smoothing import Smoothing, votes_tensor
from tinyrobust.errors import UserError

# Ops that only reinterpret the shape: their output shares the input's bytes in the arena.
ALIASES = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"}


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
    outputs: list[Tensor]  # the first is the one INFER returns; a split head's others are coded with it
    model_hash: bytes
    op_counts: dict[str, int] = field(default_factory=dict)
    element_types: dict[int, str] = field(default_factory=dict)  # tensor index -> C type, for arena tensors
    preprocess: list[dict] = field(default_factory=list)  # device pre-processing stages before the network
    buffers: list[Buffer] = field(default_factory=list)  # the arena's buffers with their lifetimes, as planned
    smoothing: Smoothing | None = None  # a smoothing build votes over noisy copies of each input (smoothing.py)

    @property
    def output(self) -> Tensor:
        return self.outputs[0]

    @property
    def device_output(self) -> Tensor:
        """What the device answers an input with: the network's output, or a smoothing build's votes."""
        return self.output if self.smoothing is None else votes_tensor(self.output, self.smoothing)


def model_hash(tflite: bytes, preprocess: list[dict] | None = None, smoothing: Smoothing | None = None) -> bytes:
    """SHA-256 of the .tflite bytes, followed by the pre-processing stages and the smoothing when there are any, so
    that a device whose stage or noise differs from the host's cannot pass the handshake."""
    digest = hashlib.sha256(tflite)
    if preprocess:
        digest.update(b"\0tinyrobust-preprocess\0" + json.dumps(device_stages.canonical(preprocess)).encode())
    if smoothing is not None:
        digest.update(smoothing.hash_bytes())
    return digest.digest()


def compile_model(
    tflite: bytes, preprocess: list[dict] | None = None, smoothing: Smoothing | None = None
) -> CompiledModel:
    """Lower every op, or fail listing every op the runtime does not support. preprocess: device pre-processing
    stages run on the quantized input before the network, e.g. [{"stage": "median", "k": 3}]. smoothing: the
    device runs the whole schedule on noisy copies of each input and answers with their votes. A model with float
    input and outputs compiles to the integer model between its QUANTIZE and DEQUANTIZEs (graph.fold_float_io):
    input and outputs are then those integer tensors, which the host quantizes and dequantizes."""
    preprocess = device_stages.canonical(preprocess or [])
    graph = read_tflite(tflite)
    if len(graph.inputs) != 1 or not graph.outputs:
        raise UserError(
            f"the model has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; one input and at least "
            "one output are supported"
        )
    fold_shape_arithmetic(graph)
    remove_dead_ops(graph)
    fold_float_io(graph)
    _refuse_float_and_per_channel_activations(graph)
    x, ys = graph.tensors[graph.inputs[0]], [graph.tensors[t] for t in graph.outputs]
    for role, t in (("input", x), *(("output", y) for y in ys)):
        if t.type_name not in ("int8", "int16"):
            through = "a per-tensor QUANTIZE reads first" if role == "input" else "a per-tensor DEQUANTIZE writes last"
            raise UserError(
                f"the model's {role} is {t.type_name}, and the runtime takes int8 or int16, or float32 that {through}; "
                "convert it with full-integer quantization and an int8, int16 or float32 inference type"
            )
    fuse_dilated_convolutions(graph)
    lowered: list[tuple[Op, Kernel]] = device_stages.lower_stages(graph, preprocess) if preprocess else []
    problems = []
    alias_of: dict[int, int] = {}  # aliased tensor -> tensor that owns the bytes
    for op in graph.ops:
        if op.kind in ALIASES:
            src = live_inputs(graph, op)[0]
            if graph.tensors[src].type_name != graph.tensors[op.outputs[0]].type_name:
                problems.append(f"{describe(graph, op)}: changes the type")
            alias_of[op.outputs[0]] = alias_of.get(src, src)
            continue
        lower = lowering(graph, op)
        if lower is None:
            problems.append(describe(graph, op))
            continue
        try:
            lowered.append((op, lower(graph, op, f"l{op.position}_{op.kind.lower()}")))
        except Unsupported as exc:
            problems.append(f"{describe(graph, op)}: {exc}")
    if problems:
        raise UserError("the model uses operators the runtime does not support: " + "; ".join(problems))

    lowered = plan_pixel_groups(fuse_residual_adds(graph, lowered))
    steps, constants = _schedule(graph, lowered)
    buffers = _buffers(graph, steps, alias_of, x.index, [y.index for y in ys])
    arena_bytes, buffer_offsets = plan_arena(buffers, _in_place_ties(graph, steps, alias_of, buffers, x.index))
    offsets = {}
    for t in graph.tensors:
        owner = alias_of.get(t.index, t.index)
        if owner in buffer_offsets:
            offsets[t.index] = buffer_offsets[owner]
    counts: dict[str, int] = {}
    for op in graph.ops:
        counts[op.kind] = counts.get(op.kind, 0) + 1
    types = {t: C_TYPES.get(graph.tensors[t].type_name, "int8_t") for t in offsets}
    digest = model_hash(tflite, preprocess, smoothing)
    return CompiledModel(steps, constants, arena_bytes, offsets, x, ys, digest, counts, types, preprocess, buffers,
                         smoothing)  # fmt: skip


def _refuse_float_and_per_channel_activations(graph: Graph) -> None:
    """The runtime computes in integers with one scale and zero point per activation tensor, as TFLM's kernels
    read them: refuse float arithmetic inside the graph (a model quantized without a representative dataset, or
    with float fallback) and activations quantized per channel, before any lowering would misread them."""
    for op in graph.ops:
        for t in (graph.tensors[i] for i in live_inputs(graph, op) + op.outputs if i >= 0):
            if t.type_name == "float32" and not t.is_constant:
                raise UserError(
                    f"the model computes in float at {describe(graph, op)}, and the runtime runs integer arithmetic "
                    "only; convert it with full-integer quantization (supported_ops TFLITE_BUILTINS_INT8, or the "
                    "int16x8 ops set) so that no float op is left inside"
                )
            if not t.is_constant and t.scale is not None and len(t.scale) > 1:
                raise UserError(
                    f"tensor '{t.name}' of {describe(graph, op)} is an activation quantized per channel, and the "
                    "runtime's kernels, as TFLite Micro's, take one scale and zero point per activation tensor"
                )


def _schedule(graph: Graph, lowered: list[tuple[Op, Kernel]]) -> tuple[list[Step], list[Constant]]:
    """The kernel calls in order, and the constants they read: each kernel's own, and constant operands (an
    ADD's bias, a CONCATENATION's table) as C arrays, each once."""
    steps, constants = [], []
    operand_constants: set[int] = set()
    for op, kernel in lowered:
        inputs = list(kernel.inputs if kernel.inputs is not None else op.inputs[:1])
        for t in inputs:
            tensor = graph.tensors[t]
            if tensor.is_constant and t not in operand_constants:
                operand_constants.add(t)
                constants.append(Constant(operand_name(t), C_TYPES[tensor.type_name], tensor.data.reshape(-1)))
        steps.append(Step(op, kernel.function, kernel.struct, kernel.fields, inputs, op.outputs[0], kernel.variadic))
        names = {c.name for c in constants}
        constants += [c for c in kernel.constants if c.name not in names]  # tables shared by several steps
    return steps, constants


def _buffers(graph: Graph, steps: list[Step], alias_of: dict[int, int], x: int, ys: list[int]) -> list[Buffer]:
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
    for y in ys:
        last[alias_of.get(y, y)] = len(steps)  # the outputs are read after the last step
    return [Buffer(t, graph.tensors[t].nbytes, first[t], last[t]) for t in first]


def _in_place_shift(graph: Graph, step: Step, t: int) -> int | None:
    """How far into the step's output its input t may start, if the kernel reads each value of t before its place in
    the output is written (see tr_kernels.h), or None. tr_conv_add_s8 reads each value of its skip just before
    writing its place. tr_conv_s8's 1x1 stride-1 convolution gathers two pixels' inputs (a block of groups of four
    on the _opt path with the DSP extension), then writes their outputs: an input starting out_bytes - in_bytes or
    more into the output stays ahead of the writes. The depthwise kernels take four channels a group, so that the
    last group overlaps no other, and read a group's input before writing its outputs in the same places:
    tr_depthwise_conv_s8_opt copies a map that fits one patch, tr_depthwise3x3_s8_opt widens each input row into its
    band first (see tr_conv.c). Both are tied over maps of one patch only: ties over larger maps left MobileNet's
    plan a larger arena (64,512 B against 46,080 B)."""
    f, out = step.fields, graph.tensors[step.output]
    if step.function in ("tr_conv_add_s8", "tr_conv_add_s8_opt"):
        return 0 if t == step.inputs[1] else None
    if t != step.inputs[0]:
        return None
    pointwise = (f.get("k_h"), f.get("k_w"), f.get("stride_h"), f.get("stride_w")) == (1, 1, 1, 1)
    same_size = pointwise and (f["in_h"], f["in_w"]) == (f["out_h"], f["out_w"])
    if step.function in ("tr_conv_s8", "tr_conv_s8_opt") and same_size:
        return -(-max(0, out.nbytes - graph.tensors[t].nbytes) // ALIGNMENT) * ALIGNMENT
    same = (f.get("in_h"), f.get("in_w"), f.get("in_c")) == (f.get("out_h"), f.get("out_w"), f.get("out_c"))
    if not same or f.get("out_c", 0) % 4:
        return None
    if step.function in ("tr_depthwise_conv_s8_opt", "tr_depthwise3x3_s8_opt"):
        rows = (f["out_h"] - 1) * f["stride_h"] + (f["k_h"] - 1) * f["dilation_h"] + 1
        columns = (f["out_w"] - 1) * f["stride_w"] + (f["k_w"] - 1) * f["dilation_w"] + 1
        if rows * columns <= DEPTHWISE_PATCH:
            return 0
    return None


def _in_place_ties(
    graph: Graph, steps: list[Step], alias_of: dict[int, int], buffers: list[Buffer], x: int
) -> list[Tie]:
    """The ties the planner may make: a step's output over an input the step reads for the last time, read by no
    other operand of the step, where the kernel allows it (_in_place_shift). Never over the model's input, which
    the host writes."""
    last = {b.key: b.last for b in buffers}
    ties = []
    for i, step in enumerate(steps):
        owners = [alias_of.get(t, t) for t in step.inputs]
        for t, owner in zip(step.inputs, owners, strict=True):
            if graph.tensors[t].is_constant or owner == alias_of.get(x, x) or owners.count(owner) != 1:
                continue
            shift = _in_place_shift(graph, step, t)
            if shift is not None and last.get(owner) == i:
                ties.append(Tie(step.output, owner, shift))
    return ties
