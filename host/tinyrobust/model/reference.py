"""Host references for the same quantized inputs: the float model, TFLite and the TFLM reference kernels."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from tinyrobust.compile.graph import Tensor

STORED_TYPES = ("int8", "int16", "int32", "int64", "uint8", "float32")  # the tensor types a model's activations have


def quantize_inputs(x: np.ndarray, tensor: Tensor) -> np.ndarray:
    """Float inputs to the model's quantized input tensor (int8 or int16), with its scale and zero point."""
    return _quantize(x, tensor).reshape((len(x),) + tensor.shape[1:])


def _quantize(x: np.ndarray, tensor: Tensor) -> np.ndarray:
    """TFLite's QUANTIZE (AffineQuantize): x / scale divided in float32, rounded halves away from zero (TfLiteRound;
    np.round would round them to even), plus the zero point, clamped. The half is added in float64, where a
    float32 plus 0.5 is exact, so that 0.49999997 does not round up. Inputs more than 2^31 steps from the zero
    point are clamped here and undefined in TFLite (a float to int32 cast that overflows)."""
    v = (np.asarray(x, np.float32) / np.float32(tensor.scale[0])).astype(np.float64)
    limits = np.iinfo(tensor.dtype)
    q = np.trunc(v + np.copysign(0.5, v)) + int(tensor.zero_point[0])
    return np.clip(q, limits.min, limits.max).astype(tensor.dtype)


def random_inputs(tensor: Tensor, count: int, seed: int = 0) -> np.ndarray:
    """count quantized inputs drawn uniformly over the input type's whole range."""
    info = np.iinfo(tensor.dtype)
    shape = (count, *tensor.shape[1:])
    return np.random.default_rng(seed).integers(info.min, info.max + 1, shape).astype(tensor.dtype)


def dequantize(q: np.ndarray, tensor: Tensor) -> np.ndarray:
    return ((q.astype(np.float32) - tensor.zero_point[0]) * tensor.scale[0]).astype(np.float32)


@dataclass
class FloatIO:
    """Where a model with float input and outputs becomes integer: the tensor its QUANTIZE writes and those its
    DEQUANTIZEs read (graph.fold_float_io), which are the device's input and outputs."""

    input: Tensor
    outputs: list[Tensor]


@lru_cache(maxsize=8)
def float_io(tflite: bytes) -> FloatIO | None:
    """The model's integer ends when its input is float (None when it is integer already)."""
    from tinyrobust.compile.graph import fold_float_io, fold_shape_arithmetic, read_tflite, remove_dead_ops

    graph = read_tflite(tflite)
    if graph.tensors[graph.inputs[0]].type_name != "float32":
        return None
    fold_shape_arithmetic(graph)
    remove_dead_ops(graph)
    fold_float_io(graph)
    return FloatIO(graph.tensors[graph.inputs[0]], [graph.tensors[t] for t in graph.outputs])


def _engine_inputs(tflite: bytes, xq: np.ndarray, x: np.ndarray | None) -> np.ndarray:
    """What the interpreter takes: xq, or for a float-input model the float inputs x themselves, so that its own
    QUANTIZE rounds them (without x, xq dequantized, which that QUANTIZE maps back to xq exactly)."""
    io = float_io(tflite)
    if io is None:
        return xq
    return np.asarray(x, np.float32).reshape(xq.shape) if x is not None else dequantize(xq, io.input)


def _integer_outputs(tflite: bytes, k: int, y: np.ndarray) -> np.ndarray:
    """Output k as the integers the device sends: a float output mapped back to the integers its DEQUANTIZE read.
    DEQUANTIZE is one product rounded to float32 (TFLM's double product is exact before that rounding), so it
    equals dequantize() and is one-to-one: equal integers are bit-equal floats and back. Checked, so that an output
    that no integer maps to fails instead of being compared."""
    io = float_io(tflite)
    if io is None or y.dtype != np.float32:
        return y
    q = _quantize(y, io.outputs[k])
    if not np.array_equal(dequantize(q, io.outputs[k]).view(np.uint32), y.view(np.uint32)):
        raise RuntimeError(f"output {k} of the float-output model is not a DEQUANTIZE of its integer tensor")
    return q


