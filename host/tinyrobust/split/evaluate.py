"""split-evaluate: a split network's head runs on the device and entropy-codes its latent there; the host
decodes the bytes the device sent, checks them against the head's symbols in TFLM, and runs the tail on them.
Per beta: clean inputs, the entropy and accuracy attacks and random sign noise at each eps, the 15 ImageNet-C
corruptions at severities 1 to 5, and clean and entropy-attacked inputs through the likelihood-weighted
total-variation defense (on the host) and through a device defense (pre-processing stages the firmware runs
before the head), each also against an entropy attack adapted to it (BPDA through the defense).

Every stream is decoded twice, by the Python reference and by the device's C decoder compiled for the host.
Bytes and accuracy are over the samples whose stream both decode to TFLM's symbols; any other sample is a
failure, counted in round_trip_exact and never averaged in.

Each condition is measured on its own (SplitInputs makes its inputs, measure sends them) and stored in the run's
SQLite store as it completes, so an interrupted run resumes where it stopped and the results are assembled from
what the store holds. The inputs of a condition are the same whenever they are made (every attack restarts its
noise), so a resumed run's results equal an uninterrupted one's. With jobs > 1 that many emulators share each
condition's samples; only this process writes the store, so the results are the same for any number of jobs. A
campaign's [split] section runs the same SplitRun in the campaign's store."""

from __future__ import annotations

import csv
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tinyrobust.build.firmware import Firmware, build_decoder, build_firmware
from tinyrobust.campaign.store import STORE_NAME, Store
from tinyrobust.compile import stages as device_stages
from tinyrobust.compile.model import compile_model
from tinyrobust.console import progress_bar
from tinyrobust.device.boards import DEFAULT_BOARD, Board, load_board
from tinyrobust.device.counter import latency
from tinyrobust.device.pool import Pool, Worker
from tinyrobust.device.targets import start_emulator
from tinyrobust.errors import UserError
from tinyrobust.model import reference
from tinyrobust.report.split import write_split_csv, write_split_report
from tinyrobust.split import attacks, coder
from tinyrobust.split.corruptions import CORRUPTIONS, corrupt
from tinyrobust.split.defense import defend
from tinyrobust.split.model import SplitModel, load_split, split_spec

STUDY_EPS = [2 / 255, 4 / 255, 8 / 255, 16 / 255, 32 / 255]  # the study's budgets
SEVERITIES = (1, 2, 3, 4, 5)  # ImageNet-C's
RUN_NAME = "split-evaluate"  # split-evaluate's run in its store; a campaign names its own


@dataclass
class SplitSettings:
    model: str = "split-digits"
    entropy_model: str | None = None  # factorized or hyperprior; None: the model's own
    board: str = DEFAULT_BOARD
    betas: list[float] | None = None  # None: every beta of the model's spec
    samples: int = 100
    eps: list[float] = field(default_factory=lambda: list(STUDY_EPS))
    attacks: list[str] = field(default_factory=lambda: list(attacks.KINDS))
    iterations: int = 20  # PGD steps
    eot: int = 16  # noise draws per step
    defense: bool = True  # also send clean and entropy-attacked inputs through the likelihood-weighted TV defense
    # Device pre-processing stages before the head (compile.stages), e.g. [{"stage": "median", "k": 3}]: clean and
    # entropy-attacked inputs also go to a build that runs them.
    device_defense: list[dict] = field(default_factory=list)
    adaptive: bool = True  # also attack each defense with the entropy attack through it (BPDA)
    corruptions: list[str] = field(default_factory=lambda: list(CORRUPTIONS))  # each at severities 1 to 5
    seed: int = 0
    data: str | None = None
    out: Path = Path("results-split")
    channel: str | None = None  # None: the board's default
    jobs: int = 1  # emulators side by side, sharing each condition's samples

    def recorded(self) -> dict:
        """What defines the run's results (not where they are written, nor how the device is reached)."""
        values = asdict(self)
        for how in ("out", "channel", "jobs"):
            del values[how]
        return values


