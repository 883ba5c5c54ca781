"""flash-and-evaluate: build the model's firmware, run it on the device, and compare it with the host."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__, attacks, reference, zoo
from .boards import Board, load_board
from .build import build_firmware
from .compiler import CompiledModel, compile_model
from .emulator import Emulator, instructions_per_tick
from .errors import UserError
from .link import Device, handshake


@dataclass
class Settings:
    model: str = "digits-cnn"  # a built-in name or a .tflite path
    float_model: Path | None = None
    data: Path | None = None
    board: str = "qemu-mps2-an386"
    samples: int = 200
    attacks: list[str] = field(default_factory=lambda: ["fgsm", "pgd"])
    eps: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2])
    seed: int = 0
    out: Path = Path("results")


def load_model(settings: Settings) -> zoo.Model:
    if settings.model.endswith(".tflite"):
        return zoo.load_user(Path(settings.model), settings.float_model, settings.data)
    if settings.float_model or settings.data:
        raise UserError("--float-model and --data go with a .tflite file passed to --model, not a built-in model")
    return zoo.load_builtin(settings.model)


def rates(outputs: dict[str, np.ndarray], labels: np.ndarray) -> dict:
    """Accuracy of each engine and the agreements between them, as rates in [0, 1]."""
    top1 = {name: out.argmax(axis=1) for name, out in outputs.items()}
    accuracy = {name: float(np.mean(pred == labels)) for name, pred in top1.items()}
    return {
        "accuracy": accuracy,
        "agreement": {
            "device_vs_tflm_bit_exact": float(np.mean(np.all(outputs["device"] == outputs["tflm"], axis=1))),
            "device_vs_tflite_top1": float(np.mean(top1["device"] == top1["tflite"])),
            "tflite_vs_tflm_bit_exact": float(np.mean(np.all(outputs["tflite"] == outputs["tflm"], axis=1))),
        },
    }


class Evaluation:
    """One flash-and-evaluate run; results.json is rewritten after every (attack, eps) so none is lost."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.out = settings.out
        self.runs: list[dict] = []
        self.raw: dict[str, np.ndarray] = {}
        self.ticks: list[int] = []
        self.started = time.monotonic()
        self.notes: list[str] = []

    def run(self, progress: bool = True) -> dict:
        s = self.settings
        if s.samples < 1:
            raise UserError(f"--samples must be at least 1, not {s.samples}")
        attacks.check_names(s.attacks)
        board = load_board(s.board)
        self.out.mkdir(parents=True, exist_ok=True)
        model = load_model(s)
        compiled = compile_model(model.tflite)
        firmware = build_firmware(compiled, board, self.out / "firmware")
        self.context = (model, compiled, board, firmware)

        rng = np.random.default_rng(s.seed)
        chosen = np.sort(rng.permutation(len(model.x_test))[: s.samples])
        x, y = model.x_test[chosen], model.y_test[chosen]
        conditions = [("none", 0.0)]
        if model.keras is not None:
            conditions += [(a, float(e)) for a in s.attacks for e in s.eps]
        elif s.attacks:
            self.notes.append("no float model was given (--float-model), so only clean inputs were evaluated")
        classifier = None
        if model.keras is not None and len(conditions) > 1:
            lo, hi = (reference.dequantize(np.array([-128, 127]), compiled.input)).tolist()
            classifier = attacks.classifier(model.keras, (lo, hi))

        from tqdm import tqdm

        bar = tqdm(total=len(conditions) * len(x), unit="inference", disable=not progress or None)
        emulator = Emulator(board, firmware.elf, log=self.out / "firmware" / "emulator.log")
        try:
            with emulator:
                device = Device(emulator.start())
                handshake(device, compiled.model_hash)
                for attack, eps in conditions:
                    bar.set_description(f"{attack} eps={eps:g}")
                    x_adv = x if attack == "none" else attacks.generate(attack, classifier, x, y, eps, s.seed)
                    self._run_condition(attack, eps, x_adv, y, model, compiled, device, bar)
        finally:
            bar.close()
            if self.runs:
                self.save()
        return self.results()

    def _run_condition(self, attack, eps, x_adv, y, model, compiled: CompiledModel, device: Device, bar) -> None:
        xq = reference.quantize_inputs(x_adv, compiled.input)
        outputs = {
            "tflite": reference.tflite_outputs(model.tflite, xq),
            "tflm": reference.tflm_outputs(model.tflite, xq),
        }
        if model.keras is not None:
            outputs["float"] = reference.float_outputs(model.keras, reference.dequantize(xq, compiled.input))
        device_out = []
        for sample in xq:
            raw, ticks = device.infer(sample.tobytes())
            device_out.append(np.frombuffer(raw, dtype=np.int8))
            self.ticks.append(ticks)
            bar.update()
        outputs["device"] = np.stack(device_out)
        run = {"attack": attack, "eps": eps, "samples": len(xq), **rates(outputs, y)}
        if "float" not in outputs:
            run["accuracy"]["float"] = None
        self.runs.append(run)
        key = f"{attack}_eps{eps:g}"
        self.raw[f"{key}_input"] = xq
        self.raw["labels"] = y
        for name, out in outputs.items():
            self.raw[f"{key}_{name}"] = out

    def results(self) -> dict:
        model, compiled, board, firmware = self.context
        return {
            "tinyrobust_version": __version__,
            "model": {
                "name": model.name,
                "sha256": compiled.model_hash.hex(),
                "input": {
                    "shape": list(compiled.input.shape),
                    "scale": float(compiled.input.scale[0]),
                    "zero_point": int(compiled.input.zero_point[0]),
                },
                "operators": compiled.op_counts,
            },
            "board": board_summary(board),
            "memory": firmware.memory.as_dict(),
            "latency": self.latency(board),
            "runs": self.runs,
            "settings": {
                "samples": self.settings.samples,
                "attacks": self.settings.attacks,
                "eps": self.settings.eps,
                "seed": self.settings.seed,
            },
            "notes": self.notes,
            "host": {"python": platform.python_version(), "machine": platform.machine()},
            "wall_seconds": round(time.monotonic() - self.started, 2),
        }

    def latency(self, board: Board) -> dict:
        per_tick = instructions_per_tick(board)
        counts = np.array(self.ticks, dtype=np.float64) * per_tick
        summary = {"median": None, "min": None, "max": None}
        if len(counts):
            summary = {
                "median": float(np.median(counts)),
                "min": float(counts.min()),
                "max": float(counts.max()),
            }
        return {
            "unit": "instructions",
            "source": "SysTick in QEMU with -icount shift=0: executed instructions (emulated), not cycles",
            "per_inference": summary,
            "inferences": len(counts),
        }

    def save(self) -> None:
        from .report import write_report

        results = self.results()
        (self.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        np.savez_compressed(self.out / "outputs.npz", **self.raw)
        write_report(results, self.out / "report.html")


def board_summary(board: Board) -> dict:
    return {"name": board.name, "core": board.core, "fpu": board.fpu, "emulated": board.emulated}


def flash_and_evaluate(settings: Settings, progress: bool = True) -> dict:
    return Evaluation(settings).run(progress)
