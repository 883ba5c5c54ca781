"""Build firmware for a board with arm-none-eabi-gcc (or a native test binary with the host gcc)."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tinyrobust.assets import FIRMWARE
from tinyrobust.compile.model import CompiledModel
from tinyrobust.compile.render import (
    CODING_PREFIX,
    QUANT_PARAMS_PREFIX,
    WEIGHTS_PREFIX,
    render,
    render_coding,
    render_smoothing,
)
from tinyrobust.device.boards import Board
from tinyrobust.errors import UserError
from tinyrobust.split.coder import Coding, HyperpriorCoding
from tinyrobust.templates import render_template

# The stack reserved when none is given (--stack): above any model's high-water mark, the deepest layers being
# convolutions on the DSP extension's cores, whose block of four receptive fields widened to halfwords the compiler
# keeps within lower.BLOCK_LIMIT (coffee-cnn's 3x3x128 fields: 11,000 B in all).
STACK_BYTES = 14336
# The margin a measured stack reserve gets over the high-water mark: 25% of it or 512 bytes, whichever is larger. The
# mark covers what ran while it was measured, in the profile build; the margin is for what did not: an interrupt
# landing on the deepest call (an exception frame is 104 bytes with the FPU's registers), replies and paths the
# measurement did not take, and the normal build's frames, which may differ by a few words from the profile build's.
STACK_MARGIN = (0.25, 512)
STACK_ALIGNMENT = 8  # the AAPCS keeps the stack pointer 8-byte aligned at every call
ARM_GCC = "arm-none-eabi-gcc"
# Host channels: the board's UART, or in the emulator semihosting file I/O on two FIFOs (much faster).
CHANNELS = ("uart", "semihosting")


@dataclass
class MemoryReport:
    flash_bytes: int  # everything stored in flash: code, weights, parameters, initial data
    ram_bytes: int  # static RAM: data, bss (including the arena) and the reserved stack
    arena_bytes: int  # planned activation arena
    weights_bytes: int  # model weights and biases in flash
    quant_params_bytes: int  # per-channel requantization multipliers and shifts in flash
    code_bytes: int  # the rest of flash: runtime, kernels, protocol, layer parameters, tables
    coding_bytes: int = 0  # a split build's coder tables and per-element table indexes in flash

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Firmware:
    elf: Path
    memory: MemoryReport
    channel: str = "uart"


def _sources(*dirs: Path) -> list[Path]:
    return [p for d in dirs for p in sorted(d.glob("*.c"))]


def _compile(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"compilation failed:\n{' '.join(command)}\n{result.stderr[-4000:]}")


def cpu_flags(board: Board) -> list[str]:
    flags = [f"-mcpu={board.core}", "-mthumb"]
    if board.fpu:
        flags += [f"-mfpu={board.fpu}", "-mfloat-abi=hard"]
    else:
        flags += ["-mfloat-abi=soft"]
    return flags


def _board_sources(board: Board, channel: str) -> list[Path]:
    """The board layer: Cortex-M startup, the board's counter, the host channel and the family's drivers."""
    boards = FIRMWARE / "boards"
    family = boards / board.family
    if not family.is_dir():
        raise UserError(f"board {board.name} names family '{board.family}', but {family} does not exist")
    counter = boards / "cortex-m" / f"{board.counter}.c"
    if not counter.is_file():
        raise UserError(f"board {board.name} names counter '{board.counter}', but {counter} does not exist")
    return [boards / "cortex-m" / "startup.c", counter, boards / "channel" / f"{channel}.c", *_sources(family)]


def _uart_defines(board: Board) -> list[str]:
    """The UART's settings from the board file as C macros: base, baud, kernel clock, the clock and power
    enable bits to set (register, bit) and the TX/RX pins (port, pin, function) for the family's driver."""
    uart = board.uart
    defines = [
        f"-DTR_UART_BASE={uart.base:#x}u", f"-DTR_UART_BAUDDIV={uart.bauddiv}", f"-DTR_UART_BAUD={uart.baud}u",
        f"-DTR_UART_CLOCK_HZ={uart.clock_hz or board.clock_hz}u",
    ]  # fmt: skip
    if uart.enable:
        bits = ",".join(f"{{{register:#x}u,{bit}u}}" for register, bit in uart.enable)
        defines.append(f"-DTR_UART_ENABLE={bits}")
    for name, pin in (("TX", uart.tx), ("RX", uart.rx)):
        if pin is not None:
            defines.append(f"-DTR_UART_{name}={{{pin.port:#x}u,{pin.pin}u,{pin.function}u}}")
    if uart.lpuart:
        defines.append("-DTR_UART_LPUART=1")
    return defines


