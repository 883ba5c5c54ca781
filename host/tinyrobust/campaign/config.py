"""What a campaign runs, as a user writes it: the TOML config file, its parser and its inverse.

Every error names the key and what it allows, before anything runs."""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tinyrobust.campaign import attacks
from tinyrobust.device.boards import DEFAULT_BOARD, board_names
from tinyrobust.errors import UserError
from tinyrobust.model import zoo
from tinyrobust.model.quantize import PRECISIONS

MODES = ("transfer", "on-device")
DEFENSE_PLACES = ("host", "device")


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
class Campaign:
    models: list[str] = field(default_factory=lambda: ["digits-cnn"])  # built-in names or .tflite paths
    precisions: list[str] = field(default_factory=lambda: ["int8"])
    board: str = DEFAULT_BOARD
    samples: int = 200
    seeds: list[int] = field(default_factory=lambda: [0])
    attacks: list[AttackSpec] = field(default_factory=list)
    defenses: list[DefenseSpec] = field(default_factory=list)
    data: str | None = None  # test data of a .tflite model, or a data set to train a built-in model on (zoo.load_data)
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
    if "models" in config:
        c.models = _list_of(config["models"], str, "models", "a list of built-in model names or .tflite paths")
    for name in c.models:
        if not zoo.is_file(name) and name not in zoo.builtin_names():
            _fail("models", f"names unknown model '{name}'; allowed: {', '.join(zoo.builtin_names())} or a .tflite")
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


def check(c: Campaign) -> None:
    """Refuse, before anything runs, an attack or a defense that cannot run as configured (a campaign made in
    code has not been through the parser)."""
    attacks.check_names([a.name for a in c.attacks])
    users = [m for m in c.models if zoo.is_file(m)]
    for spec in c.defenses:
        configured = spec.configured()  # refuses an unknown name, preset or parameter
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
    lines, tables = [], []
    for key, value in recorded.items():
        if value is None:
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            tables.append((key, value))
        elif not (isinstance(value, list) and not value and key in ("attacks", "defenses")):
            lines.append(f"{_toml_key(key)} = {toml_value(value)}")
    for key, entries in tables:
        for entry in entries:
            lines += ["", f"[[{key}]]"]
            lines += [f"{_toml_key(k)} = {toml_value(v)}" for k, v in entry.items() if v is not None]
    return "\n".join(lines) + "\n"
