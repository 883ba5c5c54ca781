"""Campaigns: models x precisions x seeds x defenses x attacks x eps, run on the device and compared with the host.

A campaign is described once (a TOML config file, or flash-and-evaluate's options) and run by one runner. Every
measured sample goes to the run's SQLite store as it arrives, so an interrupted run resumes where it stopped and
the results are always computed from what the store holds. With jobs > 1, that many emulators share the
samples; only this process writes the store, so the results are the same for any number of jobs. A [split]
section runs after the models, as split-evaluate does (split.evaluate.SplitRun), in the same store, each of its
conditions stored as it completes."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from pathlib import Path

import numpy as np

from tinyrobust.campaign import attacks, builds
from tinyrobust.campaign.adversarial import Adversary, probe_key
from tinyrobust.campaign.builds import Build, Condition
from tinyrobust.campaign.config import Campaign, check, precisions_for
from tinyrobust.campaign.results import Results, save_results
from tinyrobust.campaign.store import STORE_NAME, Store
from tinyrobust.console import progress_bar
from tinyrobust.device.boards import Board, load_board
from tinyrobust.device.pool import LinkStats, Pool, Worker
from tinyrobust.device.targets import SerialTarget, start_emulator
from tinyrobust.errors import UserError
from tinyrobust.model import reference, zoo


class Runner:
    def __init__(
        self,
        campaign: Campaign,
        out: Path,
        jobs: int = 1,
        channel: str | None = None,
        port: str | None = None,
        flash_with: str = "pyocd",
        connect=None,
        settings: dict | None = None,
        stack: int | None = None,
        ray: str | None = None,
        devices_per_node: int = 1,
    ):
        self.campaign, self.out, self.jobs = campaign, Path(out), jobs
        self.channel_choice, self.port, self.flash_with = channel, port, flash_with
        self.connect = connect or self._start_target  # connect(board, elf) -> a started target
        self.settings = settings  # flash-and-evaluate's own options, reported as they were given
        self.stack = stack  # the firmware's stack reserve, checked against a measurement; None: the default
        self.started = time.monotonic()
        self.link = LinkStats()
        self.pool: Pool | None = None
        self.started_targets = 0
        self.calls: Counter = Counter()  # the devices' answers, by kind (inferences measured, attack queries)
        self.ray, self.devices_per_node = ray, devices_per_node  # a Ray cluster's address, "local" or "auto"
        self.cluster = None
        self.adversary = Adversary()

    def run(self, progress: bool = True) -> dict:
        c = self.campaign
        if c.samples < 1:
            raise UserError(f"--samples must be at least 1, not {c.samples}")
        if self.jobs < 1:
            raise UserError(f"--jobs must be at least 1, not {self.jobs}")
        if self.jobs > 1 and self.port is not None:
            raise UserError("--port reaches one device, so it runs with --jobs 1")
        if self.ray is not None and (self.port is not None or self.jobs > 1):
            raise UserError("--ray places devices on the cluster's nodes (--devices-per-node), so it runs without "
                            "--port and --jobs")  # fmt: skip
        check(c)
        if c.split is not None and self.port is not None:
            raise UserError("--port reaches one device, while a campaign's split section starts its own emulators; "
                            "run it without --port")  # fmt: skip
        splits = self._split_runs()
        self.board = load_board(c.board)
        self.channel = channel_for(self.board, self.channel_choice, self.port)
        self.out.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.out / STORE_NAME)
        self.results = Results(self.store, c, self.board, self.settings, self.jobs)
        try:
            self._claim_store()
            if self.ray is not None and c.models:
                from tinyrobust.campaign.cluster import Cluster

                self.cluster = self.adversary.cluster = Cluster(self.ray, self.devices_per_node)
            with self.cluster or contextlib.nullcontext():
                results = self._run(progress) if c.models else self.assemble()
            if splits:
                results["split"] = {run.settings.entropy_model: run.run(self.store, progress) for run in splits}
            return results
        finally:
            self.store.close()

    def _split_runs(self) -> list:
        """The split section's runs (split.evaluate.SplitRun), one per entropy model into out/split-<entropy model>/
        and named so in the store, their settings checked before anything runs."""
        from tinyrobust.split.evaluate import SplitRun

        c = self.campaign
        if c.split is None:
            return []
        return [SplitRun(c.split.settings(name, c.board, self.out / f"split-{name}", self.channel_choice, self.jobs),
                         f"split-{name}") for name in c.split.entropy_model_names()]  # fmt: skip

    def _claim_store(self) -> None:
        """Refuse an output folder that holds another run; record this one's campaign and settings."""
        store = self.store
        if self.settings is not None and store.get_meta("settings") not in (None, self.settings):
            raise UserError(f"{self.out} already holds a run with other settings; resume it with --resume {self.out} "
                            "or choose another --out")  # fmt: skip
        if store.get_meta("campaign") not in (None, self.campaign.recorded()):
            raise UserError(f"{self.out} already holds a run of another campaign; resume it with --resume or "
                            "choose another --out")  # fmt: skip
        store.set_meta("campaign", self.campaign.recorded())
        if self.settings is not None:
            store.set_meta("settings", self.settings)

    def _run(self, progress: bool) -> dict:
        c = self.campaign
        units = [(m, p) for m in c.models for p in precisions_for(c, m)]
        apart = [d for d in c.defenses if d.builds_apart]
        per_unit = len(c.seeds) * (1 + len(c.defenses)) * (1 + sum(len(a.eps) for a in c.attacks))
        self.bar = progress_bar(len(units) * per_unit * c.samples, "inference", progress,
                                initial=len(self.store.ticks()))  # fmt: skip
        try:
            for name, precision in units:
                base = zoo.load(name, precision, c.float_model_for(name), c.data_for(name))
                for a in c.attacks:
                    attacks.check_input(a.name, base.x_test.shape[1:], base.name)
                self.adversary.forget_attacks()
                for defense in [None, *apart]:
                    slug = "" if defense is None else defense.slug(c.defenses)
                    if defense is not None and defense.trains:
                        self.bar.set_description(f"{base.name}: training with {defense.name}")
                    model = builds.model_for(base, precision, defense, c.seeds[0])
                    folder = builds.firmware_dir(self.out, name, precision, slug, len(units) > 1 or bool(apart))
                    compiled = builds.compile_for(model, precision, defense)
                    self._check_model(zoo.model_name(name), precision, slug, compiled.model_hash)
                    self._measure(builds.make_build(name, precision, model, compiled, defense, slug, self.board,
                                                    folder, self.channel, self.stack))  # fmt: skip
        finally:
            self.bar.close()
            if self.results.builds and self.store.ticks():  # not when refused before a build: keep the last save
                self.save()
        return self.assemble()

    def _check_model(self, name: str, precision: str, slug: str, model_hash: bytes) -> None:
        """Refuse, before its firmware is built over the run's, to resume a run whose model changed."""
        key = " ".join(filter(None, ("model_sha256", name, precision, slug)))
        sha = model_hash.hex()
        if self.store.get_meta(key) not in (None, sha):
            raise UserError(f"the model changed since the run in {self.out} began; start a new run with another --out")
        self.store.set_meta(key, sha)

    def _measure(self, build: Build) -> None:
        """Run every condition of the build on its devices, each condition's samples those its seed chooses."""
        c, store = self.campaign, self.store
        self.results.builds.append(build)
        if build.model.keras is None and any(a.mode == "transfer" for a in c.attacks):
            self.results.notes.append(
                f"{build.name}: no float model was given (--float-model), so transfer attacks were not run"
            )
        jobs = min(self.jobs, c.samples)
        elf, model_hash = build.firmware.elf, build.compiled.model_hash
        if self.cluster is not None:
            self.pool = self.cluster.pool(self.board, elf, self.channel, model_hash, self.flash_with)
        else:
            self.pool = Pool([Worker(self.connect(self.board, elf), model_hash) for _ in range(jobs)])
        try:
            # connect and check the model before the attacks are made
            build.counter = self.pool.connect() or build.counter
            for seed in c.seeds:
                chosen = np.sort(np.random.default_rng(seed).permutation(len(build.model.x_test))[: c.samples])
                x, y = build.model.x_test[chosen], build.model.y_test[chosen]
                todo = [(k, store.condition(**k.key(build))) for k in builds.conditions(build, c) if k.seed == seed]
                prepared = {}
                if self.cluster is not None:  # every attack, then every input's references, made on the cluster
                    for condition, cid in todo:
                        if not store.has_samples(cid):
                            self.adversary.submit(build, condition, x, y)
                    for condition, cid in todo:
                        if not store.has_samples(cid):
                            prepared[cid] = self._prepare(build, cid, condition, x, y)
                for condition, cid in todo:
                    defended = f" {condition.defense.name}" if condition.defense else ""
                    self.bar.set_description(f"{build.name}{defended} {condition.attack} eps={condition.eps:g}")
                    build.conditions.append(cid)
                    self.results.conditions.append((build, condition, cid))
                    if not store.has_samples(cid):
                        self._add_samples(build, cid, prepared.pop(cid, None) or self._prepare(build, cid, condition,
                                                                                               x, y))  # fmt: skip
                    pending = store.pending(cid)

                    def measured(sample, answer, cid=cid):
                        store.add_device_output(cid, sample, *answer)
                        self.bar.update()

                    self.pool.run(pending, measured)
                    store.commit()
                    if condition.mode == "on-device" and store.get_meta(probe_key(build, condition)) is None:
                        probe = self.adversary.probe_gradients(self.pool, build, condition, x)
                        store.set_meta(probe_key(build, condition), probe)
                    if pending:  # a resumed run saves only what it measured anew
                        self.save(report=False)
        finally:
            self.link += self.pool.take_link()
            self.calls += self.pool.calls
            self.pool.close()
            self.pool = None

    def _prepare(self, build: Build, cid: int, condition: Condition, x, y) -> tuple:
        """Make the condition's inputs and start their host references: (labels, inputs sent, references), the
        references being TFLite's, TFLM's and the float model's outputs, or on a cluster the task making them.
        The references read what the network reads: the inputs after the device's own pre-processing stages, and in
        a smoothing build the noisy copies the device makes."""
        from tinyrobust.compile.smoothing import noisy_copies
        from tinyrobust.compile.stages import apply_stages_q

        model, tensor = build.model, build.compiled.input
        x_adv, queries, unattacked = self.adversary.inputs(self.pool, build, condition, x, y)
        if condition.mode == "on-device":
            self.store.set_queries(cid, queries)
        if unattacked:
            self.results.notes.append(
                f"{build.name} {build.precision} {condition.attack} eps {condition.eps:g}: {unattacked} samples "
                f"kept their clean inputs, their group having spent its {condition.max_queries} queries per sample"
            )
        sent = self.adversary.defense(condition.defense, model)(x_adv)
        xq = reference.quantize_inputs(sent, tensor)
        smoothing = build.compiled.smoothing
        copies = xq if smoothing is None else noisy_copies(xq, smoothing, tensor)
        seen = apply_stages_q(copies, build.compiled.preprocess)
        # A model with float input runs whole in the references, on the float inputs the host quantized for the
        # device, so that its own QUANTIZE is checked against the host's (after device stages, on what they read).
        x_float = None if build.compiled.preprocess or smoothing else sent
        if self.cluster is not None:
            return y, xq, self.cluster.references(model.keras, model.tflite, seen, tensor, x_float)
        return y, xq, reference.every_engine(model.keras, model.tflite, seen, tensor, x_float)

    def _add_samples(self, build: Build, cid: int, prepared: tuple) -> None:
        """Store a condition's inputs with their references, before the device runs; a smoothing build's references
        are the votes of its copies' outputs, which is what the device answers."""
        from tinyrobust.compile.smoothing import votes

        y, xq, references = prepared
        tflite, tflm, floats = references if isinstance(references, tuple) else self.cluster.result(references)
        smoothing = build.compiled.smoothing
        if smoothing is not None:
            tflite, tflm = votes(tflite, smoothing.n), votes(tflm, smoothing.n)
            floats = None if floats is None else votes(floats, smoothing.n)
        self.store.add_samples(cid, y, xq, tflite, tflm, floats)

    def _start_target(self, board: Board, elf: Path):
        """The device: an already running one at --port (a real board is flashed first), or a new emulator."""
        if self.port is None:
            self.started_targets += 1
            index = self.started_targets - 1
            return start_emulator(board, elf, self.channel, log=elf.parent / f"emulator{index or ''}.log")
        if not board.emulated and self.flash_with != "none":
            from tinyrobust.device.flashing import flash

            flash(board, elf, self.flash_with)
        return SerialTarget(self.port, board).start()

    def assemble(self) -> dict:
        """The results so far, with the link statistics of the devices still running."""
        calls = Counter(self.calls)
        if self.pool is not None:
            self.link += self.pool.take_link()
            calls += self.pool.calls
        link = LinkStats()
        link += self.link
        results = self.results.assemble(link, time.monotonic() - self.started)
        results["device_calls"] = {kind: calls[kind] for kind in ("inferences", "queries")}
        if self.cluster is not None:
            results["cluster"] = self.cluster.summary()
        return results

    def save(self, report: bool = True) -> None:
        """results.json and the CSV tables, after every condition; report.html when the run ends or stops."""
        self.store.commit()
        save_results(self.assemble(), self.out, report)


def channel_for(board: Board, channel: str | None, port: str | None) -> str:
    """The host channel to build for: a device reached through --port speaks over its UART."""
    if port is not None:
        if channel not in (None, "uart"):
            raise UserError(f"--port reaches a device's UART; --channel {channel} needs the emulator")
        return "uart"
    return channel or board.default_channel


def run_campaign(campaign: Campaign, out: Path, progress: bool = True, **options) -> dict:
    return Runner(campaign, out, **options).run(progress)

