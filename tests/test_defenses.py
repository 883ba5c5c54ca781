"""Defenses: the registry, ART's input pre-processing, the device pre-processing stages (numpy reference, C
kernels natively with sanitizers and on the emulated Cortex-M4 before the network), randomized smoothing (the noise
generator natively, the votes on the emulated Cortex-M4, the certificate) and the training defenses on digits-cnn."""

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
        assert d.kind in ("input", "training", "smoothing") and d.presets
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
# Randomized smoothing: the noise generator (numpy reference, C natively), the certificate, the votes on the device


def int_tensor(dtype: str, shape=(1, 8, 8, 1)):
    from tinyrobust.compile.graph import Tensor

    scale, zero_point = (1 / 255, -128) if dtype == "int8" else (1 / 32767, 0)
    return Tensor(0, "x", shape, dtype, np.array([scale], np.float32), np.array([zero_point]))


def test_xorshift32_is_marsaglias_and_no_seed_starts_it_stuck():
    from tinyrobust.compile.smoothing import MAX_SEED, initial_state, xorshift32

    # Marsaglia 2003, "Xorshift RNGs": xor32 from y = 2463534242.
    assert xorshift32(2463534242, 3).tolist() == [723471715, 2497366906, 2064144800]
    states = [initial_state(seed) for seed in (0, 1, 2, MAX_SEED)]
    assert 0 not in states and len(set(states)) == 4


@pytest.mark.parametrize("dtype", ["int8", "int16"])
def test_noise_table_is_the_gaussian_in_input_steps_within_the_types_span(dtype):
    from tinyrobust.compile.smoothing import TABLE_BITS, noise_table

    tensor = int_tensor(dtype)
    steps = 0.25 / float(tensor.scale[0])
    table = noise_table(0.25, tensor)
    assert len(table) == 1 << TABLE_BITS and table.dtype == (np.int16 if dtype == "int8" else np.int32)
    np.testing.assert_array_equal(table, -table[::-1])  # symmetric, sorted
    assert np.all(np.diff(table) >= 0) and abs(table.std() / steps - 1) < 0.03
    wide = noise_table(100.0, tensor)  # far beyond the input's range: limited to its span, which saturates the same
    span = int(np.iinfo(tensor.dtype).max) - int(np.iinfo(tensor.dtype).min)
    assert wide.max() == span and wide.min() == -span


@pytest.mark.parametrize("dtype", ["int8", "int16"])
def test_native_smoothing_noise_equals_the_numpy_generator(stage_harness, dtype):
    from tinyrobust.compile.smoothing import Smoothing, initial_state, noise_table, noisy_copies

    tensor, smoothing = int_tensor(dtype, (1, 5, 7, 3)), Smoothing(0.5, 9, seed=7)
    info = np.iinfo(tensor.dtype)
    extremes = [np.full((1, 5, 7, 3), info.min), np.full((1, 5, 7, 3), info.max)]  # saturating both ways
    xq = np.concatenate([*extremes, np.random.default_rng(0).integers(info.min, info.max + 1, (6, 5, 7, 3))])
    xq = xq.astype(tensor.dtype)
    table = noise_table(smoothing.sigma, tensor)
    args = ["smoothing_noise", 5 * 7 * 3, smoothing.n, initial_state(smoothing.seed), tensor.dtype.itemsize]
    result = subprocess.run([str(stage_harness), *map(str, args)], input=table.tobytes() + xq.tobytes(),
                            capture_output=True, check=True)  # fmt: skip
    native = np.frombuffer(result.stdout, tensor.dtype).reshape(len(xq) * smoothing.n, 5, 7, 3)
    reference = noisy_copies(xq, smoothing, tensor)
    np.testing.assert_array_equal(native, reference)
    copies = reference.reshape(len(xq), smoothing.n, -1)
    assert np.all(copies[0] >= xq[0].reshape(-1)) and np.all(copies[1] <= xq[1].reshape(-1))
    assert len({c.tobytes() for c in copies[2]}) == smoothing.n  # each copy its own noise


