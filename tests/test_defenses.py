"""Defenses: the registry, ART's input pre-processing, the device pre-processing stages (numpy reference, C
kernels natively with sanitizers and on the emulated Cortex-M4 before the network) and the training defenses
on digits-cnn."""

import subprocess

import numpy as np
import pytest

from tinyrobust.build.firmware import FIRMWARE, build_firmware, build_native, run_native
from tinyrobust.campaign import defenses
from tinyrobust.compile.model import compile_model
from tinyrobust.compile.stages import apply_stages_q, median_q, squeeze_bits_q
from tinyrobust.errors import UserError
from tinyrobust.model import zoo
from tinyrobust.model.reference import quantize_inputs, tflm_outputs


@pytest.fixture(scope="module")
def digits_data():
    return zoo.load_dataset(zoo.builtin_spec("digits-cnn"))


# ---------------------------------------------------------------------------------------------------------
# The registry and the host pre-processing


def test_registry_has_the_studys_defenses_with_presets():
    assert {"feature-squeezing", "pixeldefend", "pgd-training", "distillation", "ensemble-training"} <= set(
        defenses.DEFENSES
    )
    for d in defenses.DEFENSES.values():
        assert d.kind in ("input", "training") and d.presets
        for preset in d.presets.values():
            assert set(preset) <= set(d.defaults), d.name
    assert defenses.make("squeeze-bits", "mnist").params["bit_depth"] == 1
    assert defenses.make("squeeze-bits", "mnist", bit_depth=3).params["bit_depth"] == 3


def test_registry_errors_name_the_choices():
    with pytest.raises(UserError, match="unknown defense nope; choose from: .*median"):
        defenses.make("nope")
    with pytest.raises(UserError, match="has no preset 'x'; choose from: mnist, cifar"):
        defenses.make("median", "x")
    with pytest.raises(UserError, match="takes window_size, clip_values, not k"):
        defenses.make("median", k=3)
    with pytest.raises(UserError, match="training defense"):
        defenses.make("trades").apply(np.zeros((1, 8, 8, 1)))
    with pytest.raises(UserError, match="does not run on the device; these do: squeeze-bits, median"):
        defenses.make("jpeg").device_stages()


def test_pixeldefend_says_what_it_needs():
    with pytest.raises(UserError, match="PixelDefend needs a trained PixelCNN.*pixel_cnn=defenses.pixel_cnn"):
        defenses.make("pixeldefend").apply(np.zeros((1, 8, 8, 1), np.float32))


@pytest.mark.slow
def test_pixeldefend_with_a_small_pixel_cnn_is_arts_and_keeps_digits(digits, digits_data, tmp_path, monkeypatch):
    from art.defences.preprocessor import PixelDefend

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    x_train, _, x_test, y_test = digits_data
    pixel_cnn = defenses.pixel_cnn(x_train, epochs=5)
    defense = defenses.make("pixeldefend", pixel_cnn=pixel_cnn)
    # ART's own loop, on values it handles (at least eps from 0 and 255; below eps its uint8 range wraps)
    inside = np.random.default_rng(0).integers(17, 239, (10, 8, 8, 1)).astype(np.float32) / 255
    np.testing.assert_allclose(defense.apply(inside), PixelDefend(eps=16, pixel_cnn=pixel_cnn)(inside)[0], atol=1e-6)
    purified = defense.apply(x_test[:100])
    assert not np.allclose(purified, x_test[:100])
    accuracy = np.mean(np.asarray(digits.keras.predict(purified, verbose=0)).argmax(axis=1) == y_test[:100])
    assert accuracy > 0.9, accuracy


@pytest.mark.parametrize("name", ["squeeze-bits", "median", "feature-squeezing", "jpeg", "total-variation"])
def test_input_defenses_keep_shape_and_domain_and_change_inputs(name):
    x = np.random.default_rng(0).random((3, 8, 8, 1)).astype(np.float32)
    out = defenses.make(name).apply(x)
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.allclose(out, x)


def test_numpy_median_is_scipys_and_arts():
    from scipy.ndimage import median_filter

    rng = np.random.default_rng(0)
    for k in range(1, 8):
        for shape in [(3, 8, 8, 1), (2, 5, 7, 3), (1, 3, 2, 2)]:  # windows wider than the image reflect again
            xq = rng.integers(-128, 128, shape).astype(np.int8)
            np.testing.assert_array_equal(median_q(xq, k), median_filter(xq, (1, k, k, 1), mode="reflect"))
    xq = rng.integers(-128, 128, (4, 8, 8, 1)).astype(np.int8)
    for k in (2, 3):  # the median commutes with dequantization: ART on floats = the integer stage
        art = defenses.make("median", window_size=k).apply((xq.astype(np.float32) + 128) / 255)
        np.testing.assert_array_equal(np.round(art * 255) - 128, median_q(xq, k))


