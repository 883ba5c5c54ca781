"""Post-training full-integer quantization with a representative data set."""

from __future__ import annotations

import contextlib
import io

import numpy as np

from tinyrobust.errors import UserError

PRECISIONS = ("int8", "int16x8")
# The precision a quantized model's input type stands for.
PRECISION_OF_INPUT = {"int8": "int8", "int16": "int16x8"}


def check_precision(input_type: str, precision: str) -> None:
    """Refuse a model quantized to another precision than the one asked for (input_type: int8 or int16)."""
    found = PRECISION_OF_INPUT.get(input_type, input_type)
    if found != precision:
        raise UserError(f"the model is quantized to {found}, not {precision} as asked; leave the precision out to "
                        f"take the file's, or ask for {found}")  # fmt: skip


def precision_of(tflite: bytes) -> str:
    """The precision a quantized model was converted to, read from the file: int16x8 when its activations (the
    tensors it computes) are int16, int8 otherwise (a model that is neither is refused when it compiles)."""
    from tinyrobust.compile.graph import read_tflite

    graph = read_tflite(tflite)
    return "int16x8" if any(t.type_name == "int16" and not t.is_constant for t in graph.tensors) else "int8"


def quantize(keras_model, representative: np.ndarray, precision: str = "int8", samples: int = 200) -> bytes:
    """Quantize a float Keras model; int8 means int8 activations, int16x8 int16 activations and int8 weights."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]

    def dataset():
        for x in representative[:samples]:
            yield [x[None].astype(np.float32)]

    converter.representative_dataset = dataset
    if precision == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io_type = tf.int8
    elif precision == "int16x8":
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
        io_type = tf.int16
    else:
        raise ValueError(f"precision must be one of {PRECISIONS}")
    converter.inference_input_type = io_type
    converter.inference_output_type = io_type
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints where it saved the model first
        return converter.convert()