def _energy_defines(board: Board) -> list[str]:
    """The board file's energy pin as C macros, for its family's driver (<family>/energy.c): the pin a meter watches,
    which main.c holds high while the model runs. A board without one gets no macro and so no pin code."""
    energy = board.energy
    if energy.pin is None:
        return []
    driver = FIRMWARE / "boards" / board.family / "energy.c"
    if not driver.is_file():
        raise UserError(f"board {board.name} names an [energy] pin, but family '{board.family}' has no pin driver "
                        f"({driver}); remove the pin or write the driver")  # fmt: skip
    pin = energy.pin
    defines = [f"-DTR_ENERGY_PIN={{{pin.port:#x}u,{pin.pin}u,0u}}"]
    if energy.enable:
        bits = ",".join(f"{{{register:#x}u,{bit}u}}" for register, bit in energy.enable)
        defines.append(f"-DTR_ENERGY_ENABLE={bits}")
    return defines


def _link_for_board(
    board: Board,
    sources: list[Path],
    includes: list[Path],
    out_dir: Path,
    name: str,
    channel: str = "uart",
    defines: list[str] | None = None,
    stack_bytes: int = STACK_BYTES,
) -> Path:
    """Compile and link sources into out_dir/<name>.elf with the board's CPU flags, defines and memory map."""
    if shutil.which(ARM_GCC) is None:
        raise UserError(
            f"{ARM_GCC} is not installed; run: apt-get install -y gcc-arm-none-eabi libnewlib-arm-none-eabi"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    linker_script = out_dir / f"{name}.ld"
    linker_script.write_text(render_template("link.ld.j2", board=board, stack_bytes=stack_bytes))
    elf = out_dir / f"{name}.elf"
    command = [
        ARM_GCC, *cpu_flags(board), "-O2", "-g", "-std=c11", "-Wall", "-Wextra",
        "-ffunction-sections", "-fdata-sections",
        *_uart_defines(board), *_energy_defines(board), f"-DTR_CLOCK_HZ={board.clock_hz}u", *(defines or []),
        *(f"-I{d}" for d in [FIRMWARE / "boards", *includes]),
        *map(str, sources), *map(str, _board_sources(board, channel)),
        "--specs=nano.specs", "-nostartfiles", f"-T{linker_script}", "-Wl,--gc-sections",
        f"-Wl,-Map={out_dir / name}.map", "-o", str(elf),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    overflow = re.search(r"region `(\w+)' overflowed by (\d+) bytes", result.stderr)
    if result.returncode != 0 and overflow:
        regions = {"flash": board.flash, "ram": board.ram, **board.extra_ram}
        region, excess = overflow[1].lower(), int(overflow[2])
        size = regions[region].size
        raise UserError(
            f"the firmware needs {size + excess} bytes of {region} but {board.name} has {size}; "
            "choose a smaller model or a board with more memory"
        )
    if result.returncode != 0:
        raise RuntimeError(f"compilation failed:\n{' '.join(command)}\n{result.stderr[-4000:]}")
    return elf


def build_firmware(
    model: CompiledModel,
    board: Board,
    out_dir: Path,
    channel: str = "uart",
    coding: Coding | None = None,
    profile: bool = False,
    stack_bytes: int = STACK_BYTES,
) -> Firmware:
    """Render the model and the linker script, compile everything, and report memory from the ELF.
    channel: how the firmware talks to the host, "uart" or (emulated boards only) "semihosting".
    coding: makes a split build, whose model is a head with a symbol output (split.head.with_symbol_output):
    it also answers ENCODE, coding the output with these tables (docs/protocol.md), and reports the hash
    coding.firmware_hash(model.model_hash), which the host hands to the handshake.
    profile: makes a profile build (TR_PROFILE), which records every step's counter ticks and answers PROFILE
    with them and the stack's high-water mark, and TENSOR with each step's output; a normal build has none of that
    code. stack_bytes: the stack reserved in RAM (device.stack.stack_for checks one the user gives against a
    measurement). A model compiled with smoothing makes a smoothing build (TR_SMOOTHING), whose INFER runs the
    network on noisy copies of the input and answers with their votes; a normal build has none of that code."""
    check_channel(board, channel)
    check_stack_alignment(stack_bytes)
    _check_fits(model, board, stack_bytes)
    gen = out_dir / "generated"
    for stale in [*gen.glob("coding.*"), *gen.glob("smoothing.*")]:
        stale.unlink()
    sources = [*_sources(FIRMWARE / "runtime", FIRMWARE / "link"), FIRMWARE / "main.c", gen / "model.c"]
    includes = [FIRMWARE / "runtime", FIRMWARE / "link", gen]
    defines = []
    if coding is not None:
        _check_coding(model, coding)
        model = replace(model, model_hash=coding.firmware_hash(model.model_hash))
        render_coding(model, coding, gen)
        sources += [*_sources(FIRMWARE / "entropy"), gen / "coding.c"]
        includes.append(FIRMWARE / "entropy")
        defines.append("-DTR_SPLIT=1")
    if model.smoothing is not None:
        if coding is not None:
            raise UserError("a split build answers with the coded head's output, not votes; build it without smoothing")
        render_smoothing(model, gen)
        sources.append(gen / "smoothing.c")
        defines.append("-DTR_SMOOTHING=1")
    if profile:
        defines.append("-DTR_PROFILE=1")
    render(model, gen)
    elf = _link_for_board(board, sources, includes, out_dir, "firmware", channel, defines, stack_bytes)
    return Firmware(elf, memory_report(elf, model.arena_bytes), channel)


def _check_coding(model: CompiledModel, coding: Coding | HyperpriorCoding) -> None:
    """Refuse a split build whose symbol outputs are not the latent's symbols, or whose coding does not match
    them: one table per channel of the latent, and for a hyperprior an int8 side latent and a hyper-decoder
    output with a mean and a scale per element of the latent."""
    hyperprior = isinstance(coding, HyperpriorCoding)
    expected = 3 if hyperprior else 1
    if len(model.outputs) != expected:
        raise UserError(
            f"a split build with a {'hyperprior' if hyperprior else 'factorized prior'} codes a head with "
            f"{expected} output(s), but this one has {len(model.outputs)}"
        )
    for output in model.outputs[: coding.symbol_outputs]:
        scale = None if output.scale is None else (output.scale.tolist(), output.zero_point.tolist())
        if scale != ([1.0], [0]):
            raise UserError(
                f"a split build codes the head's output integers as the latent's symbols, but its output has "
                f"quantization {scale}; give it scale 1 and zero point 0 with split.head.with_symbol_output"
            )
    y = model.outputs[0]
    if not hyperprior and y.shape[-1] != coding.channels:
        raise UserError(
            f"the coding gives tables for {coding.channels} channels, but the head's output {y.shape} has "
            f"{y.shape[-1]}; give one table index per output channel"
        )
    if hyperprior:
        z, h = model.outputs[1:]
        if y.type_name != "int8" or z.type_name != "int8" or h.type_name != "int8":
            raise UserError("a hyperprior split build codes int8 heads only; quantize the head to int8")
        if z.shape[-1] != coding.z.channels or tuple(h.shape) != (*y.shape[:-1], 2 * y.shape[-1]):
            raise UserError(
                f"the hyperprior's coding does not match the head: z {z.shape} for {coding.z.channels} channels, "
                f"and the hyper-decoder's output {h.shape} must be the latent's {y.shape} with twice the channels"
            )


def check_channel(board: Board, channel: str) -> None:
    if channel not in CHANNELS:
        raise UserError(f"there is no channel '{channel}'; choose one of: {', '.join(CHANNELS)}")
    if channel not in board.channels:
        who = "a real board: only QEMU has" if not board.emulated else f"run by {board.how_run}, which lacks"
        raise UserError(f"{board.name} is {who} the {channel} channel; use --channel uart")


def build_calibration(board: Board, out_dir: Path) -> Path:
    """Firmware that times spin loops of known length with the board's counter (see emulator.calibrate)."""
    return _link_for_board(board, [FIRMWARE / "boards" / "calibrate.c"], [], out_dir, "calibrate")


def recommended_stack(high_water: int) -> int:
    """The stack to reserve for a measured high-water mark: the mark plus STACK_MARGIN, rounded up to the stack's
    alignment."""
    share, least = STACK_MARGIN
    margin = max(math.ceil(high_water * share), least)
    return -(-(high_water + margin) // STACK_ALIGNMENT) * STACK_ALIGNMENT


def check_stack_alignment(stack_bytes: int) -> None:
    if stack_bytes <= 0 or stack_bytes % STACK_ALIGNMENT:
        rounded = max(STACK_ALIGNMENT, -(-stack_bytes // STACK_ALIGNMENT) * STACK_ALIGNMENT)
        raise UserError(f"a {stack_bytes}-byte stack is not a positive multiple of {STACK_ALIGNMENT} (the stack "
                        f"pointer's alignment); give --stack {rounded}")  # fmt: skip


def _check_fits(model: CompiledModel, board: Board, stack_bytes: int = STACK_BYTES) -> None:
    """Refuse, before building, a model whose constants or arena alone exceed the board's memory."""
    weights = sum(c.nbytes for c in model.constants)
    if weights > board.flash.size:
        raise UserError(
            f"the model's {weights} bytes of weights do not fit {board.name}'s {board.flash.size} bytes of flash"
        )
    if model.arena_bytes + stack_bytes > board.ram.size:
        raise UserError(
            f"the model's {model.arena_bytes}-byte arena plus a {stack_bytes}-byte stack do not fit "
            f"{board.name}'s {board.ram.size} bytes of RAM"
        )


def memory_report(elf: Path, arena_bytes: int) -> MemoryReport:
    from elftools.elf.elffile import ELFFile

    with elf.open("rb") as f:
        e = ELFFile(f)
        sizes = {s.name: s["sh_size"] for s in e.iter_sections()}
        symtab = e.get_section_by_name(".symtab")
        symbols = [(s.name, s["st_size"]) for s in symtab.iter_symbols()]
    weights = sum(size for name, size in symbols if name.startswith(WEIGHTS_PREFIX))
    quant_params = sum(size for name, size in symbols if name.startswith(QUANT_PARAMS_PREFIX))
    coding = sum(size for name, size in symbols if name.startswith(CODING_PREFIX))
    flash = sizes.get(".text", 0) + sizes.get(".ARM.exidx", 0) + sizes.get(".data", 0)
    ram = sizes.get(".data", 0) + sizes.get(".bss", 0) + sizes.get(".stack", 0)
    code = flash - weights - quant_params - coding
    return MemoryReport(flash, ram, arena_bytes, weights, quant_params, code, coding)


def build_native(model: CompiledModel, out_dir: Path, sanitize: bool = True) -> Path:
    """The generated model and the kernels compiled for this machine, with a stdin/stdout harness."""
    gen = out_dir / "generated"
    render(model, gen)
    exe = out_dir / "model-native"
    flags = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"] if sanitize else ["-O2"]
    command = [
        "gcc", *flags, "-std=c11", "-Wall", "-Wextra", "-Werror",
        f"-I{FIRMWARE / 'runtime'}", f"-I{gen}",
        *map(str, _sources(FIRMWARE / "runtime")),
        str(FIRMWARE / "native" / "harness.c"), str(gen / "model.c"),
        "-o", str(exe),
    ]  # fmt: skip
    _compile(command)
    return exe


def build_decoder(out_dir: Path) -> Path:
    """The rANS decoder compiled for this machine (firmware/native/rans_decoder.c), which split-evaluate decodes
    every stream with besides the Python reference."""
    if shutil.which("gcc") is None:
        raise UserError("gcc is not installed, and split-evaluate decodes with the native coder too; run: "
                        "apt-get install -y gcc")  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    exe = out_dir / "rans-decoder"
    sources = [FIRMWARE / "entropy" / "tr_rans.c", FIRMWARE / "native" / "rans_decoder.c"]
    _compile(["gcc", "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", f"-I{FIRMWARE / 'entropy'}",
              *map(str, sources), "-o", str(exe)])  # fmt: skip
    return exe


def run_native(exe: Path, inputs) -> bytes:
    result = subprocess.run([str(exe)], input=inputs.tobytes(), capture_output=True, check=True)
    return result.stdout
