"""Energy per inference: the estimate from the board files' datasheet figures, the firmware's energy pin around each
inference, the integration of a meter's recording over the pin's windows, and profile --meter's refusals and its
one-sentence errors when the meter's package is missing or no meter is attached (the packages' own discovery runs)."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import tinyrobust
from tinyrobust.assets import FIRMWARE
from tinyrobust.build.firmware import build_firmware
from tinyrobust.compile.model import compile_model
from tinyrobust.device.boards import board_names, load_board
from tinyrobust.device.counter import latency
from tinyrobust.device.energy import energy_estimate, estimate_uj
from tinyrobust.device.meter import Capture, measured, open_meter, pin_windows, window_energies_j
from tinyrobust.errors import UserError
from tinyrobust.profile import format_energy

INSTALL = "pip install 'tinyrobust[energy]'"


@pytest.mark.parametrize("name", board_names())
def test_a_board_file_gives_its_datasheet_figures_whole_and_a_pin_its_family_can_drive(name):
    board = load_board(name)
    energy = board.energy
    figures = (energy.run_ua_per_mhz, energy.source, energy.part)
    assert all(f is None for f in figures) or all(f is not None for f in figures), "figures given in part"
    if energy.estimates:
        assert energy.run_ua_per_mhz > 0 and 1.7 <= energy.supply_v <= 3.6
        assert re.search(r"datasheet DS\d+.*, Table \d+: run mode, code in flash", energy.source), energy.source
    if energy.pin is not None:
        assert not board.emulated, "an emulated board has no meter to watch a pin"
        assert (FIRMWARE / "boards" / board.family / "energy.c").is_file()


def test_the_estimate_is_count_over_clock_times_supply_times_current_per_mhz_times_clock():
    an386 = load_board("qemu-mps2-an386")  # 25 MHz, 3.3 V, 240 uA/MHz (an STM32F407 standing in)
    # 250,000 counts at 25 MHz last 10 ms; 240 uA/MHz x 25 MHz = 6 mA; 10 ms x 3.3 V x 6 mA = 198 uJ.
    assert estimate_uj(an386, 250_000) == pytest.approx(198.0)
    netduino = load_board("qemu-netduinoplus2")  # 168 MHz, 3.3 V, 238.1 uA/MHz (the STM32F405's 40 mA / 168 MHz)
    assert estimate_uj(netduino, 168e6) == pytest.approx(1.0 * 3.3 * 238.1e-6 * 168 * 1e6)
    # The clock cancels: energy per count is V x uA/MHz, whatever the clock the board runs at.
    assert estimate_uj(an386, 1e6) / 1e6 == pytest.approx(3.3 * 240e-6)
    assert estimate_uj(load_board("nucleo-f746zg"), 1e6) is None  # no figures could be read for its part


def test_every_estimate_says_it_is_one_and_where_its_figures_come_from():
    board = load_board("qemu-mps2-an386")
    emulated = latency(board, [6000, 7000, 8000])  # 40 instructions per tick
    energy = emulated["energy"]
    assert set(energy) == {"estimate_uj", "basis", "source"}
    assert energy["estimate_uj"] == pytest.approx(estimate_uj(board, 280_000))  # the median count
    assert energy["basis"].startswith("estimate: executed instructions")
    assert "standing in for core cycles" in energy["basis"] and "lower bound" in energy["basis"]
    assert energy["source"].startswith("datasheet figures for the STM32F407") and "DS8626" in energy["source"]
    assert energy_estimate(board, 1000, "cycles")["basis"].startswith("estimate: core cycles / 25 MHz x 3.3 V")
    assert latency(load_board("nucleo-f746zg"), [16_000], "dwt")["energy"] is None
    (line,) = format_energy(energy, board.name)
    assert line.startswith(f"energy (estimate): {energy['estimate_uj']:,.3f} uJ per inference; estimate: ")
    assert format_energy(None, "qemu-mps2-an505") == [
        "energy: no estimate: qemu-mps2-an505's board file gives no datasheet figures ([energy])"
    ]


def synthetic_capture() -> Capture:
    """10 ms at 1 MS/s and 3 V: 5 mA, and 20 mA while the pin is high at 1-3 ms and 5-5.5 ms; the pin is also high
    for a cut window at the start (0-0.2 ms) and one still open at the end (9.8 ms on)."""
    n = 10_000
    seconds = np.arange(n) / 1e6
    pin = np.zeros(n, dtype=bool)
    for a, b in ((0, 200), (1000, 3000), (5000, 5500), (9800, n)):
        pin[a:b] = True
    current = np.where(pin, 20e-3, 5e-3)
    return Capture(seconds, current, np.full(n, 3.0), pin)


def test_the_meter_recording_integrates_to_current_times_voltage_over_each_whole_pin_window():
    capture = synthetic_capture()
    assert pin_windows(capture.pin) == [(1000, 3000), (5000, 5500)]
    # 20 mA x 3 V x 2 ms = 120 uJ; 20 mA x 3 V x 0.5 ms = 30 uJ.
    assert window_energies_j(capture) * 1e6 == pytest.approx([120.0, 30.0])
    result = measured(capture, "ppk2")
    assert result["measured_uj"] == pytest.approx({"median": 75.0, "min": 30.0, "max": 120.0})
    assert result["windows"] == 2 and result["meter"] == "ppk2" and result["basis"].startswith("measured: ")

    capture.current_a[5100] = np.nan  # a sample the meter lost: that window is left out, not counted short
    assert window_energies_j(capture) * 1e6 == pytest.approx([120.0])
    assert pin_windows(np.ones(100, dtype=bool)) == [] and pin_windows(np.zeros(0, dtype=bool)) == []
    capture.pin[:] = False
    with pytest.raises(UserError, match="^the ppk2 saw no whole window of the energy pin: wire"):
        measured(capture, "ppk2")


@pytest.mark.parametrize(("meter", "modules", "package"), [
    ("joulescope", ["joulescope"], "joulescope"),
    ("ppk2", ["ppk2_api", "ppk2_api.ppk2_api"], "ppk2-api"),
])  # fmt: skip
def test_a_missing_meter_package_is_one_sentence_naming_the_install(meter, modules, package, monkeypatch):
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError, as when it is not installed
    with pytest.raises(UserError) as raised:
        open_meter(meter, load_board("nucleo-f746zg"))
    assert str(raised.value) == (
        f"--meter {meter} needs the {package} package, which is not installed; install it with: {INSTALL}"
    )


@pytest.mark.parametrize(("meter", "sentence"), [
    ("joulescope", "no Joulescope found: connect it by USB, with its current path in the board's MCU supply and its "
                   "GPI0 input on the board's energy pin"),
    ("ppk2", "no PPK2 found: connect it by USB, in ampere-meter mode in series with the board's MCU supply, and its D0 "
             "input on the board's energy pin"),
])  # fmt: skip
def test_no_meter_attached_is_one_sentence_from_the_packages_own_discovery(meter, sentence, tmp_path):
    """Nothing is attached here: joulescope.scan and PPK2_API.list_devices really run and find no meter, before
    anything is built."""
    result = tinyrobust("profile", "digits-cnn", "--board", "nucleo-f746zg", "--port", "/dev/ttyACM0",
                        "--meter", meter, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: {sentence}"


@pytest.mark.parametrize(("args", "error"), [
    (["--meter", "ppk2"], "error: --meter measures a real board through its serial port; give it with --port"),
    (["--board", "qemu-mps2-an386", "--port", "/dev/ttyACM0", "--meter", "ppk2"],
     "error: --meter measures a real board's supply, and qemu-mps2-an386 is emulated; choose a real board"),
    (["--board", "nucleo-f746zg", "--board", "nrf52840-dk", "--port", "/dev/ttyACM0", "--meter", "ppk2"],
     "error: --meter measures one board at --port, but 2 were given; give one --board"),
    (["--board", "frdm-k64f", "--port", "/dev/ttyACM0", "--meter", "joulescope"],
     "error: frdm-k64f's board file names no [energy] pin for the meter to watch: its kinetis firmware layer needs a "
     "pin driver first"),
    (["--board", "nucleo-f746zg", "--port", "/dev/ttyACM0", "--meter", "ppk2", "--html", "page.html"],
     "error: --html draws the layers, which --meter does not measure"),
    (["--port", "/dev/ttyACM0"], "error: --port reaches a real board for --meter; profile's layers run in the "
     "emulator, so give --meter with it or leave it out"),
    (["--meter", "multimeter"], "Invalid value for '--meter': 'multimeter' is not one of 'joulescope', 'ppk2'"),
])  # fmt: skip
def test_meter_options_are_refused_with_one_sentence_before_anything_is_built(args, error, tmp_path):
    result = tinyrobust("profile", "digits-cnn", *args, cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert error in result.stderr, result.stderr
    assert not (tmp_path / "page.html").exists()


def _calls(elf) -> list[str]:
    """The functions called, in the order of the code, among those that mark and count an inference."""
    shown = ("tr_energy_pin_init", "tr_energy_pin", "tr_counter_restart", "tr_model_invoke", "tr_counter_read")
    disassembly = subprocess.run(["arm-none-eabi-objdump", "-d", str(elf)], capture_output=True, text=True).stdout
    called = re.findall(r"\sbl\s+[0-9a-f]+ <(\w+)>", disassembly)
    return [name for name in called if name in shown]


@pytest.mark.parametrize("name", ["nucleo-f746zg", "nucleo-l4r5zi", "nrf52840-dk"])
def test_the_energy_pin_rises_before_the_counter_starts_and_falls_after_it_is_read(name, digits, tmp_path):
    """The pin's window holds the whole inference and keeps its own writes out of the counted ticks."""
    firmware = build_firmware(compile_model(digits.tflite), load_board(name), tmp_path)
    assert _calls(firmware.elf) == ["tr_energy_pin_init", "tr_energy_pin", "tr_counter_restart", "tr_model_invoke",
                                    "tr_counter_read", "tr_energy_pin"]  # fmt: skip


