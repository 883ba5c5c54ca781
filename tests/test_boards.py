"""Every board in boards/: its data, the refusal of models it cannot hold, and, for each emulated board,
digits-cnn run in its emulator (QEMU, or Renode where a renode executable is installed) bit-exact with TFLM,
repeatable instruction counts and a measured SysTick rate that matches the one recorded in the board file;
the Renode script and command line, which are checked whether or not Renode is here."""

import re
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from elftools.elf.elffile import ELFFile

from conftest import quantized_model, tinyrobust
from tinyrobust.assets import FIRMWARE
from tinyrobust.build.firmware import build_firmware, check_channel
from tinyrobust.compile.model import compile_model
from tinyrobust.device.boards import board_names, load_board
from tinyrobust.device.counter import calibrate, counter_source, instructions_per_tick
from tinyrobust.device.emulator import Emulator, free_tcp_port, renode_command, renode_script
from tinyrobust.device.link import Device
from tinyrobust.device.targets import emulated_uart_bytes_per_s
from tinyrobust.errors import UserError
from tinyrobust.model import reference

NO_RENODE = pytest.mark.skipif(
    shutil.which("renode") is None,
    reason="renode is not on PATH: the Renode boards run only where a renode executable is installed "
    "(https://github.com/renode/renode/releases; it is on neither apt, PyPI nor npm)",
)


def _emulated(name: str):
    return pytest.param(name, marks=NO_RENODE) if load_board(name).renode else name


EMULATED = [_emulated(name) for name in board_names() if load_board(name).emulated]
RENODE = [name for name in board_names() if load_board(name).renode]
# The serial peripherals of Renode's platforms/cpus/stm32f4.repl and their addresses there.
RENODE_STM32F4_UARTS = {
    "sysbus.usart1": 0x40011000,
    "sysbus.usart2": 0x40004400,
    "sysbus.usart3": 0x40004800,
    "sysbus.uart4": 0x40004C00,
    "sysbus.uart5": 0x40005000,
}
SMALL = ["qemu-lm3s6965evb", "qemu-netduinoplus2"]  # 256 KB / 64 KB and 1 MB / 128 KB
SAMPLES = 20
L = keras.layers


@pytest.mark.parametrize("name", board_names())
def test_board_file_is_complete_and_consistent(name):
    board = load_board(name)
    assert (FIRMWARE / "boards" / board.family / "uart.c").is_file()
    regions = sorted([board.flash, board.ram, *board.extra_ram.values()], key=lambda r: r.origin)
    for low, high in zip(regions, regions[1:], strict=False):
        assert low.origin + low.size <= high.origin, f"{name}: memory regions overlap"
    if board.emulated:
        assert board.emulator["instructions_per_tick"] > 0
        assert set(board.channels) <= {"uart", "semihosting"} and "uart" in board.channels
    if board.renode:
        # Renode's SysTick counts clock_hz of virtual time, and an instruction is 1 / (mips * 1e6) s of it.
        assert board.emulator["instructions_per_tick"] == board.emulator["mips"] * 1e6 / board.clock_hz
        assert board.default_channel == "uart" and "semihosting" not in board.channels
        assert set(board.emulator.get("map", [])) <= set(board.extra_ram)


def test_boards_command_lists_every_board():
    listing = tinyrobust("boards").stdout
    rows = {line.split()[0]: line for line in listing.splitlines()[1:]}
    assert sorted(rows) == board_names()
    for name, row in rows.items():
        board = load_board(name)
        assert f" {board.core} " in row and f" {board.fpu or 'none'} " in row
        if board.renode:
            assert f"Renode {Path(board.emulator['platform']).name}" in row
        elif board.emulated:
            assert f"qemu-system-arm -M {board.emulator['machine']}" in row
        else:
            assert f"pyOCD {board.flashing['pyocd']}" in row
    assert "128 KB + 64 KB ccm" in rows["qemu-netduinoplus2"]
    assert "128 KB + 64 KB ccm" in rows["renode-stm32f4-discovery"]
    assert "Renode stm32f4_discovery-kit.repl" in rows["renode-stm32f4-discovery"]
    assert re.search(r"256 KB\s+64 KB", rows["qemu-lm3s6965evb"])


@pytest.fixture(scope="module")
def heavy_weights():
    """About 1.1 MB of int8 weights: more than the flash of either small board."""
    return compile_model(quantized_model([L.Dense(1100)], (1024,)))


@pytest.fixture(scope="module")
def large_arena():
    """A 64x64x8 input and a 64x64x16 activation, about 96 KB of arena: more than the LM3S6965's RAM."""
    return compile_model(quantized_model([L.Conv2D(16, 3, padding="same")], (64, 64, 8)))


