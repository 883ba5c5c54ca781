"""Operators together, as firmware on the emulated Cortex-M4: the newer int8 ones and the int16x8 ones,
bit-exact with TFLM; and the int8 convolutions and FULLY_CONNECTED over shapes and attributes, on the Cortex-M4
(their DSP path) and the Cortex-M3 (their plain C path)."""

import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest
from test_ops_native import Branch, conv, full_range_inputs, with_same_quantization

from conftest import quantized_model, random_inputs
from tinyrobust.build.firmware import build_firmware
from tinyrobust.compile.model import compile_model
from tinyrobust.device.boards import load_board
from tinyrobust.device.emulator import Emulator
from tinyrobust.device.link import Device
from tinyrobust.device.targets import EMULATED_UART_BYTES_PER_S
from tinyrobust.model.reference import tflm_outputs

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


def assert_bit_exact_on_the_emulator(
    tflite: bytes, xq: np.ndarray, kinds: set[str], tmp_path, board: str = "qemu-mps2-an386"
) -> Path:
    """Runs the model on the board; returns the firmware's ELF."""
    compiled = compile_model(tflite)
    assert kinds <= set(compiled.op_counts)
    firmware = build_firmware(compiled, load_board(board), tmp_path)
    with Emulator(load_board(board), firmware.elf) as emulator:
        device = Device(emulator.start(), EMULATED_UART_BYTES_PER_S)
        device.handshake(compiled.model_hash)
        outputs = np.stack([np.frombuffer(device.infer(x.tobytes())[0], compiled.output.dtype) for x in xq])
    reference = tflm_outputs(tflite, xq).reshape(len(xq), -1)
    assert reference.dtype == outputs.dtype
    mismatches = np.argwhere(outputs != reference)
    assert mismatches.size == 0, f"{len(mismatches)} output values differ from TFLM, first at {mismatches[0]}"
    return firmware.elf


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


def test_nearest_upsampling_on_the_emulator_is_bit_exact_with_tflm(tmp_path):
    """A hyper-decoder's upsampling, 4x4 to 8x8 before a convolution, then a resize by ratios that are not
    integers: RESIZE_NEAREST_NEIGHBOR copying 3- and 6-byte pixels."""
    layers = [
        L.Resizing(8, 8, interpolation="nearest"),
        conv(6, activation="relu"),
        L.Resizing(5, 11, interpolation="nearest"),
    ]
    tflite = quantized_model(layers, (4, 4, 3), batch_size=1)
    assert_bit_exact_on_the_emulator(tflite, random_inputs(tflite, 10), {"RESIZE_NEAREST_NEIGHBOR"}, tmp_path)


