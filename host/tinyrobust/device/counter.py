"""The device's counter and what its ticks mean: executed instructions in an emulator (SysTick under QEMU's
-icount, or Renode's virtual time), core clock cycles on hardware (DWT CYCCNT or SysTick)."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np

from tinyrobust.build.firmware import build_calibration
from tinyrobust.device.boards import Board
from tinyrobust.device.emulator import START_TIMEOUT_S, Emulator
from tinyrobust.device.energy import energy_estimate
from tinyrobust.errors import UserError


def instructions_per_tick(board: Board) -> float:
    """Executed instructions per counter tick. QEMU under -icount shift=0: an instruction takes 1 ns of
    virtual time and SysTick counts the machine's cpuclk. Renode: an instruction takes 1 / (mips * 1e6) s of
    virtual time and SysTick counts clock_hz, so mips * 1e6 / clock_hz. Emulated boards record the value
    measured by calibrate()."""
    if board.emulated and "instructions_per_tick" in board.emulator:
        return float(board.emulator["instructions_per_tick"])
    return 1e9 / board.clock_hz


def counter_source(board: Board) -> str:
    """Where an emulated board's counts come from, so that results name their unit and its source."""
    if board.renode:
        return (
            f"SysTick in Renode, counting {board.clock_hz / 1e6:g} MHz of virtual time with the CPU at "
            f"{board.emulator['mips']} MIPS: executed instructions (emulated, {instructions_per_tick(board):g} "
            "per tick), not cycles"
        )
    return "SysTick in QEMU with -icount shift=0: executed instructions (emulated), not cycles"


CALIBRATION = struct.Struct("<IIQQ")  # short and long loop iterations, ticks of each


def calibrate(board: Board, out_dir: Path) -> float:
    """Measure instructions per counter tick in the emulator: firmware/boards/calibrate.c times two spin
    loops of two instructions per iteration; their difference cancels every fixed overhead."""
    elf = build_calibration(board, out_dir)
    reply = b""
    with Emulator(board, elf, log=out_dir / "calibrate.log") as emulator:
        port = emulator.start()
        port.timeout = 0.5
        # Some UART models (the STM32 USART of QEMU and of Renode) drop what arrives before the firmware
        # enabled them: say "start" again until the reply comes; the firmware ignores the extra bytes.
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(reply) < CALIBRATION.size and time.monotonic() < deadline:
            port.write(b"\x00")
            reply += port.read(CALIBRATION.size - len(reply))
        port.close()
    if len(reply) != CALIBRATION.size:
        log = out_dir / "calibrate.log"
        raise UserError(f"the calibration firmware on {board.name} did not answer; see {log}")
    short_loops, long_loops, short_ticks, long_ticks = CALIBRATION.unpack(reply)
    return 2 * (long_loops - short_loops) / (long_ticks - short_ticks)


def _summary(values: np.ndarray) -> dict:
    if not len(values):
        return {"median": None, "min": None, "max": None}
    return {"median": float(np.median(values)), "min": float(values.min()), "max": float(values.max())}


def count_unit(board: Board, counter: str = "systick") -> tuple[str, float, str]:
    """What the device's ticks count: the unit ("instructions" in the emulator, SysTick under -icount; "cycles"
    on hardware, DWT CYCCNT or SysTick), how many of it one tick is, and where the count comes from."""
    if board.emulated and counter == "systick":
        return "instructions", instructions_per_tick(board), counter_source(board)
    source = "DWT CYCCNT" if counter == "dwt" else "SysTick (core clock)"
    return "cycles", 1.0, f"{source} on {board.name}: core clock cycles; milliseconds at {board.clock_hz / 1e6:g} MHz"


def latency(board: Board, ticks: list[int], counter: str = "systick") -> dict:
    """Per-inference counts in the unit of the counter the device reported: executed instructions in the
    emulator (SysTick under -icount), core cycles on hardware (DWT CYCCNT, or SysTick), with milliseconds, and the
    energy the median count comes to by the board file's datasheet figures (an estimate; None without them)."""
    unit, per_tick, source = count_unit(board, counter)
    counts = np.array(ticks, dtype=np.float64)
    summary = {"unit": unit, "source": source, "per_inference": _summary(counts * per_tick)}
    if unit == "cycles":
        summary["milliseconds"] = _summary(counts * 1000.0 / board.clock_hz)
    summary["energy"] = energy_estimate(board, summary["per_inference"]["median"], unit)
    return {**summary, "inferences": len(counts)}