@dataclass(frozen=True)
class SplitCondition:
    """One set of inputs sent to a split build, named as results.json names it."""

    kind: str  # clean, attack, noise, corruption or defense
    name: str  # clean, entropy, accuracy, sign noise, a corruption, "defended ..." or "device-defended ..."
    eps: float = 0.0
    severity: int | None = None

    @property
    def device_defended(self) -> bool:
        """Whether it runs on the build behind the device defense's stages."""
        return self.name.startswith("device-defended ")

    def key(self) -> str:
        """The condition as the store keys it."""
        return json.dumps(asdict(self), sort_keys=True)


def conditions(settings: SplitSettings) -> list[SplitCondition]:
    """A beta's conditions in the order they run: clean, each eps's attacks and sign noise, each corruption at
    every severity; then clean and every entropy attack (and with adaptive, the entropy attack through the
    defense) through the host's defense and on the device defense's build."""
    made = [SplitCondition("clean", "clean")]
    for eps in settings.eps:
        made += [SplitCondition("noise", "sign noise", eps) if name == "noise" else SplitCondition("attack", name, eps)
                 for name in settings.attacks]  # fmt: skip
    made += [SplitCondition("corruption", name, 0.0, severity) for name in settings.corruptions
             for severity in SEVERITIES]  # fmt: skip
    plain = [c for c in made if c.name in ("clean", "entropy")]
    if settings.adaptive:
        plain += [SplitCondition(c.kind, "adaptive entropy", c.eps) for c in plain if c.name == "entropy"]
    for prefix, wanted in (("defended", settings.defense), ("device-defended", bool(settings.device_defense))):
        if wanted:
            made += [SplitCondition("defense", f"{prefix} {c.name}", c.eps) for c in plain]
    return made


class SplitInputs:
    """Each condition's float inputs for one beta's model and samples, made when first asked for, so that a
    resumed run makes only what it still sends. Attacks are kept: the defended conditions send them again."""

    def __init__(self, model: SplitModel, settings: SplitSettings, tensor, x: np.ndarray, y: np.ndarray):
        self.model, self.settings, self.tensor, self.x, self.y = model, settings, tensor, x, y
        self._attacked: dict[tuple, np.ndarray] = {}

    def _through_stages(self, v: np.ndarray) -> np.ndarray:
        """What the head reads behind the device defense, in float (the stages' numpy reference, which the firmware
        equals byte for byte)."""
        read = device_stages.apply_stages_q(reference.quantize_inputs(v, self.tensor), self.settings.device_defense)
        return reference.dequantize(read, self.tensor).astype(np.float32)

    def _pgd(self, name: str, eps: float, through: str | None = None) -> np.ndarray:
        """The attack, adapted to the host's defense ("host") or the device's ("device") when through names one."""
        key = (name, eps, through)
        if key not in self._attacked:
            s = self.settings
            defense = {None: None, "host": lambda v: defend(self.model, v), "device": self._through_stages}[through]
            self._attacked[key] = attacks.pgd(self.model, name, self.x, self.y, eps, self.tensor, s.iterations, s.eot,
                                              seed=s.seed, defense=defense)  # fmt: skip
        return self._attacked[key]

    def __call__(self, c: SplitCondition) -> np.ndarray:
        s, x = self.settings, self.x
        if c.kind == "corruption":
            return corrupt(x, c.name, c.severity, s.seed)
        if c.kind == "noise":
            return attacks.sign_noise(x, c.eps, s.seed)
        prefix, plain = c.name.split(" ", 1) if c.kind == "defense" else ("", c.name)
        if plain == "clean":
            sent = x
        elif plain == "adaptive entropy":
            sent = self._pgd("entropy", c.eps, "host" if prefix == "defended" else "device")
        else:
            sent = self._pgd(plain, c.eps)
        return defend(self.model, sent) if prefix == "defended" else sent


def _summary(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "median": None, "max": None}
    return {"mean": float(np.mean(values)), "median": float(np.median(values)), "max": float(np.max(values))}


