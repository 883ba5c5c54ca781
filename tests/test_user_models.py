"""Models as people publish them: float Keras 2 .h5 files, int8 and int16x8 models with float input and output
(the converter's default), the precision read from the file, and one-sentence refusals for what cannot run."""

import json

import keras
import numpy as np
import pytest

from conftest import quantized_model, tinyrobust
from tinyrobust.build.firmware import build_firmware, build_native, run_native
from tinyrobust.campaign import builds
from tinyrobust.compile.graph import read_tflite
from tinyrobust.compile.model import compile_model
from tinyrobust.device.boards import load_board
from tinyrobust.device.emulator import Emulator
from tinyrobust.device.link import Device
from tinyrobust.device.targets import EMULATED_UART_BYTES_PER_S
from tinyrobust.errors import UserError
from tinyrobust.model import reference, zoo
from tinyrobust.model.quantize import precision_of

SHAPE = (10, 10, 2)


def keras2_cnn(seed: int = 0):
    """A small CNN made with tf-keras (Keras 2), with the layers whose Keras 2 configs Keras 3 rejects or folds:
    DepthwiseConv2D (its config has `groups`) and BatchNormalization with statistics of its own."""
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    L = tf_keras.layers
    model = tf_keras.Sequential([
        tf_keras.Input(SHAPE), L.Conv2D(6, 3, padding="same"), L.BatchNormalization(), L.ReLU(),
        L.DepthwiseConv2D(3, padding="same"), L.BatchNormalization(), L.Activation("relu6"), L.MaxPooling2D(2),
        L.Flatten(), L.Dense(4),
    ])  # fmt: skip
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 1.5, variance.shape)])  # fmt: skip
    return model


def inputs(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (count, *SHAPE)).astype(np.float32)


def float_io_model(model, precision: str) -> bytes:
    """Converted as MLPerf Tiny and vendor zoos publish: full-integer quantization with the input and output
    types left float, so the converter adds a QUANTIZE at the input and a DEQUANTIZE at the output."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in inputs(50, seed=1))
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8 if precision == "int8"
        else tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
    ]  # fmt: skip
    return converter.convert()


@pytest.fixture(scope="module")
def float_io():
    model = keras2_cnn()
    return {precision: float_io_model(model, precision) for precision in ("int8", "int16x8")}


def only_op(tflite: bytes, position: int) -> bytes:
    """The model cut down to one of its ops, its input and output those of the op."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(tflite, 0))
    sub = model.subgraphs[0]
    op = sub.operators[position]
    sub.operators = [op]
    sub.inputs, sub.outputs = np.array(op.inputs[:1], np.int32), np.array(op.outputs, np.int32)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def tflm_raw(tflite: bytes, x: np.ndarray) -> np.ndarray:
    """What TFLM's interpreter gives for each sample, as its own type (float32 for a float-output model)."""
    from tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(tflite)
    outputs = []
    for sample in x:
        interpreter.set_input(sample[None], 0)
        interpreter.invoke()
        outputs.append(interpreter.get_output(0).reshape(-1).copy())
    return np.stack(outputs)


def with_ties(x: np.ndarray, tensor) -> np.ndarray:
    """x with its first samples on exact halves between quantization steps, and on either side of them."""
    x = x.copy()
    steps = (np.arange(x[:3].size, dtype=np.float32).reshape(x[:3].shape) % 300 - 150).astype(np.float32)
    halves = (steps + np.float32(0.5)) * np.float32(tensor.scale[0])
    x[:3] = halves
    x[3:6] = np.nextafter(halves, np.float32(np.inf))
    x[6:9] = np.nextafter(halves, np.float32(-np.inf))
    return x