# Shapes and attributes that reach every edge of the int8 kernels' loops: channel counts that are not a multiple
# of four (the DSP loops' scalar tails) and odd ones (an output channel without a pair), padding on every side,
# strides, dilation and depth multipliers (depthwise's one-channel path).
SWEEPS = {
    "conv-odd-channels-padding-strides": (
        [L.Conv2D(5, 3, padding="same", activation="relu"), L.Conv2D(7, (3, 2), strides=2, padding="same"),
         L.Conv2D(3, 1), L.Conv2D(6, 5, strides=(1, 2), padding="same")],
        (10, 9, 3),
    ),
    "conv-deep-valid": ([L.Conv2D(9, 5, strides=(2, 1)), L.Conv2D(4, 3, padding="same", activation="relu6")],
                        (11, 10, 13)),
    "depthwise-channels-multipliers": (
        [L.DepthwiseConv2D(3, padding="same", activation="relu"), L.DepthwiseConv2D(5, strides=2, padding="same"),
         L.DepthwiseConv2D(3, depth_multiplier=2), L.DepthwiseConv2D((2, 3), padding="same", depth_multiplier=3)],
        (12, 11, 7),
    ),
    # tr_depthwise_conv_s8_opt's interior read in place, borders over patches (columns taller than one), stride 2,
    # 5x5 and dilated windows (a map too tall for tr_depthwise3x3_s8_opt's band), and six channels: a last group
    # overlapping the one before
    "depthwise-interior-borders": (
        [L.DepthwiseConv2D(3, padding="same", activation="relu"), L.DepthwiseConv2D(3, strides=2, padding="same"),
         L.DepthwiseConv2D(5, padding="same"), L.DepthwiseConv2D(3, dilation_rate=2, padding="same")],
        (88, 10, 6),
    ),
    # tr_depthwise3x3_s8_opt: a wide map written over its input, rows of odd widths (a last pixel alone), no
    # padding, stride 2 with padding and without, a map it leaves to tr_depthwise_conv_s8_opt (stride 3); a tall
    # map walked along its columns at strides 1 and 2, with six channels (a last group overlapping the one before)
    "depthwise3x3-band": (
        [L.DepthwiseConv2D(3, padding="same"), L.DepthwiseConv2D(3), L.DepthwiseConv2D(3, strides=2, padding="same"),
         L.DepthwiseConv2D(3, strides=2), L.DepthwiseConv2D(3, strides=3, padding="same")],
        (17, 23, 8),
    ),
    "depthwise3x3-band-tall": (
        [L.DepthwiseConv2D(3, padding="same", activation="relu"), L.DepthwiseConv2D(3),
         L.DepthwiseConv2D(3, strides=2, padding="same")],
        (33, 17, 6),
    ),
    # dilated rows of whole words first (3x2x6: each inside field widened from the input's rows, two rows apart)
    "dilated-conv-depthwise": (
        [L.Conv2D(6, (3, 2), dilation_rate=(2, 1), padding="same"), L.Conv2D(5, 3, dilation_rate=2, padding="same"),
         L.DepthwiseConv2D(3, dilation_rate=(2, 3), padding="same"), L.Conv2D(4, (2, 3), dilation_rate=(3, 2))],
        (11, 12, 6),
    ),
    "dense-odd-sizes": ([L.Flatten(), L.Dense(13, activation="relu"), L.Dense(6), L.Dense(1)], (5, 3, 3)),
    # 5x5x48: a receptive field larger than the stack's column buffer, read from the input in place
    "conv-large-filter": ([L.Conv2D(3, 5, padding="same"), L.Conv2D(5, 1)], (7, 6, 48)),
    # tr_conv_s8_opt's channel loop in assembly: fields of 27, 8, 54 and 12 bytes padded to whole words (7, 2, 14
    # and 3: entering its eight-step passes at steps 1, 6, 2 and 5), and pixel counts of 4n + 2 (54), 4n + 3 (15)
    # and 4n + 1 (5): a last group of fewer than four pixels, its outputs through the stack, one pixel on its own
    "conv-channel-pairs-whole-words": (
        [L.Conv2D(8, 3, padding="same", activation="relu"), L.Conv2D(6, 1), L.Conv2D(4, 3, strides=2, padding="same"),
         L.Conv2D(10, (1, 3))],
        (9, 6, 3),
    ),
    # fields in lower.rows_first's order: rows of 3 bytes (no whole word: 9 bytes in three words), two rows of 18
    # (four whole words each, then 4 bytes: one word exactly), and three rows of 6 across the border (gathered)
    "conv-rows-first-tails": (
        [L.Conv2D(6, (3, 1), padding="same"), L.Conv2D(2, (2, 3)), L.Conv2D(4, 3, strides=2, padding="same")],
        (7, 8, 3),
    ),
    # layers of two pixels and of one (one pixel alone: a step a turn), with fields of 5, 4, 2, 13, 8 and 1 words:
    # the passes' other entries, at steps 3, 4, 6, 3 (two blocks), 0 and 7
    "conv-one-or-two-pixels": (
        [L.Conv2D(16, 1), L.Conv2D(4, 1), L.Conv2D(52, (1, 2)), L.Conv2D(32, 1), L.Conv2D(4, 1), L.Conv2D(2, 1)],
        (1, 2, 20),
    ),
}  # fmt: skip
SWEEP_KINDS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
# The Cortex-M4 has the DSP extension (SXTB16, SMLAD); the Cortex-M3 runs the plain C loops.
DSP_BOARDS = {"qemu-mps2-an386": True, "qemu-mps2-an385": False}
# The int8 kernels also on the Cortex-M55, whose convolutions and fully connected layers take Helium's VMLADAVA.
INT8_BOARDS = [*DSP_BOARDS, "qemu-mps3-an547"]