def tflm_outputs(tflite: bytes, xq: np.ndarray, x: np.ndarray | None = None) -> np.ndarray:
    """Outputs of TFLite Micro's reference kernels (PyPI tflite-micro), one inference per sample, flattened. A model
    with float input and outputs runs whole, on the float inputs x when given (_engine_inputs), and its outputs are
    given as the integers its DEQUANTIZE read, as the device sends them (_integer_outputs)."""
    return tflm_every_output(tflite, xq, x)[0].reshape(len(xq), -1)


def tflm_every_output(tflite: bytes, xq: np.ndarray, x: np.ndarray | None = None) -> list[np.ndarray]:
    """Every output of TFLite Micro's reference kernels, one array per output, samples first (batch dropped), as
    tflm_outputs gives the first."""
    from tflite_micro import runtime

    from tinyrobust.compile.graph import read_tflite

    interpreter = runtime.Interpreter.from_bytes(tflite)
    count = len(read_tflite(tflite).outputs)
    outputs = []
    for sample in _engine_inputs(tflite, xq, x):
        interpreter.set_input(sample[None], 0)
        interpreter.invoke()
        outputs.append([interpreter.get_output(k)[0].copy() for k in range(count)])
    return [_integer_outputs(tflite, k, np.stack(per_output))
            for k, per_output in enumerate(zip(*outputs, strict=True))]  # fmt: skip


def tflm_tensors(tflite: bytes, xq: np.ndarray, tensors: list[int]) -> tuple[list[np.ndarray], np.ndarray]:
    """The given tensors of TFLite Micro's reference kernels after each sample's inference, one array per tensor,
    samples first, and the first output as tflm_outputs gives it. The interpreter is made with
    kPreserveAllTensors, which gives every tensor its own bytes instead of a planned arena, so that each one still
    holds what its operator wrote when the inference ends (GetTensor)."""
    from tflite_micro import runtime

    from tinyrobust.compile.graph import read_tflite

    # Its own bytes for every tensor: room for each one twice, over the usual guess of ten times the model's size.
    graph = read_tflite(tflite)
    activations = sum(t.nbytes for t in graph.tensors if not t.is_constant and t.type_name in STORED_TYPES)
    interpreter = runtime.Interpreter.from_bytes(
        tflite, arena_size=10 * len(tflite) + 2 * activations,
        intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors,
    )  # fmt: skip
    values: list[list[np.ndarray]] = [[] for _ in tensors]
    outputs = []
    for sample in _engine_inputs(tflite, xq, None):
        interpreter.set_input(sample[None], 0)
        interpreter.invoke()
        for k, t in enumerate(tensors):
            values[k].append(np.array(interpreter.GetTensor(t, 0)["tensor_data"]))
        outputs.append(interpreter.get_output(0).reshape(-1).copy())
    return [np.stack(v) for v in values], _integer_outputs(tflite, 0, np.stack(outputs))


def tflite_outputs(
    tflite: bytes, xq: np.ndarray, reference_kernels: bool = False, x: np.ndarray | None = None
) -> np.ndarray:
    """Outputs of the desktop LiteRT (TFLite) interpreter: its default, optimized kernels, or its reference ones. A
    float-input model runs on x as in tflm_outputs."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.BUILTIN_REF if reference_kernels else OpResolverType.AUTO
    interpreter = Interpreter(model_content=tflite, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    outputs = []
    for sample in _engine_inputs(tflite, xq, x):
        interpreter.set_tensor(inp, sample[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out).reshape(-1).copy())
    return _integer_outputs(tflite, 0, np.stack(outputs))


def float_outputs(keras_model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return np.asarray(keras_model.predict(x, batch_size=batch_size, verbose=0)).reshape(len(x), -1)


def every_engine(keras_model, tflite: bytes, xq: np.ndarray, tensor: Tensor, x: np.ndarray | None = None) -> tuple:
    """(TFLite's, TFLM's, the float model's or None) outputs on the same quantized inputs xq of the input tensor;
    x: the float inputs of a float-input model, which then runs whole (tflm_outputs)."""
    floats = None if keras_model is None else float_outputs(keras_model, dequantize(xq, tensor))
    return tflite_outputs(tflite, xq, x=x), tflm_outputs(tflite, xq, x), floats
