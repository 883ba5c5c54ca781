"""Campaigns: models x precisions x seeds x defenses x attacks x eps, run on the device and compared with the host.

A campaign is described once (a TOML config file, or flash-and-evaluate's options) and run by one runner. Every
measured sample goes to the run's SQLite store as it arrives, so an interrupted run resumes where it stopped and
the results are always computed from what the store holds. With jobs > 1, that many emulators share the
samples; only this process writes the store, so the results are the same for any number of jobs."""

from __future__ import annotations

import json
import platform
import queue
import threading
import time
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from tinyrobust import __version__
from tinyrobust.build.firmware import build_firmware
from tinyrobust.campaign import attacks, metrics
from tinyrobust.campaign.store import Store
from tinyrobust.compile.compiler import compile_model
from tinyrobust.device.boards import Board, load_board
from tinyrobust.device.emulator import counter_source, instructions_per_tick
from tinyrobust.device.link import Device, LinkError
from tinyrobust.device.targets import EmulatorTarget, SerialTarget
from tinyrobust.errors import UserError
from tinyrobust.model import reference, zoo
from tinyrobust.model.quantize import PRECISIONS
from tinyrobust.validate import check_precision

STORE_NAME = "results.sqlite"
# How often one sample may lose its link (reconnect, then restart the device) before the run gives up.
MAX_RECOVERIES = 4
MODES = ("transfer", "on-device")
DEFENSE_PLACES = ("host", "device")
# On-device attacks query the device for this many samples at a time, each group with its share of the budget.
QUERY_GROUP = 10
# The zero-gradient probe of on-device mode: this many samples and input coordinates per sample, with
# finite-difference steps h of ZOO's default 1e-4 (in the float model's input units) and of one and four input
# quantization steps.
GRADIENT_PROBE = {"samples": 8, "coordinates": 16, "zoo_h": 1e-4, "input_steps": (1, 4)}
# Made attacks kept for reuse by later conditions, at most this many bytes of inputs.
MADE_BYTES = 1 << 30


@dataclass
class AttackSpec:
    name: str
    eps: list[float]  # a "bound" attack's eps 0 means unbounded (see attacks.py)
    mode: str = "transfer"  # "transfer": made on the float model; "on-device": made by querying the device
    params: dict = field(default_factory=dict)  # overrides of the attack's preset
    max_queries: int = 1000  # on-device: device queries per sample


@dataclass
class DefenseSpec:
    name: str
    where: str = "host"  # "host": applied to inputs before quantization; "device": in the firmware
    params: dict = field(default_factory=dict)

    def key(self) -> dict:
        return asdict(self)


@dataclass
class Campaign:
    models: list[str] = field(default_factory=lambda: ["digits-cnn"])  # built-in names or .tflite paths
    precisions: list[str] = field(default_factory=lambda: ["int8"])
    board: str = "qemu-mps2-an386"
    samples: int = 200
    seeds: list[int] = field(default_factory=lambda: [0])
    attacks: list[AttackSpec] = field(default_factory=list)
    defenses: list[DefenseSpec] = field(default_factory=list)
    data: str | None = None  # .npz: test data of a .tflite model, or a data set to train a built-in model on
    float_model: str | None = None  # .keras for a .tflite model

    def recorded(self) -> dict:
        return asdict(self)

    @classmethod
    def from_recorded(cls, values: dict) -> Campaign:
        values = dict(values)
        values["attacks"] = [AttackSpec(**a) for a in values.get("attacks", [])]
        values["defenses"] = [DefenseSpec(**d) for d in values.get("defenses", [])]
        return cls(**values)


# ---- the config file --------------------------------------------------------------------------------------

TOP_KEYS = {"models", "precisions", "board", "samples", "seeds", "attacks", "defenses", "data", "float_model"}
ATTACK_KEYS = {"name", "eps", "mode", "params", "max_queries"}
DEFENSE_KEYS = {"name", "where", "params"}


def _fail(key: str, problem: str) -> None:
    raise UserError(f"campaign key '{key}' {problem}")


