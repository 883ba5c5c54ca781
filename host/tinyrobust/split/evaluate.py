"""split-evaluate: a split network's head runs on the device and entropy-codes its latent there; the host
decodes the bytes the device sent, checks them against the head's symbols in TFLM, and runs the tail on them.
Per beta: clean inputs, the entropy and accuracy attacks and random sign noise at each eps, the 15 ImageNet-C
corruptions at severities 1 to 5, and clean and entropy-attacked inputs through the likelihood-weighted
total-variation defense (on the host) and through a device defense (pre-processing stages the firmware runs
before the head), each also against an entropy attack adapted to it (BPDA through the defense).

Every stream is decoded twice, by the Python reference and by the device's C decoder compiled for the host.
Bytes and accuracy are over the samples whose stream both decode to TFLM's symbols; any other sample is a
failure, counted in round_trip_exact and never averaged in."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tinyrobust.build.firmware import build_decoder, build_firmware
from tinyrobust.compile import stages as device_stages
from tinyrobust.compile.model import compile_model
from tinyrobust.console import progress_bar
from tinyrobust.device.boards import DEFAULT_BOARD, load_board
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


def _summary(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "median": None, "max": None}
    return {"mean": float(np.mean(values)), "median": float(np.median(values)), "max": float(np.max(values))}


def _measure(model: SplitModel, pool: Pool, native: coder.NativeDecoder, xq: np.ndarray, y: np.ndarray, bar,
             stages: list[dict]) -> dict:  # fmt: skip
    """Each input's stream from the device, decoded (in Python and natively) and checked against TFLM's symbols
    (for the head behind the
    device's pre-processing stages, if any); bytes (their summary and each exactly decoded stream's size, for the
    report's distributions), ideal bytes, accuracy of the tail on the decoded symbols, and the head's and coder's
    ticks."""
    coding, shapes, hyper_decoder = model.coding, model.output_shapes, model.hyper_decoder()
    read = device_stages.apply_stages_q(xq, stages) if stages else xq
    expected = reference.tflm_every_output(model.head_tflite, read)  # y, and a hyperprior's z and h

    answers = pool.infer_all([q.tobytes() for q in xq], Worker.encode)
    bar.update(len(xq))
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


def _inputs(model: SplitModel, settings: SplitSettings, tensor, x, y) -> list[tuple[dict, np.ndarray]]:
    """(condition, float inputs) for the undefended device: clean and each attack and eps, the corruptions, and
    with the host's defense clean and every entropy attack through it, transferred and adaptive."""

    def pgd(name: str, eps: float, defense=None) -> np.ndarray:
        return attacks.pgd(model, name, x, y, eps, tensor, settings.iterations, settings.eot, seed=settings.seed,
                           defense=defense)  # fmt: skip

    made = [({"kind": "clean", "name": "clean", "eps": 0.0}, x)]
    for eps in settings.eps:
        for name in settings.attacks:
            if name == "noise":
                made.append(({"kind": "noise", "name": "sign noise", "eps": eps},
                             attacks.sign_noise(x, eps, settings.seed)))  # fmt: skip
            else:
                made.append(({"kind": "attack", "name": name, "eps": eps}, pgd(name, eps)))
    for name in settings.corruptions:
        made += [({"kind": "corruption", "name": name, "eps": 0.0, "severity": severity},
                  corrupt(x, name, severity, settings.seed)) for severity in SEVERITIES]  # fmt: skip
    if settings.defense:
        undefended = [(c, inputs) for c, inputs in made if c["name"] in ("clean", "entropy")]
        if settings.adaptive and "entropy" in settings.attacks:
            host = lambda v: defend(model, v)  # noqa: E731
            undefended += [({**c, "name": "adaptive entropy"}, pgd("entropy", c["eps"], host))
                           for c, _ in undefended if c["name"] == "entropy"]  # fmt: skip
        made += [({"kind": "defense", "name": f"defended {c['name']}", "eps": c["eps"]}, defend(model, inputs))
                 for c, inputs in undefended]  # fmt: skip
    return made


def _device_defense_inputs(model, settings, tensor, x, y, made) -> list[tuple[dict, np.ndarray]]:
    """(condition, float inputs) for the build behind the device defense: clean and the entropy attacks made for
    the undefended device, then the entropy attack through the stages (their numpy reference, which the
    firmware equals byte for byte)."""
    stages = settings.device_defense

    def through_stages(v: np.ndarray) -> np.ndarray:
        read = device_stages.apply_stages_q(reference.quantize_inputs(v, tensor), stages)
        return reference.dequantize(read, tensor).astype(np.float32)

    sent = [(c, inputs) for c, inputs in made if c["name"] in ("clean", "entropy")]
    if settings.adaptive:
        sent += [({**c, "name": "adaptive entropy"},
                  attacks.pgd(model, "entropy", x, y, c["eps"], tensor, settings.iterations, settings.eot,
                              seed=settings.seed, defense=through_stages))
                 for c, _ in list(sent) if c["name"] == "entropy"]  # fmt: skip
    return [({"kind": "defense", "name": f"device-defended {c['name']}", "eps": c["eps"]}, inputs)
            for c, inputs in sent]  # fmt: skip


def _on_device(model: SplitModel, settings: SplitSettings, board, folder: Path, native, made, y, bar, stages):
    """Each condition's inputs sent to a build of the head (behind the device defense's stages, if any): the
    measured rows, the head's and coder's ticks, and the firmware."""
    channel = settings.channel or board.default_channel
    compiled = compile_model(model.head_tflite, preprocess=stages)
    firmware = build_firmware(compiled, board, folder, channel, coding=model.coding)
    model_hash = model.coding.firmware_hash(compiled.model_hash)
    pool = Pool([Worker(start_emulator(board, firmware.elf, channel), model_hash)])
    rows, head, code = [], [], []
    try:
        for condition, inputs in made:
            bar.set_description(f"{settings.model} beta {model.beta:g} {condition['name']} {condition['eps']:.4g}")
            measured = _measure(model, pool, native, reference.quantize_inputs(inputs, compiled.input), y, bar, stages)
            head += measured.pop("head_ticks")
            code += measured.pop("coder_ticks")
            rows.append({"severity": None, **condition, **measured})
    finally:
        pool.close()
    return rows, head, code, firmware


def split_evaluate(settings: SplitSettings, progress: bool = True) -> dict:
    if settings.samples < 1:
        raise UserError(f"--samples must be at least 1, not {settings.samples}")
    unknown = sorted(set(settings.attacks) - set(attacks.KINDS))
    if unknown:
        raise UserError(f"unknown split attack {', '.join(unknown)}; choose from: {', '.join(attacks.KINDS)}")
    spec = split_spec(settings.model, settings.entropy_model)
    settings.entropy_model = spec["split"]["entropy_model"]
    board = load_board(settings.board)
    if not board.emulated:
        raise UserError(f"split-evaluate runs on an emulated board for now; {board.name} is a real one")
    settings.device_defense = device_stages.canonical(settings.device_defense)
    betas = settings.betas or spec["split"]["betas"]
    started = time.monotonic()
    settings.out.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(settings.corruptions) - set(CORRUPTIONS))
    if unknown:
        raise UserError(f"unknown corruption {', '.join(unknown)}; choose from: {', '.join(CORRUPTIONS)}")
    entropy = "entropy" in settings.attacks
    per_beta = 1 + len(settings.eps) * len(settings.attacks) + len(settings.corruptions) * len(SEVERITIES)
    if settings.defense:
        per_beta += 1 + len(settings.eps) * entropy * (1 + settings.adaptive)
    if settings.device_defense:
        per_beta += 1 + len(settings.eps) * entropy * (1 + settings.adaptive)
    native = coder.NativeDecoder(build_decoder(settings.out / "firmware"))
    bar = progress_bar(len(betas) * per_beta * settings.samples, "inference", progress)
    conditions, coders = [], []
    try:
        for beta in betas:
            bar.set_description(f"{settings.model} beta {beta:g}: training or loading")
            data = Path(settings.data) if settings.data else None
            model = load_split(settings.model, beta, data, settings.entropy_model)
            rng = np.random.default_rng(settings.seed)
            chosen = np.sort(rng.permutation(len(model.x_test))[: settings.samples])
            x, y = model.x_test[chosen], model.y_test[chosen]
            tensor = compile_model(model.head_tflite).input
            made = _inputs(model, settings, tensor, x, y)
            folder = settings.out / "firmware" / f"beta{beta:g}"
            rows, head, code, firmware = _on_device(model, settings, board, folder, native, made, y, bar, [])
            defended_head = None
            if settings.device_defense:
                device_made = _device_defense_inputs(model, settings, tensor, x, y, made)
                more, defended_ticks, _, _ = _on_device(model, settings, board, folder / "device-defense", native,
                                                        device_made, y, bar, settings.device_defense)  # fmt: skip
                rows += more
                defended_head = latency(board, defended_ticks)["per_inference"]["median"]
            clean_mean = next(r["bytes"]["mean"] for r in rows if r["kind"] == "clean")
            for r in rows:
                mean = r["bytes"]["mean"]
                overhead = None if mean is None or not clean_mean else mean / clean_mean - 1
                conditions.append({**r, "beta": beta, "entropy_model": settings.entropy_model,
                                   "overhead_vs_clean": overhead})  # fmt: skip
            symbols = sum(int(np.prod(shape)) for shape in model.output_shapes[: model.coding.symbol_outputs])
            head_instructions, coder_instructions = (latency(board, t)["per_inference"]["median"] for t in (head, code))
            coders.append({"beta": beta, "symbols_per_inference": symbols,
                           "head_instructions": head_instructions, "coder_instructions": coder_instructions,
                           "instructions_per_symbol": coder_instructions / symbols,
                           "coder_share_of_head": coder_instructions / head_instructions,
                           # The head's instructions behind the device defense: its stages' cost is the difference.
                           "device_defended_head_instructions": defended_head,
                           "table_flash_bytes": firmware.memory.coding_bytes,
                           "flash_bytes": firmware.memory.flash_bytes})  # fmt: skip
    finally:
        bar.close()
    results = {
        "model": settings.model,
        "data_set": settings.data or spec["dataset"],
        "board": board.name,
        "unit": "instructions (emulated)",
        "device_defense": settings.device_defense,
        "settings": {**asdict(settings), "out": str(settings.out)},
        "conditions": conditions,
        "coder": coders,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    (settings.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    _write_csv(conditions, settings.out / "conditions.csv")
    write_split_csv(results, settings.out)
    # Last: should a plot fail, the measurements are already saved.
    write_split_report(results, settings.out / "report.html")
    return results


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