@pytest.mark.parametrize("precision", ["int8", "int16x8"])
def test_host_quantization_is_tflms_quantize_on_halves_and_their_neighbours(float_io, precision):
    quantize_op = only_op(float_io[precision], 0)
    tensor = read_tflite(quantize_op).tensors[read_tflite(quantize_op).outputs[0]]
    scale = np.float32(tensor.scale[0])
    n = np.arange(-40000, 40000, dtype=np.float32)
    halves = (n + np.float32(0.5)) * scale
    values = np.concatenate([
        halves, np.nextafter(halves, np.float32(np.inf)), np.nextafter(halves, np.float32(-np.inf)),
        n * scale, np.random.default_rng(0).uniform(-3, 3, 100_000).astype(np.float32),
        np.float32([0.0, -0.0, 1e-30, -1e-30, 0.49999997 * scale, -0.49999997 * scale, 1e6, -1e6]),
    ])  # fmt: skip
    values = values[: len(values) // np.prod(SHAPE) * np.prod(SHAPE)].reshape(-1, *SHAPE)
    host = reference.quantize_inputs(values, tensor)
    tflm = tflm_raw(quantize_op, values).reshape(host.shape)
    assert tflm.dtype == host.dtype
    assert np.array_equal(host, tflm), f"{np.sum(host != tflm)} of {host.size} values differ from TFLM's QUANTIZE"
    v = values / scale
    assert np.sum(np.abs(v - np.trunc(v)) == 0.5) > 10_000  # exact halves were there to get wrong
    info = np.iinfo(host.dtype)
    assert np.any(np.clip(np.round(v) + int(tensor.zero_point[0]), info.min, info.max) != tflm)  # as np.round would


@pytest.mark.parametrize("precision", ["int8", "int16x8"])
def test_host_dequantization_is_tflms_dequantize_bit_for_bit(float_io, precision):
    graph = read_tflite(float_io[precision])
    dequantize_op = only_op(float_io[precision], len(graph.ops) - 1)
    small = read_tflite(dequantize_op)
    tensor = small.tensors[small.inputs[0]]
    info = np.iinfo(tensor.dtype)
    every = np.arange(info.min, info.max + 1).astype(tensor.dtype)
    q = every[: len(every) // tensor.shape[-1] * tensor.shape[-1]].reshape(-1, *tensor.shape[1:])
    tflm = tflm_raw(dequantize_op, q)
    host = reference.dequantize(q, tensor).reshape(len(q), -1)
    assert tflm.dtype == host.dtype == np.float32
    assert np.array_equal(tflm.view(np.uint32), host.view(np.uint32))


@pytest.mark.parametrize("precision", ["int8", "int16x8"])
def test_float_io_model_compiles_to_its_integer_middle_and_reads_its_precision(float_io, precision):
    tflite = float_io[precision]
    graph = read_tflite(tflite)
    assert [graph.ops[0].kind, graph.ops[-1].kind] == ["QUANTIZE", "DEQUANTIZE"]
    assert {graph.tensors[t].type_name for t in graph.inputs + graph.outputs} == {"float32"}
    compiled = compile_model(tflite)
    integer = "int8" if precision == "int8" else "int16"
    assert compiled.input.type_name == compiled.output.type_name == integer
    assert "QUANTIZE" not in compiled.op_counts and "DEQUANTIZE" not in compiled.op_counts
    assert compiled.input.index == graph.ops[0].outputs[0] and compiled.output.index == graph.ops[-1].inputs[0]
    assert precision_of(tflite) == precision
    assert precision_of(quantized_model([keras.layers.Dense(3)], (4,), precision=precision)) == precision


def assert_equal_to_tflm_on_float_inputs(tflite: bytes, compiled, x: np.ndarray, device: np.ndarray) -> None:
    """The device's integers (from the host's quantization of x) against TFLM running the whole float-IO model on
    x: equal as integers, and as floats bit for bit once dequantized with the DEQUANTIZE's parameters."""
    tflm_float = tflm_raw(tflite, x)
    assert tflm_float.dtype == np.float32
    device_float = reference.dequantize(device, compiled.output).reshape(len(x), -1)
    mismatches = np.argwhere(device_float.view(np.uint32) != tflm_float.view(np.uint32))
    assert mismatches.size == 0, f"{len(mismatches)} outputs differ from TFLM's, first at {mismatches[0]}"
    assert np.array_equal(device.reshape(len(x), -1), reference.tflm_outputs(tflite, reference.quantize_inputs(
        x, compiled.input), x))  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["int8", "int16x8"])
def test_float_io_model_natively_is_bit_exact_with_tflm_on_float_inputs(float_io, precision, tmp_path):
    tflite = float_io[precision]
    compiled = compile_model(tflite)
    x = with_ties(np.concatenate([inputs(30, seed=2), inputs(10, seed=3) * 3 - 1]), compiled.input)
    xq = reference.quantize_inputs(x, compiled.input)
    native = np.frombuffer(run_native(build_native(compiled, tmp_path), xq), compiled.output.dtype)
    assert_equal_to_tflm_on_float_inputs(tflite, compiled, x, native.reshape(len(x), -1))


@pytest.mark.emulator
@pytest.mark.parametrize("precision", ["int8", "int16x8"])
def test_float_io_model_on_the_emulator_is_bit_exact_with_tflm_on_float_inputs(float_io, precision, tmp_path):
    tflite, board = float_io[precision], load_board("qemu-mps2-an386")
    compiled = compile_model(tflite)
    x = with_ties(inputs(12, seed=4), compiled.input)
    xq = reference.quantize_inputs(x, compiled.input)
    firmware = build_firmware(compiled, board, tmp_path)
    with Emulator(board, firmware.elf) as emulator:
        device = Device(emulator.start(), EMULATED_UART_BYTES_PER_S)
        device.handshake(compiled.model_hash)
        outputs = np.stack([np.frombuffer(device.infer(q.tobytes())[0], compiled.output.dtype) for q in xq])
    assert_equal_to_tflm_on_float_inputs(tflite, compiled, x, outputs)


def test_keras2_h5_loads_through_tf_keras_where_keras3_rejects_it(tmp_path):
    original = keras2_cnn()
    path = tmp_path / "cnn.h5"
    original.save(path)
    with pytest.raises(Exception, match="DepthwiseConv2D"):  # what this test is about: Keras 3 cannot
        keras.models.load_model(path, compile=False, safe_mode=True)
    loaded = zoo.load_keras(path)
    x = inputs(8)
    assert np.array_equal(np.asarray(loaded.predict(x, verbose=0)), np.asarray(original.predict(x, verbose=0)))


def test_keras3_files_load_with_keras3(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    for name in ("m.keras", "m.h5"):
        model.save(tmp_path / name)
        assert isinstance(zoo.load_keras(tmp_path / name), keras.Model)


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_lambda_layers_in_a_model_file_are_refused_without_running_them(tmp_path, suffix):
    import tf_keras

    ran = tmp_path / "ran"
    marker = str(ran)

    def lambda_with_a_side_effect(x):
        open(marker, "w").close()
        return x * 2

    if suffix == ".h5":  # tf-keras would load this file and run the function, safe_mode or not
        model = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Lambda(lambda_with_a_side_effect)])
    else:
        model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda_with_a_side_effect)])
    model.save(tmp_path / f"m{suffix}")
    ran.unlink(missing_ok=True)  # saving traced the function
    with pytest.raises(UserError, match="has a Lambda layer .*does not run from a file"):
        zoo.load_keras(tmp_path / f"m{suffix}")
    assert not ran.exists()