@pytest.mark.parametrize("name", SMALL)
def test_small_board_refuses_weights_beyond_its_flash(name, heavy_weights, tmp_path):
    board = load_board(name)
    with pytest.raises(UserError) as refused:
        build_firmware(heavy_weights, board, tmp_path)
    found = re.search(r"model's (\d+) bytes of weights do not fit .* (\d+) bytes of flash", str(refused.value))
    assert found, refused.value
    assert int(found[1]) > int(found[2]) == board.flash.size
    assert not (tmp_path / "firmware.elf").exists()


def test_small_board_refuses_an_arena_beyond_its_ram(large_arena, tmp_path):
    board = load_board("qemu-lm3s6965evb")
    with pytest.raises(UserError) as refused:
        build_firmware(large_arena, board, tmp_path)
    found = re.search(r"(\d+)-byte arena plus a (\d+)-byte stack .* (\d+) bytes of RAM", str(refused.value))
    assert found, refused.value
    arena, stack, ram = map(int, found.groups())
    assert arena == large_arena.arena_bytes and arena + stack > ram == board.ram.size


def test_firmware_just_over_flash_is_one_clear_error(tmp_path):
    """Weights alone fit the LM3S6965's 256 KB, weights and code together do not: the linker's verdict
    comes back as one sentence with both numbers."""
    board = load_board("qemu-lm3s6965evb")
    compiled = compile_model(quantized_model([L.Dense(252)], (1024,)))
    with pytest.raises(UserError) as refused:
        build_firmware(compiled, board, tmp_path)
    found = re.search(r"needs (\d+) bytes of flash but qemu-lm3s6965evb has (\d+)", str(refused.value))
    assert found, refused.value
    assert int(found[1]) > int(found[2]) == board.flash.size


@pytest.fixture(scope="module")
def digits_case(digits):
    compiled = compile_model(digits.tflite)
    xq = reference.quantize_inputs(digits.x_test[:SAMPLES], compiled.input)
    return compiled, xq, reference.tflm_outputs(digits.tflite, xq).reshape(len(xq), -1)


def run_in_emulator(board, elf, compiled, inputs) -> list[tuple[bytes, int]]:
    with Emulator(board, elf, log=elf.parent / "emulator.log") as emulator:
        device = Device(emulator.start(), emulated_uart_bytes_per_s(board))
        device.handshake(compiled.model_hash)
        return [device.infer(x.tobytes()) for x in inputs]


@pytest.mark.emulator
@pytest.mark.parametrize("name", EMULATED)
def test_digits_is_bit_exact_with_tflm_and_counts_repeat(name, digits_case, tmp_path):
    compiled, xq, tflm = digits_case
    board = load_board(name)
    firmware = build_firmware(compiled, board, tmp_path)
    first = run_in_emulator(board, firmware.elf, compiled, xq)
    device = np.stack([np.frombuffer(raw, dtype=np.int8) for raw, _ in first])
    mismatches = np.argwhere(device != tflm)
    assert mismatches.size == 0, f"{len(mismatches)} output bytes differ from TFLM, first at {mismatches[0]}"
    # The same inputs in a second emulator take exactly as many counter ticks.
    second = run_in_emulator(board, firmware.elf, compiled, xq[:3])
    assert second == first[:3]
    assert all(ticks > 0 for _, ticks in first)


@pytest.mark.emulator
@pytest.mark.parametrize("name", EMULATED)
def test_recorded_instructions_per_tick_is_measured_in_the_emulator(name, tmp_path):
    board = load_board(name)
    assert calibrate(board, tmp_path) == pytest.approx(instructions_per_tick(board), rel=1e-6)


@pytest.fixture(scope="module")
def renode_firmware(digits, tmp_path_factory):
    """digits-cnn's firmware for the Renode board, as the emulator would load it."""
    board = load_board("renode-stm32f4-discovery")
    return board, build_firmware(compile_model(digits.tflite), board, tmp_path_factory.mktemp("renode")).elf


