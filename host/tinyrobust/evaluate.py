"""flash-and-evaluate: the one-model shorthand of a campaign (campaign/), from command-line options."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from tinyrobust.campaign.config import DEFENSE_PLACES, AttackSpec, Campaign, DefenseSpec
from tinyrobust.campaign.runner import STORE_NAME, Runner
from tinyrobust.campaign.store import Store
from tinyrobust.device.boards import DEFAULT_BOARD
from tinyrobust.errors import UserError


@dataclass
class Settings:
    model: str = "digits-cnn"  # a built-in name, a .tflite path or a float .keras/.h5 path
    # "int8" or "int16x8" (16-bit activations, 8-bit weights); None: a .tflite's own, int8 for the others
    precision: str | None = None
    float_model: str | None = None
    data: str | None = None
    board: str = DEFAULT_BOARD
    samples: int = 200
    attacks: list[str] = field(default_factory=lambda: ["fgsm", "pgd"])
    eps: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2])
    seed: int = 0
    # each as a campaign's [[defenses]] table: {"name": ..., "where": "host" or "device", "params": {...}}
    defenses: list[dict] = field(default_factory=list)
    out: Path = Path("results")
    channel: str | None = None  # "uart" or "semihosting"; None: the board's default (semihosting when emulated)
    port: str | None = None  # a pyserial URL of a device already running; None: start an emulator
    flash_with: str = "pyocd"  # how a real board is flashed before evaluating: "pyocd", "mbed" or "none"
    jobs: int = 1  # emulators side by side
    ray: str | None = None  # a Ray cluster to run on: "local", "auto" or its head's address; None: this machine
    devices_per_node: int = 1  # device actors on each node of the Ray cluster
    stack: int | None = None  # the firmware's stack reserve in bytes, checked against a measurement; None: the default

    def recorded(self) -> dict:
        """What defines the run's results (not where they are written, nor how the device is reached)."""
        values = dataclasses.asdict(self)
        for how in ("out", "channel", "port", "flash_with", "jobs", "ray", "devices_per_node", "stack"):
            del values[how]
        if not self.defenses:
            del values["defenses"]  # a run without them records what it always did, so that its runs resume
        return values

    def campaign(self) -> Campaign:
        """The campaign these options describe: one model, one precision, transfer attacks over the eps list, and
        the defenses."""
        from tinyrobust.campaign.attacks import check_names

        check_names(self.attacks)
        for d in self.defenses:
            if d.get("where", "host") not in DEFENSE_PLACES:
                raise UserError(f"--defense {d['name']} has where={d['where']}; allowed: {', '.join(DEFENSE_PLACES)}")
        return Campaign(
            models=[self.model],
            precisions=None if self.precision is None else [self.precision],
            board=self.board,
            samples=self.samples,
            seeds=[self.seed],
            attacks=[AttackSpec(name, [float(e) for e in self.eps]) for name in self.attacks],
            defenses=[DefenseSpec(d["name"], d.get("where", "host"), dict(d.get("params", {}))) for d in self.defenses],
            data=self.data,
            float_model=self.float_model,
        )


def resume_settings(out: Path) -> Settings:
    """The settings of the interrupted run in out."""
    path = out / STORE_NAME
    if not path.is_file():
        raise UserError(f"{out} holds no run to resume (no {STORE_NAME}); start one with --out {out}")
    store = Store(path)
    recorded = store.get_meta("settings")
    store.close()
    if recorded is None:
        raise UserError(f"{path} holds no flash-and-evaluate run; resume it with tinyrobust campaign run --resume")
    return Settings(**recorded, out=out)


def flash_and_evaluate(settings: Settings, progress: bool = True, connect=None) -> dict:
    if settings.samples < 1:
        raise UserError(f"--samples must be at least 1, not {settings.samples}")
    runner = Runner(
        settings.campaign(),
        settings.out,
        jobs=settings.jobs,
        channel=settings.channel,
        port=settings.port,
        flash_with=settings.flash_with,
        connect=connect,
        settings=settings.recorded(),
        stack=settings.stack,
        ray=settings.ray,
        devices_per_node=settings.devices_per_node,
    )
    return runner.run(progress)