@pytest.mark.parametrize("board", sorted(INT8_BOARDS))
def test_layers_written_over_their_inputs_on_the_emulator_are_bit_exact_with_tflm(board, tmp_path):
    """The planner's ties and the fused residual ADD (tr_conv_add_s8) on both paths: a residual block whose sum is
    written over its skip, a depthwise layer over its input (fifteen rows: tr_depthwise3x3_s8_opt's band takes two
    strips, the second from rows kept of the first), 1x1 convolutions that widen and narrow in place. 135 pixels: the
    four-pixel loop's last group of three writes its outputs through the stack, over the input it has read."""
    layers = [
        conv(8),
        Branch(lambda x, y: K.relu(x + y), conv(8, activation="relu"), conv(8)),
        L.DepthwiseConv2D(3, padding="same", activation="relu"),
        L.Conv2D(16, 1),
        L.Conv2D(8, 1),
        Branch(K.add, L.Conv2D(8, 1)),
    ]
    tflite = quantized_model(layers, (15, 9, 3))
    compiled = compile_model(tflite)
    assert [s.function for s in compiled.steps].count("tr_conv_add_s8_opt") == 2
    (depthwise,) = [s for s in compiled.steps if s.function == "tr_depthwise3x3_s8_opt"]
    assert compiled.offsets[depthwise.output] == compiled.offsets[depthwise.inputs[0]]
    assert_bit_exact_on_the_emulator(tflite, random_inputs(tflite, 10), {"ADD"}, tmp_path, board)


@pytest.mark.parametrize("board", sorted(DSP_BOARDS))
def test_a_convolution_outside_the_opt_kernel_is_bit_exact_on_the_emulator(board, tmp_path):
    """An activation range narrower than int8 (a fused RELU whose output is quantized like its input) leaves the
    convolution to tr_conv_s8's general requantization."""
    layers = [L.Conv2D(6, 3, padding="same", activation="relu", bias_initializer="random_normal")]
    tflite = with_same_quantization(quantized_model(layers, (6, 7, 6), batch_size=1))
    assert [s.function for s in compile_model(tflite).steps] == ["tr_conv_s8"]
    assert_bit_exact_on_the_emulator(tflite, random_inputs(tflite, 10), set(), tmp_path, board)


@pytest.mark.parametrize("board", sorted(INT8_BOARDS))
@pytest.mark.parametrize("case", sorted(SWEEPS))
def test_int8_convolutions_on_the_emulator_are_bit_exact_with_tflm(case, board, tmp_path):
    layers, input_shape = SWEEPS[case]
    tflite = quantized_model(layers, input_shape, batch_size=1)  # batch 1: dilation stays in the convolution
    elf = assert_bit_exact_on_the_emulator(tflite, random_inputs(tflite, 10), set(), tmp_path, board)
    compiled = compile_model(tflite)
    assert set(compiled.op_counts) & SWEEP_KINDS and set(compiled.op_counts) <= SWEEP_KINDS | {"RESHAPE"}
    disassembly = subprocess.run(["arm-none-eabi-objdump", "-d", str(elf)], capture_output=True, text=True).stdout
    if board in DSP_BOARDS:
        assert ("sxtb16" in disassembly) == DSP_BOARDS[board]
    else:  # Helium's loops where the layers take them: their symbols, as objdump decodes no MVE here
        kernels = {s.function for s in compiled.steps}
        assert ("<channels_mve>:" in disassembly) == ("tr_conv_s8_opt" in kernels)
        fully_connected = {"tr_fully_connected_s8", "tr_fully_connected_s8_opt"}
        assert ("<rows_mve>:" in disassembly) == bool(kernels & fully_connected)


@pytest.mark.parametrize("board", sorted(DSP_BOARDS))
@pytest.mark.parametrize("case", sorted(SWEEPS))
def test_int16x8_convolutions_on_the_emulator_are_bit_exact_with_tflm(case, board, tmp_path):
    """The same sweeps with 16-bit activations (CONV_2D's SMLALD path on the Cortex-M4)."""
    layers, input_shape = SWEEPS[case]
    tflite = quantized_model(layers, input_shape, precision="int16x8", batch_size=1)
    assert_bit_exact_on_the_emulator(tflite, full_range_inputs(tflite, 10), set(), tmp_path, board)
