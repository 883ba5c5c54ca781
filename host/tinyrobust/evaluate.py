"""flash-and-evaluate: build the model's firmware, run it on the device, and compare it with the host.

Every measured sample goes to the run's SQLite store as it arrives, so an interrupted run resumes where it
stopped and the results are always computed from what the store holds."""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__, attacks, reference, zoo
from .boards import Board, load_board
from .build import build_firmware
from .compiler import compile_model
from .emulator import instructions_per_tick
from .errors import UserError
from .link import Device, LinkError
from .store import Store
from .targets import EmulatorTarget, SerialTarget
from .validate import check_precision

STORE_NAME = "results.sqlite"
# How often one sample may lose its link (reconnect, then restart the device) before the run gives up.
MAX_RECOVERIES = 4


@dataclass
class Settings:
    model: str = "digits-cnn"  # a built-in name or a .tflite path
    precision: str = "int8"  # "int8" or "int16x8" (16-bit activations, 8-bit weights)
    float_model: str | None = None
    data: str | None = None
    board: str = "qemu-mps2-an386"
    samples: int = 200
    attacks: list[str] = field(default_factory=lambda: ["fgsm", "pgd"])
    eps: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2])
    seed: int = 0
    out: Path = Path("results")
    channel: str | None = None  # "uart" or "semihosting"; None: the board's default (semihosting when emulated)
    port: str | None = None  # a pyserial URL of a device already running; None: start an emulator
    flash_with: str = "pyocd"  # how a real board is flashed before evaluating: "pyocd", "mbed" or "none"

    def recorded(self) -> dict:
        """What defines the run's results (not where they are written, nor how the device is reached)."""
        values = dataclasses.asdict(self)
        for how in ("out", "channel", "port", "flash_with"):
            del values[how]
        return values


def load_model(settings: Settings) -> zoo.Model:
    if settings.model.endswith(".tflite"):
        optional = [Path(p) if p else None for p in (settings.float_model, settings.data)]
        return zoo.load_user(Path(settings.model), *optional)
    if settings.float_model or settings.data:
        raise UserError("--float-model and --data go with a .tflite file passed to --model, not a built-in model")
    return zoo.load_builtin(settings.model, settings.precision)


def resume_settings(out: Path) -> Settings:
    """The settings of the interrupted run in out."""
    path = out / STORE_NAME
    if not path.is_file():
        raise UserError(f"{out} holds no run to resume (no {STORE_NAME}); start one with --out {out}")
    store = Store(path)
    recorded = store.get_meta("settings")
    store.close()
    if recorded is None:
        raise UserError(f"{path} was created but its run never started; start it again with --out {out}")
    return Settings(**recorded, out=out)


def rates(outputs: dict[str, np.ndarray], labels: np.ndarray) -> dict:
    """Accuracy of each engine and the agreements between them, as rates in [0, 1]."""
    top1 = {name: out.argmax(axis=1) for name, out in outputs.items()}
    accuracy = {name: float(np.mean(top1[name] == labels)) if name in top1 else None for name in ENGINES}
    return {
        "accuracy": accuracy,
        "agreement": {
            "device_vs_tflm_bit_exact": float(np.mean(np.all(outputs["device"] == outputs["tflm"], axis=1))),
            "device_vs_tflite_top1": float(np.mean(top1["device"] == top1["tflite"])),
            "tflite_vs_tflm_bit_exact": float(np.mean(np.all(outputs["tflite"] == outputs["tflm"], axis=1))),
        },
    }


ENGINES = ("float", "tflite", "tflm", "device")