def measure(model: SplitModel, pool: Pool, native: coder.NativeDecoder, xq: np.ndarray, y: np.ndarray,
            stages: list[dict]) -> dict:  # fmt: skip
    """Each input's stream from the device, decoded (in Python and natively) and checked against TFLM's symbols
    (for the head behind the device's pre-processing stages, if any); bytes (their summary and each exactly
    decoded stream's size, for the report's distributions), ideal bytes, accuracy of the tail on the decoded
    symbols, and the head's and coder's ticks."""
    coding, shapes, hyper_decoder = model.coding, model.output_shapes, model.hyper_decoder()
    read = device_stages.apply_stages_q(xq, stages) if stages else xq
    expected = reference.tflm_every_output(model.head_tflite, read)  # y, and a hyperprior's z and h

    answers = pool.infer_all([q.tobytes() for q in xq], Worker.encode)
    natively = coding.decode_native(native, [a[0] for a in answers], shapes, hyper_decoder)
    sizes, ideal, exact, decoded, same_bytes = [], [], [], [], []
    for i, ((stream, _, _), got_natively) in enumerate(zip(answers, natively, strict=True)):
        outputs = [e[i] for e in expected]
        same_bytes.append(stream == coding.encode(outputs))
        try:
            got = coding.decode(stream, shapes, hyper_decoder)
        except coder.MalformedStream:
            got = None
        exact.append(all(g is not None and all(np.array_equal(a, o) for a, o in zip(g, outputs, strict=False))
                         for g in (got, got_natively)))  # fmt: skip
        if exact[-1]:
            sizes.append(len(stream))
            ideal.append(coding.ideal_bits(outputs) / 8)
            decoded.append(got[0])
    right = None
    if decoded:
        logits = model.tail.predict(np.stack(decoded).astype(np.float32), verbose=0)
        right = float(np.mean(logits.argmax(axis=1) == y[np.array(exact)]))
    return {
        "samples": len(xq),
        "bytes": _summary(sizes),
        "bytes_per_sample": sizes,
        "ideal_bytes_mean": float(np.mean(ideal)) if ideal else None,
        "accuracy": right,
        "round_trip_exact": float(np.mean(exact)),
        "stream_equals_reference": float(np.mean(same_bytes)),  # the device's bytes are the Python encoder's
        "head_ticks": [a[1] for a in answers],
        "coder_ticks": [a[2] for a in answers],
    }


def check_settings(settings: SplitSettings) -> tuple[dict, Board, list[float]]:
    """Refuse, before anything runs, settings that cannot run, and resolve in settings the entropy model and the
    device defense's stages: the model's spec, the board and the betas to run."""
    if settings.samples < 1:
        raise UserError(f"--samples must be at least 1, not {settings.samples}")
    if settings.jobs < 1:
        raise UserError(f"--jobs must be at least 1, not {settings.jobs}")
    unknown = sorted(set(settings.attacks) - set(attacks.KINDS))
    if unknown:
        raise UserError(f"unknown split attack {', '.join(unknown)}; choose from: {', '.join(attacks.KINDS)}")
    unknown = sorted(set(settings.corruptions) - set(CORRUPTIONS))
    if unknown:
        raise UserError(f"unknown corruption {', '.join(unknown)}; choose from: {', '.join(CORRUPTIONS)}")
    spec = split_spec(settings.model, settings.entropy_model)
    settings.entropy_model = spec["split"]["entropy_model"]
    board = load_board(settings.board)
    if not board.emulated:
        raise UserError(f"split-evaluate runs on an emulated board for now; {board.name} is a real one")
    settings.device_defense = device_stages.canonical(settings.device_defense)
    return spec, board, settings.betas or spec["split"]["betas"]


