"""Boards are data: one TOML file per board in boards/."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass

from . import ROOT
from .errors import UserError

BOARDS_DIR = ROOT / "boards"


@dataclass
class Board:
    name: str
    description: str
    core: str  # -mcpu value
    fpu: str | None  # -mfpu value, None for cores without one
    family: str  # firmware/boards/<family>: startup code and UART driver
    clock_hz: int
    flash: dict  # {"origin": int, "size": int}
    ram: dict
    uart: dict
    emulator: dict | None  # {"program", "machine"} when the board is emulated

    @property
    def emulated(self) -> bool:
        return self.emulator is not None


def board_names() -> list[str]:
    return sorted(p.stem for p in BOARDS_DIR.glob("*.toml"))


def load_board(name: str) -> Board:
    path = BOARDS_DIR / f"{name}.toml"
    if not path.is_file():
        raise UserError(f"there is no board '{name}'; choose one of: {', '.join(board_names())}")
    data = tomllib.loads(path.read_text())
    return Board(
        name=name,
        description=data["description"],
        core=data["core"],
        fpu=data.get("fpu"),
        family=data["family"],
        clock_hz=data["clock_hz"],
        flash=data["memory"]["flash"],
        ram=data["memory"]["ram"],
        uart=data["uart"],
        emulator=data.get("emulator"),
    )