class Evaluation:
    def __init__(self, settings: Settings, connect=None):
        self.settings = settings
        self.out = settings.out
        self.connect = connect or self._start_target  # connect(board, elf) -> a started target
        self.started = time.monotonic()
        self.notes: list[str] = []
        self.link = {"retransmissions": 0, "device_resets": 0, "reconnects": 0, "device_restarts": 0}
        self.device: Device | None = None

    def run(self, progress: bool = True) -> dict:
        s = self.settings
        if s.samples < 1:
            raise UserError(f"--samples must be at least 1, not {s.samples}")
        attacks.check_names(s.attacks)
        self.board = load_board(s.board)
        self.channel = channel_for(self.board, s)
        self.counter = self.board.counter  # until the device says which counter it uses
        self.out.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.out / STORE_NAME)
        try:
            return self._run(progress)
        finally:
            self.store.close()

    def _run(self, progress: bool) -> dict:
        s, store = self.settings, self.store
        recorded = store.get_meta("settings")
        if recorded is not None and recorded != s.recorded():
            raise UserError(
                f"{self.out} already holds a run with other settings; resume it with --resume {self.out} "
                "or choose another --out"
            )
        store.set_meta("settings", s.recorded())
        self.model = load_model(s)
        self.compiled = compile_model(self.model.tflite)
        check_precision(self.compiled, s.precision)
        sha = self.compiled.model_hash.hex()
        if store.get_meta("model_sha256") not in (None, sha):
            raise UserError(f"the model changed since the run in {self.out} began; start a new run with another --out")
        store.set_meta("model_sha256", sha)
        self.firmware = build_firmware(self.compiled, self.board, self.out / "firmware", self.channel)

        rng = np.random.default_rng(s.seed)
        chosen = np.sort(rng.permutation(len(self.model.x_test))[: s.samples])
        x, y = self.model.x_test[chosen], self.model.y_test[chosen]
        self.conditions = [("none", 0.0)]
        if self.model.keras is not None:
            self.conditions += [(a, float(e)) for a in s.attacks for e in s.eps]
        elif s.attacks:
            self.notes.append("no float model was given (--float-model), so only clean inputs were evaluated")

        from tqdm import tqdm

        total = len(self.conditions) * len(x)
        done = len(store.ticks())
        bar = tqdm(total=total, initial=done, unit="inference", disable=not progress or None)
        self.target = self.connect(self.board, self.firmware.elf)
        try:
            self._recovering(lambda: None)  # connect and check the model before the attacks are made
            for attack, eps in self.conditions:
                bar.set_description(f"{attack} eps={eps:g}")
                condition = store.condition(attack, eps)
                if not store.has_samples(condition):
                    self._add_samples(condition, attack, eps, x, y)
                for sample, tensor in store.pending(condition):
                    output, ticks = self._recovering(lambda tensor=tensor: self.device.infer(tensor))
                    store.add_device_output(condition, sample, output, ticks)
                    bar.update()
                self.save()
        finally:
            bar.close()
            self.target.close()
            if store.ticks():
                self.save()
        return self.results()

    def _add_samples(self, condition: int, attack: str, eps: float, x, y) -> None:
        """Make the condition's inputs and the host references for them, stored before the device runs."""
        model, tensor = self.model, self.compiled.input
        if attack == "none":
            x_adv = x
        else:
            limits = np.iinfo(tensor.dtype)
            lo, hi = reference.dequantize(np.array([limits.min, limits.max]), tensor).tolist()
            classifier = attacks.classifier(model.keras, (lo, hi))
            x_adv = attacks.generate(attack, classifier, x, y, eps, self.settings.seed)
        xq = reference.quantize_inputs(x_adv, tensor)
        floats = None
        if model.keras is not None:
            floats = reference.float_outputs(model.keras, reference.dequantize(xq, tensor))
        tflite = reference.tflite_outputs(model.tflite, xq)
        tflm = reference.tflm_outputs(model.tflite, xq)
        self.store.add_samples(condition, y, xq, tflite, tflm, floats)

    def _start_target(self, board: Board, elf: Path):
        """The device this run's settings name: an already running one at --port (a real board is flashed
        first), or a new emulator."""
        s = self.settings
        if s.port is None:
            return start_emulator(board, elf, self.channel)
        if not board.emulated and s.flash_with != "none":
            from .flashing import flash

            flash(board, elf, s.flash_with)
        return SerialTarget(s.port, board).start()

    def _connect(self) -> None:
        if self.device is not None:
            self.device.port.close()  # an emulator serves one client: free its place first
        self.device = Device(self.target.open(), self.target.bytes_per_s)
        self.counter = self.device.handshake(self.compiled.model_hash).counter

    def _recovering(self, action):
        """Run action on the device, surviving a lost connection (reconnect) or a silent device (restart)."""
        import serial

        problem: Exception | None = None
        for attempt in range(MAX_RECOVERIES + 1):
            try:
                if attempt:
                    restartable = getattr(self.target, "restartable", True)
                    if restartable and (attempt > 1 or isinstance(problem, LinkError)):
                        self.link["device_restarts"] += 1
                        self.target.restart()
                    self.link["reconnects"] += 1
                if attempt or self.device is None:
                    self._connect()
                return action()
            except (LinkError, serial.SerialException, OSError) as exc:
                problem = exc
            finally:
                if self.device is not None:
                    self.link["retransmissions"] += self.device.retransmissions
                    self.link["device_resets"] += self.device.resets
                    self.device.retransmissions = self.device.resets = 0
        raise LinkError(f"the device stopped answering after {MAX_RECOVERIES} recoveries ({problem})")

    def results(self) -> dict:
        runs = []
        for attack, eps in self.conditions:
            condition = self.store.condition(attack, eps)
            if self.store.pending(condition) or not self.store.has_samples(condition):
                continue
            outputs = self.store.outputs(condition, self.compiled.output.dtype, self.compiled.input.dtype)
            labels = outputs.pop("labels")
            outputs.pop("input")
            runs.append({"attack": attack, "eps": eps, "samples": len(labels), **rates(outputs, labels)})
        compiled, board = self.compiled, self.board
        return {
            "tinyrobust_version": __version__,
            "model": {
                "name": self.model.name,
                "sha256": compiled.model_hash.hex(),
                "input": {
                    "shape": list(compiled.input.shape),
                    "scale": float(compiled.input.scale[0]),
                    "zero_point": int(compiled.input.zero_point[0]),
                },
                "operators": compiled.op_counts,
            },
            "board": {"name": board.name, "core": board.core, "fpu": board.fpu, "emulated": board.emulated},
            "memory": self.firmware.memory.as_dict(),
            "latency": latency(board, self.store.ticks(), self.counter),
            "runs": runs,
            "link": self.link,
            "settings": self.settings.recorded(),
            "notes": self.notes,
            "host": {"python": platform.python_version(), "machine": platform.machine()},
            "wall_seconds": round(time.monotonic() - self.started, 2),
        }

    def save(self) -> None:
        from .report import write_report

        results = self.results()
        (self.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        write_report(results, self.out / "report.html")


def _summary(values: np.ndarray) -> dict:
    if not len(values):
        return {"median": None, "min": None, "max": None}
    return {"median": float(np.median(values)), "min": float(values.min()), "max": float(values.max())}


def latency(board: Board, ticks: list[int], counter: str = "systick") -> dict:
    """Per-inference counts in the unit of the counter the device reported: executed instructions in the
    emulator (SysTick under -icount), core cycles on hardware (DWT CYCCNT, or SysTick), with milliseconds."""
    counts = np.array(ticks, dtype=np.float64)
    if board.emulated and counter == "systick":
        return {
            "unit": "instructions",
            "source": "SysTick in QEMU with -icount shift=0: executed instructions (emulated), not cycles",
            "per_inference": _summary(counts * instructions_per_tick(board)),
            "inferences": len(counts),
        }
    source = "DWT CYCCNT" if counter == "dwt" else "SysTick (core clock)"
    return {
        "unit": "cycles",
        "source": f"{source} on {board.name}: core clock cycles; milliseconds at {board.clock_hz / 1e6:g} MHz",
        "per_inference": _summary(counts),
        "milliseconds": _summary(counts * 1000.0 / board.clock_hz),
        "inferences": len(counts),
    }


def channel_for(board: Board, settings: Settings) -> str:
    """The host channel to build for: a device reached through --port speaks over its UART."""
    if settings.port is not None:
        if settings.channel not in (None, "uart"):
            raise UserError(f"--port reaches a device's UART; --channel {settings.channel} needs the emulator")
        return "uart"
    return settings.channel or board.default_channel


def start_emulator(board: Board, elf: Path, channel: str = "uart") -> EmulatorTarget:
    return EmulatorTarget(board, elf, log=elf.parent / "emulator.log", channel=channel).start()


def flash_and_evaluate(settings: Settings, progress: bool = True, connect=None) -> dict:
    return Evaluation(settings, connect).run(progress)
