"""The command line as a user meets it: listings, doctor, and one-sentence errors without tracebacks."""


import keras
import numpy as np
import pytest

from conftest import quantized_model, tinyrobust
from tinyrobust.compile.model import compile_model
from tinyrobust.errors import UserError


def assert_one_sentence_error(result, *fragments):
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    message = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(message) == 1, result.stderr
    for fragment in fragments:
        assert fragment in message[0]


def test_help_lists_the_commands():
    result = tinyrobust("--help")
    assert result.returncode == 0
    for command in ("flash-and-evaluate", "doctor", "boards", "models"):
        assert command in result.stdout


def test_boards_and_models_are_listed():
    boards = tinyrobust("boards")
    assert "qemu-mps2-an386" in boards.stdout and "cortex-m4" in boards.stdout
    models = tinyrobust("models")
    assert "digits-cnn" in models.stdout and "8x8x1" in models.stdout


def test_doctor_finds_everything_on_this_machine():
    result = tinyrobust("doctor")
    assert result.returncode == 0, result.stdout
    assert "MISSING" not in result.stdout
    assert "arm-none-eabi-gcc" in result.stdout and "qemu-system-arm" in result.stdout


def test_missing_model_file(tmp_path):
    result = tinyrobust("flash-and-evaluate", "--model", "absent.tflite", "--data", "absent.npz", cwd=tmp_path)
    assert_one_sentence_error(result, "absent.tflite does not exist")


def test_unknown_builtin_model_and_board(tmp_path):
    assert_one_sentence_error(tinyrobust("flash-and-evaluate", "--model", "nope", cwd=tmp_path), "digits-cnn")
    assert_one_sentence_error(tinyrobust("flash-and-evaluate", "--board", "nope", cwd=tmp_path), "qemu-mps2-an386")


def test_pickled_data_file_is_refused(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(quantized_model([keras.layers.Dense(3)], (4,)))
    np.savez(tmp_path / "data.npz", x=np.array([{"a": 1}], dtype=object), y=np.zeros(1))
    result = tinyrobust("flash-and-evaluate", "--model", str(model), "--data", str(tmp_path / "data.npz"), cwd=tmp_path)
    assert_one_sentence_error(result, "data.npz is not an .npz with numeric arrays x and y")


def test_float_model_is_refused_as_not_int8():
    import tensorflow as tf

    float_model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    tflite = tf.lite.TFLiteConverter.from_keras_model(float_model).convert()
    with pytest.raises(UserError, match="the model's input is float32, not int8"):
        compile_model(tflite)


def test_unsupported_operators_are_all_named_with_their_position():
    tflite = quantized_model(
        [keras.layers.Dense(6), keras.layers.LeakyReLU(), keras.layers.Dense(3), keras.layers.LeakyReLU()],
        (5,),
    )
    with pytest.raises(UserError) as error:
        compile_model(tflite)
    message = str(error.value)
    assert "LEAKY_RELU at position 1 (int8)" in message and "LEAKY_RELU at position 3 (int8)" in message


def test_garbage_model_file_is_refused():
    with pytest.raises(UserError, match="not a valid .tflite"):
        compile_model(b"this is not a flatbuffer" * 10)
