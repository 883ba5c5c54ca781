"""Read a .tflite flatbuffer into a small graph (tensors with shape, type, quantization and constant data; ops),
and rewrite it into what the kernels run: shape arithmetic folded, dead ops removed, dilated convolutions fused."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from tinyrobust.errors import UserError

# Tensor types of the TFLite schema that the runtime can meet (uint16 also counts a smoothing build's votes).
DTYPES = {0: np.float32, 2: np.int32, 3: np.uint8, 4: np.int64, 7: np.int16, 9: np.int8, 16: np.uint16}
TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16", 9: "int8",
              16: "uint16"}  # fmt: skip
# Padding of the schema (Padding).
SAME, VALID = 0, 1
CONVOLUTIONS = {"CONV_2D", "DEPTHWISE_CONV_2D"}


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    type_name: str
    scale: np.ndarray | None = None  # float32, one per tensor or per channel
    zero_point: np.ndarray | None = None
    quantized_dimension: int = 0
    data: np.ndarray | None = None  # constant tensors only

    @property
    def dtype(self) -> np.dtype:
        """The NumPy type of the tensor's elements (KeyError for types the runtime never stores)."""
        return np.dtype(DTYPES[_type_code(self.type_name)])

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def is_constant(self) -> bool:
        return self.data is not None


@dataclass
class Op:
    position: int  # index in the model's operator list, as a user sees it in Netron
    kind: str  # builtin operator name, e.g. CONV_2D
    inputs: list[int]  # tensor indices; -1 for an omitted optional input
    outputs: list[int]
    options: object = None  # the schema's *OptionsT object
    version: int = 1


@dataclass
class Graph:
    tensors: list[Tensor]
    ops: list[Op]
    inputs: list[int]
    outputs: list[int]
    consumers: dict[int, list[int]] = field(default_factory=dict)


def _type_code(name: str) -> int:
    return next(code for code, n in TYPE_NAMES.items() if n == name)


