"""A mean-scale hyperprior head on the device: one int8 graph with the head, the hyper-encoder and the
hyper-decoder (split.model.device_model), its symbol outputs y and z at scale 1 with every reader of them kept
right (split.head), the receiver's hyper-decoder cut out of it, and the coding of z then y under the means and
scales the device's int8 hyper-decoder gives (split.coder.HyperpriorCoding, firmware/entropy/tr_hyperprior.c)."""

import keras
import numpy as np
import pytest

from tinyrobust.build.firmware import build_decoder, build_firmware
from tinyrobust.compile.graph import read_tflite
from tinyrobust.compile.model import compile_model
from tinyrobust.device.boards import load_board
from tinyrobust.device.pool import Pool, Worker
from tinyrobust.device.targets import start_emulator
from tinyrobust.errors import UserError
from tinyrobust.model.quantize import quantize
from tinyrobust.model.reference import dequantize, tflm_every_output, tflm_outputs
from tinyrobust.split import coder
from tinyrobust.split.entropy import Hyperprior
from tinyrobust.split.head import hyper_decoder_part, with_symbol_output
from tinyrobust.split.model import coding_for, device_model

L = keras.layers
INPUT_SHAPE = (16, 16, 1)


@pytest.fixture(scope="module")
def network():
    """A random head (16 x 16 -> an 8 x 8 x 8 latent of a few units) and a hyperprior with a 4 x 4 x 4 z."""
    keras.utils.set_random_seed(3)
    head = keras.Sequential([
        keras.Input(INPUT_SHAPE),
        L.Conv2D(8, 3, 2, padding="same", activation="relu"),
        L.Conv2D(8, 3, padding="same", kernel_initializer=keras.initializers.RandomNormal(stddev=1.5, seed=4)),
    ])  # fmt: skip
    prior = Hyperprior(8, z_channels=4, hidden_channels=8, strides=(1, 2), seed=5)
    prior.build((None, 8, 8, 8))
    for layer in prior.hyper_encoder + prior.hyper_decoder:
        if getattr(layer, "bias", None) is not None:  # nonzero biases, which the rescaled inputs must not skew
            layer.bias.assign(np.random.default_rng(6).normal(0, 0.5, layer.bias.shape))
    x = np.random.default_rng(7).uniform(-1, 1, (64, *INPUT_SHAPE)).astype(np.float32)
    tflite = with_symbol_output(quantize(device_model(head, prior), x), 2)
    return head, prior, tflite, coding_for(prior, tflite)


def inputs(count: int) -> np.ndarray:
    return np.random.default_rng(8).integers(-128, 128, (count, *INPUT_SHAPE)).astype(np.int8)


def test_the_device_graph_lists_y_z_and_h_with_y_and_z_as_symbols(network):
    _, _, tflite, _ = network
    graph = read_tflite(tflite)
    outputs = [graph.tensors[t] for t in graph.outputs]
    assert [t.shape for t in outputs] == [(1, 8, 8, 8), (1, 4, 4, 4), (1, 8, 8, 16)]
    assert [(t.scale.tolist(), t.zero_point.tolist()) for t in outputs[:2]] == [([1.0], [0])] * 2
    assert outputs[2].scale.tolist() != [1.0]
    assert "RESIZE_NEAREST_NEIGHBOR" in [op.kind for op in graph.ops]


def test_the_hyper_encoder_and_decoder_read_the_symbols_as_the_float_model_does(network):
    """y and z went to scale 1 after quantization, so the convolutions reading them (and their biases, stored in
    units of the input's scale) were rescaled: the int8 graph still computes the float hyperprior's z and h."""
    _, prior, tflite, _ = network
    y, z, h = tflm_every_output(tflite, inputs(16))
    z_float = prior.hyper_encode(y.astype(np.float32)).numpy()
    assert np.abs(z - z_float).mean() < 0.5 and np.abs(z - z_float).max() < 2
    h_tensor = read_tflite(tflite).tensors[read_tflite(tflite).outputs[2]]
    h_float = z.astype(np.float32)
    for layer in prior.hyper_decoder:
        h_float = layer(h_float).numpy()
    error = np.abs(dequantize(h, h_tensor) - h_float) / float(h_tensor.scale[0])
    assert error.mean() < 1 and error.max() < 4, (error.mean(), error.max())


def test_the_receivers_hyper_decoder_gives_the_devices_h_from_z(network):
    _, _, tflite, _ = network
    _, z, h = tflm_every_output(tflite, inputs(8))
    part = hyper_decoder_part(tflite)
    assert [op.kind for op in read_tflite(part).ops][0] == "RESIZE_NEAREST_NEIGHBOR"
    np.testing.assert_array_equal(tflm_outputs(part, z).reshape(h.shape), h)


