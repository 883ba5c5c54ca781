"""Numbers for one condition: accuracy of each engine, attack success, transfer, disagreement and distortion, and
for a smoothing build the certificates of its votes."""

from __future__ import annotations

import numpy as np

from tinyrobust.model import reference

ENGINES = ("float", "tflite", "tflm", "device")


def _rate(mask: np.ndarray) -> float | None:
    return float(np.mean(mask)) if len(mask) else None


def _stats(values: np.ndarray) -> dict:
    return {"mean": float(values.mean()), "max": float(values.max())} if len(values) else {"mean": None, "max": None}


def rates(outputs: dict[str, np.ndarray], labels: np.ndarray) -> dict:
    """Accuracy of each engine and the agreements between them, as rates in [0, 1]."""
    top1 = {name: out.argmax(axis=1) for name, out in outputs.items() if name in ENGINES}
    accuracy = {name: float(np.mean(top1[name] == labels)) if name in top1 else None for name in ENGINES}
    return {
        "accuracy": accuracy,
        "agreement": {
            "device_vs_tflm_bit_exact": float(np.mean(np.all(outputs["device"] == outputs["tflm"], axis=1))),
            "device_vs_tflite_top1": float(np.mean(top1["device"] == top1["tflite"])),
            "tflite_vs_tflm_bit_exact": float(np.mean(np.all(outputs["tflite"] == outputs["tflm"], axis=1))),
        },
    }


