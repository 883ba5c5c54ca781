"""Operators together, as firmware on the emulated Cortex-M4: the newer int8 ones and the int16x8 ones,
bit-exact with TFLM."""

import keras
import numpy as np
import pytest
from test_ops_native import Branch, conv, full_range_inputs

from conftest import quantized_model, random_inputs
from tinyrobust.boards import load_board
from tinyrobust.build import build_firmware
from tinyrobust.compiler import compile_model
from tinyrobust.emulator import Emulator
from tinyrobust.link import Device
from tinyrobust.reference import tflm_outputs
from tinyrobust.targets import EMULATED_UART_BYTES_PER_S

pytestmark = pytest.mark.emulator
L = keras.layers
K = keras.ops


def residual_block_model() -> bytes:
    """PAD, a residual ADD, a gating MUL, HARD_SWISH, CONCATENATION, STRIDED_SLICE, MEAN and SOFTMAX."""
    layers = [
        L.Conv2D(8, 3, activation="relu"),
        Branch(K.add, conv(8, activation="relu"), conv(8)),
        L.Lambda(lambda x: x * K.sigmoid(x)),
        L.Activation("hard_swish"),
        Branch(lambda x, y: K.concatenate([x, y], axis=-1), L.DepthwiseConv2D(3, padding="same")),
        L.Lambda(lambda x: x[:, ::2, ::2, :]),
        L.ZeroPadding2D(((0, 1), (1, 0))),
        L.GlobalAveragePooling2D(),
        L.Dense(10),
        L.Softmax(),
    ]
    return quantized_model(layers, (12, 12, 3))


def int16x8_cnn_model() -> bytes:
    """CONV_2D, a residual ADD, DEPTHWISE_CONV_2D, MAX_POOL_2D, AVERAGE_POOL_2D, RESHAPE, FULLY_CONNECTED and
    SOFTMAX with 16-bit activations."""
    layers = [
        L.Conv2D(8, 3, activation="relu"),
        Branch(K.add, conv(8, activation="relu"), conv(8)),
        L.DepthwiseConv2D(3, padding="same", activation="relu6"),
        L.MaxPooling2D(2),
        L.AveragePooling2D(2, padding="same"),
        L.Flatten(),
        L.Dense(16, activation="relu"),
        L.Dense(10),
        L.Softmax(),
    ]
    return quantized_model(layers, (12, 12, 3), precision="int16x8")


def int16x8_gated_block_model() -> bytes:
    """A gating MUL, LOGISTIC, TANH, CONCATENATION, RELU, RELU6, STRIDED_SLICE, PAD and MEAN with 16-bit
    activations."""
    layers = [
        L.Conv2D(8, 3),
        L.Lambda(lambda x: x * K.sigmoid(x)),
        L.Activation("tanh"),
        Branch(lambda x, y: K.relu(K.concatenate([x, y], axis=-1)), L.DepthwiseConv2D(3, padding="same")),
        L.ReLU(6.0),
        L.Lambda(lambda x: x[:, ::2, ::2, :]),
        L.ZeroPadding2D(((0, 1), (1, 0))),
        L.GlobalAveragePooling2D(),
        L.Dense(10),
        L.Softmax(),
    ]
    return quantized_model(layers, (12, 12, 3), precision="int16x8")


def assert_bit_exact_on_the_emulator(tflite: bytes, xq: np.ndarray, kinds: set[str], tmp_path) -> None:
    compiled = compile_model(tflite)
    assert kinds <= set(compiled.op_counts)
    firmware = build_firmware(compiled, load_board("qemu-mps2-an386"), tmp_path)
    with Emulator(load_board("qemu-mps2-an386"), firmware.elf) as emulator:
        device = Device(emulator.start(), EMULATED_UART_BYTES_PER_S)
        device.handshake(compiled.model_hash)
        outputs = np.stack([np.frombuffer(device.infer(x.tobytes())[0], compiled.output.dtype) for x in xq])
    reference = tflm_outputs(tflite, xq).reshape(len(xq), -1)
    assert reference.dtype == outputs.dtype
    mismatches = np.argwhere(outputs != reference)
    assert mismatches.size == 0, f"{len(mismatches)} output values differ from TFLM, first at {mismatches[0]}"


def test_residual_block_on_the_emulator_is_bit_exact_with_tflm(tmp_path):
    tflite = residual_block_model()
    kinds = {"PAD", "ADD", "MUL", "LOGISTIC", "HARD_SWISH", "CONCATENATION", "MEAN", "SOFTMAX"}
    assert_bit_exact_on_the_emulator(tflite, random_inputs(tflite, 10), kinds, tmp_path)


def test_int16x8_cnn_on_the_emulator_is_bit_exact_with_tflm(tmp_path):
    tflite = int16x8_cnn_model()
    kinds = {"CONV_2D", "ADD", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED"}
    assert_bit_exact_on_the_emulator(tflite, full_range_inputs(tflite, 10), kinds | {"SOFTMAX"}, tmp_path)


def test_int16x8_gated_block_on_the_emulator_is_bit_exact_with_tflm(tmp_path):
    tflite = int16x8_gated_block_model()
    kinds = {"MUL", "LOGISTIC", "TANH", "CONCATENATION", "RELU", "RELU6", "STRIDED_SLICE", "PAD", "MEAN"}
    assert_bit_exact_on_the_emulator(tflite, full_range_inputs(tflite, 10), kinds, tmp_path)