def read_tflite(data: bytes) -> Graph:
    """Parse the flatbuffer with the schema bindings shipped in the tflite-micro package."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    try:
        model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(data, 0))
    except Exception:  # the flatbuffer reader raises assorted errors on garbage
        raise UserError("the model file is not a valid .tflite flatbuffer; export it with TFLiteConverter") from None
    if not model.subgraphs or len(model.subgraphs) != 1:
        raise UserError("the model must have exactly one subgraph; control flow (WHILE, IF) is not supported")
    op_names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    sub = model.subgraphs[0]
    tensors = []
    for index, t in enumerate(sub.tensors):
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
        tensor = Tensor(index, t.name.decode(errors="replace"), shape, TYPE_NAMES.get(t.type, f"type{t.type}"))
        q = t.quantization
        if q is not None and q.scale is not None and len(q.scale):
            tensor.scale = np.asarray(q.scale, dtype=np.float32)
            tensor.zero_point = np.asarray(q.zeroPoint, dtype=np.int64)
            tensor.quantized_dimension = int(q.quantizedDimension)
        buffer = model.buffers[t.buffer] if t.buffer < len(model.buffers) else None
        if buffer is not None and buffer.data is not None and len(buffer.data) and t.type in DTYPES:
            raw = np.asarray(buffer.data, dtype=np.uint8).tobytes()
            tensor.data = np.frombuffer(raw, dtype=DTYPES[t.type]).reshape(shape)
        elif buffer is not None and buffer.offset and t.type in DTYPES:  # models over 2 GB keep data outside
            count = int(np.prod(shape, dtype=np.int64)) * np.dtype(DTYPES[t.type]).itemsize
            raw = data[buffer.offset : buffer.offset + count]
            tensor.data = np.frombuffer(raw, dtype=DTYPES[t.type]).reshape(shape)
        tensors.append(tensor)
    ops = []
    for position, o in enumerate(sub.operators or []):
        code = model.operatorCodes[o.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        kind = op_names.get(builtin, f"BUILTIN_{builtin}")
        if builtin == fb.BuiltinOperator.CUSTOM:
            kind = f"CUSTOM({(code.customCode or b'').decode(errors='replace')})"
        ops.append(
            Op(position, kind, [int(i) for i in o.inputs], [int(i) for i in o.outputs], o.builtinOptions, code.version)
        )
    graph = Graph(tensors, ops, [int(i) for i in sub.inputs], [int(i) for i in sub.outputs])
    reindex(graph)
    return graph


def reindex(graph: Graph) -> None:
    graph.consumers = {}
    for i, op in enumerate(graph.ops):
        for t in op.inputs:
            if t >= 0:
                graph.consumers.setdefault(t, []).append(i)


# Shape arithmetic on int32 constants that a dynamic-batch model computes at run time.
SHAPE_FOLDS = {
    "GATHER": lambda v, o: np.take(v[0], v[1], axis=o.axis),
    "REDUCE_PROD": lambda v, o: np.prod(v[0], axis=tuple(np.atleast_1d(v[1])), keepdims=o.keepDims),
    "PACK": lambda v, o: np.stack(v, axis=o.axis),
    "CONCATENATION": lambda v, o: np.concatenate([np.atleast_1d(x) for x in v], axis=o.axis),
}


def fold_shape_arithmetic(graph: Graph) -> None:
    """Give static shapes to a model converted with a dynamic batch: Keras Dense on a 3-D input computes its
    RESHAPE's shape at run time (SHAPE, GATHER, REDUCE_PROD, PACK, CONCATENATION) and stores placeholder shapes
    for the tensors that follow. With batch 1 that arithmetic is constant: evaluate it, then give the RESHAPE
    and the FULLY_CONNECTED after it their real output shapes."""
    for op in graph.ops:
        out = graph.tensors[op.outputs[0]]
        ins = [graph.tensors[t] for t in op.inputs if t >= 0]
        if op.kind == "SHAPE" and out.type_name == "int32":
            out.data = np.array(ins[0].shape, dtype=np.int32)
        elif op.kind in SHAPE_FOLDS and out.type_name == "int32" and all(t.data is not None for t in ins):
            out.data = np.asarray(SHAPE_FOLDS[op.kind]([t.data for t in ins], op.options), dtype=np.int32)
            out.shape = tuple(out.data.shape)
        elif op.kind == "RESHAPE" and len(ins) > 1 and ins[1].data is not None:
            shape = [int(d) for d in ins[1].data.reshape(-1)]
            size = int(np.prod(ins[0].shape, dtype=np.int64))
            known = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
            if shape.count(-1) == 1 and known and size % known == 0:
                shape[shape.index(-1)] = size // known
            if -1 not in shape and int(np.prod(shape, dtype=np.int64)) == size:
                out.shape = tuple(shape)
        elif op.kind == "FULLY_CONNECTED" and not op.options.keepNumDims and len(ins) > 1:
            out_n, in_n = ins[1].shape
            size = int(np.prod(ins[0].shape, dtype=np.int64))
            if size % in_n == 0:
                out.shape = (size // in_n, out_n)


def remove_dead_ops(graph: Graph) -> None:
    """Drop ops whose outputs reach no graph output, such as the shape arithmetic a Keras Flatten emits
    (SHAPE, STRIDED_SLICE, PACK) when the RESHAPE it feeds has a static output shape."""
    needed = set(graph.outputs)
    keep = []
    for op in reversed(graph.ops):
        if any(t in needed for t in op.outputs):
            keep.append(op)
            needed.update(t for t in live_inputs(graph, op) if t >= 0)
    graph.ops = keep[::-1]
    reindex(graph)


def fold_float_io(graph: Graph) -> bool:
    """Make a model with float input and outputs (the converter's default: QUANTIZE first, DEQUANTIZE last) the
    integer model between them: its input becomes the QUANTIZE's output and each output the DEQUANTIZE's input.
    The host then does their arithmetic (model.reference.quantize_inputs and dequantize), bit-exact with TFLM's:
    QUANTIZE is round(x / scale) + zero point in float32, halves away from zero, clamped; DEQUANTIZE is one
    product (q - zero point) * scale rounded to float32. Returns whether anything was folded; what does not match
    (a float input read by other ops too, per-channel parameters) stays and is refused by compile_model."""
    folded = False
    x = graph.tensors[graph.inputs[0]] if len(graph.inputs) == 1 else None
    readers = graph.consumers.get(x.index, []) if x is not None else []
    if x is not None and x.type_name == "float32" and len(readers) == 1:
        quantize = graph.ops[readers[0]]
        if quantize.kind == "QUANTIZE" and _per_tensor_integer(graph.tensors[quantize.outputs[0]]):
            graph.inputs = [quantize.outputs[0]]
            graph.ops.remove(quantize)
            folded = True
    producers = {t: op for op in graph.ops for t in op.outputs}
    for i, t in enumerate(graph.outputs):
        op = producers.get(t)
        if graph.tensors[t].type_name != "float32" or op is None or op.kind != "DEQUANTIZE":
            continue
        if _per_tensor_integer(graph.tensors[op.inputs[0]]) and op.inputs[0] not in graph.inputs:
            graph.outputs[i] = op.inputs[0]
            folded = True
    if folded:
        remove_dead_ops(graph)  # the DEQUANTIZEs, now read by nothing
    return folded


def _per_tensor_integer(t: Tensor) -> bool:
    return t.type_name in ("int8", "int16") and t.scale is not None and len(t.scale) == 1


def live_inputs(graph: Graph, op: Op) -> list[int]:
    """The inputs an op really reads: RESHAPE with a static output shape ignores its shape operand."""
    if op.kind in ("RESHAPE", "SQUEEZE", "EXPAND_DIMS"):
        return op.inputs[:1]
    return op.inputs


def _same_quantization(a: Tensor, b: Tensor) -> bool:
    if a.scale is None or b.scale is None:
        return False
    return (a.scale[0], a.zero_point[0]) == (b.scale[0], b.zero_point[0])


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


def describe(graph: Graph, op: Op) -> str:
    """The op as an error message names it: kind, position and tensor types."""
    types = "/".join(sorted({graph.tensors[t].type_name for t in op.inputs + op.outputs if t >= 0}))
    return f"{op.kind} at position {op.position} ({types})"
