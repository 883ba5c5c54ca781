"""Host references for the same quantized inputs: the float model, TFLite and the TFLM reference kernels."""

from __future__ import annotations

import numpy as np

from tinyrobust.compile.graph import Tensor


def quantize_inputs(x: np.ndarray, tensor: Tensor) -> np.ndarray:
    """Float inputs to the model's quantized input tensor (int8 or int16), with its scale and zero point."""
    q = np.round(x / tensor.scale[0]) + tensor.zero_point[0]
    limits = np.iinfo(tensor.dtype)
    return np.clip(q, limits.min, limits.max).astype(tensor.dtype).reshape((len(x),) + tensor.shape[1:])


def random_inputs(tensor: Tensor, count: int, seed: int = 0) -> np.ndarray:
    """count quantized inputs drawn uniformly over the input type's whole range."""
    info = np.iinfo(tensor.dtype)
    shape = (count, *tensor.shape[1:])
    return np.random.default_rng(seed).integers(info.min, info.max + 1, shape).astype(tensor.dtype)


def dequantize(q: np.ndarray, tensor: Tensor) -> np.ndarray:
    return ((q.astype(np.float32) - tensor.zero_point[0]) * tensor.scale[0]).astype(np.float32)


def tflm_outputs(tflite: bytes, xq: np.ndarray) -> np.ndarray:
    """Outputs of TFLite Micro's reference kernels (PyPI tflite-micro), one inference per sample."""
    from tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(tflite)
    outputs = []
    for sample in xq:
        interpreter.set_input(sample[None], 0)
        interpreter.invoke()
        outputs.append(interpreter.get_output(0).reshape(-1).copy())
    return np.stack(outputs)


def tflm_every_output(tflite: bytes, xq: np.ndarray) -> list[np.ndarray]:
    """Every output of TFLite Micro's reference kernels, one array per output, samples first (batch dropped)."""
    from tflite_micro import runtime

    from tinyrobust.compile.graph import read_tflite

    interpreter = runtime.Interpreter.from_bytes(tflite)
    count = len(read_tflite(tflite).outputs)
    outputs = []
    for sample in xq:
        interpreter.set_input(sample[None], 0)
        interpreter.invoke()
        outputs.append([interpreter.get_output(k)[0].copy() for k in range(count)])
    return [np.stack(per_output) for per_output in zip(*outputs, strict=True)]


def tflite_outputs(tflite: bytes, xq: np.ndarray, reference_kernels: bool = False) -> np.ndarray:
    """Outputs of the desktop LiteRT (TFLite) interpreter: its default, optimized kernels, or its reference ones."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.BUILTIN_REF if reference_kernels else OpResolverType.AUTO
    interpreter = Interpreter(model_content=tflite, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    outputs = []
    for sample in xq:
        interpreter.set_tensor(inp, sample[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out).reshape(-1).copy())
    return np.stack(outputs)


def float_outputs(keras_model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return np.asarray(keras_model.predict(x, batch_size=batch_size, verbose=0)).reshape(len(x), -1)
