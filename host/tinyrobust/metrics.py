"""Numbers for one condition: accuracy of each engine, attack success, transfer, disagreement and distortion."""

from __future__ import annotations

import numpy as np

from . import reference

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
    device_scores = reference.dequantize(outputs["device"], compiled.output)
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