def test_weights_only_and_foreign_files_are_refused_in_one_sentence(tmp_path):
    keras2_cnn().save_weights(tmp_path / "w.h5")
    with pytest.raises(UserError, match="holds weights only"):
        zoo.load_keras(tmp_path / "w.h5")
    (tmp_path / "m.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(UserError, match="not a Keras model file"):
        zoo.load_keras(tmp_path / "m.pkl")
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(UserError, match="bad.h5 is not a Keras model file"):
        zoo.load_keras(tmp_path / "bad.h5")


def test_keras2_h5_float_model_is_quantized_like_a_builtin(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "cnn.h5"
    keras2_cnn().save(path)
    x = inputs(40, seed=5)
    np.savez(tmp_path / "data.npz", x_train=x[:30], y_train=np.arange(30) % 4, x_test=x[30:], y_test=np.arange(10) % 4)
    for precision in ("int8", "int16x8"):
        model = zoo.load(str(path), precision, data=str(tmp_path / "data.npz"))
        assert model.name == "cnn" and len(model.x_test) == 10 and len(model.x_train) == 30
        assert precision_of(model.tflite) == precision
        builds.compile_for(model, precision, None)
        assert zoo.load(str(path), precision, data=str(tmp_path / "data.npz")).tflite == model.tflite  # cached


def test_explicit_precision_that_the_file_contradicts_is_refused(float_io):
    model = zoo.Model("m", float_io["int16x8"], None, inputs(2), np.zeros(2, np.int64))
    with pytest.raises(UserError, match="quantized to int16x8, not int8 as asked"):
        builds.compile_for(model, "int8", None)


def test_the_command_refuses_a_precision_the_file_contradicts_and_a_float_model_without_data(tmp_path):
    from test_cli import assert_one_sentence_error

    (tmp_path / "m.tflite").write_bytes(quantized_model([keras.layers.Dense(3)], (4,)))
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 4), np.float32), y=np.zeros(2))
    result = tinyrobust("flash-and-evaluate", "--model", "m.tflite", "--data", "d.npz", "--precision", "int16x8",
                        cwd=tmp_path)  # fmt: skip
    assert_one_sentence_error(result, "quantized to int8, not int16x8 as asked")
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]).save(tmp_path / "f.keras")
    result = tinyrobust("flash-and-evaluate", "--model", "f.keras", "--out", "float", cwd=tmp_path)
    assert_one_sentence_error(result, "pass --data")