def test_a_board_without_an_energy_pin_has_no_pin_code(digits, tmp_path):
    firmware = build_firmware(compile_model(digits.tflite), load_board("qemu-mps2-an386"), tmp_path)
    assert _calls(firmware.elf) == ["tr_counter_restart", "tr_model_invoke", "tr_counter_read"]


def test_flash_and_evaluate_prints_the_estimate_under_the_latency(capsys):
    from tinyrobust.cli import _print_summary

    lat = latency(load_board("qemu-mps2-an386"), [6930] * 4)
    memory = {"flash_bytes": 12_000, "ram_bytes": 10_000, "arena_bytes": 2_048}
    _print_summary({"runs": [], "latency": lat, "memory": memory, "wall_seconds": 1.0}, Path("results"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("latency: 277,200 instructions per inference (median)")
    assert lines[2] == (f"energy (estimate): {lat['energy']['estimate_uj']:,.1f} uJ per inference at the median count, "
                        "from the board file's datasheet figures (results.json: latency.energy)")  # fmt: skip


def test_the_meters_recordings_become_captures_in_amperes_volts_and_pin_levels():
    """What the packages hand back, as their sources document it, turned into a Capture: a PPK2 gives microamperes
    and a byte of digital inputs per sample (D0 the pin) at 100 kS/s; a Joulescope calibrated amperes and volts,
    and GPI0 in the current's least significant bit. Stand-ins play the devices: none is attached here."""
    from tinyrobust.device.meter import PPK2, Joulescope

    class PPK2Device:
        chunks = [b"\x01" * 8, b"\x02" * 4, b""]

        def get_data(self):
            return self.chunks.pop(0)

        def stop_measuring(self):
            self.stopped = True

        def get_samples(self, data):
            assert data == b"\x01" * 8 + b"\x02" * 4  # every chunk read before the measurement stops
            return [5000.0, 20000.0, 20000.0], [0b10, 0b11, 0b01]

    ppk2 = object.__new__(PPK2)
    ppk2.ppk2, ppk2.supply_v = PPK2Device(), 3.0
    capture = ppk2.stop()
    assert capture.current_a == pytest.approx([5e-3, 20e-3, 20e-3]) and list(capture.voltage_v) == [3.0] * 3
    assert list(capture.pin) == [False, True, True] and capture.seconds == pytest.approx([0, 1e-5, 2e-5])
    assert ppk2.ppk2.stopped

    class StreamBuffer:
        sample_id_range = (100, 104)

        def samples_get(self, start, stop, fields):
            assert (start, stop) == (100, 104) and set(fields) == {"current", "voltage", "current_lsb"}
            signals = {"current": [1e-3, 2e-3, 2e-3, 1e-3], "voltage": [3.3] * 4, "current_lsb": [0, 1, 1, 0]}
            return {"time": {"sampling_frequency": {"value": 2e6}},
                    "signals": {k: {"value": np.array(v)} for k, v in signals.items()}}  # fmt: skip

    class JoulescopeDevice:
        stream_buffer = StreamBuffer()
        closed = False

        def stop(self):
            pass

        def close(self):
            self.closed = True

    joulescope = object.__new__(Joulescope)
    joulescope.device = JoulescopeDevice()
    capture = joulescope.stop()
    assert capture.current_a == pytest.approx([1e-3, 2e-3, 2e-3, 1e-3]) and list(capture.voltage_v) == [3.3] * 4
    assert list(capture.pin) == [False, True, True, False] and capture.seconds[1] == pytest.approx(0.5e-6)
    assert joulescope.device.closed
    assert window_energies_j(capture) == pytest.approx([2 * 2e-3 * 3.3 * 0.5e-6])
