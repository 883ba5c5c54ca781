"""Boards are data: one TOML file per board in boards/."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from tinyrobust.assets import BOARDS
from tinyrobust.errors import UserError

# The board every command uses unless told otherwise: QEMU's Cortex-M4F.
DEFAULT_BOARD = "qemu-mps2-an386"


@dataclass(frozen=True)
class Region:
    """A memory region of the chip."""

    origin: int
    size: int


@dataclass(frozen=True)
class Pin:
    """A UART or energy pin: its GPIO port's base address (0 where the family has none), pin number and alternate
    function."""

    pin: int
    port: int = 0
    function: int = 0


@dataclass(frozen=True)
class Uart:
    """The UART the link uses, as the family's driver needs it (firmware/boards/<family>/uart.c)."""

    base: int
    baud: int = 115200
    bauddiv: int = 16  # CMSDK: the divider QEMU's model reads; the baud rate does not matter in QEMU
    clock_hz: int | None = None  # the UART's kernel clock, when not the core clock
    enable: tuple[tuple[int, int], ...] = ()  # (register, bit) to set for its clock and power
    tx: Pin | None = None
    rx: Pin | None = None
    lpuart: bool = False  # STM32's low-power UART, whose baud register takes 256 x the divider

    @classmethod
    def from_toml(cls, table: dict) -> Uart:
        values = dict(table)
        values["enable"] = tuple(tuple(e) for e in values.get("enable", ()))
        for pin in ("tx", "rx"):
            if pin in values:
                values[pin] = Pin(**values[pin])
        return cls(**values)


@dataclass(frozen=True)
class Energy:
    """A board file's [energy] table: the datasheet's run-mode figures for an estimate (device/energy.py), and the pin
    the firmware holds high while the model runs, for a meter (firmware/boards/<family>/energy.c drives it)."""

    part: str | None = None  # the MCU the figures are for (for an FPGA image, the silicon part standing in for it)
    supply_v: float | None = None  # VDD of the figures; also what a PPK2 in ampere-meter mode multiplies current by
    run_ua_per_mhz: float | None = None  # run mode, code in flash, at the table's row nearest the core clock
    source: str | None = None  # the datasheet, table and row the figures come from
    pin: Pin | None = None
    enable: tuple[tuple[int, int], ...] = ()  # (register, bit) to set for the pin's GPIO clock

    @property
    def estimates(self) -> bool:
        return self.supply_v is not None and self.run_ua_per_mhz is not None

    @classmethod
    def from_toml(cls, table: dict) -> Energy:
        values = dict(table)
        values["enable"] = tuple(tuple(e) for e in values.get("enable", ()))
        if "pin" in values:
            values["pin"] = Pin(**values["pin"])
        return cls(**values)


@dataclass
class Board:
    name: str
    description: str
    core: str  # -mcpu value
    fpu: str | None  # -mfpu value, None for cores without one
    family: str  # firmware/boards/<family>: the UART driver (startup and counter are in cortex-m/)
    clock_hz: int  # the clock SysTick counts: the core clock
    flash: Region
    ram: Region  # where data, the arena and the stack go
    uart: Uart
    # When the board is emulated: {"program", "instructions_per_tick", ...}; QEMU boards name their "machine",
    # Renode boards their "platform" description, "uart" peripheral and "mips" (see emulator.py).
    emulator: dict | None
    extra_ram: dict[str, Region] = field(default_factory=dict)  # further RAM regions, declared but not filled
    counter: str = "systick"  # firmware/boards/cortex-m/<counter>.c: "systick", or "dwt" (CYCCNT) on hardware
    flashing: dict = field(default_factory=dict)  # {"pyocd": target name, "mbed": Mbed board name} for real boards
    flash_config: dict | None = None  # {"offset"}: where the chip reads its flash configuration field (Kinetis)
    energy: Energy = field(default_factory=Energy)  # datasheet figures for an estimate, the pin for a meter

    @property
    def emulated(self) -> bool:
        return self.emulator is not None

    @property
    def renode(self) -> bool:
        """Emulated by Renode rather than QEMU."""
        return self.emulated and Path(self.emulator["program"]).name == "renode"

    @property
    def channels(self) -> tuple[str, ...]:
        """The host channels the board offers: its UART, and in QEMU also semihosting file I/O (an emulated
        board file may narrow this with [emulator] channels, as Renode's does)."""
        if not self.emulated:
            return ("uart",)
        return tuple(self.emulator.get("channels", ("uart", "semihosting")))

    @property
    def default_channel(self) -> str:
        """The fast semihosting channel where the emulator has it, the UART otherwise and on hardware."""
        return "semihosting" if "semihosting" in self.channels else "uart"

    @property
    def how_run(self) -> str:
        """How the board is run, as `tinyrobust boards` shows it: the emulator and what it emulates, or the
        pyOCD target a real board is flashed as."""
        if not self.emulated:
            return f"pyOCD {self.flashing['pyocd']}"
        if self.renode:
            return f"Renode {Path(self.emulator['platform']).name}"
        return f"{self.emulator['program']} -M {self.emulator['machine']}"


def board_names() -> list[str]:
    return sorted(p.stem for p in BOARDS.glob("*.toml"))


def load_board(name: str) -> Board:
    path = BOARDS / f"{name}.toml"
    if not path.is_file():
        raise UserError(f"there is no board '{name}'; choose one of: {', '.join(board_names())}")
    data = tomllib.loads(path.read_text())
    memory = dict(data["memory"])
    flash_config = memory.pop("flash_config", None)
    return Board(
        name=name,
        description=data["description"],
        core=data["core"],
        fpu=data.get("fpu"),
        family=data["family"],
        clock_hz=data["clock_hz"],
        flash=Region(**memory.pop("flash")),
        ram=Region(**memory.pop("ram")),
        uart=Uart.from_toml(data["uart"]),
        emulator=data.get("emulator"),
        extra_ram={name: Region(**region) for name, region in memory.items()},
        counter=data.get("counter", "systick"),
        flashing=data.get("flashing", {}),
        flash_config=flash_config,
        energy=Energy.from_toml(data.get("energy", {})),
    )
