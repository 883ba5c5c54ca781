"""Energy per inference estimated from the board file's datasheet figures ([energy] in boards/<board>.toml).

E = count / f x V x I(f), with I(f) = uA/MHz x f in MHz: the run-mode current the datasheet gives for code in flash,
drawn at the supply voltage for as long as the count takes at the core clock f. On hardware the count is core cycles
(DWT CYCCNT); in the emulator only instructions are counted, and they stand in for cycles: a core spends at least one
cycle per instruction, so the estimate is then a lower bound of what the same figures give for the real cycles. Every
figure made here is labelled an estimate; device/meter.py measures instead."""

from __future__ import annotations

from typing import TypedDict

from tinyrobust.device.boards import Board


class EnergyEstimate(TypedDict):
    estimate_uj: float  # microjoules per inference (or per layer)
    basis: str  # the arithmetic, labelled as an estimate
    source: str  # the datasheet, table and row the figures come from


def estimate_uj(board: Board, count: float) -> float | None:
    """count / f x V x (uA/MHz x MHz) in microjoules, count being core cycles or instructions standing in for them;
    None when the board file gives no datasheet figures."""
    energy = board.energy
    if not energy.estimates:
        return None
    seconds = count / board.clock_hz
    amperes = energy.run_ua_per_mhz * 1e-6 * (board.clock_hz / 1e6)
    return seconds * energy.supply_v * amperes * 1e6


def estimate_basis(board: Board, unit: str) -> str:
    """How estimate_uj got its figure, beginning with the word estimate."""
    energy, mhz = board.energy, board.clock_hz / 1e6
    counted = (
        "executed instructions (emulated), standing in for core cycles, of which they are a lower bound"
        if unit == "instructions"
        else "core cycles"
    )
    return f"estimate: {counted} / {mhz:g} MHz x {energy.supply_v:g} V x {energy.run_ua_per_mhz:g} uA/MHz x {mhz:g} MHz"


def energy_estimate(board: Board, count: float | None, unit: str) -> EnergyEstimate | None:
    """The estimate for a count (per inference, or per layer), with its basis and source; None without a count or
    without the board file's figures."""
    if count is None or not board.energy.estimates:
        return None
    return EnergyEstimate(
        estimate_uj=estimate_uj(board, count),
        basis=estimate_basis(board, unit),
        source=f"datasheet figures for the {board.energy.part}: {board.energy.source}",
    )