def _unknown(table: dict, allowed: set, where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        _fail(f"{where}{extra[0]}", f"is not a campaign setting; allowed keys here: {', '.join(sorted(allowed))}")


def _list_of(value, kind, key: str, what: str) -> list:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
        _fail(key, f"must be {what}, not {value!r}")
    return values


def parse(config: dict) -> Campaign:
    """A campaign from a parsed config; every error names the key and what it allows."""
    _unknown(config, TOP_KEYS, "")
    c = Campaign()
    if "models" in config:
        c.models = _list_of(config["models"], str, "models", "a list of built-in model names or .tflite paths")
    for name in c.models:
        if not name.endswith(".tflite") and name not in zoo.builtin_names():
            _fail("models", f"names unknown model '{name}'; allowed: {', '.join(zoo.builtin_names())} or a .tflite")
    if "precisions" in config:
        c.precisions = _list_of(config["precisions"], str, "precisions", f"a list of {' or '.join(PRECISIONS)}")
        for p in c.precisions:
            if p not in PRECISIONS:
                _fail("precisions", f"has '{p}'; allowed: {', '.join(PRECISIONS)}")
    if "board" in config:
        from tinyrobust.device.boards import board_names

        if config["board"] not in board_names():
            _fail("board", f"is '{config['board']}'; allowed: {', '.join(board_names())}")
        c.board = config["board"]
    if "samples" in config:
        if not isinstance(config["samples"], int) or isinstance(config["samples"], bool) or config["samples"] < 1:
            _fail("samples", f"must be a whole number of at least 1, not {config['samples']!r}")
        c.samples = config["samples"]
    if "seeds" in config:
        c.seeds = _list_of(config["seeds"], int, "seeds", "a list of whole numbers")
    for key in ("data", "float_model"):
        if key in config:
            if not isinstance(config[key], str):
                _fail(key, f"must be a file path, not {config[key]!r}")
            setattr(c, key, config[key])
    raw_attacks = config.get("attacks", [])
    if not isinstance(raw_attacks, list):
        _fail("attacks", "must be a list of tables ([[attacks]] with name, eps, mode, params)")
    for i, table in enumerate(raw_attacks):
        c.attacks.append(_parse_attack(table, f"attacks[{i}]."))
    raw_defenses = config.get("defenses", [])
    if not isinstance(raw_defenses, list):
        _fail("defenses", "must be a list of tables ([[defenses]] with name, where, params)")
    for i, table in enumerate(raw_defenses):
        c.defenses.append(_parse_defense(table, f"defenses[{i}]."))
    return c


def _parse_attack(table, where: str) -> AttackSpec:
    if not isinstance(table, dict):
        _fail(where.rstrip("."), "must be a table with name, eps, mode and params")
    _unknown(table, ATTACK_KEYS, where)
    name = table.get("name")
    if name not in attacks.ATTACKS:
        _fail(f"{where}name", f"is {name!r}; allowed: {', '.join(sorted(attacks.ATTACKS))}")
    spec = attacks.ATTACKS[name]
    if "eps" in table:
        eps = [float(e) for e in _list_of(table["eps"], (int, float), f"{where}eps", "a list of numbers")]
    elif spec.eps == "bound":
        eps = [0.0]  # unbounded
    else:
        _fail(f"{where}eps", f"is missing; attack {name} needs its budget, a list of numbers such as [0.05, 0.1]")
    low = 0.0 if spec.eps == "bound" else 1e-12
    if any(e < low for e in eps):
        _fail(f"{where}eps", f"must be {'at least 0' if spec.eps == 'bound' else 'positive'} for attack {name}")
    mode = table.get("mode", "transfer")
    if mode not in MODES:
        _fail(f"{where}mode", f"is {mode!r}; allowed: {', '.join(MODES)}")
    if mode == "on-device" and not spec.queries:
        gradient_free = sorted(n for n, a in attacks.ATTACKS.items() if a.queries)
        _fail(f"{where}mode", f"on-device needs a gradient-free attack; allowed: {', '.join(gradient_free)}")
    params = table.get("params", {})
    if not isinstance(params, dict):
        _fail(f"{where}params", "must be a table of the attack's parameters")
    attacks.parameters(name, params, where=f"campaign key '{where}params': ")
    max_queries = table.get("max_queries", 1000)
    if not isinstance(max_queries, int) or max_queries < 1:
        _fail(f"{where}max_queries", f"must be a whole number of at least 1, not {max_queries!r}")
    return AttackSpec(name, eps, mode, dict(params), max_queries)


def _parse_defense(table, where: str) -> DefenseSpec:
    if not isinstance(table, dict):
        _fail(where.rstrip("."), "must be a table with name, where and params")
    _unknown(table, DEFENSE_KEYS, where)
    if not isinstance(table.get("name"), str):
        _fail(f"{where}name", "must name a defense")
    place = table.get("where", "host")
    if place not in DEFENSE_PLACES:
        _fail(f"{where}where", f"is {place!r}; allowed: {', '.join(DEFENSE_PLACES)}")
    params = table.get("params", {})
    if not isinstance(params, dict):
        _fail(f"{where}params", "must be a table of the defense's parameters")
    return DefenseSpec(table["name"], place, dict(params))


def load_config(path: Path) -> Campaign:
    """A campaign from a TOML file."""
    try:
        config = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"there is no campaign config {path}; pass the path of a .toml file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path} is not valid TOML ({exc}); fix the file") from None
    return parse(config)


