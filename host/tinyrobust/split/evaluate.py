"""split-evaluate: a split network's head runs on the device and entropy-codes its latent there; the host
decodes the bytes the device sent, checks them against the head's symbols in TFLM, and runs the tail on them.
Per beta: clean inputs, the entropy and accuracy attacks and random sign noise at each eps, the 15 ImageNet-C
corruptions at severities 1 to 5, and clean and entropy-attacked inputs through the likelihood-weighted
total-variation defense (on the host).

Bytes and accuracy are over the samples whose stream decodes to TFLM's symbols; any other sample is a failure,
counted in round_trip_exact and never averaged in."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tinyrobust.build.firmware import build_firmware
from tinyrobust.compile.model import compile_model
from tinyrobust.console import progress_bar
from tinyrobust.device.boards import DEFAULT_BOARD, load_board
from tinyrobust.device.counter import latency
from tinyrobust.device.pool import Pool, Worker
from tinyrobust.device.targets import start_emulator
from tinyrobust.errors import UserError
from tinyrobust.model import reference
from tinyrobust.report.split import write_split_report
from tinyrobust.split import attacks, coder
from tinyrobust.split.corruptions import CORRUPTIONS, corrupt
from tinyrobust.split.defense import defend
from tinyrobust.split.model import SplitModel, load_split, split_spec

STUDY_EPS = [2 / 255, 4 / 255, 8 / 255, 16 / 255, 32 / 255]  # the study's budgets
SEVERITIES = (1, 2, 3, 4, 5)  # ImageNet-C's


@dataclass
class SplitSettings:
    model: str = "split-digits"
    board: str = DEFAULT_BOARD
    betas: list[float] | None = None  # None: every beta of the model's spec
    samples: int = 100
    eps: list[float] = field(default_factory=lambda: list(STUDY_EPS))
    attacks: list[str] = field(default_factory=lambda: list(attacks.KINDS))
    iterations: int = 20  # PGD steps
    eot: int = 16  # noise draws per step
    defense: bool = True  # also send clean and entropy-attacked inputs through the likelihood-weighted TV defense
    corruptions: list[str] = field(default_factory=lambda: list(CORRUPTIONS))  # each at severities 1 to 5
    seed: int = 0
    data: str | None = None
    out: Path = Path("results-split")
    channel: str | None = None  # None: the board's default


def _summary(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "median": None, "max": None}
    return {"mean": float(np.mean(values)), "median": float(np.median(values)), "max": float(np.max(values))}


def _measure(model: SplitModel, pool: Pool, xq: np.ndarray, y: np.ndarray, bar) -> dict:
    """Each input's stream from the device, decoded and checked against TFLM's symbols; bytes (their summary and
    each exactly decoded stream's size, for the report's distributions), ideal bytes, accuracy of the tail on the
    decoded symbols, and the head's and coder's ticks."""
    coding, shapes, hyper_decoder = model.coding, model.output_shapes, model.hyper_decoder()
    expected = reference.tflm_every_output(model.head_tflite, xq)  # y, and a hyperprior's z and h

    answers = pool.infer_all([q.tobytes() for q in xq], Worker.encode)
    bar.update(len(xq))
    sizes, ideal, exact, decoded, same_bytes = [], [], [], [], []
    for i, (stream, _, _) in enumerate(answers):
        outputs = [e[i] for e in expected]
        same_bytes.append(stream == coding.encode(outputs))
        try:
            got = coding.decode(stream, shapes, hyper_decoder)
        except coder.MalformedStream:
            got = None
        exact.append(got is not None and all(np.array_equal(g, o) for g, o in zip(got, outputs, strict=False)))
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
    """(condition, float inputs) for clean and for each attack and eps; with the defense, clean and every
    entropy attack again through it."""
    made = [({"kind": "clean", "name": "clean", "eps": 0.0}, x)]
    for eps in settings.eps:
        for name in settings.attacks:
            if name == "noise":
                made.append(({"kind": "noise", "name": "sign noise", "eps": eps},
                             attacks.sign_noise(x, eps, settings.seed)))  # fmt: skip
            else:
                x_adv = attacks.pgd(
                    model, name, x, y, eps, tensor, settings.iterations, settings.eot, seed=settings.seed
                )
                made.append(({"kind": "attack", "name": name, "eps": eps}, x_adv))
    for name in settings.corruptions:
        made += [({"kind": "corruption", "name": name, "eps": 0.0, "severity": severity},
                  corrupt(x, name, severity, settings.seed)) for severity in SEVERITIES]  # fmt: skip
    if settings.defense:
        made += [({"kind": "defense", "name": f"defended {c['name']}", "eps": c["eps"]}, defend(model, inputs))
                 for c, inputs in list(made) if c["name"] in ("clean", "entropy")]  # fmt: skip
    return made


def split_evaluate(settings: SplitSettings, progress: bool = True) -> dict:
    if settings.samples < 1:
        raise UserError(f"--samples must be at least 1, not {settings.samples}")
    unknown = sorted(set(settings.attacks) - set(attacks.KINDS))
    if unknown:
        raise UserError(f"unknown split attack {', '.join(unknown)}; choose from: {', '.join(attacks.KINDS)}")
    spec = split_spec(settings.model)
    board = load_board(settings.board)
    if not board.emulated:
        raise UserError(f"split-evaluate runs on an emulated board for now; {board.name} is a real one")
    channel = settings.channel or board.default_channel
    betas = settings.betas or spec["split"]["betas"]
    started = time.monotonic()
    settings.out.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(settings.corruptions) - set(CORRUPTIONS))
    if unknown:
        raise UserError(f"unknown corruption {', '.join(unknown)}; choose from: {', '.join(CORRUPTIONS)}")
    per_beta = 1 + len(settings.eps) * len(settings.attacks) + len(settings.corruptions) * len(SEVERITIES)
    if settings.defense:
        per_beta += 1 + len(settings.eps) * ("entropy" in settings.attacks)
    bar = progress_bar(len(betas) * per_beta * settings.samples, "inference", progress)
    conditions, coders = [], []
    try:
        for beta in betas:
            bar.set_description(f"{settings.model} beta {beta:g}: training or loading")
            model = load_split(settings.model, beta, Path(settings.data) if settings.data else None)
            compiled = compile_model(model.head_tflite)
            folder = settings.out / "firmware" / f"beta{beta:g}"
            firmware = build_firmware(compiled, board, folder, channel, coding=model.coding)
            rng = np.random.default_rng(settings.seed)
            chosen = np.sort(rng.permutation(len(model.x_test))[: settings.samples])
            x, y = model.x_test[chosen], model.y_test[chosen]
            model_hash = model.coding.firmware_hash(compiled.model_hash)
            pool = Pool([Worker(start_emulator(board, firmware.elf, channel), model_hash)])
            try:
                clean_mean, head, code = None, [], []
                for condition, inputs in _inputs(model, settings, compiled.input, x, y):
                    bar.set_description(f"{settings.model} beta {beta:g} {condition['name']} {condition['eps']:.4g}")
                    measured = _measure(model, pool, reference.quantize_inputs(inputs, compiled.input), y, bar)
                    head += measured.pop("head_ticks")
                    code += measured.pop("coder_ticks")
                    mean = measured["bytes"]["mean"]
                    if condition["kind"] == "clean":
                        clean_mean = mean
                    overhead = None if mean is None or not clean_mean else mean / clean_mean - 1
                    conditions.append({"severity": None, **condition, "beta": beta,
                                       "entropy_model": spec["split"].get("entropy_model", "factorized"),
                                       **measured, "overhead_vs_clean": overhead})  # fmt: skip
            finally:
                pool.close()
            symbols = sum(int(np.prod(shape)) for shape in model.output_shapes[: model.coding.symbol_outputs])
            head_instructions, coder_instructions = (latency(board, t)["per_inference"]["median"] for t in (head, code))
            coders.append({"beta": beta, "symbols_per_inference": symbols,
                           "head_instructions": head_instructions, "coder_instructions": coder_instructions,
                           "instructions_per_symbol": coder_instructions / symbols,
                           "coder_share_of_head": coder_instructions / head_instructions,
                           "table_flash_bytes": firmware.memory.coding_bytes,
                           "flash_bytes": firmware.memory.flash_bytes})  # fmt: skip
    finally:
        bar.close()
    results = {
        "model": settings.model,
        "data_set": settings.data or spec["dataset"],
        "board": board.name,
        "unit": "instructions (emulated)",
        "settings": {**asdict(settings), "out": str(settings.out)},
        "conditions": conditions,
        "coder": coders,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    (settings.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    _write_csv(conditions, settings.out / "conditions.csv")
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