class SplitRun:
    """Every beta's conditions, each measured unless the store already holds it and stored as it completes; then
    results.json, conditions.csv, summary.csv, coder.csv and report.html in settings.out, from the store. The
    settings are checked when the run is made; name tells the run apart from others in the same store."""

    def __init__(self, settings: SplitSettings, name: str = RUN_NAME):
        self.settings, self.name = settings, name
        self.spec, self.board, self.betas = check_settings(settings)
        self.channel = settings.channel or self.board.default_channel

    def _claim(self) -> None:
        """Refuse a store whose run of this name had other settings; record this one's."""
        recorded = {**self.settings.recorded(), "betas": self.betas}
        digest = hashlib.sha256(json.dumps(recorded, sort_keys=True).encode()).hexdigest()
        key = f"split settings_sha256 {self.name}"
        if self.store.get_meta(key) not in (None, digest):
            raise UserError(f"{self.settings.out} holds a split run with other settings; resume it with the settings "
                            "it began with, or choose another --out")  # fmt: skip
        self.store.set_meta(key, digest)

    def _check_model(self, beta: float, stages: list[dict], firmware_hash: bytes) -> None:
        """Refuse, before its firmware is built over the run's, to resume a run whose model changed."""
        key = f"split model_sha256 {self.name} beta{beta:g}" + (" device-defense" if stages else "")
        if self.store.get_meta(key) not in (None, firmware_hash.hex()):
            raise UserError(f"the split model changed since the run in {self.settings.out} began; start a new run "
                            "with another --out")  # fmt: skip
        self.store.set_meta(key, firmware_hash.hex())

    def run(self, store: Store, progress: bool = True) -> dict:
        s, self.store = self.settings, store
        started = time.monotonic()
        self._claim()
        s.out.mkdir(parents=True, exist_ok=True)
        todo = conditions(s)
        done = sum(len(store.split_measured(self.name, beta)) for beta in self.betas)
        self.native = coder.NativeDecoder(build_decoder(s.out / "firmware"))
        self.bar = progress_bar(len(self.betas) * len(todo) * s.samples, "inference", progress,
                                initial=done * s.samples)  # fmt: skip
        rows, coders = [], []
        try:
            for beta in self.betas:
                self.bar.set_description(f"{s.model} beta {beta:g}: training or loading")
                model = load_split(s.model, beta, Path(s.data) if s.data else None, s.entropy_model)
                chosen = np.sort(np.random.default_rng(s.seed).permutation(len(model.x_test))[: s.samples])
                x, y = model.x_test[chosen], model.y_test[chosen]
                inputs = SplitInputs(model, s, compile_model(model.head_tflite).input, x, y)
                folder = s.out / "firmware" / f"beta{beta:g}"
                firmware = self._measure(model, inputs, [c for c in todo if not c.device_defended], [], folder)
                if s.device_defense:
                    self._measure(model, inputs, [c for c in todo if c.device_defended], s.device_defense,
                                  folder / "device-defense")  # fmt: skip
                more, cost = self._assemble(beta, model, todo, firmware)
                rows += more
                coders.append(cost)
        finally:
            self.bar.close()
        results = {
            "model": s.model,
            "data_set": s.data or self.spec["dataset"],
            "board": self.board.name,
            "unit": "instructions (emulated)",
            "device_defense": s.device_defense,
            "settings": {**asdict(s), "out": str(s.out)},
            "conditions": rows,
            "coder": coders,
            "wall_seconds": round(time.monotonic() - started, 1),
        }
        save(results, s.out)
        return results

    def _measure(self, model: SplitModel, inputs: SplitInputs, wanted: list[SplitCondition], stages: list[dict],
                 folder: Path) -> Firmware:  # fmt: skip
        """The wanted conditions the store does not hold, sent to a build of the head (behind the device defense's
        stages, if any) on settings.jobs emulators; the firmware."""
        s = self.settings
        compiled = compile_model(model.head_tflite, preprocess=stages)
        firmware_hash = model.coding.firmware_hash(compiled.model_hash)
        self._check_model(model.beta, stages, firmware_hash)
        firmware = build_firmware(compiled, self.board, folder, self.channel, coding=model.coding)
        stored = self.store.split_measured(self.name, model.beta)
        pending = [c for c in wanted if c.key() not in stored]
        if not pending:
            return firmware
        logs = [firmware.elf.parent / f"emulator{i or ''}.log" for i in range(min(s.jobs, s.samples))]
        pool = Pool([Worker(start_emulator(self.board, firmware.elf, self.channel, log=log), firmware_hash)
                     for log in logs])  # fmt: skip
        try:
            for c in pending:
                self.bar.set_description(f"{s.model} beta {model.beta:g} {c.name} {c.eps:.4g}")
                xq = reference.quantize_inputs(inputs(c), compiled.input)
                measured = measure(model, pool, self.native, xq, inputs.y, stages)
                self.store.add_split_measured(self.name, model.beta, c.key(), measured)
                self.bar.update(len(xq))
        finally:
            pool.close()
        return firmware

    def _assemble(self, beta: float, model: SplitModel, todo: list[SplitCondition], firmware: Firmware):
        """A beta's rows of results.json's conditions and its row of coder, from the store."""
        stored = self.store.split_measured(self.name, model.beta)
        rows, head, code, defended_head = [], [], [], []
        for c in todo:
            measured = dict(stored[c.key()])
            (defended_head if c.device_defended else head).extend(measured.pop("head_ticks"))
            ticks = measured.pop("coder_ticks")
            if not c.device_defended:
                code += ticks
            rows.append({"severity": c.severity, "kind": c.kind, "name": c.name, "eps": c.eps, **measured})
        clean_mean = next(r["bytes"]["mean"] for r in rows if r["kind"] == "clean")
        for r in rows:
            mean = r["bytes"]["mean"]
            overhead = None if mean is None or not clean_mean else mean / clean_mean - 1
            r.update({"beta": beta, "entropy_model": self.settings.entropy_model, "overhead_vs_clean": overhead})
        symbols = sum(int(np.prod(shape)) for shape in model.output_shapes[: model.coding.symbol_outputs])
        head_instructions, coder_instructions = (latency(self.board, t)["per_inference"]["median"]
                                                 for t in (head, code))  # fmt: skip
        cost = {"beta": beta, "symbols_per_inference": symbols,
                "head_instructions": head_instructions, "coder_instructions": coder_instructions,
                "instructions_per_symbol": coder_instructions / symbols,
                "coder_share_of_head": coder_instructions / head_instructions,
                # The head's instructions behind the device defense: its stages' cost is the difference.
                "device_defended_head_instructions":
                    latency(self.board, defended_head)["per_inference"]["median"] if defended_head else None,
                "table_flash_bytes": firmware.memory.coding_bytes,
                "flash_bytes": firmware.memory.flash_bytes}  # fmt: skip
        return rows, cost