def margins(scores: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 score of each row."""
    ordered = np.sort(scores, axis=1)
    return ordered[:, -1] - ordered[:, -2]


def condition_metrics(outputs: dict, clean: dict | None, compiled, mode: str) -> dict:
    """Metrics of one condition's outputs (Store.outputs) against the clean condition of the same model,
    precision, seed and defense (None for the clean condition itself, or when it is not measured yet).

    - attack_success_rate: of the samples the attacked model (float for transfer, device for on-device)
      classifies correctly when clean, the share it gets wrong under attack.
    - transfer_rate: of the samples whose adversarial input fools the float model (right when clean), the share
      the device gets wrong too.
    - disagreement: samples where the device's top-1 differs from the float model's, or the desktop TFLite
      interpreter's, with the device's mean top-1 margin (dequantized output) on those samples.
    - distortion: L0 (changed elements), L1, L2, L-inf of the quantized inputs sent minus the clean ones, in
      the float model's input units."""
    labels = outputs["labels"]
    result = rates(outputs, labels)
    top1 = {k: outputs[k].argmax(axis=1) for k in ENGINES if k in outputs}
    device_scores = reference.dequantize(outputs["device"], compiled.device_output)
    device_margin = margins(device_scores)
    disagreement = {}
    for other in ("float", "tflite"):
        if other in top1:
            differ = top1["device"] != top1[other]
            disagreement[f"device_vs_{other}"] = {
                "rate": float(np.mean(differ)),
                "samples": int(differ.sum()),
                "device_margin_mean": _stats(device_margin[differ])["mean"],
            }
    result["disagreement"] = disagreement
    result["attack_success_rate"] = result["transfer_rate"] = None
    result["distortion"] = None
    if clean is None or len(clean["labels"]) != len(labels):
        return result
    target = "float" if mode == "transfer" else "device"
    if target in top1:
        clean_top1 = clean[target].argmax(axis=1)
        right = clean_top1 == labels
        result["attack_success_rate"] = _rate((top1[target] != labels)[right])
    if "float" in top1:
        fooled = (top1["float"] != labels) & (clean["float"].argmax(axis=1) == labels)
        result["transfer_rate"] = _rate((top1["device"] != labels)[fooled])
    delta = reference.dequantize(outputs["input"], compiled.input) - reference.dequantize(
        clean["input"], compiled.input
    )
    delta = delta.reshape(len(delta), -1).astype(np.float64)
    result["distortion"] = {
        "l0": _stats(np.count_nonzero(delta, axis=1).astype(np.float64)),
        "l1": _stats(np.abs(delta).sum(axis=1)),
        "l2": _stats(np.sqrt((delta**2).sum(axis=1))),
        "linf": _stats(np.abs(delta).max(axis=1)),
    }
    return result


# ---- randomized smoothing's certificates ------------------------------------------------------------------------

SMOOTHING_RADII = (0.25, 0.5, 1.0)  # the L2 radii, in input units, at which certified accuracy is reported


def certify(votes: np.ndarray, sigma: float, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cohen et al.'s certificate from one set of votes per sample (rows of per-class counts over n noisy copies):
    the top class (the first of equal counts), pA, the one-sided 1 - alpha Clopper-Pearson lower bound of that
    class's probability under the noise, and the certified L2 radius sigma * Phi^-1(pA), NaN where pA <= 0.5 (the
    smoothed classifier abstains). The same votes choose the class and bound its probability, where Cohen et al.
    draw a separate selection sample: the device makes one set of copies per input."""
    from scipy.stats import beta, norm

    votes = np.asarray(votes, np.int64)
    n, top = votes.sum(axis=1), votes.argmax(axis=1)
    count = votes[np.arange(len(votes)), top]
    with np.errstate(invalid="ignore"):
        p_lower = np.where(count > 0, beta.ppf(alpha, count, n - count + 1), 0.0)
        radius = np.where(p_lower > 0.5, sigma * norm.ppf(p_lower), np.nan)
    return top, p_lower, radius


def smoothing_metrics(votes: np.ndarray, labels: np.ndarray, sigma: float, alpha: float,
                      radii: tuple[float, ...] = SMOOTHING_RADII) -> dict:  # fmt: skip
    """The smoothed classifier's figures on the device's votes (certify): its accuracy (an abstention counts as
    wrong), the share it abstains on, the average certified radius (a wrong or abstained sample's radius counted
    as 0, Zhai et al. 2020's ACR) and the mean over the samples it certifies right, certified accuracy at each of
    radii (right with a radius of at least that), and each sample's prediction and radius (None: abstained)."""
    top, _, radius = certify(votes, sigma, alpha)
    certified = ~np.isnan(radius)
    right = certified & (top == labels)
    return {
        "accuracy": _rate(right),
        "abstained": _rate(~certified),
        "radius_mean": float(np.where(right, radius, 0.0).mean()) if len(right) else None,
        "radius_mean_right": _location(radius[right])["mean"],
        "certified_accuracy": {f"{r:g}": _rate(right & (np.nan_to_num(radius, nan=-1.0) >= r)) for r in radii},
        "prediction": [int(t) if c else None for t, c in zip(top, certified, strict=True)],
        "radius": [float(r) if c else None for r, c in zip(radius, certified, strict=True)],
    }


# ---- the distance to the decision boundary along a minimal-perturbation attack's direction ---------------------

BOUNDARY_GRID = 8  # points of the first scan along the segment
BOUNDARY_STEPS = 12  # bisection steps after it: t is found to within 1 / (8 * 2**12), about 3e-5


def first_flip(top1, x0: np.ndarray, delta: np.ndarray, grid: int = BOUNDARY_GRID, steps: int = BOUNDARY_STEPS):
    """For each sample, the smallest t in (0, 1] at which top1(x0 + t * delta) differs from top1(x0), NaN where
    the full step (t = 1) does not change it. top1 maps a batch of inputs to class indices.

    The segment is scanned at t = 1/grid, 2/grid, ..., 1 for the first point that changes the top-1, then that
    last grid interval is bisected: the t returned changes the top-1 and t - 1 / (grid * 2**steps) does not. A
    top-1 that changes and changes back between two grid points is missed (its crossing is then a later one)."""
    x0, delta = np.asarray(x0, np.float32), np.asarray(delta, np.float32)
    n = len(x0)
    shape = (-1,) + (1,) * (x0.ndim - 1)

    def changed(index: np.ndarray, t: np.ndarray) -> np.ndarray:
        if not len(index):
            return np.zeros(0, bool)
        points = x0[index] + t.reshape(shape).astype(np.float32) * delta[index]
        return np.asarray(top1(points)) != start[index]

    start = np.asarray(top1(x0))
    hi = np.full(n, np.nan)
    lo = np.zeros(n)
    todo = np.flatnonzero(changed(np.arange(n), np.ones(n)))
    for k in range(1, grid + 1):  # the last grid point, t = 1, changes the top-1 of every sample in todo
        t = np.full(len(todo), k / grid)
        flips = changed(todo, t) if k < grid else np.ones(len(todo), bool)
        hi[todo[flips]] = t[flips]
        lo[todo[~flips]] = t[~flips]
        todo = todo[~flips]
    found = np.flatnonzero(~np.isnan(hi))
    for _ in range(steps):
        mid = (lo[found] + hi[found]) / 2
        flips = changed(found, mid)
        hi[found[flips]] = mid[flips]
        lo[found[~flips]] = mid[~flips]
    return hi


def _location(values: np.ndarray) -> dict:
    if not len(values):
        return {"mean": None, "median": None}
    return {"mean": float(values.mean()), "median": float(np.median(values))}


def boundary_points(clean: np.ndarray, adversarial: np.ndarray, tensor, tflite: bytes, keras_model=None) -> dict:
    """Where the float and the quantized model's decision boundaries cross the segment from each clean input to
    its adversarial input (see boundary_distance): {"x0": clean inputs, "delta": adversarial - clean, both
    dequantized and shaped as the model's input, "top1": {model: top1 function}, "t": {model: first_flip's t}}
    for the models "float" (without a float model, absent) and "quantized"."""
    from tinyrobust.model import reference

    shape = (len(clean), *tensor.shape[1:])  # the store keeps inputs flat
    x0 = reference.dequantize(np.reshape(clean, shape), tensor)
    delta = reference.dequantize(np.reshape(adversarial, shape), tensor) - x0
    top1 = {"quantized": lambda x: reference.tflm_outputs(tflite, reference.quantize_inputs(x, tensor), x).argmax(1)}
    if keras_model is not None:
        top1 = {"float": lambda x: reference.float_outputs(keras_model, x).argmax(1), **top1}
    return {"x0": x0, "delta": delta, "top1": top1, "t": {name: first_flip(f, x0, delta) for name, f in top1.items()}}


def boundary_distance(clean: np.ndarray, adversarial: np.ndarray, tensor, tflite: bytes, keras_model=None) -> dict:
    """How far the float and the quantized model's decision boundaries are from each clean input, along the
    direction a minimal-perturbation attack (DeepFool, C&W, EAD, ...) found for it.

    clean and adversarial are the quantized inputs of a clean and an attacked condition (the same samples, in
    the same order, as Store.outputs gives them; tensor is the model's input tensor). With delta =
    dequantize(adversarial) - dequantize(clean), each model's boundary is at the smallest t in (0, 1] where its
    top-1 at clean + t * delta differs from its top-1 at clean (first_flip): the float model is evaluated at
    those float points, the quantized model at quantize(clean + t * delta) in the TFLM reference interpreter,
    whose outputs are bit-exact with the device's (the campaign checks device vs TFLM on every condition), so its
    boundary is the device's without querying the device. The distance of a sample is t * ||delta|| in the
    model's input units, L2 and L-inf.

    Per model ("float", absent without a float model, and "quantized"): "samples", the number of samples whose
    full delta changes that model's top-1 (the others have no boundary on the segment and are left out), and
    the mean and median of "t", "l2" and "linf" over them. "both": the samples whose full delta changes both
    models' top-1, the two models' L2 distances on those same samples (a paired comparison: each model's own
    "samples" differ) and the share of them where the quantized model's boundary is the closer one."""
    points = boundary_points(clean, adversarial, tensor, tflite, keras_model)
    flat = points["delta"].reshape(len(points["delta"]), -1).astype(np.float64)
    l2, linf = np.sqrt((flat**2).sum(axis=1)), np.abs(flat).max(axis=1)
    ts = points["t"]
    result: dict = {"samples": len(flat), "perturbed": int(np.count_nonzero(l2))}
    for name, t in ts.items():
        flipped = ~np.isnan(t)
        result[name] = {
            "samples": int(flipped.sum()),
            "t": _location(t[flipped]),
            "l2": _location((t * l2)[flipped]),
            "linf": _location((t * linf)[flipped]),
        }
    if "float" in ts:
        both = ~np.isnan(ts["float"]) & ~np.isnan(ts["quantized"])
        result["both"] = {
            "samples": int(both.sum()),
            "float_l2": _location((ts["float"] * l2)[both]),
            "quantized_l2": _location((ts["quantized"] * l2)[both]),
            "quantized_closer": _rate(ts["quantized"][both] < ts["float"][both]),
        }
    return result


# ---- examples of adversarial inputs, for the report ------------------------------------------------------------

EXAMPLES = 3


def is_image(shape) -> bool:
    """An input shape (with or without the batch dimension) the report can draw: height, width, 1 or 3 channels."""
    shape = tuple(shape)[-3:]
    return len(shape) == 3 and shape[-1] in (1, 3) and min(shape[:2]) > 1


def examples(outputs: dict, clean: dict, tensor, count: int = EXAMPLES) -> dict | None:
    """A few samples of an attacked condition for the report to draw, with their clean inputs (the clean
    condition's outputs): the samples the attack turned from right to wrong on the device first, then the others
    it changed, in sample order. Inputs are the quantized tensors, base64 (compact in results.json), with what
    decodes and dequantizes them. None when the inputs are not images or the samples differ."""
    import base64

    labels = outputs["labels"]
    if not is_image(tensor.shape) or len(clean["labels"]) != len(labels):
        return None
    device, before = outputs["device"].argmax(axis=1), clean["device"].argmax(axis=1)
    changed = np.any(outputs["input"] != clean["input"], axis=tuple(range(1, outputs["input"].ndim)))
    turned = changed & (before == labels) & (device != labels)
    order = [*np.flatnonzero(turned), *np.flatnonzero(changed & ~turned)][:count]

    def encode(q: np.ndarray) -> str:
        return base64.b64encode(np.ascontiguousarray(q).tobytes()).decode()

    return {
        "dtype": str(outputs["input"].dtype),
        "shape": [int(n) for n in tensor.shape[1:]],
        "scale": float(tensor.scale[0]),
        "zero_point": int(tensor.zero_point[0]),
        "samples": [
            {
                "sample": int(i),
                "label": int(labels[i]),
                "clean_top1": int(before[i]),
                "device_top1": int(device[i]),
                "clean": encode(clean["input"][i]),
                "input": encode(outputs["input"][i]),
            }
            for i in order
        ],
    }


def decode(group: dict, sample: dict, which: str) -> np.ndarray:
    """One example's input (which: "clean" or "input") from an examples() group, dequantized to the model's input
    units, shaped as the model's input without the batch dimension."""
    import base64

    q = np.frombuffer(base64.b64decode(sample[which]), dtype=group["dtype"]).reshape(group["shape"])
    return ((q.astype(np.float32) - group["zero_point"]) * group["scale"]).astype(np.float32)