def test_certified_radius_of_hand_computed_votes():
    from statistics import NormalDist

    from scipy.stats import binom

    from tinyrobust.campaign.metrics import certify, smoothing_metrics

    sigma, alpha = 0.25, 0.001
    votes = np.array([[0, 100, 0], [90, 10, 0], [60, 40, 0], [0, 0, 100]])
    top, p_lower, radius = certify(votes, sigma, alpha)
    assert top.tolist() == [1, 0, 0, 2]
    # Every copy votes the top class: the Clopper-Pearson bound is alpha^(1/n), 0.9332543, and R = 0.25 * 1.50048.
    assert p_lower[0] == pytest.approx(alpha ** (1 / 100), rel=1e-9)
    assert p_lower[0] == pytest.approx(0.9332543, abs=1e-7)
    assert radius[0] == pytest.approx(sigma * NormalDist().inv_cdf(alpha ** (1 / 100)), rel=1e-9)
    assert radius[0] == pytest.approx(0.3751188, abs=1e-7)
    # 90 of 100: pA is the p at which 90 or more votes have probability alpha.
    assert binom.sf(89, 100, p_lower[1]) == pytest.approx(alpha, rel=1e-6)
    assert radius[1] == pytest.approx(sigma * NormalDist().inv_cdf(p_lower[1]), rel=1e-9)
    assert p_lower[2] < 0.5 and np.isnan(radius[2])  # 60 of 100 cannot be told from a coin at alpha 0.001: abstain
    labels = np.array([1, 0, 0, 1])  # right, right, abstained, wrong
    m = smoothing_metrics(votes, labels, sigma, alpha, radii=(0.25, 0.5))
    assert m["accuracy"] == 0.5 and m["abstained"] == 0.25
    assert m["radius_mean"] == pytest.approx((radius[0] + radius[1]) / 4)
    assert m["radius_mean_right"] == pytest.approx((radius[0] + radius[1]) / 2)
    assert m["certified_accuracy"] == {"0.25": 0.25, "0.5": 0.0}
    assert m["prediction"] == [1, 0, None, 2] and m["radius"][2] is None


@pytest.mark.parametrize(
    "params, message",
    [
        ({"sigma": 0}, "sigma must be a positive number"),
        ({"sigma": -0.1}, "sigma must be a positive number"),
        ({"n": 0}, "n must be a whole number from 1 to 65535 (the votes are 16-bit counts), not 0"),
        ({"n": 65536}, "n must be a whole number from 1 to 65535 (the votes are 16-bit counts), not 65536"),
        ({"n": 2.5}, "n must be a whole number from 1 to 65535"),
        ({"alpha": 1.0}, "alpha must be a number between 0 and 1"),
        ({"seed": -1}, "seed must be a whole number from 0 to 4294967294"),
    ],
)
def test_bad_smoothing_parameters_are_refused_in_one_sentence(params, message):
    with pytest.raises(UserError) as error:
        defenses.make("randomized-smoothing", **params).smoothing()
    assert message in str(error.value) and str(error.value).count(";") == 0 and "\n" not in str(error.value)


def test_smoothing_is_part_of_the_model_hash_and_answers_with_votes(digits):
    from tinyrobust.compile.smoothing import Smoothing

    plain = compile_model(digits.tflite)
    smoothed = compile_model(digits.tflite, smoothing=defenses.make("randomized-smoothing", n=20).smoothing())
    assert [s.function for s in smoothed.steps] == [s.function for s in plain.steps]
    assert plain.device_output is plain.output
    votes = smoothed.device_output
    assert (votes.type_name, votes.shape, float(votes.scale[0])) == ("uint16", (1, 10), pytest.approx(1 / 20))
    hashes = {compile_model(digits.tflite, smoothing=Smoothing(0.25, 20, seed)).model_hash for seed in (0, 1)}
    hashes |= {plain.model_hash, compile_model(digits.tflite, smoothing=Smoothing(0.5, 20)).model_hash}
    assert len(hashes) == 4 and smoothed.model_hash in hashes
    # alpha only changes what the host makes of the votes: the same firmware
    assert compile_model(digits.tflite, smoothing=Smoothing(0.25, 20, 0, alpha=0.05)).model_hash == smoothed.model_hash
    with pytest.raises(UserError, match="votes over noisy copies on the device, not on the host: give it where"):
        defenses.make("randomized-smoothing").apply(np.zeros((1, 8, 8, 1), np.float32))


def elf_symbols(elf) -> set[str]:
    from elftools.elf.elffile import ELFFile

    with open(elf, "rb") as f:
        return {s.name for s in ELFFile(f).get_section_by_name(".symtab").iter_symbols()}


def test_only_a_smoothing_build_has_the_smoothing_code(digits, tmp_path):
    from tinyrobust.compile.smoothing import Smoothing
    from tinyrobust.device.boards import load_board

    board = load_board("qemu-mps2-an386")
    plain = build_firmware(compile_model(digits.tflite), board, tmp_path / "plain")
    smoothed = build_firmware(compile_model(digits.tflite, smoothing=Smoothing(0.25, 8)), board, tmp_path / "smoothed")
    smoothing = {"tr_smoothing_vote", "tr_smoothing_noise_s8", "tr_argmax_s8", "tr_smoothing_votes"}
    assert not (smoothing | {"tr_xorshift32", "tr_argmax_s16", "tr_smoothing_noise_s16"}) & elf_symbols(plain.elf)
    assert smoothing <= elf_symbols(smoothed.elf)
    assert not (tmp_path / "plain" / "generated" / "smoothing.c").exists()
    # the noise table (1024 int16) and the voting loop, in flash; the clean input's copy and the votes, in RAM
    assert 2048 < smoothed.memory.code_bytes - plain.memory.code_bytes < 4096


