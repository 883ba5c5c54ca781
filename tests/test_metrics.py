"""The distance to the decision boundary along an attack's direction, and the examples the report draws."""

import numpy as np

from tinyrobust.campaign import attacks, metrics
from tinyrobust.compile.graph import Tensor
from tinyrobust.compile.model import compile_model
from tinyrobust.model import reference

RESOLUTION = 1 / (metrics.BOUNDARY_GRID * 2**metrics.BOUNDARY_STEPS)


def test_first_flip_finds_the_first_crossing_of_a_known_boundary():
    # Along x = t * delta, a 1-input classifier: class 0 below 0.3, 1 up to 0.6, 2 beyond.
    def top1(x):
        v = x.reshape(len(x), -1)[:, 0]
        return np.where(v < 0.3, 0, np.where(v < 0.6, 1, 2))

    x0 = np.zeros((4, 2, 2, 1), np.float32)
    delta = np.zeros_like(x0)
    delta[:, 0, 0, 0] = [1.0, 0.5, 0.25, 0.7]  # boundaries at t = 0.3, 0.6, none, 0.3/0.7
    t = metrics.first_flip(top1, x0, delta)
    assert np.isnan(t[2])
    expected = np.array([0.3, 0.6, np.nan, 0.3 / 0.7])
    found = ~np.isnan(expected)
    assert np.all(np.abs(t[found] - expected[found]) <= RESOLUTION), t
    assert np.all(t[found] >= expected[found] - 1e-7)  # on the changed side


def test_boundary_distance_on_digits_is_a_flip_with_no_flip_just_before_it(digits):
    compiled = compile_model(digits.tflite)
    tensor = compiled.input
    lo, hi = reference.dequantize(np.array([-128, 127]), tensor).tolist()
    x, y = digits.x_test[:24], digits.y_test[:24]
    x_adv = attacks.generate("deepfool", attacks.classifier(digits.keras, (lo, hi)), x, y, 0.0, seed=0)
    # As the store gives them: quantized, one flat row per sample.
    clean = reference.quantize_inputs(x, tensor).reshape(len(x), -1)
    adversarial = reference.quantize_inputs(x_adv, tensor).reshape(len(x), -1)

    points = metrics.boundary_points(clean, adversarial, tensor, digits.tflite, digits.keras)
    x0, delta = points["x0"], points["delta"]
    assert x0.shape == (24, *tensor.shape[1:])
    engines = {
        "float": lambda z: reference.float_outputs(digits.keras, z).argmax(1),
        "quantized": lambda z: reference.tflm_outputs(digits.tflite, reference.quantize_inputs(z, tensor)).argmax(1),
    }
    for name, top1 in engines.items():
        t = points["t"][name]
        start, full = top1(x0), top1(x0 + delta)
        assert np.array_equal(np.isnan(t), start == full), name  # a boundary exactly where the full delta flips
        found = np.flatnonzero(~np.isnan(t))
        assert len(found) >= 5, (name, len(found))
        at = x0[found] + t[found].reshape(-1, 1, 1, 1).astype(np.float32) * delta[found]
        before = x0[found] + (t[found] - RESOLUTION).reshape(-1, 1, 1, 1).astype(np.float32) * delta[found]
        assert np.all(top1(at) != start[found]), name  # the point found changes the top-1
        assert np.all(top1(before) == start[found]), name  # a point slightly closer does not
        for k in range(1, metrics.BOUNDARY_GRID):  # nor any earlier scan point: it is the first crossing
            earlier = found[t[found] > k / metrics.BOUNDARY_GRID]
            z = x0[earlier] + np.float32(k / metrics.BOUNDARY_GRID) * delta[earlier]
            assert np.all(top1(z) == start[earlier]), (name, k)
    # The quantized model reads the device's int8 inputs: its boundary is where the quantized point changes.
    t = points["t"]["quantized"]
    found = np.flatnonzero(~np.isnan(t))
    q_at = reference.quantize_inputs(x0[found] + t[found].reshape(-1, 1, 1, 1) * delta[found], tensor)
    assert np.all(reference.tflm_outputs(digits.tflite, q_at).argmax(1) != engines["quantized"](x0[found]))

    result = metrics.boundary_distance(clean, adversarial, tensor, digits.tflite, digits.keras)
    l2 = np.linalg.norm(delta.reshape(len(delta), -1).astype(np.float64), axis=1)
    for name in engines:
        t = points["t"][name]
        found = ~np.isnan(t)
        assert result[name]["samples"] == found.sum()
        assert np.isclose(result[name]["l2"]["median"], np.median((t * l2)[found]))
        assert 0 < result[name]["l2"]["mean"] <= l2[found].mean() + 1e-9
        assert result[name]["linf"]["median"] <= result[name]["l2"]["median"]
    both = result["both"]
    assert both["samples"] == np.sum(~np.isnan(points["t"]["float"]) & ~np.isnan(points["t"]["quantized"]))
    assert 0 <= both["quantized_closer"] <= 1
    assert result["perturbed"] <= result["samples"] == 24

    no_float = metrics.boundary_distance(clean, adversarial, tensor, digits.tflite)
    assert "float" not in no_float and "both" not in no_float and no_float["quantized"] == result["quantized"]


def test_examples_show_the_samples_the_attack_turned_first_and_decode_to_input_units():
    tensor = Tensor(0, "input", (1, 4, 4, 1), "INT8", np.array([0.5], np.float32), np.array([-3]))
    rng = np.random.default_rng(0)
    clean_q = rng.integers(-128, 128, (6, 16)).astype(np.int8)
    adv_q = clean_q.copy()
    adv_q[[1, 3, 4]] += 1  # samples 1, 3 and 4 changed
    labels = np.array([0, 1, 1, 0, 1, 1])
    one_hot = lambda k: np.eye(2, dtype=np.int8)[k] * 100  # noqa: E731
    clean = {"labels": labels, "input": clean_q, "device": one_hot(labels)}
    wrong = labels.copy()
    wrong[4] = 1 - labels[4]  # the attack turns sample 4 from right to wrong
    adversarial = {"labels": labels, "input": adv_q, "device": one_hot(wrong)}

    shown = metrics.examples(adversarial, clean, tensor, count=2)
    assert [s["sample"] for s in shown["samples"]] == [4, 1]
    assert shown["samples"][0] | {"clean": None, "input": None} == {
        "sample": 4, "label": 1, "clean_top1": 1, "device_top1": 0, "clean": None, "input": None
    }  # fmt: skip
    decoded = metrics.decode(shown, shown["samples"][0], "input")
    assert decoded.shape == (4, 4, 1)
    assert np.array_equal(decoded, reference.dequantize(adv_q[4], tensor).reshape(4, 4, 1))
    assert np.array_equal(metrics.decode(shown, shown["samples"][0], "clean").reshape(-1), (clean_q[4] + 3) * 0.5)

    flat = Tensor(0, "input", (1, 16), "INT8", np.array([0.5], np.float32), np.array([-3]))
    assert metrics.examples(adversarial, clean, flat) is None  # not an image
