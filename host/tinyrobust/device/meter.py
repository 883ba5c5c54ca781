"""Energy per inference measured with a meter on a real board's supply. The firmware holds the board's energy pin
([energy] pin in its board file) high while the model runs; the meter records that pin beside the supply current (a
Joulescope on its GPI0 input, a PPK2 on its digital input D0), and window_energies_j integrates current x voltage over
each window the pin was high. The meters' packages are the optional extra tinyrobust[energy], imported only here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyrobust.device.boards import Board
from tinyrobust.errors import UserError

METERS = ("joulescope", "ppk2")
INSTALL = "pip install 'tinyrobust[energy]'"
RECORD_S = 60  # the longest recording a meter keeps: room for a few inferences of the largest built-in models


@dataclass
class Capture:
    """A meter's recording, one value per sample: the time, the supply current and voltage, and the energy pin."""

    seconds: np.ndarray
    current_a: np.ndarray
    voltage_v: np.ndarray
    pin: np.ndarray  # bool: high while the model ran


def pin_windows(pin: np.ndarray) -> list[tuple[int, int]]:
    """The [start, stop) sample ranges in which the pin is high. A window already open when the recording began, or
    still open when it ended, is cut and left out."""
    level = np.asarray(pin, dtype=bool).astype(np.int8)
    if not len(level):
        return []
    edges = np.diff(level)
    rises, falls = np.flatnonzero(edges == 1) + 1, np.flatnonzero(edges == -1) + 1
    if level[0]:
        falls = falls[1:]  # the first fall closes the window that was open at the start
    return [(int(a), int(b)) for a, b in zip(rises, falls, strict=False)]


def window_energies_j(capture: Capture) -> np.ndarray:
    """Each whole pin-high window's energy in joules: current x voltage x each sample's duration, summed over the
    window's samples (a sample holds until the next; the last one for its predecessor's spacing). A window with a
    sample the meter lost (NaN) is left out rather than counted short."""
    t = np.asarray(capture.seconds, dtype=np.float64)
    if len(t) < 2:
        return np.zeros(0)
    dt = np.diff(t, append=2 * t[-1] - t[-2])
    power = np.asarray(capture.current_a, dtype=np.float64) * np.asarray(capture.voltage_v, dtype=np.float64)
    energies = [float(np.sum(power[a:b] * dt[a:b])) for a, b in pin_windows(capture.pin)]
    return np.array([e for e in energies if np.isfinite(e)])


def measured(capture: Capture, meter: str) -> dict:
    """Microjoules per inference over the capture's pin windows, each window one inference."""
    energies = window_energies_j(capture) * 1e6
    if not len(energies):
        raise UserError(
            f"the {meter} saw no whole window of the energy pin: wire the board's energy pin (its board file's "
            "[energy] pin) to the meter's digital input, GPI0 on a Joulescope or D0 on a PPK2"
        )
    return {
        "measured_uj": {
            "median": float(np.median(energies)),
            "min": float(energies.min()),
            "max": float(energies.max()),
        },
        "windows": len(energies),
        "meter": meter,
        "basis": "measured: supply current x voltage integrated over each window the energy pin was high",
    }


def _missing(meter: str, package: str) -> UserError:
    return UserError(f"--meter {meter} needs the {package} package, which is not installed; install it with: {INSTALL}")


class Joulescope:
    """A Joulescope (JS110 or JS220) through the joulescope package: current and voltage at its full rate, and its
    GPI0 input as the energy pin (routed into the current's least significant bit)."""

    name = "joulescope"

    def __init__(self, board: Board):
        try:
            import joulescope
        except ImportError:
            raise _missing(self.name, "joulescope") from None
        devices = joulescope.scan(config="auto")
        if not devices:
            raise UserError(
                "no Joulescope found: connect it by USB, with its current path in the board's MCU supply and its GPI0 "
                "input on the board's energy pin"
            )
        self.device = devices[0]

    def start(self) -> None:
        device = self.device
        device.open()
        device.parameter_set("buffer_duration", RECORD_S)
        device.parameter_set("io_voltage", "3.3V")
        device.parameter_set("current_lsb", "gpi0")
        device.start()

    def stop(self) -> Capture:
        device = self.device
        try:
            device.stop()
            start, end = device.stream_buffer.sample_id_range
            data = device.stream_buffer.samples_get(start, end, fields=["current", "voltage", "current_lsb"])
        finally:
            device.close()
        signals, rate = data["signals"], data["time"]["sampling_frequency"]["value"]
        current = np.asarray(signals["current"]["value"], dtype=np.float64)
        return Capture(np.arange(len(current)) / rate, current, np.asarray(signals["voltage"]["value"]),
                       np.asarray(signals["current_lsb"]["value"]) > 0.5)  # fmt: skip


