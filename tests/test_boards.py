"""Every board in boards/: its data, the refusal of models it cannot hold, and, for each emulated board,
digits-cnn run in QEMU bit-exact with TFLM, repeatable instruction counts and a measured SysTick rate
that matches the one recorded in the board file."""

import re
import subprocess

import keras
import numpy as np
import pytest

from conftest import quantized_model
from tinyrobust import ROOT, reference
from tinyrobust.boards import board_names, load_board
from tinyrobust.build import build_firmware
from tinyrobust.compiler import compile_model
from tinyrobust.emulator import Emulator, calibrate, instructions_per_tick
from tinyrobust.errors import UserError
from tinyrobust.link import Device
from tinyrobust.targets import EMULATED_UART_BYTES_PER_S

EMULATED = [name for name in board_names() if load_board(name).emulated]
SMALL = ["qemu-lm3s6965evb", "qemu-netduinoplus2"]  # 256 KB / 64 KB and 1 MB / 128 KB
SAMPLES = 20
L = keras.layers


@pytest.mark.parametrize("name", board_names())
def test_board_file_is_complete_and_consistent(name):
    board = load_board(name)
    assert (ROOT / "firmware" / "boards" / board.family / "uart.c").is_file()
    assert board.uart["driver"] == board.family
    regions = sorted([board.flash, board.ram, *board.extra_ram.values()], key=lambda r: r["origin"])
    for low, high in zip(regions, regions[1:], strict=False):
        assert low["origin"] + low["size"] <= high["origin"], f"{name}: memory regions overlap"
    if board.emulated:
        assert board.emulator["instructions_per_tick"] > 0


def test_boards_command_lists_every_board():
    listing = subprocess.run(["tinyrobust", "boards"], capture_output=True, text=True, check=True).stdout
    rows = {line.split()[0]: line for line in listing.splitlines()[1:]}
    assert sorted(rows) == board_names()
    for name, row in rows.items():
        board = load_board(name)
        assert f" {board.core} " in row and f" {board.fpu or 'none'} " in row
        assert (f"-M {board.emulator['machine']}" if board.emulated else f"pyOCD {board.flashing['pyocd']}") in row
    assert "128 KB + 64 KB ccm" in rows["qemu-netduinoplus2"]
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
    assert int(found[1]) > int(found[2]) == board.flash["size"]
    assert not (tmp_path / "firmware.elf").exists()


def test_small_board_refuses_an_arena_beyond_its_ram(large_arena, tmp_path):
    board = load_board("qemu-lm3s6965evb")
    with pytest.raises(UserError) as refused:
        build_firmware(large_arena, board, tmp_path)
    found = re.search(r"(\d+)-byte arena plus a (\d+)-byte stack .* (\d+) bytes of RAM", str(refused.value))
    assert found, refused.value
    arena, stack, ram = map(int, found.groups())
    assert arena == large_arena.arena_bytes and arena + stack > ram == board.ram["size"]


def test_firmware_just_over_flash_is_one_clear_error(tmp_path):
    """Weights alone fit the LM3S6965's 256 KB, weights and code together do not: the linker's verdict
    comes back as one sentence with both numbers."""
    board = load_board("qemu-lm3s6965evb")
    compiled = compile_model(quantized_model([L.Dense(252)], (1024,)))
    with pytest.raises(UserError) as refused:
        build_firmware(compiled, board, tmp_path)
    found = re.search(r"needs (\d+) bytes of flash but qemu-lm3s6965evb has (\d+)", str(refused.value))
    assert found, refused.value
    assert int(found[1]) > int(found[2]) == board.flash["size"]


@pytest.fixture(scope="module")
def digits_case(digits):
    compiled = compile_model(digits.tflite)
    xq = reference.quantize_inputs(digits.x_test[:SAMPLES], compiled.input)
    return compiled, xq, reference.tflm_outputs(digits.tflite, xq).reshape(len(xq), -1)


def run_in_emulator(board, elf, compiled, inputs) -> list[tuple[bytes, int]]:
    with Emulator(board, elf, log=elf.parent / "emulator.log") as emulator:
        device = Device(emulator.start(), EMULATED_UART_BYTES_PER_S)
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
