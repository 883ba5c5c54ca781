"""Each operator, over a sweep of shapes and attributes, compiled natively with sanitizers and compared
byte for byte with the TFLite Micro reference interpreter."""

import keras
import numpy as np
import pytest

from conftest import quantized_model, random_inputs
from tinyrobust.build import build_native, run_native
from tinyrobust.compiler import compile_model
from tinyrobust.reference import tflm_outputs

L = keras.layers
CASES = {
    "conv3x3-same-relu": ([L.Conv2D(8, 3, padding="same", activation="relu")], (9, 9, 3)),
    "conv5x5-valid-stride2": ([L.Conv2D(6, 5, strides=2, padding="valid")], (13, 11, 2)),
    "conv3x3-same-stride2-relu6": ([L.Conv2D(5, 3, strides=2, padding="same", activation="relu6")], (10, 7, 4)),
    "conv1x1": ([L.Conv2D(16, 1)], (6, 6, 8)),
    "conv-rect-kernel": ([L.Conv2D(3, (1, 4), strides=(1, 2), padding="same")], (5, 16, 2)),
    "depthwise3x3-same": ([L.DepthwiseConv2D(3, padding="same", activation="relu")], (8, 8, 6)),
    "depthwise-multiplier2-stride2": ([L.DepthwiseConv2D(3, strides=2, depth_multiplier=2)], (11, 9, 3)),
    "dense": ([L.Flatten(), L.Dense(12)], (4, 4, 3)),
    "dense-relu-chain": ([L.Flatten(), L.Dense(20, activation="relu"), L.Dense(7)], (30,)),
    "maxpool2": ([L.MaxPooling2D(2)], (8, 8, 4)),
    "maxpool3-stride2-same": ([L.MaxPooling2D(3, strides=2, padding="same")], (9, 7, 3)),
    "avgpool2": ([L.AveragePooling2D(2)], (8, 8, 4)),
    "avgpool3-stride2-same": ([L.AveragePooling2D(3, strides=2, padding="same")], (9, 7, 3)),
    "avgpool-global-shape": ([L.AveragePooling2D((5, 5))], (5, 5, 10)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_native_bit_exact_with_tflm(case, tmp_path):
    layers, input_shape = CASES[case]
    tflite = quantized_model(layers, input_shape)
    xq = random_inputs(tflite, 40)
    compiled = compile_model(tflite)
    exe = build_native(compiled, tmp_path)
    native = np.frombuffer(run_native(exe, xq), dtype=np.int8).reshape(len(xq), -1)
    reference = tflm_outputs(tflite, xq).reshape(len(xq), -1)
    mismatches = np.argwhere(native != reference)
    assert mismatches.size == 0, f"{len(mismatches)} output bytes differ from TFLM, first at {mismatches[0]}"
