"""The newer int8 operators together, as firmware on the emulated Cortex-M4: bit-exact with TFLM."""

import keras
import numpy as np
import pytest
from test_ops_native import Branch, conv

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


def test_residual_block_on_the_emulator_is_bit_exact_with_tflm(tmp_path):
    tflite = residual_block_model()
    compiled = compile_model(tflite)
    kinds = {step.op.kind for step in compiled.steps}
    assert {"PAD", "ADD", "MUL", "LOGISTIC", "HARD_SWISH", "CONCATENATION", "MEAN", "SOFTMAX"} <= kinds
    firmware = build_firmware(compiled, load_board("qemu-mps2-an386"), tmp_path)
    xq = random_inputs(tflite, 10)
    with Emulator(load_board("qemu-mps2-an386"), firmware.elf) as emulator:
        device = Device(emulator.start(), EMULATED_UART_BYTES_PER_S)
        device.handshake(compiled.model_hash)
        outputs = np.stack([np.frombuffer(device.infer(x.tobytes())[0], dtype=np.int8) for x in xq])
    reference = tflm_outputs(tflite, xq).reshape(len(xq), -1)
    mismatches = np.argwhere(outputs != reference)
    assert mismatches.size == 0, f"{len(mismatches)} output bytes differ from TFLM, first at {mismatches[0]}"
