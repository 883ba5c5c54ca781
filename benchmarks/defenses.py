"""Every defense on digits-cnn: clean and PGD accuracy (white-box on the float model the defense gives, the
adversarial inputs then run through the int8 model in TFLite Micro's reference kernels); training time for the
training defenses (cached afterwards). A markdown table and JSON.

    python benchmarks/defenses.py [--samples 200] [--eps 0.1] [--json defenses.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from tinyrobust.campaign import attacks, defenses
from tinyrobust.compile.model import compile_model
from tinyrobust.model import zoo
from tinyrobust.model.quantize import quantize
from tinyrobust.model.reference import quantize_inputs, tflm_outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--json", type=Path, default=Path("defenses.json"))
    args = parser.parse_args()
    started = time.monotonic()
    model = zoo.load_builtin("digits-cnn")
    x_train, y_train, _, _ = zoo.load_dataset(zoo.builtin_spec("digits-cnn"))
    x, y = model.x_test[: args.samples], model.y_test[: args.samples]

    def measure(keras_model, tflite: bytes, pre=lambda v: v) -> dict:
        """Accuracy of the float and int8 models on clean and PGD inputs, each pre-processed by pre."""
        adversarial = attacks.generate("pgd", attacks.classifier(keras_model, (0.0, 1.0)), x, y, args.eps, 0)
        tensor = compile_model(tflite).input
        row = {}
        for condition, inputs in (("clean", x), ("pgd", adversarial)):
            inputs = pre(inputs)
            floats = np.asarray(keras_model.predict(inputs, verbose=0))
            int8 = tflm_outputs(tflite, quantize_inputs(inputs, tensor))
            row[f"{condition}_float"] = float(np.mean(floats.argmax(axis=1) == y))
            row[f"{condition}_int8"] = float(np.mean(int8.argmax(axis=1) == y))
        return row

    rows = [{"defense": "none", **measure(model.keras, model.tflite)}]
    for name, d in defenses.DEFENSES.items():
        params = {"pixel_cnn": defenses.pixel_cnn(x_train)} if name == "pixeldefend" else {}
        if d.kind == "input":
            configured = defenses.make(name, "mnist" if "mnist" in d.presets else None, **params)
            # adaptive attacks are out of scope: the attack sees the undefended model, then the defense runs
            rows.append({"defense": name, "params": configured.params | {"pixel_cnn": None} if params else
                         configured.params, **measure(model.keras, model.tflite, configured.apply)})  # fmt: skip
            continue
        configured = defenses.make(name, "digits")
        began = time.monotonic()
        trained = configured.train(model.keras, x_train, y_train)
        seconds = round(time.monotonic() - began, 1)
        rows.append({"defense": name, "params": configured.params, "train_seconds": seconds,
                     **measure(trained, quantize(trained, x_train))})  # fmt: skip
    print(f"digits-cnn, {args.samples} test samples, PGD eps {args.eps} (white-box on the float model, transferred)")
    print("| defense | clean float | clean int8 (TFLM) | PGD float | PGD int8 (TFLM) | train s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        values = " | ".join(f"{r[k]:.3f}" for k in ("clean_float", "clean_int8", "pgd_float", "pgd_int8"))
        print(f"| {r['defense']} | {values} | {r.get('train_seconds', '')} |")
    results = {"model": "digits-cnn", "eps": args.eps, "samples": args.samples, "rows": rows,
               "wall_seconds": round(time.monotonic() - started, 1)}  # fmt: skip
    args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wall time {results['wall_seconds']} s; written to {args.json}")


if __name__ == "__main__":
    main()
