"""The command line as a user meets it: listings, doctor, and one-sentence errors without tracebacks."""


import keras
import numpy as np
import pytest

from conftest import quantized_model, tinyrobust
from tinyrobust.campaign import attacks, defenses
from tinyrobust.campaign.config import toml_value
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
    for command in ("flash-and-evaluate", "doctor", "boards", "models", "attacks", "defenses"):
        assert command in result.stdout


def test_boards_and_models_are_listed():
    boards = tinyrobust("boards")
    assert "qemu-mps2-an386" in boards.stdout and "cortex-m4" in boards.stdout
    models = tinyrobust("models")
    assert "digits-cnn" in models.stdout and "8x8x1" in models.stdout


def listed_blocks(output: str) -> dict[str, str]:
    """A listing's entries by name: each starts with "name: " after a blank line."""
    entries = output.split("\n\n")[1:]
    return {entry.split(":", 1)[0]: entry for entry in entries}


def test_every_attack_is_listed_with_its_kind_modes_and_each_parameters_value_and_meaning():
    result = tinyrobust("attacks")
    assert result.returncode == 0, result.stderr
    blocks = listed_blocks(result.stdout)
    assert list(blocks) == list(attacks.ATTACKS)
    for name, attack in attacks.ATTACKS.items():
        head = blocks[name].splitlines()[0]
        assert f"eps {attack.eps}" in head
        assert ("black-box; modes transfer, on-device" if attack.queries else "white-box; modes transfer") in head
        for key, value in attack.preset.items():
            assert f"    {key} = {toml_value(value)}  " in blocks[name]
            assert attack.meanings[key] in blocks[name]
    assert "needs images at least 10 pixels on a side" in blocks["square_l2"]


def test_every_defense_is_listed_with_where_it_runs_its_parameters_and_presets():
    result = tinyrobust("defenses")
    assert result.returncode == 0, result.stderr
    blocks = listed_blocks(result.stdout)
    assert list(blocks) == list(defenses.DEFENSES)
    for name, defense in defenses.DEFENSES.items():
        head = blocks[name].splitlines()[0]
        assert head == f"{name}: {defense.kind} defense; where {', '.join(defense.places)}"
        for key in defense.defaults:
            assert f"    {key} = " in blocks[name] and defense.meanings[key] in blocks[name]
        for preset in defense.presets:
            assert f"    preset {preset}: " in blocks[name]
    assert "    pixel_cnn = unset" in blocks["pixeldefend"]
    assert "    preset cifar: eps = 0.03137254901960784, eps_step = 0.00784313725490196" in blocks["pgd-training"]
    assert blocks["randomized-smoothing"].startswith("randomized-smoothing: smoothing defense; where device\n")
    assert blocks["median"].startswith("median: input defense; where host, device\n")


def test_a_parameter_registered_without_a_meaning_is_refused():
    with pytest.raises(ValueError, match="attack made-up registers parameters without a meaning: steps"):
        attacks.attack("made-up", preset={"steps": 3, "batch_size": 8})(lambda classifier, eps, **params: None)
    with pytest.raises(ValueError, match="defense made-up registers parameters without a meaning: strength"):
        defenses.defense("made-up", "input", "nothing", {"strength": 1, "clip_values": (0, 1)}, {})(lambda **p: None)
    assert "made-up" not in attacks.ATTACKS and "made-up" not in defenses.DEFENSES


def test_a_missing_data_set_is_one_sentence_saying_what_to_put_there(tmp_path):
    result = tinyrobust("flash-and-evaluate", "--model", "resnet8-cifar10", "--data", "cifar-10-batches-bin",
                        cwd=tmp_path)  # fmt: skip
    assert_one_sentence_error(result, "data set cifar-10-batches-bin does not exist; put CIFAR-10's binary version")


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


def test_float_model_is_refused_as_computing_in_float():
    import tensorflow as tf

    float_model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    tflite = tf.lite.TFLiteConverter.from_keras_model(float_model).convert()
    with pytest.raises(UserError, match="the model computes in float at FULLY_CONNECTED at position 0 .float32."):
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
