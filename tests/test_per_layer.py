"""`validate --per-layer`: a profile build walks the schedule one step per TENSOR request, and every step's output is
compared with the tensor TFLM's operator wrote; a kernel broken on purpose is named as the first layer that differs."""

import json
from dataclasses import replace

import numpy as np
import pytest

from conftest import quantized_model, tinyrobust
from tinyrobust.build.firmware import build_firmware
from tinyrobust.compile.model import compile_model
from tinyrobust.compile.render import QUANT_PARAMS_PREFIX, Constant
from tinyrobust.device.boards import DEFAULT_BOARD, load_board
from tinyrobust.device.link import TENSOR_CHUNK_BYTES, LinkError
from tinyrobust.device.pool import run_on_emulator
from tinyrobust.errors import UserError
from tinyrobust.model.reference import random_inputs, tflm_outputs, tflm_tensors
from tinyrobust.validate import format_layers, validate_compiled


@pytest.fixture(scope="module")
def chunked():
    """A model whose first tensors take several TENSOR replies (20x20x8 int8: 3,200 bytes, not a whole number of
    chunks), with a convolution, a depthwise one, a strided one and a fully connected layer."""
    import keras.layers as L

    layers = [L.Conv2D(8, 3, padding="same", activation="relu"), L.DepthwiseConv2D(3, padding="same"),
              L.Conv2D(6, 3, strides=2), L.Flatten(), L.Dense(10)]  # fmt: skip
    tflite = quantized_model(layers, (20, 20, 3))
    return tflite, compile_model(tflite)


def _break(compiled, k: int):
    """The compiled model with step k's requantization multipliers scaled by 3/4: its kernel computes a wrong tensor."""
    step = compiled.steps[k]
    own = [c.name for c in compiled.constants if c.name.startswith(QUANT_PARAMS_PREFIX) and c.name in str(step.fields)]
    multiplier = next(name for name in own if name.endswith("_multiplier"))
    constants = [
        Constant(c.name, c.ctype, c.values * 3 // 4) if c.name == multiplier else c for c in compiled.constants
    ]
    return replace(compiled, constants=constants)


def test_tflm_keeping_every_tensor_is_bit_exact_with_tflm(chunked):
    tflite, compiled = chunked
    xq = random_inputs(compiled.input, 4)
    tensors, outputs = tflm_tensors(tflite, xq, [step.output for step in compiled.steps])
    assert np.array_equal(outputs, tflm_outputs(tflite, xq))
    assert np.array_equal(tensors[-1].reshape(len(xq), -1), outputs)
    assert [t.shape[1:] for t in tensors][:2] == [(1, 20, 20, 8), (1, 20, 20, 8)]


@pytest.mark.emulator
def test_an_unbroken_model_is_exact_at_every_layer(digits, tmp_path):
    result = tinyrobust("validate", "digits-cnn", "--per-layer", "--samples", 3, "--json", tmp_path / "v.json")
    assert result.returncode == 0, result.stderr
    per_layer = json.loads((tmp_path / "v.json").read_text())["per_layer"]
    steps = compile_model(digits.tflite).steps
    assert [layer["op"] for layer in per_layer["layers"]] == [step.op.kind for step in steps]
    assert all(layer["max_abs_diff"] == 0 and layer["share_differing"] == 0 for layer in per_layer["layers"])
    assert per_layer["first_differing"] is None
    assert per_layer["reference_outputs_equal_tflm"] and per_layer["last_step_equals_infer"]
    assert f"every layer is exact: all {len(steps)} steps' outputs equal TFLM's" in result.stdout
    assert "per layer:" in result.stdout and "max |diff|" in result.stdout


@pytest.mark.emulator
def test_a_broken_kernel_is_named_as_the_first_layer_that_differs(chunked):
    """Step 2 (the strided convolution) gets wrong multipliers: steps 0 and 1 stay exact, step 2 is named."""
    tflite, compiled = chunked
    broken = 2
    xq = random_inputs(compiled.input, 3)
    results = validate_compiled(tflite, _break(compiled, broken), load_board(DEFAULT_BOARD), xq, per_layer=True)
    per_layer = results["per_layer"]
    layers = per_layer["layers"]
    assert per_layer["first_differing"]["index"] == broken and layers[broken]["op"] == "CONV_2D"
    assert all(layer["max_abs_diff"] == 0 and layer["share_differing"] == 0 for layer in layers[:broken])
    assert layers[broken]["max_abs_diff"] > 0 and 0 < layers[broken]["share_differing"] <= 1
    assert per_layer["last_step_equals_infer"] and results["device_vs_tflm"]["bit_exact"] < 1
    text = "\n".join(format_layers(per_layer, len(xq)))
    assert f"first layer that differs: {broken} CONV_2D (tr_conv_s8_opt)" in text, text


@pytest.mark.emulator
def test_the_walk_refuses_a_step_out_of_order_and_a_normal_build_has_no_walk(chunked, tmp_path):
    """The device runs a step only right after the one before it, so that it never computes on a reused buffer; a
    normal build answers TENSOR as an unknown message."""
    tflite, compiled = chunked
    board = load_board(DEFAULT_BOARD)
    sizes = {b.key: b.size for b in compiled.buffers}
    steps = [sizes[step.output] for step in compiled.steps]
    assert steps[0] > 3 * TENSOR_CHUNK_BYTES and steps[0] % TENSOR_CHUNK_BYTES
    profiled = build_firmware(compiled, board, tmp_path / "profile", board.default_channel, profile=True)
    normal = build_firmware(compiled, board, tmp_path / "normal", board.default_channel)
    x = random_inputs(compiled.input, 1)[0].tobytes()

    def out_of_order(worker, tensor):
        def both():
            walked = worker.device.walk(tensor, steps)
            worker.device._load(tensor, always=True)
            with pytest.raises(LinkError, match="wrong payload length"):
                worker.device._step_output(1, steps[1])
            return walked

        return worker.recovering(both)

    (walked,) = run_on_emulator(board, profiled.elf, profiled.channel, compiled.model_hash, [x], out_of_order)
    assert [len(t) for t in walked] == steps

    def no_walk(worker, tensor):
        def walk():
            with pytest.raises(UserError, match="does not profile"):
                worker.device.walk(tensor, steps)

        worker.recovering(walk)

    run_on_emulator(board, normal.elf, normal.channel, compiled.model_hash, [x], no_walk)