# ---- defenses: the registry is tinyrobust.campaign.defenses; this module only passes names and parameters on ----------


def host_defense(spec: DefenseSpec | None, model: zoo.Model):
    """The function a host-side input defense applies to float inputs before quantization (identity for none,
    and for the defenses that are part of the build: on the device, or a retrained model). PixelDefend gets a
    PixelCNN trained on the model's training data (cached)."""
    if spec is None or builds_apart(spec):
        return lambda x: x
    configured = _configured(spec)
    if spec.name == "pixeldefend" and configured.params["pixel_cnn"] is None:
        from tinyrobust.campaign.defenses import pixel_cnn

        configured.params["pixel_cnn"] = pixel_cnn(model.x_train)
    return configured.apply


def _configured(spec: DefenseSpec):
    """The defense from tinyrobust.campaign.defenses with the spec's parameters (a "preset" parameter names a preset)."""
    from tinyrobust.campaign import defenses

    params = dict(spec.params)
    return defenses.make(spec.name, params.pop("preset", None), **params)


def builds_apart(spec: DefenseSpec) -> bool:
    """Whether the defense needs firmware of its own: a stage on the device, or a retrained model."""
    return spec.where == "device" or _configured(spec).defense.kind == "training"


def defense_label(spec: DefenseSpec, specs: list[DefenseSpec]) -> str:
    """A short unique name for the defense among the campaign's: its name, its place when on the device, and
    its position when the same defense appears more than once."""
    label = spec.name + ("-device" if spec.where == "device" else "")
    same = [i for i, other in enumerate(specs) if other.name == spec.name and other.where == spec.where]
    return f"{label}-{same.index(specs.index(spec)) + 1}" if len(same) > 1 else label


def check_defenses(c: Campaign) -> None:
    """Refuse, before anything runs, a defense that cannot run as configured."""
    users = [m for m in c.models if m.endswith(".tflite")]
    for spec in c.defenses:
        configured = _configured(spec)  # refuses an unknown name, preset or parameter
        training = configured.defense.kind == "training"
        if users and (training or spec.name == "pixeldefend"):
            raise UserError(f"defense {spec.name} learns from the model's training data, which {users[0]} does not "
                            "come with; use a built-in model")  # fmt: skip
        if spec.where != "device":
            continue
        if training:
            raise UserError(f'defense {spec.name} trains a new model, so it has no place on the device; remove '
                            'where = "device"')  # fmt: skip
        configured.device_stages()  # refuses a defense the firmware cannot run
        if "int16x8" in c.precisions:
            raise UserError(f"defense {spec.name} runs on the device's int8 input, so it cannot go with int16x8; "
                            'run it in a campaign with precisions = ["int8"]')  # fmt: skip


# ---- devices ----------------------------------------------------------------------------------------------


class Worker:
    """One device (an emulator or a board) and its link, surviving a lost connection (reconnect) or a silent
    device (restart)."""

    def __init__(self, target, model_hash: bytes):
        self.target, self.model_hash = target, model_hash
        self.device: Device | None = None
        self.counter = None
        self.link = {"retransmissions": 0, "device_resets": 0, "reconnects": 0, "device_restarts": 0}

    def _connect(self) -> None:
        if self.device is not None:
            self.device.port.close()  # an emulator serves one client: free its place first
        self.device = Device(self.target.open(), self.target.bytes_per_s)
        self.counter = self.device.handshake(self.model_hash).counter

    def recovering(self, action):
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

    def infer(self, tensor: bytes) -> tuple[bytes, int]:
        return self.recovering(lambda: self.device.infer(tensor))

    def close(self) -> None:
        self.target.close()


class Pool:
    """Devices running the same firmware; a list of inputs is shared between them, one thread per device."""

    def __init__(self, workers: list[Worker]):
        self.workers = workers

    def run(self, items: list[tuple[int, bytes]], done) -> None:
        """Infer every (key, input); done(key, (output, ticks)) is called in this thread as answers arrive."""
        if len(self.workers) == 1:
            for key, tensor in items:
                done(key, self.workers[0].infer(tensor))
            return
        work: queue.Queue = queue.Queue()
        for item in items:
            work.put(item)
        answers: queue.Queue = queue.Queue()
        stop = threading.Event()

        def serve(worker: Worker) -> None:
            while not stop.is_set():
                try:
                    key, tensor = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    answers.put((key, worker.infer(tensor), None))
                except BaseException as exc:  # handed to the caller's thread
                    answers.put((key, None, exc))
                    return

        threads = [threading.Thread(target=serve, args=(w,), daemon=True) for w in self.workers]
        for t in threads:
            t.start()
        try:
            for _ in range(len(items)):
                while True:
                    try:
                        key, answer, problem = answers.get(timeout=0.2)
                        break
                    except queue.Empty:
                        if not any(t.is_alive() for t in threads) and answers.empty():
                            raise LinkError("every device stopped before the inputs were done") from None
                if problem is not None:
                    raise problem
                done(key, answer)
        finally:
            stop.set()
            for t in threads:
                t.join()

    def infer_all(self, tensors: list[bytes]) -> list[tuple[bytes, int]]:
        answers: dict[int, tuple[bytes, int]] = {}
        self.run(list(enumerate(tensors)), answers.__setitem__)
        return [answers[i] for i in range(len(tensors))]

    def close(self) -> None:
        for w in self.workers:
            w.close()