def test_renode_script_and_command_line(renode_firmware, tmp_path):
    """What Renode is given, command by command: the platform, the chip's CCM it lacks, the CPU rate and
    SysTick clock that make one tick one instruction, the firmware and its vector table, the UART on TCP."""
    board, elf = renode_firmware
    port = free_tcp_port()
    script = renode_script(board, elf, port)
    commands = [line for line in script.splitlines() if line and not line.startswith("#")]
    assert commands == [
        'mach create "renode-stm32f4-discovery"',
        "machine LoadPlatformDescription @platforms/boards/stm32f4_discovery-kit.repl",
        'machine LoadPlatformDescriptionFromString "ccm: Memory.MappedMemory @ sysbus 0x10000000 { size: 0x10000 }"',
        "sysbus.cpu PerformanceInMips 125",
        "sysbus.nvic Frequency 125000000",
        f"sysbus LoadELF @{elf.resolve()}",
        "sysbus.cpu VectorTableOffset 0x08000000",
        f'emulation CreateServerSocketTerminal {port} "uart" false',
        "connector Connect sysbus.usart2 uart",
        "start",
    ]
    # The numbers come from the board file: the CCM region, 125 MIPS over a 125 MHz SysTick.
    ccm = board.extra_ram["ccm"]
    assert f"@ sysbus {ccm.origin:#x} {{ size: {ccm.size:#x} }}" in commands[2]
    mips = int(commands[3].split()[-1])
    systick_hz = int(commands[4].split()[-1])
    assert (mips, systick_hz) == (board.emulator["mips"], board.clock_hz)
    assert mips * 1e6 / systick_hz == instructions_per_tick(board) == 1.0
    # The USART Renode connects is the one the firmware drives: the same address in stm32f4.repl.
    assert RENODE_STM32F4_UARTS[commands[8].split()[2]] == board.uart.base
    # VTOR is where the ELF's vector table is: its first words are the stack top (in RAM) and the reset
    # handler (in flash, Thumb).
    vtor = int(commands[6].split()[-1], 16)
    with elf.open("rb") as f:
        e = ELFFile(f)
        vectors = next(s for s in e.get_section_by_name(".symtab").iter_symbols() if s.name == "vectors")
        text = e.get_section_by_name(".text")
        offset = vectors["st_value"] - text["sh_addr"]
        stack_top, reset = np.frombuffer(text.data()[offset : offset + 8], dtype="<u4")
    assert vectors["st_value"] == vtor == board.flash.origin
    assert board.ram.origin < stack_top <= board.ram.origin + board.ram.size
    assert reset & 1 and board.flash.origin <= reset < board.flash.origin + board.flash.size

    resc = tmp_path / "board.resc"
    assert renode_command(board, resc) == [
        "renode", "--disable-xwt", "--hide-monitor", "--port", "-2", "--plain", "-e", f"include @{resc}",
    ]  # fmt: skip
    assert "Renode" in counter_source(board) and "125 MIPS" in counter_source(board)


def test_renode_launch_writes_the_script_and_reports_its_errors(renode_firmware, tmp_path, monkeypatch):
    """The launch itself, with a stand-in renode on PATH that records what it was given and fails as Renode
    does on a bad script: the script in its directory names a copy of the firmware, the command line is
    renode_command's, and the failure comes back as one sentence with Renode's error."""
    board, elf = renode_firmware
    seen = tmp_path / "seen"
    seen.mkdir()
    stand_in = tmp_path / "bin" / "renode"
    stand_in.parent.mkdir()
    stand_in.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > {seen}/argv\n'
        f"pwd > {seen}/cwd\n"
        f'cp "$(pwd)"/*.resc "$(pwd)"/firmware.elf {seen}/\n'
        'echo "12:00:00.0000 [ERROR] Could not find file platforms/boards/stm32f4_discovery-kit.repl"\n'
        "exit 1\n"
    )
    stand_in.chmod(0o755)
    monkeypatch.setenv("PATH", f"{stand_in.parent}:/usr/bin:/bin")
    emulator = Emulator(board, elf, log=tmp_path / "emulator.log")
    with pytest.raises(UserError) as failed, emulator:
        emulator.start()
    assert "exited at start" in str(failed.value) and "Could not find file" in str(failed.value)
    work = Path((seen / "cwd").read_text().strip())
    script = work / f"{board.name}.resc"
    assert (seen / "argv").read_text().splitlines() == renode_command(board, script)[1:]
    assert (seen / "firmware.elf").read_bytes() == elf.read_bytes()
    assert (seen / script.name).read_text() == renode_script(board, work / "firmware.elf", emulator.port)
    assert not work.exists(), "the work directory outlives the emulator"


def test_renode_board_refuses_semihosting_and_names_the_install(renode_firmware, monkeypatch, tmp_path):
    board, elf = renode_firmware
    with pytest.raises(UserError, match="has no semihosting channel .* use --channel uart"):
        Emulator(board, elf, channel="semihosting")
    with pytest.raises(UserError, match="run by Renode .*, which lacks the semihosting channel; use --channel uart"):
        check_channel(board, "semihosting")  # before anything is built
    monkeypatch.setenv("PATH", str(tmp_path))  # no renode here
    with pytest.raises(UserError, match=r"renode is not installed; install a Renode release \(https://github"):
        Emulator(board, elf)
