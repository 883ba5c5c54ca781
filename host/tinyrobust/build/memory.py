"""Where a firmware's bytes go, symbol by symbol from its ELF: flash split into code, the model's constants and the
rest; RAM into the arena, the link's buffers, the reserved stack and the rest; and the largest functions."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from tinyrobust.assets import FIRMWARE
from tinyrobust.compile.render import CODING_PREFIX, QUANT_PARAMS_PREFIX, WEIGHTS_PREFIX

# Sections of the linker script (firmware/templates/link.ld.j2) that hold flash, and RAM, bytes.
FLASH_SECTIONS = (".text", ".ARM.exidx", ".data")  # .data's initial values are stored in flash
RAM_SECTIONS = (".data", ".bss", ".stack")
# Source files whose RAM is the link's: main.c's receive, transmit and reply buffers, the frame parser's state and
# the channel's (the UART drivers of every family are uart.c too).
LINK_FILES = frozenset(
    {
        "main.c",
        *(p.name for p in (FIRMWARE / "link").glob("*.c")),
        *(p.name for p in FIRMWARE.glob("boards/channel/*.c")),
    }
)
ARENA_SYMBOL = "arena"  # the generated model.c's activation arena
LARGEST_FUNCTIONS = 10


@dataclass
class MemoryBreakdown:
    """Bytes by what they hold. The flash parts add up to flash_bytes and the RAM parts to ram_bytes, as
    build.firmware.memory_report counts them."""

    flash_bytes: int
    flash: dict[str, int]  # code, weights, quant_params, coder_tables, other_constants, initial_data, other
    ram_bytes: int
    ram: dict[str, int]  # arena, link_buffers, stack_reserved, other
    stack_reserved_bytes: int
    largest_functions: list[dict]  # {"name", "bytes"}, largest first

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Symbol:
    name: str
    kind: str  # "STT_FUNC" or "STT_OBJECT"
    section: str
    address: int
    size: int
    file: str | None  # the source file of a local symbol; None for a global one


def _symbols(elf) -> list[_Symbol]:
    """Functions and objects with a size, once per address (Thumb function addresses have bit 0 set). A local
    symbol follows the STT_FILE entry of its source file in the symbol table."""
    found: dict[tuple[str, int], _Symbol] = {}
    file = None
    for s in elf.get_section_by_name(".symtab").iter_symbols():
        kind, bind = s["st_info"]["type"], s["st_info"]["bind"]
        if kind == "STT_FILE":
            file = s.name
            continue
        if kind not in ("STT_FUNC", "STT_OBJECT") or not s["st_size"] or not isinstance(s["st_shndx"], int):
            continue
        address = s["st_value"] & ~1 if kind == "STT_FUNC" else s["st_value"]
        section = elf.get_section(s["st_shndx"]).name
        symbol = _Symbol(s.name, kind, section, address, s["st_size"], file if bind == "STB_LOCAL" else None)
        found.setdefault((kind, address), symbol)
    return list(found.values())


def memory_breakdown(elf_path: Path) -> MemoryBreakdown:
    from elftools.elf.elffile import ELFFile

    with elf_path.open("rb") as f:
        elf = ELFFile(f)
        sizes = {s.name: s["sh_size"] for s in elf.iter_sections()}
        symbols = _symbols(elf)
        addresses = {s.name: s["st_value"] for s in elf.get_section_by_name(".symtab").iter_symbols()}
    flash_bytes = sum(sizes.get(name, 0) for name in FLASH_SECTIONS)
    ram_bytes = sum(sizes.get(name, 0) for name in RAM_SECTIONS)

    in_flash = [s for s in symbols if s.section == ".text"]
    functions = sorted((s for s in in_flash if s.kind == "STT_FUNC"), key=lambda s: -s.size)
    objects = [s for s in in_flash if s.kind == "STT_OBJECT"]
    flash = {
        "code": sum(s.size for s in functions),
        **{
            key: sum(s.size for s in objects if s.name.startswith(prefix))
            for key, prefix in (
                ("weights", WEIGHTS_PREFIX),
                ("quant_params", QUANT_PARAMS_PREFIX),
                ("coder_tables", CODING_PREFIX),
            )
        },
        # layer parameter structs, lookup tables, the model hash, the vector table
        "other_constants": sum(
            s.size for s in objects if not s.name.startswith((WEIGHTS_PREFIX, QUANT_PARAMS_PREFIX, CODING_PREFIX))
        ),
        "initial_data": sizes.get(".data", 0),
    }
    flash["other"] = flash_bytes - sum(flash.values())  # alignment, unwind tables

    if "__stack_bottom" in addresses:
        stack = addresses["__stack_top"] - addresses["__stack_bottom"]
    else:  # an ELF linked before the stack's bottom had a symbol
        stack = sizes.get(".stack", 0)
    in_ram = [s for s in symbols if s.section in (".data", ".bss")]
    ram = {
        "arena": sum(s.size for s in in_ram if s.name == ARENA_SYMBOL and s.file == "model.c"),
        "link_buffers": sum(s.size for s in in_ram if s.file in LINK_FILES),
        "stack_reserved": stack,
    }
    ram["other"] = ram_bytes - sum(ram.values())  # the counter's state, alignment
    largest = [{"name": s.name, "bytes": s.size} for s in functions[:LARGEST_FUNCTIONS]]
    return MemoryBreakdown(flash_bytes, flash, ram_bytes, ram, stack, largest)