def test_integer_squeezing_is_arts_on_the_unit_range():
    q = np.arange(-128, 128).astype(np.int8)
    for bits in range(1, 9):
        art = defenses.make("squeeze-bits", bit_depth=bits).apply(((q.astype(np.float32) + 128) / 255)[None])
        np.testing.assert_array_equal(np.round(art[0] * 255) - 128, squeeze_bits_q(q, bits))
        assert len(np.unique(squeeze_bits_q(q, bits))) == 2**bits
    np.testing.assert_array_equal(squeeze_bits_q(q, 8), q)


# ---------------------------------------------------------------------------------------------------------
# The device stages: C kernels against the numpy reference, then compiled before the network


@pytest.fixture(scope="module")
def stage_harness(tmp_path_factory):
    exe = tmp_path_factory.mktemp("stage") / "preprocess"
    runtime = FIRMWARE / "runtime"
    command = [
        "gcc", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-std=c11", "-Wall",
        "-Wextra", "-Werror", f"-I{runtime}", *map(str, sorted(runtime.glob("*.c"))),
        str(FIRMWARE / "native" / "preprocess_harness.c"), "-o", str(exe),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    return exe


def run_stage(exe, xq: np.ndarray, *args) -> np.ndarray:
    result = subprocess.run([str(exe), *map(str, args)], input=xq.tobytes(), capture_output=True, check=True)
    return np.frombuffer(result.stdout, np.int8).reshape(xq.shape)


@pytest.mark.parametrize("shape", [(8, 8, 1), (5, 7, 3), (3, 2, 2), (32, 32, 3)])
def test_native_median_equals_the_numpy_reference(stage_harness, shape):
    xq = np.random.default_rng(sum(shape)).integers(-128, 128, (20, *shape)).astype(np.int8)
    for k in range(1, 8):
        native = run_stage(stage_harness, xq, "median", *shape, k)
        mismatches = np.argwhere(native != median_q(xq, k))
        assert mismatches.size == 0, f"k={k}: {len(mismatches)} values differ, first at {mismatches[0]}"


def test_native_squeezing_equals_the_numpy_reference(stage_harness):
    rng = np.random.default_rng(3)
    xq = np.concatenate([np.arange(-128, 128), rng.integers(-128, 128, 256 * 19)]).astype(np.int8).reshape(20, 256)
    for bits in range(1, 9):
        np.testing.assert_array_equal(
            run_stage(stage_harness, xq, "squeeze_bits", 256, bits), squeeze_bits_q(xq, bits)
        )


STAGES = [{"stage": "median", "k": 3}]
BOTH = [{"stage": "squeeze_bits", "bits": 3}, {"stage": "median", "k": 2}]


def test_stages_come_first_and_change_the_model_hash(digits):
    plain = compile_model(digits.tflite)
    staged = compile_model(digits.tflite, preprocess=BOTH)
    assert [s.function for s in staged.steps[:2]] == ["tr_squeeze_bits_s8", "tr_median_s8"]
    assert [s.function for s in staged.steps[2:]] == [s.function for s in plain.steps]
    assert staged.arena_bytes >= plain.arena_bytes
    hashes = {plain.model_hash, staged.model_hash, compile_model(digits.tflite, preprocess=STAGES).model_hash}
    assert len(hashes) == 3
    assert compile_model(digits.tflite, preprocess=[dict(reversed(BOTH[0].items())), BOTH[1]]).model_hash == (
        staged.model_hash
    )  # the description is canonical
    assert defenses.make("feature-squeezing", bit_depth=3).device_stages() == BOTH


@pytest.mark.parametrize(
    "stages, message",
    [
        ([{"stage": "blur"}], "no device pre-processing stage 'blur'; choose from: squeeze_bits, median"),
        ([{"stage": "median", "k": 9}], "median takes k in 1..7"),
        ([{"stage": "squeeze_bits", "bits": 0}], "squeeze_bits takes bits in 1..8"),
    ],
)
def test_bad_stages_are_refused(digits, stages, message):
    with pytest.raises(UserError, match=message):
        compile_model(digits.tflite, preprocess=stages)


def test_stages_need_an_int8_input():
    import keras

    from conftest import quantized_model

    tflite = quantized_model([keras.layers.Conv2D(2, 3)], (5, 5, 1), precision="int16x8")
    with pytest.raises(UserError, match="device pre-processing runs on int8 inputs; this model's input is int16"):
        compile_model(tflite, preprocess=STAGES)


def test_native_model_with_stages_is_the_numpy_stage_then_tflm(digits, tmp_path):
    compiled = compile_model(digits.tflite, preprocess=BOTH)
    xq = quantize_inputs(digits.x_test[:60], compiled.input)
    native = np.frombuffer(run_native(build_native(compiled, tmp_path), xq), np.int8).reshape(len(xq), -1)
    np.testing.assert_array_equal(native, tflm_outputs(digits.tflite, apply_stages_q(xq, BOTH)))


def test_stage_buffers_get_their_own_arena_space(tmp_path):
    """The input is the largest activation here: the median's output, live at the same step, needs new space."""
    import keras

    from conftest import quantized_model, random_inputs

    tflite = quantized_model([keras.layers.Conv2D(2, 3, strides=2)], (16, 16, 4))
    plain, staged = compile_model(tflite), compile_model(tflite, preprocess=BOTH)
    stage_outputs = [s.output for s in staged.steps[:2]]
    assert staged.arena_bytes >= 2 * 16 * 16 * 4 > plain.arena_bytes  # a stage reads one image, writes another
    for read, written in zip([staged.input.index, *stage_outputs], stage_outputs, strict=False):
        assert staged.offsets[read] != staged.offsets[written]
    xq = random_inputs(tflite, 30)
    native = np.frombuffer(run_native(build_native(staged, tmp_path), xq), np.int8).reshape(len(xq), -1)
    np.testing.assert_array_equal(native, tflm_outputs(tflite, apply_stages_q(xq, BOTH)))


@pytest.mark.emulator
def test_median_stage_on_the_emulator_is_the_numpy_stage_then_tflm(digits, tmp_path):
    from tinyrobust.device.boards import load_board
    from tinyrobust.device.emulator import Emulator
    from tinyrobust.device.link import Device
    from tinyrobust.device.targets import EMULATED_UART_BYTES_PER_S

    board = load_board("qemu-mps2-an386")
    compiled = compile_model(digits.tflite, preprocess=STAGES)
    firmware = build_firmware(compiled, board, tmp_path)
    xq = quantize_inputs(digits.x_test[:20], compiled.input)
    with Emulator(board, firmware.elf) as emulator:
        device = Device(emulator.start(), EMULATED_UART_BYTES_PER_S)
        with pytest.raises(UserError, match="flash the firmware built for this model"):
            device.handshake(compile_model(digits.tflite).model_hash)  # the same .tflite without the stage
        device.handshake(compiled.model_hash)
        outputs = np.stack([np.frombuffer(device.infer(x.tobytes())[0], np.int8) for x in xq])
    np.testing.assert_array_equal(outputs, tflm_outputs(digits.tflite, apply_stages_q(xq, STAGES)))


# ---------------------------------------------------------------------------------------------------------
# Training defenses: real training on digits-cnn with a tiny budget


TINY = {
    "pgd-training": {"epochs": 2, "max_iter": 3},
    "distillation": {"epochs": 15},
    "ensemble-training": {"epochs": 2, "static_epochs": 3},
    "trades": {"epochs": 2, "max_iter": 3},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY))
def test_training_defense_makes_a_new_model_that_still_classifies(name, digits, digits_data):
    x_train, y_train, x_test, y_test = digits_data
    before = [w.copy() for w in digits.keras.get_weights()]
    model = defenses.make(name, "digits", **TINY[name]).train(digits.keras, x_train, y_train, cache=False)
    assert all(np.array_equal(a, b) for a, b in zip(before, digits.keras.get_weights(), strict=True))
    assert model is not digits.keras
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    accuracy = np.mean(np.asarray(model.predict(x_test, verbose=0)).argmax(axis=1) == y_test)
    assert accuracy > 0.8, accuracy


@pytest.mark.slow
def test_trained_models_are_cached(digits, digits_data, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    x_train, y_train = digits_data[0][:200], digits_data[1][:200]
    defense = defenses.make("trades", "digits", epochs=1, max_iter=1)
    first = defense.train(digits.keras, x_train, y_train)
    assert len(list((tmp_path / "tinyrobust" / "defenses").glob("trades-*/float.keras"))) == 1
    again = defense.train(digits.keras, x_train, y_train)
    for a, b in zip(first.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