def split_evaluate(settings: SplitSettings, progress: bool = True, resume: bool = False) -> dict:
    """split-evaluate: a SplitRun in settings.out's own store. A folder that holds a run is refused unless resuming,
    when only what its store lacks is measured."""
    run = SplitRun(settings)
    path = settings.out / STORE_NAME
    if path.is_file() and not resume:
        raise UserError(f"{settings.out} already holds a run; continue it with --resume or choose another --out")
    settings.out.mkdir(parents=True, exist_ok=True)
    store = Store(path)
    try:
        return run.run(store, progress)
    finally:
        store.close()


def save(results: dict, out: Path) -> None:
    """results.json, conditions.csv, summary.csv, coder.csv and report.html."""
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    _write_csv(results["conditions"], out / "conditions.csv")
    write_split_csv(results, out)
    # Last: should a plot fail, the measurements are already saved.
    write_split_report(results, out / "report.html")


def _write_csv(rows: list[dict], path: Path) -> None:
    columns = ["kind", "name", "eps", "severity", "beta", "entropy_model", "samples", "bytes_mean", "bytes_median",
               "bytes_max", "ideal_bytes_mean", "overhead_vs_clean", "accuracy", "round_trip_exact"]  # fmt: skip
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for r in rows:
            flat = {k: r.get(k) for k in columns}
            flat.update({f"bytes_{k}": v for k, v in r["bytes"].items()})
            writer.writerow(flat)
