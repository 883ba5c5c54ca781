"""The built-in reference models, `validate` (device, TFLM and TFLite cross-compared) and `bench` (TFLM's
arena from its allocation report), with the real compiler, toolchain, emulator and interpreters."""

import json

import keras
import numpy as np
import pytest

from conftest import quantized_model, tinyrobust
from tinyrobust.bench import tflm_arena
from tinyrobust.build.firmware import build_firmware
from tinyrobust.compile.model import compile_model
from tinyrobust.device.boards import load_board
from tinyrobust.device.link import check_output_fits
from tinyrobust.errors import UserError
from tinyrobust.model import zoo
from tinyrobust.validate import validate

NEW_MODELS = ["resnet8-cifar10", "mobilenetv1-vww", "dscnn-kws", "fc-autoencoder-ad", "coffee-cnn"]
PAIRS = ("device_vs_tflm", "device_vs_tflite", "tflite_vs_tflm")
L = keras.layers


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A small conv net as a .tflite file."""
    path = tmp_path_factory.mktemp("model") / "small.tflite"
    layers = [L.Conv2D(8, 3, activation="relu"), L.MaxPooling2D(), L.Flatten(), L.Dense(6), L.Softmax()]
    path.write_bytes(quantized_model(layers, (10, 10, 2)))
    return path


@pytest.mark.parametrize("name", NEW_MODELS)
def test_builtin_model_compiles_and_builds(name, tmp_path):
    model = zoo.load_builtin(name)
    spec = zoo.builtin_spec(name)
    compiled = compile_model(model.tflite)
    assert list(compiled.input.shape[1:]) == spec["input_shape"]
    assert compiled.output.shape[-1] == spec["classes"]
    assert "MUL" not in compiled.op_counts, "batch norm was not folded into the weights"
    firmware = build_firmware(compiled, load_board("qemu-mps2-an386"), tmp_path)
    assert firmware.elf.is_file()
    memory = firmware.memory
    assert memory.weights_bytes > 0 and memory.quant_params_bytes > 0
    assert memory.code_bytes + memory.quant_params_bytes < 24 * 1024  # everything but the weights under 24 KB


def test_resnet8_is_a_residual_graph():
    model = zoo.build_keras(zoo.builtin_spec("resnet8-cifar10"))
    assert sum(isinstance(layer, L.Add) for layer in model.layers) == 3
    assert model.count_params() < 100_000  # about 78 K parameters, as MLPerf Tiny's ResNet-8


def test_layer_reading_an_unnamed_layer_is_refused():
    spec = {"input_shape": [4], "layers": [{"type": "Dense", "units": 2}, {"type": "Add", "inputs": ["input", "x"]}]}
    with pytest.raises(UserError, match="reads x, which no earlier layer is named"):
        zoo.build_keras(spec)


def test_output_larger_than_a_reply_frame_is_refused_before_the_build():
    compiled = compile_model(quantized_model([keras.layers.Conv2D(1, 1)], (256, 256, 1)))
    with pytest.raises(UserError, match="65536-byte output does not fit a reply frame"):
        check_output_fits(compiled.output.nbytes)
    coffee = compile_model(zoo.load_builtin("coffee-cnn").tflite)
    check_output_fits(coffee.output.nbytes)  # a 150 KB input travels in chunks


def test_tflm_arena_is_parsed_from_its_allocation_report(digits):
    arena = tflm_arena(digits.tflite)
    assert arena["total"] == arena["head"] + arena["tail"]
    assert 0 < arena["head"] < arena["total"]
    assert compile_model(digits.tflite).arena_bytes <= arena["head"]


@pytest.mark.emulator
def test_validate_command_is_bit_exact_with_tflm(small_model, tmp_path):
    out = tmp_path / "validate.json"
    result = tinyrobust("validate", str(small_model), "--samples", "8", "--json", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "device vs TFLM" in result.stdout and "TFLite vs TFLM" in result.stdout
    results = json.loads(out.read_text())
    assert results["samples"] == 8
    for pair in PAIRS:
        assert set(results[pair]) == {"bit_exact", "max_abs_diff", "top1_agreement"}
    assert results["device_vs_tflm"] == {"bit_exact": 1.0, "max_abs_diff": 0, "top1_agreement": 1.0}


@pytest.mark.emulator
def test_validate_runs_the_given_inputs(small_model, tmp_path):
    inputs = np.random.default_rng(3).integers(-128, 128, (3, 10, 10, 2)).astype(np.int8)
    np.save(tmp_path / "inputs.npy", inputs)
    results = validate(str(small_model), inputs=tmp_path / "inputs.npy")
    assert results["samples"] == 3 and results["device_vs_tflm"]["bit_exact"] == 1.0


def test_float_inputs_are_one_clear_error(small_model, tmp_path):
    np.save(tmp_path / "inputs.npy", np.zeros((2, 10, 10, 2), np.float32))
    result = tinyrobust("validate", str(small_model), "--inputs", str(tmp_path / "inputs.npy"), cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "holds float32 values but the model takes int8" in result.stderr


@pytest.mark.emulator
@pytest.mark.parametrize("precision", ["int8", "int16x8"])
@pytest.mark.parametrize("name", zoo.builtin_names())
def test_every_builtin_model_is_bit_exact_with_tflm_on_the_emulator(name, precision):
    # The AN386's 4 MB hold every built-in model, coffee-cnn's 150 KB input and int16 activations included.
    results = validate(name, "qemu-mps2-an386", samples=2, precision=precision)
    assert results["samples"] == 2 and results["precision"] == precision
    assert results["device_vs_tflm"] == {"bit_exact": 1.0, "max_abs_diff": 0, "top1_agreement": 1.0}, results


@pytest.mark.emulator
def test_bench_command_writes_every_figure(small_model, tmp_path):
    out = tmp_path / "bench.json"
    result = tinyrobust("bench", "--models", str(small_model), "--json", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("| model |")
    (row,) = json.loads(out.read_text())["models"]
    assert row["name"] == "small" and row["precision"] == "int8"
    figures = ("instructions_per_inference", "arena_bytes", "tflm_arena_bytes", "flash_code_bytes")
    for key in (*figures, "flash_weight_bytes", "flash_quant_params_bytes"):
        assert row[key] > 0
    assert row["arena_bytes"] <= row["tflm_arena_bytes"] < row["tflm_arena_total_bytes"]


@pytest.mark.slow
def test_builtin_model_trains_on_the_users_data(tmp_path, monkeypatch):
    """A built-in model given an .npz trains on it for real: digits with every label shifted by one are learnt
    as such, and the result is cached apart from the model trained on its own data set."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    x_train, y_train, x_test, y_test = zoo.load_dataset(zoo.builtin_spec("digits-cnn"))
    data = tmp_path / "shifted.npz"
    np.savez(data, x_train=x_train, y_train=(y_train + 1) % 10, x_test=x_test, y_test=(y_test + 1) % 10)
    model = zoo.load_builtin("digits-cnn", data=data)
    assert np.array_equal(model.y_test, (y_test + 1) % 10) and len(model.x_train) == len(x_train)
    predicted = model.keras.predict(model.x_test, verbose=0).argmax(axis=1)
    assert np.mean(predicted == model.y_test) > 0.9
    assert [p.name.split("-")[-2] for p in (tmp_path / "cache" / "tinyrobust" / "models").iterdir()] == ["data"]

    np.savez(data, x=x_train[:, :4], y=y_train)
    with pytest.raises(UserError, match=r"the train inputs are \(.*, 4, 8, 1\) .* inputs of shape \(N, 8, 8, 1\)"):
        zoo.load_builtin("digits-cnn", data=data)
    np.savez(data, images=x_train)
    with pytest.raises(UserError, match="holds images; a built-in model's data needs arrays x_train"):
        zoo.load_builtin("digits-cnn", data=data)