def test_float_op_inside_the_graph_is_refused_in_one_sentence():
    import tensorflow as tf

    # No representative data: dynamic-range quantization, int8 weights (of layers over 1024) and float compute.
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Sequential([keras.Input((40,)), keras.layers.Dense(64)]))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    with pytest.raises(UserError, match=r"computes in float at FULLY_CONNECTED at position 0 \(float32/int8\)"):
        compile_model(converter.convert())


def test_activation_quantized_per_channel_is_refused_in_one_sentence():
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    tflite = quantized_model([keras.layers.Conv2D(3, 3), keras.layers.ReLU()], (5, 5, 2))
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(tflite, 0))
    sub = model.subgraphs[0]
    q = sub.tensors[sub.operators[0].outputs[0]].quantization
    q.scale, q.zeroPoint, q.quantizedDimension = np.repeat(q.scale, 3), np.repeat(q.zeroPoint, 3), 3
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    with pytest.raises(UserError, match="is an activation quantized per channel"):
        compile_model(bytes(builder.Output()))


@pytest.mark.emulator
def test_flash_and_evaluate_runs_a_keras2_h5_and_a_float_io_tflite_of_it(tmp_path, monkeypatch):
    """The .h5 quantized on the data and attacked; then the int16x8 float-IO .tflite of it, its precision read
    from the file, with the .h5 as its float model. Every device output equals TFLM's on the float inputs."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the quantized .h5 is cached there
    h5 = tmp_path / "cnn.h5"
    original = keras2_cnn()
    original.save(h5)
    x = inputs(60, seed=6)
    y = np.asarray(original.predict(x, verbose=0)).argmax(1)  # the float model's own classes
    np.savez(tmp_path / "data.npz", x=x, y=y)
    (tmp_path / "cnn16.tflite").write_bytes(float_io_model(original, "int16x8"))
    runs = {
        "h5": ["--model", h5, "--attacks", "fgsm", "--eps", "0.1"],
        "tflite": ["--model", tmp_path / "cnn16.tflite", "--float-model", h5, "--attacks", "fgsm", "--eps", "0.1"],
    }
    for name, args in runs.items():
        out = tmp_path / name
        result = tinyrobust("flash-and-evaluate", *args, "--data", tmp_path / "data.npz", "--samples", 20, "--out", out,
                            cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr
        results = json.loads((out / "results.json").read_text())
        assert [(r["attack"], r["precision"]) for r in results["runs"]] == [
            ("none", "int8" if name == "h5" else "int16x8"), ("fgsm", "int8" if name == "h5" else "int16x8")
        ]  # fmt: skip
        for run in results["runs"]:
            assert run["agreement"]["device_vs_tflm_bit_exact"] == 1.0, run
        assert results["runs"][0]["accuracy"]["device"] > 0.5
        assert results["runs"][1]["distortion"]["linf"]["mean"] > 0.05  # the attack had the float model's gradients