class QueryBudgetSpent(Exception):
    pass


# ---- the runner -------------------------------------------------------------------------------------------


@dataclass
class Build:
    """One (model, precision, build defense): the firmware and everything measured with it. The build defense
    is None, a stage on the device, or a training defense (then the model is the retrained one)."""

    name: str
    precision: str
    model: zoo.Model
    compiled: object
    firmware: object
    counter: str = "systick"
    conditions: list[int] = field(default_factory=list)
    defense: DefenseSpec | None = None
    label: str = ""  # the build defense's label, "" for none


@dataclass
class Condition:
    attack: str
    eps: float
    mode: str = "transfer"
    params: dict = field(default_factory=dict)
    defense: DefenseSpec | None = None
    seed: int = 0
    max_queries: int = 0

    def key(self, build: Build) -> dict:
        return {
            "attack": self.attack,
            "eps": self.eps,
            "model": build.name,
            "precision": build.precision,
            "mode": self.mode,
            "params": json.dumps(self.params, sort_keys=True),
            "defense": json.dumps(None if self.defense is None else self.defense.key(), sort_keys=True),
            "seed": self.seed,
        }


def load_model(name: str, precision: str, float_model: str | None = None, data: str | None = None) -> zoo.Model:
    if name.endswith(".tflite"):
        optional = [Path(p) if p else None for p in (float_model, data)]
        return zoo.load_user(Path(name), *optional)
    if float_model:
        raise UserError("--float-model goes with a .tflite file passed to --model, not a built-in model")
    return zoo.load_builtin(name, precision, Path(data) if data else None)


