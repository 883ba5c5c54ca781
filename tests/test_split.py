"""Split networks end to end: a head trained with a rate term, its latent coded on the device, the bytes decoded
on the host to the head's symbols in TFLM, and attacks that change how many bytes the device sends."""

import csv
import json

import numpy as np
import pytest

from conftest import tinyrobust
from tinyrobust.compile.model import compile_model
from tinyrobust.model import reference, zoo
from tinyrobust.split import attacks, coder
from tinyrobust.split.model import load_split

FIRST_BETA = zoo.builtin_spec("split-digits")["split"]["betas"][0]


@pytest.fixture(scope="module")
def split_digits():
    """split-digits at its first beta (trained once, cached)."""
    return load_split("split-digits", FIRST_BETA)


def test_split_models_are_not_listed_as_classifiers():
    assert "split-digits" in zoo.split_names() and "split-digits" not in zoo.builtin_names()


@pytest.mark.slow
def test_the_int8_heads_output_is_the_latents_symbols_and_codes_without_loss(split_digits):
    m = split_digits
    compiled = compile_model(m.head_tflite)
    assert (compiled.output.scale[0], compiled.output.zero_point[0]) == (1.0, 0)
    xq = reference.quantize_inputs(m.x_test[:30], compiled.input)
    symbols = reference.tflm_outputs(m.head_tflite, xq).reshape(30, *m.latent_shape)
    rounded = np.round(m.head.predict(reference.dequantize(xq, compiled.input), verbose=0))
    assert np.mean(symbols == rounded) > 0.95  # the int8 head computes round(y) up to its own rounding
    indexes = m.coding.indexes(m.latent_shape)
    for s in symbols:
        stream = coder.encode(s, m.coding.tables, indexes)
        np.testing.assert_array_equal(coder.decode(stream, m.coding.tables, indexes), s)
        assert len(stream) * 8 <= coder.ideal_bits(s, m.coding.tables, indexes) + 32 + 8
    accuracy = np.mean(m.tail.predict(symbols.astype(np.float32), verbose=0).argmax(1) == m.y_test[:30])
    assert accuracy > 0.8


@pytest.mark.slow
def test_the_entropy_attack_raises_the_bits_and_the_accuracy_attack_the_errors(split_digits):
    m = split_digits
    compiled = compile_model(m.head_tflite)
    x, y = m.x_test[:20], m.y_test[:20]
    indexes = m.coding.indexes(m.latent_shape)

    def sent(inputs):
        xq = reference.quantize_inputs(inputs, compiled.input)
        symbols = reference.tflm_outputs(m.head_tflite, xq).reshape(len(inputs), *m.latent_shape)
        size = np.mean([len(coder.encode(s, m.coding.tables, indexes)) for s in symbols])
        return size, np.mean(m.tail.predict(symbols.astype(np.float32), verbose=0).argmax(1) == y)

    clean_bytes, clean_accuracy = sent(x)
    entropy = attacks.pgd(m, "entropy", x, y, 16 / 255, compiled.input, iterations=5, eot=2)
    accuracy = attacks.pgd(m, "accuracy", x, y, 16 / 255, compiled.input, iterations=5, eot=2)
    assert np.abs(entropy - x).max() <= 16 / 255 + 1e-6 and entropy.min() >= 0 and entropy.max() <= 1
    assert sent(entropy)[0] > clean_bytes
    assert sent(accuracy)[1] < clean_accuracy
    noise = attacks.sign_noise(x, 16 / 255)
    assert np.allclose(np.abs(noise - x)[(noise > 0) & (noise < 1)], 16 / 255, atol=1e-6)


@pytest.mark.slow
def test_the_adaptive_attack_steps_on_the_gradient_at_the_defended_input(split_digits):
    """BPDA: through the identity the adaptive attack is the plain one, and through a defense that mirrors the
    image its first step is the plain attack's step on the mirrored image. Every run of an attack is the same."""
    m = split_digits
    tensor = compile_model(m.head_tflite).input
    x, y = m.x_test[:4], m.y_test[:4]

    def run(inputs, iterations, defense=None):
        return attacks.pgd(m, "entropy", inputs, y, 8 / 255, tensor, iterations, eot=1, seed=3, defense=defense)

    plain = run(x, 2)
    np.testing.assert_array_equal(run(x, 2), plain)
    np.testing.assert_array_equal(run(x, 2, lambda v: v), plain)
    mirror = x[:, :, ::-1]
    adaptive_step = np.sign(run(x, 1, lambda v: v[:, :, ::-1]) - x)
    mirrored_step = np.sign(run(mirror, 1) - mirror)
    inside = (np.minimum(x, mirror) > 0.05) & (np.maximum(x, mirror) < 0.95)  # no step cut by the input range
    assert inside.sum() > 1000
    np.testing.assert_array_equal(adaptive_step[inside], mirrored_step[inside])