def run_on_emulator(compiled, tmp_path, xq) -> tuple[np.ndarray, list[int]]:
    from tinyrobust.device.boards import load_board
    from tinyrobust.device.emulator import Emulator
    from tinyrobust.device.link import Device
    from tinyrobust.device.targets import EMULATED_UART_BYTES_PER_S

    board = load_board("qemu-mps2-an386")
    firmware = build_firmware(compiled, board, tmp_path)
    with Emulator(board, firmware.elf) as emulator:
        device = Device(emulator.start(), EMULATED_UART_BYTES_PER_S)
        device.handshake(compiled.model_hash)
        answers = [device.infer(x.tobytes()) for x in xq]
    dtype = compiled.device_output.dtype
    return np.stack([np.frombuffer(a, dtype) for a, _ in answers]), [t for _, t in answers]


@pytest.mark.emulator
def test_smoothing_votes_on_the_emulator_equal_tflm_votes_on_the_same_noisy_copies(digits, tmp_path):
    from tinyrobust.compile.smoothing import Smoothing, noisy_copies, votes
    from tinyrobust.model.reference import tflite_outputs

    smoothing = Smoothing(0.25, 16, seed=5)
    compiled = compile_model(digits.tflite, smoothing=smoothing)
    xq = quantize_inputs(digits.x_test[:8], compiled.input)
    device, ticks = run_on_emulator(compiled, tmp_path, xq)
    copies = noisy_copies(xq, smoothing, compiled.input)
    tflm = votes(tflm_outputs(digits.tflite, copies), smoothing.n)
    np.testing.assert_array_equal(device, tflm)
    assert device.dtype == np.uint16 and np.all(device.sum(axis=1) == smoothing.n)
    assert len({tuple(v) for v in device}) > 1 and np.any(device.max(axis=1) < smoothing.n)  # the noise changes votes
    tflite = votes(tflite_outputs(digits.tflite, copies), smoothing.n)
    assert np.mean(tflite.argmax(axis=1) == device.argmax(axis=1)) >= 0.75
    assert max(ticks) - min(ticks) < 0.01 * min(ticks)  # n whole inferences per input, whatever the input


@pytest.mark.emulator
def test_smoothing_votes_of_an_int16x8_model_on_the_emulator_equal_tflm_votes(tmp_path):
    import keras

    from conftest import quantized_model
    from tinyrobust.compile.smoothing import Smoothing, noisy_copies, votes

    tflite = quantized_model([keras.layers.Conv2D(3, 3, activation="relu"), keras.layers.Flatten(),
                              keras.layers.Dense(5)], (6, 6, 2), precision="int16x8")  # fmt: skip
    smoothing = Smoothing(0.3, 12, seed=2)
    compiled = compile_model(tflite, smoothing=smoothing)
    xq = quantize_inputs(np.random.default_rng(0).uniform(-1, 1, (6, 6, 6, 2)), compiled.input)
    device, _ = run_on_emulator(compiled, tmp_path, xq)
    tflm = votes(tflm_outputs(tflite, noisy_copies(xq, smoothing, compiled.input)), smoothing.n)
    np.testing.assert_array_equal(device, tflm)
    assert np.any(device.max(axis=1) < smoothing.n)


# ---------------------------------------------------------------------------------------------------------
# Training defenses: real training on digits-cnn with a tiny budget


TINY = {
    "pgd-training": {"epochs": 2, "max_iter": 3},
    "distillation": {"epochs": 15},
    "ensemble-training": {"epochs": 2, "static_epochs": 3},
    "trades": {"epochs": 2, "max_iter": 3},
    "sinkhorn-training": {"epochs": 1, "max_iter": 2, "sinkhorn_max_iter": 5},
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
def test_sinkhorn_training_changes_the_model_and_repeats_for_a_seed(digits, digits_data, tmp_path, monkeypatch):
    from art.attacks.evasion import Wasserstein

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    x_train, y_train = digits_data[0][:200], digits_data[1][:200]
    made = []
    generate = Wasserstein.generate
    monkeypatch.setattr(Wasserstein, "generate", lambda self, x, y=None: made.append(len(x)) or generate(self, x, y))
    defense = defenses.make("sinkhorn-training", "digits", epochs=1, max_iter=2, sinkhorn_max_iter=5)
    weights = [defense.train(digits.keras, x_train, y_train, seed=seed).get_weights() for seed in (0, 0, 1)]
    assert sum(made) == 2 * len(x_train)  # every training input replaced by a Wasserstein example, in both runs
    assert len(list((tmp_path / "tinyrobust" / "defenses").glob("sinkhorn-training-*/float.keras"))) == 2
    assert any(not np.array_equal(a, b) for a, b in zip(digits.keras.get_weights(), weights[0], strict=True))
    for a, b in zip(weights[0], weights[1], strict=True):  # the second seed 0 is the cached first
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(weights[0], weights[2], strict=True))
    again = defense.train(digits.keras, x_train, y_train, seed=0, cache=False).get_weights()
    for a, b in zip(weights[0], again, strict=True):  # trained anew, the same weights
        np.testing.assert_array_equal(a, b)


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
