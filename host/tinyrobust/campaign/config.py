"""What a campaign runs, as a user writes it: the TOML config file, its parser and its inverse.

Every error names the key and what it allows, before anything runs."""

from __future__ import annotations

import json
import string
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from tinyrobust.campaign import attacks
from tinyrobust.device.boards import DEFAULT_BOARD, board_names, load_board
from tinyrobust.errors import UserError
from tinyrobust.model import zoo
from tinyrobust.model.quantize import PRECISIONS, precision_of

if TYPE_CHECKING:
    from tinyrobust.split.evaluate import SplitSettings

MODES = ("transfer", "on-device")
DEFENSE_PLACES = ("host", "device")
PLACEHOLDERS = ("model", "precision")  # what a defense's model and float_model paths may hold, in braces


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
    # A training defense's trained model given as files instead of trained here: paths in which {model} (the name of
    # a model of the campaign) and {precision} are filled in. model: the .tflite the device runs; float_model: the
    # .keras or .h5 the transfer attacks are made on (without model, quantized as the defense's retrained model is).
    model: str | None = None
    float_model: str | None = None

    def key(self) -> dict:
        """The defense as the store and the results identify it; model and float_model only when given, so that
        the keys of runs made before they existed stay the same."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def configured(self):
        """The defense from tinyrobust.campaign.defenses with these parameters ("preset" names a preset)."""
        from tinyrobust.campaign import defenses

        params = dict(self.params)
        return defenses.make(self.name, params.pop("preset", None), **params)

    @property
    def trains(self) -> bool:
        """Whether the defense trains a new model."""
        return self.configured().defense.kind == "training"

    @property
    def given(self) -> bool:
        """Whether the trained model is given as files (model, float_model) instead of trained here."""
        return self.model is not None or self.float_model is not None

    def files(self, model: str, precision: str) -> tuple[Path | None, Path | None]:
        """The given .tflite and float model for a model of the campaign (by name) at a precision; None where not
        given."""
        return tuple(None if t is None else Path(t.format(model=model, precision=precision))
                     for t in (self.model, self.float_model))  # fmt: skip

    @property
    def builds_apart(self) -> bool:
        """Whether the defense needs firmware of its own: a stage on the device, or a retrained model."""
        return self.where == "device" or self.trains

    def slug(self, specs: list[DefenseSpec]) -> str:
        """A short name, unique among the campaign's defenses, for folder names and store keys: the defense's
        name, "-device" when on the device, and its position when the same defense appears more than once."""
        slug = self.name + ("-device" if self.where == "device" else "")
        same = [i for i, other in enumerate(specs) if other.name == self.name and other.where == self.where]
        return f"{slug}-{same.index(specs.index(self)) + 1}" if len(same) > 1 else slug


@dataclass
class SplitSpec:
    """A campaign's [split] section: split-evaluate's settings (None: split-evaluate's default), run on the
    campaign's board once per entropy model, into the campaign's folder as split-<entropy model>/."""

    model: str = "split-digits"
    entropy_models: list[str] | None = None  # None: the model's own
    betas: list[float] | None = None
    samples: int | None = None
    eps: list[float] | None = None
    attacks: list[str] | None = None
    iterations: int | None = None
    eot: int | None = None
    corruptions: list[str] | None = None
    defense: bool | None = None
    device_defense: list[dict] | None = None
    adaptive: bool | None = None
    seed: int | None = None
    data: str | None = None

    def entropy_model_names(self) -> list[str]:
        from tinyrobust.split.model import split_spec

        return self.entropy_models or [split_spec(self.model)["split"]["entropy_model"]]

    def settings(self, entropy_model: str, board: str, out: Path, channel: str | None, jobs: int) -> SplitSettings:
        """split-evaluate's settings for one entropy model."""
        from tinyrobust.split.evaluate import SplitSettings

        given = {k: v for k, v in asdict(self).items() if v is not None and k != "entropy_models"}
        return SplitSettings(**given, entropy_model=entropy_model, board=board, out=out, channel=channel, jobs=jobs)


@dataclass
class Campaign:
    models: list[str] = field(default_factory=lambda: ["digits-cnn"])  # built-in names, .tflite or float model paths
    precisions: list[str] | None = None  # None: each model's own (precisions_for)
    board: str = DEFAULT_BOARD
    samples: int = 200
    seeds: list[int] = field(default_factory=lambda: [0])
    attacks: list[AttackSpec] = field(default_factory=list)
    defenses: list[DefenseSpec] = field(default_factory=list)
    # A model file's test data (and a float one's to quantize on), or a built-in's to train on; float_model: .keras or
    # .h5 for a .tflite model. Either one path for every model, or a table of paths by model name (zoo.model_name).
    data: str | dict[str, str] | None = None
    float_model: str | dict[str, str] | None = None
    split: SplitSpec | None = None  # a config with only a [split] section has no models

    def recorded(self) -> dict:
        values = asdict(self)
        if self.split is None:
            del values["split"]  # a campaign without one records what it always did, so that its runs resume
        values["defenses"] = [d.key() for d in self.defenses]  # likewise, model and float_model only when given
        return values

    def data_for(self, model: str) -> str | None:
        """The data of a model as named in models: the campaign's data, or the model's own from a table."""
        return self.data.get(zoo.model_name(model)) if isinstance(self.data, dict) else self.data

    def float_model_for(self, model: str) -> str | None:
        """The float model of a .tflite model as named in models: the campaign's, or the model's own from a table."""
        return self.float_model.get(zoo.model_name(model)) if isinstance(self.float_model, dict) else self.float_model

    @classmethod
    def from_recorded(cls, values: dict) -> Campaign:
        values = dict(values)
        values["attacks"] = [AttackSpec(**a) for a in values.get("attacks", [])]
        values["defenses"] = [DefenseSpec(**d) for d in values.get("defenses", [])]
        if values.get("split") is not None:
            values["split"] = SplitSpec(**values["split"])
        return cls(**values)


# ---- the config file --------------------------------------------------------------------------------------

TOP_KEYS = {"models", "precisions", "board", "samples", "seeds", "attacks", "defenses", "data", "float_model",
            "split"}  # fmt: skip
SPLIT_KEYS = {f.name for f in fields(SplitSpec)}
ATTACK_KEYS = {"name", "eps", "mode", "params", "max_queries"}
DEFENSE_KEYS = {"name", "where", "params", "model", "float_model"}


def _fail(key: str, problem: str) -> None:
    raise UserError(f"campaign key '{key}' {problem}")


def _unknown(table: dict, allowed: set, prefix: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        _fail(f"{prefix}{extra[0]}", f"is not a campaign setting; allowed keys here: {', '.join(sorted(allowed))}")


def _list_of(value, kind, key: str, what: str) -> list:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
        _fail(key, f"must be {what}, not {value!r}")
    return values


def parse(config: dict) -> Campaign:
    """A campaign from a parsed config; every error names the key and what it allows."""
    _unknown(config, TOP_KEYS, "")
    c = Campaign()
    if "split" in config:
        c.split = _parse_split(config["split"])
        c.models = []  # a split section runs the classifiers only when it names them
    if "models" in config and not (config["models"] == [] and c.split is not None):
        c.models = _list_of(config["models"], str, "models", "a list of built-in model names or model files")
    for name in c.models:
        if not zoo.is_file(name) and name not in zoo.builtin_names():
            _fail("models", f"names unknown model '{name}'; allowed: {', '.join(zoo.builtin_names())}, a .tflite, "
                            "or a float .keras or .h5 model")  # fmt: skip
    if "precisions" in config:
        c.precisions = _list_of(config["precisions"], str, "precisions", f"a list of {' or '.join(PRECISIONS)}")
        for p in c.precisions:
            if p not in PRECISIONS:
                _fail("precisions", f"has '{p}'; allowed: {', '.join(PRECISIONS)}")
    if "board" in config:
        if config["board"] not in board_names():
            _fail("board", f"is '{config['board']}'; allowed: {', '.join(board_names())}")
        c.board = config["board"]
    if "samples" in config:
        if not isinstance(config["samples"], int) or isinstance(config["samples"], bool) or config["samples"] < 1:
            _fail("samples", f"must be a whole number of at least 1, not {config['samples']!r}")
        c.samples = config["samples"]
    if "seeds" in config:
        c.seeds = _list_of(config["seeds"], int, "seeds", "a list of whole numbers")
    names = [zoo.model_name(m) for m in c.models]
    for key in ("data", "float_model"):
        if key in config:
            value = config[key]
            paths = value.values() if isinstance(value, dict) else [value]
            if not all(isinstance(v, str) for v in paths):
                _fail(key, f"must be a file path, or a table of file paths by model name, not {value!r}")
            unknown = sorted(set(value) - set(names)) if isinstance(value, dict) else []
            if unknown:
                _fail(f"{key}.{unknown[0]}", f"names no model of the campaign; allowed: {', '.join(names)}")
            setattr(c, key, dict(value) if isinstance(value, dict) else value)
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
    if not c.models and (c.attacks or c.defenses):
        _fail("models", "is empty, so the attacks and defenses have no model to run on; name the models")
    return c


def _parse_split(table) -> SplitSpec:
    """The [split] section: split-evaluate's settings, each checked as the command line checks it."""
    from tinyrobust.compile.stages import canonical
    from tinyrobust.split import attacks as split_attacks
    from tinyrobust.split.corruptions import CORRUPTIONS
    from tinyrobust.split.model import ENTROPY_MODELS

    if not isinstance(table, dict):
        _fail("split", "must be a table ([split] with model, entropy_models, betas, samples, eps, attacks, ...)")
    _unknown(table, SPLIT_KEYS, "split.")
    s = SplitSpec()
    if "model" in table:
        if table["model"] not in zoo.split_names():
            _fail("split.model", f"is {table['model']!r}; allowed: {', '.join(zoo.split_names())}")
        s.model = table["model"]
    for key, allowed in (("entropy_models", ENTROPY_MODELS), ("attacks", split_attacks.KINDS),
                         ("corruptions", CORRUPTIONS)):  # fmt: skip
        if key in table:
            names = table[key]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                _fail(f"split.{key}", f"must be a list of names, not {names!r}")
            for name in names:
                if name not in allowed:
                    _fail(f"split.{key}", f"has {name!r}; allowed: {', '.join(allowed)}")
            if len(set(names)) < len(names):
                _fail(f"split.{key}", f"names {next(n for n in names if names.count(n) > 1)!r} twice; name it once")
            if key == "entropy_models" and not names:
                _fail(f"split.{key}", f"is empty; name at least one of {', '.join(allowed)}")
            setattr(s, key, list(names))
    for key in ("betas", "eps"):
        if key in table:
            values = table[key]
            numbers = isinstance(values, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                       and v > 0 for v in values)  # fmt: skip
            if not numbers or (key == "betas" and not values):
                _fail(f"split.{key}", f"must be a list of positive numbers, not {values!r}")
            setattr(s, key, [float(v) for v in values])
    for key, low in (("samples", 1), ("iterations", 1), ("eot", 1), ("seed", 0)):
        if key in table:
            value = table[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                _fail(f"split.{key}", f"must be a whole number of at least {low}, not {value!r}")
            setattr(s, key, value)
    for key in ("defense", "adaptive"):
        if key in table:
            if not isinstance(table[key], bool):
                _fail(f"split.{key}", f"must be true or false, not {table[key]!r}")
            setattr(s, key, table[key])
    if "data" in table:
        if not isinstance(table["data"], str):
            _fail("split.data", f"must be a file path, not {table['data']!r}")
        s.data = table["data"]
    if "device_defense" in table:
        stages = table["device_defense"]
        if not isinstance(stages, list) or not all(isinstance(st, dict) for st in stages):
            _fail("split.device_defense", 'must be a list of stages such as [{stage = "median", k = 3}]')
        try:
            s.device_defense = canonical(stages)
        except UserError as exc:
            _fail("split.device_defense", f"has a stage the device cannot run: {exc}")
    return s


def _parse_attack(table, prefix: str) -> AttackSpec:
    if not isinstance(table, dict):
        _fail(prefix.rstrip("."), "must be a table with name, eps, mode and params")
    _unknown(table, ATTACK_KEYS, prefix)
    name = table.get("name")
    if name not in attacks.ATTACKS:
        _fail(f"{prefix}name", f"is {name!r}; allowed: {', '.join(sorted(attacks.ATTACKS))}")
    spec = attacks.ATTACKS[name]
    if "eps" in table:
        eps = [float(e) for e in _list_of(table["eps"], (int, float), f"{prefix}eps", "a list of numbers")]
    elif spec.eps == "bound":
        eps = [0.0]  # unbounded
    else:
        _fail(f"{prefix}eps", f"is missing; attack {name} needs its budget, a list of numbers such as [0.05, 0.1]")
    low = 0.0 if spec.eps == "bound" else 1e-12
    if any(e < low for e in eps):
        _fail(f"{prefix}eps", f"must be {'at least 0' if spec.eps == 'bound' else 'positive'} for attack {name}")
    mode = table.get("mode", "transfer")
    if mode not in MODES:
        _fail(f"{prefix}mode", f"is {mode!r}; allowed: {', '.join(MODES)}")
    if mode == "on-device" and not spec.queries:
        gradient_free = sorted(n for n, a in attacks.ATTACKS.items() if a.queries)
        _fail(f"{prefix}mode", f"on-device needs a gradient-free attack; allowed: {', '.join(gradient_free)}")
    params = table.get("params", {})
    if not isinstance(params, dict):
        _fail(f"{prefix}params", "must be a table of the attack's parameters")
    attacks.parameters(name, params, prefix=f"campaign key '{prefix}params': ")
    max_queries = table.get("max_queries", 1000)
    if not isinstance(max_queries, int) or max_queries < 1:
        _fail(f"{prefix}max_queries", f"must be a whole number of at least 1, not {max_queries!r}")
    return AttackSpec(name, eps, mode, dict(params), max_queries)


def _parse_defense(table, prefix: str) -> DefenseSpec:
    if not isinstance(table, dict):
        _fail(prefix.rstrip("."), "must be a table with name, where and params")
    _unknown(table, DEFENSE_KEYS, prefix)
    if not isinstance(table.get("name"), str):
        _fail(f"{prefix}name", "must name a defense")
    place = table.get("where", "host")
    if place not in DEFENSE_PLACES:
        _fail(f"{prefix}where", f"is {place!r}; allowed: {', '.join(DEFENSE_PLACES)}")
    params = table.get("params", {})
    if not isinstance(params, dict):
        _fail(f"{prefix}params", "must be a table of the defense's parameters")
    files = {}
    for key, suffixes in (("model", (".tflite",)), ("float_model", zoo.KERAS_SUFFIXES)):
        if key in table:
            path = table[key]
            if not isinstance(path, str) or not path.endswith(suffixes):
                _fail(f"{prefix}{key}", f"must be the path of a {' or '.join(suffixes)} file, not {path!r}")
            try:
                fields_in = [f for _, f, _, _ in string.Formatter().parse(path) if f is not None]
            except ValueError:
                fields_in = ["?"]
            wrong = [f for f in fields_in if f not in PLACEHOLDERS]
            if wrong:
                _fail(f"{prefix}{key}", f"has {{{wrong[0]}}} in {path!r}; allowed placeholders: {{model}}, "
                                        "{precision}")  # fmt: skip
            files[key] = path
    return DefenseSpec(table["name"], place, dict(params), **files)


def load_config(path: Path) -> Campaign:
    """A campaign from a TOML file."""
    try:
        config = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"there is no campaign config {path}; pass the path of a .toml file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path} is not valid TOML ({exc}); fix the file") from None
    return parse(config)


def precisions_for(c: Campaign, model: str) -> list[str]:
    """The precisions a model runs at: the campaign's, or when it names none, the model's own (a .tflite file's
    from the file, int8 for the others)."""
    return c.precisions if c.precisions is not None else [zoo.default_precision(model)]


def check(c: Campaign) -> None:
    """Refuse, before anything runs, an attack or a defense that cannot run as configured, or a file the campaign
    names that is not there (a campaign made in code has not been through the parser)."""
    attacks.check_names([a.name for a in c.attacks])
    users = [m for m in c.models if zoo.is_file(m) and not zoo.is_float_file(m)]  # .tflite: no training data
    for spec in c.defenses:
        configured = spec.configured()  # refuses an unknown name, preset or parameter
        training = configured.defense.kind == "training"
        if spec.given and not training:
            raise UserError(f"defense {spec.name} trains no model, so it takes no model or float_model; leave them "
                            "out")  # fmt: skip
        if users and spec.model is None and spec.float_model is not None:
            raise UserError(f"defense {spec.name}'s float_model is quantized on the model's training data, which "
                            f"{users[0]} does not come with; give its .tflite too, with model")  # fmt: skip
        if users and (training and not spec.given or spec.name == "pixeldefend"):
            raise UserError(f"defense {spec.name} learns from the model's training data, which {users[0]} does not "
                            "come with; use a built-in model")  # fmt: skip
        if configured.defense.kind == "smoothing" and spec.where != "device":
            raise UserError(f'defense {spec.name} votes over noisy copies in the firmware, so it runs on the device '
                            'only; give it where = "device"')  # fmt: skip
        if spec.where != "device":
            continue
        if training:
            raise UserError(f'defense {spec.name} trains a new model, so it has no place on the device; remove '
                            'where = "device"')  # fmt: skip
        configured.device_stages()  # refuses a defense the firmware cannot run
        if configured.smoothing() is not None:  # refuses bad parameters; the noise is added to int8 and int16 inputs
            continue
        if any("int16x8" in precisions_for(c, m) for m in c.models):
            raise UserError(f"defense {spec.name} runs on the device's int8 input, so it cannot go with int16x8; "
                            'run it in a campaign with precisions = ["int8"]')  # fmt: skip
    if c.split is not None and not load_board(c.board).emulated:
        raise UserError(f"a campaign's split section runs on an emulated board for now; {c.board} is a real one")
    _check_files(c)


def _check_files(c: Campaign) -> None:
    """Refuse a file the campaign names that is not there (a model, its float model or data, a defense's given
    trained model), before the first model's hours of runs rather than at the second's."""
    from tinyrobust.model.datasets import WHAT_TO_PASS

    for m in c.models:
        if zoo.is_file(m) and not Path(m).is_file():
            raise UserError(f"model file {m} does not exist; put the model there or correct its path in models")
        float_model, data = c.float_model_for(m), c.data_for(m)
        if float_model is not None and not Path(float_model).is_file():
            raise UserError(f"float model {float_model} does not exist; put the .keras or .h5 file there or correct "
                            "its path in float_model")  # fmt: skip
        if data is not None and not Path(data).exists():
            raise UserError(f"data set {data} does not exist; put {WHAT_TO_PASS} there and pass its path")
        for spec in c.defenses:
            for precision in precisions_for(c, m) if spec.given else []:
                tflite, keras_model = spec.files(zoo.model_name(m), precision)
                for key, path in (("model", tflite), ("float_model", keras_model)):
                    if path is not None and not path.is_file():
                        raise UserError(f"{path} does not exist (defense {spec.name}'s {key} for "
                                        f"{zoo.model_name(m)} {precision}); put the trained model there, or leave out "
                                        "model and float_model to train the defense here")  # fmt: skip
                if tflite is not None and precision_of(tflite.read_bytes()) != precision:
                    raise UserError(f"{tflite} is {precision_of(tflite.read_bytes())}, not {precision} (defense "
                                    f"{spec.name}'s model for {zoo.model_name(m)}); give {{precision}} in its path, "
                                    "or the file of that precision")  # fmt: skip


# ---- the inverse: a recorded campaign as the config file that runs it again ----------------------------


def toml_value(value) -> str:
    """A value as a config file writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = [f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise TypeError(f"no TOML for {value!r}")


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def to_toml(recorded: dict) -> str:
    """A campaign (Campaign.recorded()) as the TOML config file that runs it again: tinyrobust campaign run."""
    lines, tables, sections = [], [], []
    for key, value in recorded.items():
        if value is None:
            continue
        if isinstance(value, dict):  # [split]
            sections.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            tables.append((key, value))
        elif not (isinstance(value, list) and not value and key in ("attacks", "defenses")):
            lines.append(f"{_toml_key(key)} = {toml_value(value)}")
    for key, entries in tables:
        for entry in entries:
            lines += ["", f"[[{key}]]"]
            lines += [f"{_toml_key(k)} = {toml_value(v)}" for k, v in entry.items() if v is not None]
    for key, table in sections:
        lines += ["", f"[{key}]"]
        lines += [f"{_toml_key(k)} = {toml_value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"