@pytest.mark.emulator
def test_split_evaluate_decodes_the_devices_bytes_to_the_heads_symbols(split_digits, tmp_path):
    out = tmp_path / "run"
    result = tinyrobust("split-evaluate", "--beta", FIRST_BETA, "--samples", 10, "--eps", "16/255",
                        "--iterations", 3, "--eot", 2, "--corruptions", "shot_noise", "--device-defense", "median:k=3",
                        "--out", out)  # fmt: skip
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    rows = {(r["name"], r["eps"], r["severity"]): r for r in results["conditions"]}
    attacked = {(name, 16 / 255, None) for name in ("entropy", "accuracy", "sign noise", "defended entropy",
                                                     "defended adaptive entropy", "device-defended entropy",
                                                     "device-defended adaptive entropy")}  # fmt: skip
    corrupted = {("shot_noise", 0.0, severity) for severity in range(1, 6)}
    clean = {(name, 0.0, None) for name in ("clean", "defended clean", "device-defended clean")}
    assert set(rows) == clean | attacked | corrupted
    for r in rows.values():
        assert r["samples"] == 10 and r["round_trip_exact"] == 1.0 and r["stream_equals_reference"] == 1.0
        assert r["ideal_bytes_mean"] <= r["bytes"]["mean"] <= r["ideal_bytes_mean"] + 5
        assert len(r["bytes_per_sample"]) == 10 and max(r["bytes_per_sample"]) == r["bytes"]["max"]
        assert np.mean(r["bytes_per_sample"]) == pytest.approx(r["bytes"]["mean"])
    assert rows[("entropy", 16 / 255, None)]["overhead_vs_clean"] > 0
    coder_cost = results["coder"][0]
    assert coder_cost["table_flash_bytes"] > 0 and 0 < coder_cost["instructions_per_symbol"] < 200
    # The device's 3 x 3 median runs before the head: it costs instructions, the device's own count.
    assert results["device_defense"] == [{"stage": "median", "k": 3}]
    assert coder_cost["device_defended_head_instructions"] > coder_cost["head_instructions"]
    assert "behind the device defense (median k=3)" in result.stdout
    assert "clean" in (out / "conditions.csv").read_text()
    summary_rows = list(csv.DictReader((out / "summary.csv").open()))
    clean_bytes = rows[("clean", 0.0, None)]["bytes"]["mean"]
    assert len(summary_rows) == 1 and float(summary_rows[0]["clean_bytes"]) == clean_bytes
    coder_rows = list(csv.DictReader((out / "coder.csv").open()))
    assert float(coder_rows[0]["instructions_per_symbol"]) == pytest.approx(coder_cost["instructions_per_symbol"])
    html = (out / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 4 and f"<code>{results['data_set']}</code>" in html
    assert f"report: {out / 'report.html'}" in result.stdout


@pytest.mark.emulator
def test_the_hyperprior_runs_on_the_device_and_sends_fewer_bytes_than_the_factorized_prior(split_digits, tmp_path):
    """split-digits with the hyperprior: the device runs the head, the hyper-encoder and the hyper-decoder and sends z's
    stream and y's; the host decodes z, runs the hyper-decoder on it and decodes y to the device's symbols. Its
    latent costs less than the factorized prior's at the same beta, as the hyperprior's means and scales fit
    each input."""
    out = tmp_path / "run"
    result = tinyrobust("split-evaluate", "--entropy-model", "hyperprior", "--beta", FIRST_BETA, "--samples", 10,
                        "--eps", "8/255", "--attacks", "entropy", "--iterations", 3, "--eot", 2, "--corruptions",
                        "snow", "--no-defense", "--out", out)  # fmt: skip
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    assert {r["entropy_model"] for r in results["conditions"]} == {"hyperprior"}
    for r in results["conditions"]:
        assert r["round_trip_exact"] == 1.0 and r["stream_equals_reference"] == 1.0
        assert r["ideal_bytes_mean"] <= r["bytes"]["mean"] <= r["ideal_bytes_mean"] + 10  # two streams' flushes
    clean = next(r for r in results["conditions"] if r["name"] == "clean")
    assert clean["accuracy"] >= 0.7
    # The factorized prior's bytes for the same test inputs, from the Python coder (the same bytes the device sends).
    chosen = np.sort(np.random.default_rng(0).permutation(len(split_digits.x_test))[:10])
    compiled = compile_model(split_digits.head_tflite)
    xq = reference.quantize_inputs(split_digits.x_test[chosen], compiled.input)
    symbols = reference.tflm_outputs(split_digits.head_tflite, xq)
    factorized = np.mean([len(split_digits.coding.encode([s.reshape(split_digits.latent_shape)])) for s in symbols])
    assert clean["bytes"]["mean"] < factorized, (clean["bytes"]["mean"], factorized)
    assert results["coder"][0]["symbols_per_inference"] == 8 * 8 * 8 + 4 * 4 * 4


def test_split_evaluate_refuses_an_unknown_model_in_one_sentence():
    result = tinyrobust("split-evaluate", "digits-cnn", "--samples", 1)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "there is no split model 'digits-cnn'; choose one of: split-digits" in result.stderr
