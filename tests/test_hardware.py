"""Real boards, without the hardware: their firmware builds (ELF and memory report) with the chip's memory
map and cycle counter, the flashing commands are what pyOCD and the Mbed drive expect, and with no probe
attached flashing and detection fail with one sentence (pyOCD's probe discovery really runs)."""

from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from conftest import tinyrobust
from tinyrobust.build.firmware import build_firmware
from tinyrobust.compile.model import compile_model
from tinyrobust.device.boards import board_names, load_board
from tinyrobust.device.counter import latency
from tinyrobust.device.flashing import Attached, detect, flash, hex_image, mbed_destination, pyocd_command
from tinyrobust.errors import UserError

REAL = [name for name in board_names() if not load_board(name).emulated]


@pytest.fixture(scope="module")
def compiled(digits):
    return compile_model(digits.tflite)


@pytest.fixture(scope="module")
def f746_elf(compiled, tmp_path_factory):
    return build_firmware(compiled, load_board("nucleo-f746zg"), tmp_path_factory.mktemp("f746")).elf


def symbol_bytes(elf: Path, name: str, size: int) -> bytes:
    with elf.open("rb") as f:
        e = ELFFile(f)
        (symbol,) = e.get_section_by_name(".symtab").get_symbol_by_name(name)
        address = symbol["st_value"]
        for section in e.iter_sections():
            start = section["sh_addr"]
            if section["sh_type"] == "SHT_PROGBITS" and start <= address < start + section["sh_size"]:
                return section.data()[address - start : address - start + size]
    raise AssertionError(f"{name} is in no loaded section")


def test_there_are_real_boards():
    assert {"nucleo-f746zg", "nucleo-l4r5zi", "nrf52840-dk", "frdm-k64f"} <= set(REAL)


@pytest.mark.parametrize("name", REAL)
def test_real_board_firmware_builds_in_its_memory_with_the_cycle_counter(name, compiled, tmp_path):
    board = load_board(name)
    firmware = build_firmware(compiled, board, tmp_path)
    memory = firmware.memory
    assert 0 < memory.weights_bytes < memory.flash_bytes <= board.flash.size
    assert memory.arena_bytes < memory.ram_bytes <= board.ram.size
    with firmware.elf.open("rb") as f:
        e = ELFFile(f)
        assert e.get_section_by_name(".text")["sh_addr"] == board.flash.origin  # the vector table
        assert e.get_section_by_name(".stack")["sh_addr"] >= board.ram.origin
    assert board.counter == "dwt"
    assert symbol_bytes(firmware.elf, "tr_counter_kind", 1) == b"\x01"  # INFO reports DWT CYCCNT
    if board.flash_config:  # Kinetis: unsecured flash configuration at its fixed address
        config = symbol_bytes(firmware.elf, "flash_config", 16)
        assert config[12] == 0xFE


def test_semihosting_is_refused_on_a_real_board(compiled, tmp_path):
    with pytest.raises(UserError, match="a real board: only QEMU has the semihosting channel; use --channel uart"):
        build_firmware(compiled, load_board("frdm-k64f"), tmp_path, "semihosting")


def test_latency_follows_the_counter_the_device_reports():
    emulated = latency(load_board("qemu-mps2-an386"), [10, 20, 30], "systick")
    assert emulated["unit"] == "instructions" and emulated["per_inference"]["median"] == 800.0
    assert "emulated" in emulated["source"] and "milliseconds" not in emulated
    board = load_board("nucleo-f746zg")
    hardware = latency(board, [16_000, 32_000, 48_000], "dwt")
    assert hardware["unit"] == "cycles" and hardware["per_inference"]["median"] == 32_000.0
    assert "DWT CYCCNT" in hardware["source"]
    assert hardware["milliseconds"]["median"] == pytest.approx(2.0)  # 32,000 cycles at 16 MHz


def test_pyocd_command_names_the_boards_target(f746_elf):
    command = pyocd_command(load_board("nucleo-f746zg"), f746_elf, probe="066BFF")
    assert command[1:] == [
        "-m", "pyocd", "load", "--target", "stm32f746zgtx", "--format", "elf", "--uid", "066BFF", str(f746_elf)
    ]  # fmt: skip
    assert pyocd_command(load_board("frdm-k64f"), f746_elf)[4:6] == ["--target", "k64f"]


def test_mbed_copy_goes_to_the_drive_of_the_same_board(f746_elf):
    attached = Attached(
        probes=[],
        mbed=[{"board": "K64F", "serial_number": "0240", "serial_port": "/dev/ttyACM0", "mount_points": ["/mnt/K"]}],
        ports=[],
    )
    assert mbed_destination(load_board("frdm-k64f"), attached) == Path("/mnt/K")
    with pytest.raises(UserError, match="no NUCLEO_F746ZG drive found by mbed-tools .*attached: K64F"):
        mbed_destination(load_board("nucleo-f746zg"), attached)
    image = hex_image(f746_elf)
    lines = image.read_text().splitlines()
    assert lines[0].startswith(":02000004") and lines[-1] == ":00000001FF"  # extended address, then end


def test_flashing_without_a_probe_is_one_clear_error(f746_elf):
    if detect().probes:
        pytest.skip("a debug probe is attached to this machine")
    with pytest.raises(UserError) as refused:
        flash(load_board("nucleo-f746zg"), f746_elf, "pyocd")
    message = str(refused.value)
    assert message.startswith("pyOCD found no debug probe to flash nucleo-f746zg: connect the board's debug USB port")
    assert "--flash-with mbed" in message and message.count(".") <= 1


def test_boards_detect_says_what_it_looked_for_and_how_to_fix_it():
    if not detect().found_nothing():
        pytest.skip("a board or USB serial port is attached to this machine")
    result = tinyrobust("boards", "detect", timeout=120)
    assert result.returncode == 1
    assert "pyOCD saw no debug probe, mbed-tools no Mbed board and pyserial no USB serial port" in result.stderr
    assert "Traceback" not in result.stderr