class PPK2:
    """A Nordic Power Profiler Kit II through ppk2-api, in ampere-meter mode (in series with the board's MCU supply):
    current at 100 kS/s and its digital input D0 as the energy pin. It measures no voltage: the board file's [energy]
    supply_v stands for it."""

    name = "ppk2"
    SAMPLES_PER_S = 100_000

    def __init__(self, board: Board):
        try:
            from ppk2_api.ppk2_api import PPK2_API
        except ImportError:
            raise _missing(self.name, "ppk2-api") from None
        ports = PPK2_API.list_devices()
        if not ports:
            raise UserError(
                "no PPK2 found: connect it by USB, in ampere-meter mode in series with the board's MCU supply, and its "
                "D0 input on the board's energy pin"
            )
        if board.energy.supply_v is None:
            raise UserError(f"a PPK2 measures current only, and {board.name}'s board file gives no [energy] "
                            "supply_v to multiply it by; add the board's MCU supply voltage there")  # fmt: skip
        self.port, self.supply_v = ports[0], board.energy.supply_v

    def start(self) -> None:
        from ppk2_api.ppk2_api import PPK2_MP

        self.ppk2 = PPK2_MP(self.port, buffer_max_size_seconds=RECORD_S)
        self.ppk2.get_modifiers()
        self.ppk2.use_ampere_meter()
        self.ppk2.set_source_voltage(round(self.supply_v * 1000))
        self.ppk2.start_measuring()

    def stop(self) -> Capture:
        data = bytearray()
        while chunk := self.ppk2.get_data():
            data += chunk
        self.ppk2.stop_measuring()
        samples, bits = self.ppk2.get_samples(bytes(data))
        current = np.asarray(samples, dtype=np.float64) * 1e-6  # the API gives microamperes
        seconds = np.arange(len(current)) / self.SAMPLES_PER_S
        return Capture(seconds, current, np.full(len(current), self.supply_v), (np.asarray(bits, dtype=int) & 1) > 0)


def open_meter(name: str, board: Board) -> Joulescope | PPK2:
    """The first meter of that kind attached here, or one sentence saying what is missing: its package, or the meter."""
    if name not in METERS:
        raise UserError(f"there is no meter '{name}'; choose one of: {', '.join(METERS)}")
    return {"joulescope": Joulescope, "ppk2": PPK2}[name](board)


def record(meter: Joulescope | PPK2, action):
    """action()'s result, and what the meter recorded while it ran."""
    meter.start()
    try:
        result = action()
    finally:
        capture = meter.stop()
    return result, capture


def run_measured(
    board: Board, elf, port: str, flash_with: str, model_hash: bytes, tensors: list[bytes], meter
) -> tuple[list, dict]:
    """Each input once on the real board at port, flashed with elf first (unless flash_with is "none"), the meter
    recording the inferences only: (output, ticks) per input, and measured()."""
    from tinyrobust.device.flashing import flash
    from tinyrobust.device.pool import Pool, Worker
    from tinyrobust.device.targets import SerialTarget

    if flash_with != "none":
        flash(board, elf, flash_with)
    pool = Pool([Worker(SerialTarget(port, board).start(), model_hash)])
    try:
        pool.connect()  # connect and check the model before the recording starts
        answers, capture = record(meter, lambda: pool.infer_all(tensors))
    finally:
        pool.close()
    return answers, measured(capture, meter.name)