def test_hyperprior_coding_round_trips_through_the_receivers_hyper_decoder(network):
    _, _, tflite, coding = network
    y, z, h = tflm_every_output(tflite, inputs(12))
    part = hyper_decoder_part(tflite)

    def hyper_decoder(z_one):
        return tflm_outputs(part, z_one[None]).reshape(h.shape[1:])

    escapes = 0
    for outputs in zip(y, z, h, strict=True):
        stream = coding.encode(list(outputs))
        y_got, z_got = coding.decode(stream, [y.shape[1:], z.shape[1:]], hyper_decoder)
        np.testing.assert_array_equal(y_got, outputs[0])
        np.testing.assert_array_equal(z_got, outputs[1])
        assert len(stream) <= coding.max_stream_bytes(y.shape, z.shape)
        assert len(stream) * 8 <= coding.ideal_bits(list(outputs)) + 2 * 32 + 8
        symbols, indexes = coding.y_symbols(outputs[0], outputs[2])
        escapes += sum(not 0 <= s - coding.gaussian[k].offset < coding.gaussian[k].size
                       for s, k in zip(symbols.ravel().tolist(), indexes.ravel().tolist(), strict=True))  # fmt: skip
    assert escapes > 0  # random weights predict poor means: the escape path is exercised
    with pytest.raises(coder.MalformedStream):
        coding.decode(stream[:-1], [y.shape[1:], z.shape[1:]], hyper_decoder)


def test_the_native_decoder_decodes_the_same_latents_and_refuses_what_python_refuses(network, tmp_path):
    _, _, tflite, coding = network
    y, z, h = tflm_every_output(tflite, inputs(6))
    part = hyper_decoder_part(tflite)

    def hyper_decoder(z_one):
        return tflm_outputs(part, z_one[None]).reshape(h.shape[1:])

    native = coder.NativeDecoder(build_decoder(tmp_path))
    streams = [coding.encode(list(outputs)) for outputs in zip(y, z, h, strict=True)]
    cut = streams[0][:-1]  # y's stream cut short
    bad = bytearray(streams[1])
    bad[2] ^= 0x40  # z's state damaged
    shapes = [y.shape[1:], z.shape[1:]]
    decoded = coding.decode_native(native, [*streams, cut, bytes(bad)], shapes, hyper_decoder)
    for (y_got, z_got), y_one, z_one in zip(decoded[:6], y, z, strict=True):
        np.testing.assert_array_equal(y_got, y_one)
        np.testing.assert_array_equal(z_got, z_one)
    assert decoded[6] is None
    with pytest.raises(coder.MalformedStream):
        coding.decode(cut, shapes, hyper_decoder)
    try:
        python_bad = coding.decode(bytes(bad), shapes, hyper_decoder)
    except coder.MalformedStream:
        python_bad = None
    assert (decoded[7] is None) == (python_bad is None)  # both refuse it, or both decode it alike
    if python_bad is not None:
        assert all(np.array_equal(a, b) for a, b in zip(decoded[7], python_bad, strict=True))


def test_the_lookup_tables_are_the_float_hyperpriors_means_and_scales_of_h(network):
    _, prior, tflite, coding = network
    h_tensor = read_tflite(tflite).tensors[read_tflite(tflite).outputs[2]]
    values = dequantize(np.arange(-128, 128, dtype=np.int8), h_tensor).astype(np.float32)
    mean, scale = (t.numpy() for t in prior.mean_and_scale(np.stack([values, values], -1)))
    np.testing.assert_array_equal(coding.means, np.round(mean[:, 0]))
    tables = [coding.gaussian[k] for k in coding.scales]
    # The table of each value is the narrowest of the scale table at least as wide as its scale.
    widths = np.array([t.size for t in tables])
    assert np.all(np.diff(widths[np.argsort(scale[:, 0])]) >= 0)


def test_a_hyperprior_build_refuses_a_head_without_its_three_outputs(network, tmp_path):
    head, _, tflite, coding = network
    factorized_head = with_symbol_output(quantize(head, np.zeros((4, *INPUT_SHAPE), np.float32)))
    with pytest.raises(UserError, match="3 output"):
        build_firmware(compile_model(factorized_head), load_board("qemu-mps2-an386"), tmp_path, coding=coding)


@pytest.mark.emulator
@pytest.mark.parametrize(
    "board_name, channel", [("qemu-mps2-an386", "uart"), ("qemu-mps2-an385", "semihosting")], ids=["m4", "m3"]
)
def test_the_device_sends_the_stream_python_writes_for_tflms_outputs(network, board_name, channel, tmp_path):
    _, _, tflite, coding = network
    board = load_board(board_name)
    compiled = compile_model(tflite)
    firmware = build_firmware(compiled, board, tmp_path, channel, coding=coding)
    xq = inputs(10)
    expected = tflm_every_output(tflite, xq)
    tensors = [x.tobytes() for x in xq]
    pool = Pool([Worker(start_emulator(board, firmware.elf, channel), coding.firmware_hash(compiled.model_hash))])
    try:
        encoded = pool.infer_all(tensors, Worker.encode)
        inferred = pool.infer_all(tensors)
    finally:
        pool.close()
    for i, ((stream, head_ticks, coder_ticks), (output, _)) in enumerate(zip(encoded, inferred, strict=True)):
        outputs = [e[i] for e in expected]
        assert output == outputs[0].tobytes()  # INFER returns y
        assert stream == coding.encode(outputs)
        assert head_ticks > 0 and coder_ticks > 0