def versions() -> dict:
    import art
    import numpy
    import tensorflow

    return {
        "tinyrobust": __version__,
        "adversarial-robustness-toolbox": art.__version__,
        "tensorflow": tensorflow.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


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
    ):
        self.campaign, self.out, self.jobs = campaign, Path(out), jobs
        self.channel_choice, self.port, self.flash_with = channel, port, flash_with
        self.connect = connect or self._start_target  # connect(board, elf) -> a started target
        self.settings = settings  # flash-and-evaluate's own options, reported as they were given
        self.started = time.monotonic()
        self.notes: list[str] = []
        self.link = {"retransmissions": 0, "device_resets": 0, "reconnects": 0, "device_restarts": 0}
        self.builds: list[Build] = []
        self.runs_meta: list[tuple[Build, Condition, int]] = []
        self.pool: Pool | None = None
        self.started_targets = 0
        self.made: dict = {}  # attacks' outputs, for the other eps of a minimal-perturbation attack and defenses
        self.defending: dict = {}  # host input defenses, made once (PixelDefend trains a PixelCNN)
        self.boundaries: dict = {}  # condition id -> its distances to the decision boundary

    # -- the run --

    def run(self, progress: bool = True) -> dict:
        c = self.campaign
        if c.samples < 1:
            raise UserError(f"--samples must be at least 1, not {c.samples}")
        if self.jobs < 1:
            raise UserError(f"--jobs must be at least 1, not {self.jobs}")
        if self.jobs > 1 and self.port is not None:
            raise UserError("--port reaches one device, so it runs with --jobs 1")
        attacks.check_names([a.name for a in c.attacks])
        check_defenses(c)
        self.board = load_board(c.board)
        self.channel = channel_for(self.board, self.channel_choice, self.port)
        self.out.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.out / STORE_NAME)
        try:
            return self._run(progress)
        finally:
            self.store.close()

    def _run(self, progress: bool) -> dict:
        c, store = self.campaign, self.store
        if self.settings is not None and store.get_meta("settings") not in (None, self.settings):
            raise UserError(
                f"{self.out} already holds a run with other settings; resume it with --resume {self.out} "
                "or choose another --out"
            )
        recorded = store.get_meta("campaign")
        if recorded is not None and recorded != c.recorded():
            raise UserError(
                f"{self.out} already holds a run of another campaign; resume it with --resume or choose another --out"
            )
        store.set_meta("campaign", c.recorded())
        if self.settings is not None:
            store.set_meta("settings", self.settings)
        from tqdm import tqdm

        units = [(m, p) for m in c.models for p in c.precisions]
        apart = [d for d in c.defenses if builds_apart(d)]
        per_unit = len(c.seeds) * (1 + len(c.defenses)) * (1 + sum(len(a.eps) for a in c.attacks))
        self.bar = tqdm(total=len(units) * per_unit * c.samples, initial=len(store.ticks()), unit="inference",
                        disable=not progress or None)  # fmt: skip
        try:
            for name, precision in units:
                base = load_model(name, precision, c.float_model, c.data)
                self.made = {}
                for defense in [None, *apart]:
                    label = "" if defense is None else defense_label(defense, c.defenses)
                    folder = firmware_dir(self.out, name, precision, label, len(units) > 1 or bool(apart))
                    self._run_build(name, precision, self._model_for(base, precision, defense), defense, folder)
        finally:
            self.bar.close()
            if store.ticks():
                self.save()
        return self.results()

    def _model_for(self, base: zoo.Model, precision: str, defense: DefenseSpec | None) -> zoo.Model:
        """The model a build runs: the base one, or for a training defense the retrained float model (cached)
        quantized again on the same representative data."""
        if defense is None or _configured(defense).defense.kind != "training":
            return base
        from tinyrobust.model.quantize import quantize

        self.bar.set_description(f"{base.name}: training with {defense.name}")
        trained = _configured(defense).train(base.keras, base.x_train, base.y_train, seed=self.campaign.seeds[0])
        tflite = quantize(trained, base.x_train, precision)
        return replace(base, tflite=tflite, keras=trained)

    def _run_build(self, name: str, precision: str, model: zoo.Model, defense: DefenseSpec | None,
                   firmware_dir: Path) -> None:  # fmt: skip
        c, store = self.campaign, self.store
        stages = _configured(defense).device_stages() if defense is not None and defense.where == "device" else []
        compiled = compile_model(model.tflite, stages)
        check_precision(compiled, precision)
        label = "" if defense is None else defense_label(defense, c.defenses)
        sha, key = compiled.model_hash.hex(), " ".join(filter(None, ("model_sha256", name, precision, label)))
        if store.get_meta(key) not in (None, sha):
            raise UserError(f"the model changed since the run in {self.out} began; start a new run with another --out")
        store.set_meta(key, sha)
        firmware = build_firmware(compiled, self.board, firmware_dir, self.channel)
        build = Build(Path(name).stem if name.endswith(".tflite") else name, precision, model, compiled, firmware,
                      self.board.counter, defense=defense, label=label)  # fmt: skip
        self.builds.append(build)
        conditions = self._conditions(build)
        jobs = min(self.jobs, c.samples)
        self.pool = Pool([Worker(self.connect(self.board, firmware.elf), compiled.model_hash) for _ in range(jobs)])
        try:
            for w in self.pool.workers:  # connect and check the model before the attacks are made
                w.recovering(lambda: None)
            build.counter = self.pool.workers[0].counter or build.counter
            for seed in c.seeds:
                rng = np.random.default_rng(seed)
                chosen = np.sort(rng.permutation(len(model.x_test))[: c.samples])
                x, y = model.x_test[chosen], model.y_test[chosen]
                for condition in (k for k in conditions if k.seed == seed):
                    defended = f" {condition.defense.name}" if condition.defense else ""
                    self.bar.set_description(f"{build.name}{defended} {condition.attack} eps={condition.eps:g}")
                    cid = store.condition(**condition.key(build))
                    build.conditions.append(cid)
                    self.runs_meta.append((build, condition, cid))
                    pending = store.pending(cid)
                    if not store.has_samples(cid):
                        self._add_samples(build, cid, condition, x, y)
                        pending = store.pending(cid)

                    def measured(sample, answer, cid=cid):
                        store.add_device_output(cid, sample, *answer)
                        self.bar.update()

                    self.pool.run(pending, measured)
                    if condition.mode == "on-device":
                        self._probe_gradients(build, condition, x)
                    if pending:  # a resumed run saves only what it measured anew
                        self.save(report=False)
        finally:
            for w in self.pool.workers:
                for k, v in w.link.items():
                    self.link[k] += v
                w.link = dict.fromkeys(w.link, 0)
            self.pool.close()
            self.pool = None

    def _conditions(self, build: Build) -> list[Condition]:
        """The build's conditions, each attack's eps next to each other and each defense's next to the
        undefended one, so one made attack serves them all (a transfer attack ignores input defenses)."""
        c = self.campaign
        result = []
        if build.model.keras is None and any(a.mode == "transfer" for a in c.attacks):
            self.notes.append(
                f"{build.name}: no float model was given (--float-model), so transfer attacks were not run"
            )
        defenses = [build.defense] if build.defense else [None, *(d for d in c.defenses if not builds_apart(d))]
        for seed in c.seeds:
            result += [Condition("none", 0.0, defense=d, seed=seed) for d in defenses]
            for a in c.attacks:
                if a.mode == "transfer" and build.model.keras is None:
                    continue
                queries = a.max_queries if a.mode == "on-device" else 0
                for eps in a.eps:
                    result += [Condition(a.name, float(eps), a.mode, a.params, d, seed, queries) for d in defenses]
        return result

    def _add_samples(self, build: Build, cid: int, condition: Condition, x, y) -> None:
        """Make the condition's inputs and the host references for them, stored before the device runs. The
        references read what the network reads: the inputs after the device's own pre-processing stages."""
        from tinyrobust.campaign.defenses import apply_stages_q

        model, tensor = build.model, build.compiled.input
        defend = self._host_defense(condition.defense, model)
        lo, hi = input_domain(build)
        if condition.attack == "none":
            x_adv = x
        else:
            x_adv, queries, unattacked = self._unbounded(build, condition, x, y, (lo, hi), defend)
            x_adv = attacks.bound(condition.attack, x, x_adv, condition.eps, (lo, hi))
            if condition.mode == "on-device":
                self.store.set_queries(cid, queries)
            if unattacked:
                self.notes.append(
                    f"{build.name} {build.precision} {condition.attack} eps {condition.eps:g}: {unattacked} samples "
                    f"kept their clean inputs, their group having spent its {condition.max_queries} queries per sample"
                )
        xq = reference.quantize_inputs(defend(x_adv), tensor)
        seen = apply_stages_q(xq, build.compiled.preprocess)
        floats = None
        if model.keras is not None:
            floats = reference.float_outputs(model.keras, reference.dequantize(seen, tensor))
        tflite = reference.tflite_outputs(model.tflite, seen)
        tflm = reference.tflm_outputs(model.tflite, seen)
        self.store.add_samples(cid, y, xq, tflite, tflm, floats)

    def _host_defense(self, spec: DefenseSpec | None, model: zoo.Model):
        key = (model.name, json.dumps(None if spec is None else spec.key(), sort_keys=True))
        if key not in self.defending:
            self.defending[key] = host_defense(spec, model)
        return self.defending[key]

    def _unbounded(self, build: Build, condition: Condition, x, y, clip, defend):
        """The attack's own output with the device queries it made and the samples it left clean. A
        minimal-perturbation attack runs once for all its eps, which only bound its output. A transfer attack,
        made on the float model, serves every defense that keeps that model."""
        eps_free = attacks.ATTACKS[condition.attack].eps == "bound"
        on_device = condition.mode == "on-device"
        retrained = build.defense is not None and build.defense.where != "device"
        attacked = build.label if on_device or retrained else ""  # the float model's, or the device's, build
        defense = condition.defense.key() if on_device and condition.defense else None
        key = json.dumps([build.name, build.precision, attacked, condition.attack, condition.mode, condition.params,
                          defense, condition.seed, condition.max_queries, None if eps_free else condition.eps],
                         sort_keys=True)  # fmt: skip
        if key not in self.made:
            if condition.mode == "transfer":
                classifier = attacks.classifier(build.model.keras, clip)
                made = attacks.unbounded(condition.attack, classifier, x, y, condition.eps, condition.seed,
                                         condition.params)  # fmt: skip
                self.made[key] = (made, None, 0)
            else:
                self.made[key] = self._attack_device(build, condition, x, y, clip, defend)
            while len(self.made) > 1 and sum(m[0].nbytes for m in self.made.values()) > MADE_BYTES:
                del self.made[next(iter(self.made))]  # the oldest
        return self.made[key]

    def _probe_gradients(self, build: Build, condition: Condition, x: np.ndarray) -> None:
        """The zero density of finite-difference gradient estimates on the device (in the store's meta, once per
        build, defense and seed): at the clean inputs of the first samples, for random input coordinates i, the
        device's outputs at x + h e_i and x - h e_i; an estimate is zero when the two outputs are equal, which
        is what a gradient-estimating attack (ZOO, HopSkipJump) sees of a quantized network."""
        key = probe_key(build, condition)
        if self.store.get_meta(key) is not None:
            return
        tensor, defend = build.compiled.input, self._host_defense(condition.defense, build.model)
        lo, hi = input_domain(build)
        step = float(tensor.scale[0])
        hs = [GRADIENT_PROBE["zoo_h"], *(k * step for k in GRADIENT_PROBE["input_steps"])]
        rng = np.random.default_rng(condition.seed)
        n, size = min(GRADIENT_PROBE["samples"], len(x)), int(np.prod(x.shape[1:]))
        coordinates = np.stack([rng.choice(size, min(GRADIENT_PROBE["coordinates"], size), replace=False)
                                for _ in range(n)])  # fmt: skip
        probes = []
        for h in hs:
            for j, i in np.ndindex(coordinates.shape):
                for sign in (1.0, -1.0):
                    probe = x[j].reshape(-1).astype(np.float32).copy()
                    probe[coordinates[j, i]] = np.clip(probe[coordinates[j, i]] + sign * h, lo, hi)
                    probes.append(probe.reshape(x.shape[1:]))
        xq = reference.quantize_inputs(defend(np.stack(probes)), tensor)
        outputs = np.stack([np.frombuffer(a[0], np.uint8) for a in self.pool.infer_all([q.tobytes() for q in xq])])
        pairs = outputs.reshape(len(hs), coordinates.size, 2, -1)
        zero = np.all(pairs[:, :, 0] == pairs[:, :, 1], axis=2)
        self.store.set_meta(key, {
            "samples": n, "coordinates": int(coordinates.shape[1]), "queries": len(probes),
            "h": [{"h": h, "input_steps": h / step, "zero_density": float(z.mean())}
                  for h, z in zip(hs, zero, strict=True)],
        })  # fmt: skip

    def _attack_device(self, build: Build, condition: Condition, x, y, clip, defend):
        """A gradient-free attack that queries the device: each query is quantized, sent, and its output
        dequantized; groups of QUERY_GROUP samples each get max_queries per sample."""
        compiled, pool = build.compiled, self.pool
        spent = {"queries": 0, "budget": 0}

        def predict(batch: np.ndarray) -> np.ndarray:
            if spent["queries"] + len(batch) > spent["budget"]:
                raise QueryBudgetSpent
            spent["queries"] += len(batch)
            xq = reference.quantize_inputs(defend(batch.astype(np.float32)), compiled.input)
            answers = pool.infer_all([q.tobytes() for q in xq])
            out = np.stack([np.frombuffer(a[0], compiled.output.dtype) for a in answers])
            return reference.dequantize(out, compiled.output).reshape(len(batch), -1)

        classes = int(np.prod(compiled.output.shape[1:]))
        classifier = attacks.query_classifier(predict, tuple(x.shape[1:]), classes, clip)
        x_adv, used, unattacked = x.astype(np.float32).copy(), 0, 0
        for start in range(0, len(x), QUERY_GROUP):
            part = slice(start, start + QUERY_GROUP)
            spent["budget"] = spent["queries"] + condition.max_queries * len(x[part])
            try:
                x_adv[part] = attacks.unbounded(condition.attack, classifier, x[part], y[part], condition.eps,
                                               condition.seed + start, condition.params)  # fmt: skip
            except QueryBudgetSpent:
                unattacked += len(x[part])
        used = spent["queries"]
        return x_adv, used, unattacked

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

    # -- results --

    def _boundary(self, build: Build, cid: int, outputs: dict, clean: dict | None) -> dict | None:
        """metrics.boundary_distance of a minimal-perturbation attack's condition, computed once per condition
        (save() calls results() after each one); None without its clean condition, or when stages on the device
        pre-process the inputs (the stored inputs are then not what the network reads)."""
        if clean is None or len(clean["labels"]) != len(outputs["labels"]) or build.compiled.preprocess:
            return None
        if cid not in self.boundaries:
            self.boundaries[cid] = metrics.boundary_distance(clean["input"], outputs["input"], build.compiled.input,
                                                             build.model.tflite, build.model.keras)  # fmt: skip
        return self.boundaries[cid]

    def results(self) -> dict:
        store = self.store
        runs, examples = [], []
        clean: dict = {}
        for build, condition, cid in self.runs_meta:
            if store.pending(cid) or not store.has_samples(cid):
                continue
            outputs = store.outputs(cid, build.compiled.output.dtype, build.compiled.input.dtype)
            defense = None if condition.defense is None else condition.defense.key()
            where = (build.name, build.precision, condition.seed, json.dumps(defense, sort_keys=True))
            if condition.attack == "none":
                clean[where] = outputs
            row = {
                "model": build.name,
                "precision": build.precision,
                "attack": condition.attack,
                "eps": condition.eps,
                "mode": condition.mode,
                "defense": defense,
                "seed": condition.seed,
                "params": condition.params,
                "samples": len(outputs["labels"]),
            }
            row.update(metrics.condition_metrics(outputs, clean.get(where), build.compiled, condition.mode))
            if condition.mode == "on-device":
                row["queries"] = store.queries(cid)
                row["gradient_probe"] = store.get_meta(probe_key(build, condition))
            if condition.attack != "none" and attacks.ATTACKS[condition.attack].eps == "bound":
                row["boundary"] = self._boundary(build, cid, outputs, clean.get(where))
            if condition.attack != "none" and condition.seed == self.campaign.seeds[0] and where in clean:
                shown = metrics.examples(outputs, clean[where], build.compiled.input)  # for the report's figure
                if shown:
                    examples.append({k: row[k] for k in ("model", "precision", "attack", "eps", "mode", "defense")})
                    examples[-1].update(shown)
            runs.append(row)
        first = self.builds[0] if self.builds else None
        builds = [
            {
                "model": b.name,
                "precision": b.precision,
                "defense": b.label or None,
                "sha256": b.compiled.model_hash.hex(),
                "input": {
                    "shape": list(b.compiled.input.shape),
                    "scale": float(b.compiled.input.scale[0]),
                    "zero_point": int(b.compiled.input.zero_point[0]),
                },
                "operators": b.compiled.op_counts,
                "memory": b.firmware.memory.as_dict(),
                "latency": latency(self.board, store.ticks(b.conditions), b.counter),
            }
            for b in self.builds
        ]
        board = self.board
        link = dict(self.link)
        if self.pool is not None:
            for w in self.pool.workers:
                for k, v in w.link.items():
                    link[k] += v
        return {
            "tinyrobust_version": __version__,
            "model": None if first is None else {"name": first.model.name, **{k: builds[0][k] for k in
                                                                                ("sha256", "input", "operators")}},
            "board": {"name": board.name, "core": board.core, "fpu": board.fpu, "emulated": board.emulated},
            "memory": None if first is None else builds[0]["memory"],
            "latency": None if first is None else builds[0]["latency"],
            "builds": builds,
            "runs": runs,
            "examples": examples,
            "link": link,
            "settings": self.settings or self.campaign.recorded(),
            "campaign": self.campaign.recorded(),
            "seeds": self.campaign.seeds,
            "versions": versions(),
            "jobs": self.jobs,
            "notes": list(dict.fromkeys(self.notes)),
            "host": {"python": platform.python_version(), "machine": platform.machine()},
            "wall_seconds": round(time.monotonic() - self.started, 2),
        }  # fmt: skip

    def save(self, report: bool = True) -> None:
        """results.json and the CSV tables, after every condition; report.html (its plots take seconds) when
        the run ends or stops."""
        from tinyrobust.report.html import write_csv, write_report

        results = self.results()
        (self.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        write_csv(results, self.out)
        if report:
            write_report(results, self.out / "report.html")


def input_domain(build: Build) -> tuple[float, float]:
    """Where attacks keep their inputs: what the input tensor can represent, within the model's own input
    range when it has one (an int16x8 input's symmetric range reaches far below a pixel's 0)."""
    tensor = build.compiled.input
    limits = np.iinfo(tensor.dtype)
    lo, hi = reference.dequantize(np.array([limits.min, limits.max]), tensor).tolist()
    if build.model.input_range is not None:
        lo, hi = max(lo, build.model.input_range[0]), min(hi, build.model.input_range[1])
    return lo, hi


def probe_key(build: Build, condition: Condition) -> str:
    defense = None if condition.defense is None else condition.defense.key()
    return "gradient_probe " + json.dumps([build.name, build.precision, build.label, defense, condition.seed])


def firmware_dir(out: Path, model: str, precision: str, label: str, several: bool) -> Path:
    """out/firmware, or with several builds a folder in it for each: model-precision[-defense]."""
    name = "-".join(filter(None, (Path(model).stem, precision, label)))
    return out / "firmware" / name if several else out / "firmware"


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
            "source": counter_source(board),
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


def channel_for(board: Board, channel: str | None, port: str | None) -> str:
    """The host channel to build for: a device reached through --port speaks over its UART."""
    if port is not None:
        if channel not in (None, "uart"):
            raise UserError(f"--port reaches a device's UART; --channel {channel} needs the emulator")
        return "uart"
    return channel or board.default_channel


def start_emulator(board: Board, elf: Path, channel: str = "uart", log: Path | None = None) -> EmulatorTarget:
    return EmulatorTarget(board, elf, log=log or elf.parent / "emulator.log", channel=channel).start()


def run_campaign(campaign: Campaign, out: Path, progress: bool = True, **options) -> dict:
    return Runner(campaign, out, **options).run(progress)
