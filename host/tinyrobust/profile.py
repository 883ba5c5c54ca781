"""profile: where an inference goes, layer by layer. A profile build of the firmware (TR_PROFILE) counts every step
of the schedule as INFER counts a whole inference, and a normal build of the same model counts the whole on the
same inputs, so that the rows are checked to add up to the inference the normal firmware runs. MACs and the arena's
occupancy come from the compiled schedule, memory from the normal build's ELF and the stack's high-water mark (and
the reserve it recommends) from the profile build."""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tinyrobust.assets import FIRMWARE
from tinyrobust.build.firmware import STACK_BYTES, STACK_MARGIN, build_firmware, recommended_stack
from tinyrobust.build.memory import memory_breakdown
from tinyrobust.compile.graph import fold_shape_arithmetic, fuse_dilated_convolutions, read_tflite, remove_dead_ops
from tinyrobust.compile.model import CompiledModel, Step, compile_model
from tinyrobust.device.boards import Board, load_board
from tinyrobust.device.counter import count_unit, latency
from tinyrobust.device.energy import energy_estimate, estimate_uj
from tinyrobust.device.link import check_output_fits
from tinyrobust.device.pool import run_on_emulator
from tinyrobust.device.stack import measure_stack
from tinyrobust.errors import UserError
from tinyrobust.model import zoo
from tinyrobust.model.quantize import check_precision
from tinyrobust.model.reference import random_inputs

INFERENCES = 3  # random inputs; every count is their mean
TOLERANCE = 0.02  # how far the layers' sum may be from the whole inference
COUNTER_READS = (
    "excluded: the profile build restarts the counter right before each step and reads it right after, as INFER "
    "does around the whole inference"
)


@dataclass
class Layer:
    """One step of the schedule: its operator and kernel, what it computes and what it took."""

    index: int
    op: str
    kernel: str
    output_shape: list[int]
    macs: int  # multiply-accumulates of a convolution or fully connected layer; 0 for the other operators
    count: float  # mean over the inputs, in the profile's unit
    share: float  # of the whole inference (the normal build's INFER)
    macs_per_count: float | None  # MACs per instruction (or cycle); None where there are no MACs
    energy_estimate_uj: float | None = None  # device.energy.estimate_uj of the count; None without datasheet figures


@dataclass
class SumCheck:
    """The layers against the whole: their sum in the profile build, the normal build's INFER on the same inputs."""

    layers_sum: float
    inference_total: float
    difference: float  # (layers_sum - inference_total) / inference_total
    tolerance: float
    within_tolerance: bool
    counter_reads: str  # how the counter's own cost is kept out of the layers' counts
    same_outputs: bool  # both builds gave the same output bytes on every input


@dataclass
class Profile:
    model: str
    board: str
    precision: str
    unit: str  # "instructions" (emulated) or "cycles"
    counted: str  # what the counter counts, and where
    inferences: int
    layers: list[Layer]
    total: float  # the normal build's INFER, mean over the inputs
    sum_check: SumCheck
    memory: dict  # build.memory.MemoryBreakdown of the normal build, with the profile build's stack high water
    arena: dict  # arena_occupancy(): the buffers live at each step, with their offsets and sizes
    energy: dict | None = None  # device.energy.energy_estimate of the total; None without datasheet figures

    def as_dict(self) -> dict:
        return asdict(self)


def layer_macs(step: Step) -> int:
    """Multiply-accumulates of a step, from its kernel's parameters: each output element of a convolution takes
    one per weight of its window (k_h x k_w x k_c; k_c is 1 for a depthwise one), of a fully connected layer
    one per input."""
    f = step.fields
    if step.op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D+ADD"):
        return int(f["out_h"] * f["out_w"] * f["out_c"] * f["k_h"] * f["k_w"] * f["k_c"])
    if step.op.kind == "FULLY_CONNECTED":
        return int(f["rows"] * f["in_n"] * f["out_n"])
    return 0


def output_shapes(tflite: bytes) -> dict[int, tuple[int, ...]]:
    """Every tensor's shape after the compiler's rewrites (compile_model's), by tensor index."""
    graph = read_tflite(tflite)
    fold_shape_arithmetic(graph)
    remove_dead_ops(graph)
    fuse_dilated_convolutions(graph)
    return {t.index: t.shape for t in graph.tensors}


def _bytes_covered(live: list[dict]) -> int:
    """The bytes of the arena the buffers cover, once each: a step's output may lie over an input it reads last."""
    covered, end = 0, 0
    for b in sorted(live, key=lambda b: b["offset"]):
        start, stop = max(b["offset"], end), b["offset"] + b["bytes"]
        covered += max(0, stop - start)
        end = max(end, stop)
    return covered


def arena_occupancy(compiled: CompiledModel) -> dict:
    """The arena step by step: every buffer the planner placed, with its offset, size and lifetime (from the first
    step that writes or reads it to the last that reads it; a model output's last is len(steps): the host reads it
    after the last step), the buffers live at each step and the step with the most bytes live."""
    writers = {step.output: i for i, step in enumerate(compiled.steps)}
    buffers = [
        {"tensor": b.key, "offset": compiled.offsets[b.key], "bytes": b.size, "first": b.first, "last": b.last,
         "written_by": writers.get(b.key)}  # None for the input: the host writes it
        for b in sorted(compiled.buffers, key=lambda b: (b.first, compiled.offsets[b.key]))
    ]  # fmt: skip
    steps = []
    for i, step in enumerate(compiled.steps):
        live = [{k: b[k] for k in ("tensor", "offset", "bytes")} for b in buffers if b["first"] <= i <= b["last"]]
        steps.append({"index": i, "op": step.op.kind, "live": live, "bytes": _bytes_covered(live)})
    peak = max(steps, key=lambda step: step["bytes"])
    return {
        "bytes": compiled.arena_bytes,
        "buffers": buffers,
        "steps": steps,
        "peak": {"index": peak["index"], "op": peak["op"], "bytes": peak["bytes"]},
    }


def _run_builds(compiled: CompiledModel, board: Board, inputs: list[bytes], work: Path, stack: int | None) -> tuple:
    """The normal build's answers and the profile build's, on the same inputs, and the normal build's memory. The
    normal build reserves the stack given once the profile build has shown that it holds the stack."""
    channel = board.default_channel
    steps = measure_stack(compiled, board, channel, stack, inputs, work / "profile")
    normal = build_firmware(compiled, board, work / "normal", channel, stack_bytes=stack or STACK_BYTES)
    whole = run_on_emulator(board, normal.elf, channel, compiled.model_hash, inputs)
    return whole, steps, memory_breakdown(normal.elf)


def emulated_board(name: str) -> Board:
    board = load_board(name)
    if not board.emulated:
        raise UserError(f"profile runs the firmware in an emulator, and {board.name} is a real board; choose an "
                        "emulated board (see `tinyrobust boards`)")  # fmt: skip
    return board


def profile_board(
    model: str,
    board_name: str,
    precision: str = "int8",
    inferences: int = INFERENCES,
    seed: int = 0,
    stack: int | None = None,
) -> Profile:
    """Build the model's normal and profile firmware for the board, run the same random inputs on both, and put
    each step's count beside its MACs, checked against the whole inference. stack: the normal build's stack reserve
    (default build.firmware.STACK_BYTES), refused below the high-water mark the profile build measures."""
    board = emulated_board(board_name)
    tflite = zoo.load_tflite(model, precision)
    compiled = compile_model(tflite)
    check_precision(compiled.input.type_name, precision)
    check_output_fits(compiled.output.nbytes)
    inputs = [x.tobytes() for x in random_inputs(compiled.input, inferences, seed)]
    with tempfile.TemporaryDirectory(prefix="tinyrobust-profile-") as work:
        whole, steps, memory = _run_builds(compiled, board, inputs, Path(work), stack)
    unit, per_tick, counted = count_unit(board, board.counter)
    totals = np.array([ticks for _, ticks in whole], dtype=np.float64) * per_tick
    step_counts = np.array([ticks for _, ticks, _ in steps], dtype=np.float64) * per_tick  # (inputs, steps)
    total = float(totals.mean())
    shapes = output_shapes(tflite)
    layers = []
    for i, (step, count) in enumerate(zip(compiled.steps, step_counts.mean(axis=0), strict=True)):
        macs = layer_macs(step)
        per_count = macs / count if macs and count else None
        shape = list(shapes.get(step.output, ()))
        layers.append(Layer(i, step.op.kind, step.function, shape, macs, float(count), float(count) / total, per_count))
    layers_sum = float(step_counts.sum(axis=1).mean())
    difference = (layers_sum - total) / total
    same = all(a == b for (a, _), (b, _, _) in zip(whole, steps, strict=True))
    check = SumCheck(layers_sum, total, difference, TOLERANCE, abs(difference) <= TOLERANCE, COUNTER_READS, same)
    memory_dict = memory.as_dict()
    memory_dict["stack_high_water_bytes"] = high_water = max(high for _, _, high in steps)
    memory_dict["stack_recommended_bytes"] = recommended_stack(high_water)
    for layer in layers:
        layer.energy_estimate_uj = estimate_uj(board, layer.count)
    return Profile(
        zoo.model_name(model), board.name, precision, unit, counted, inferences, layers, total, check, memory_dict,
        arena_occupancy(compiled), energy_estimate(board, total, unit),
    )  # fmt: skip


def profile(
    model: str,
    boards: list[str],
    precision: str = "int8",
    progress=None,
    stack: int | None = None,
    meter: str | None = None,
    port: str | None = None,
    flash_with: str = "pyocd",
) -> dict:
    """One board's profile as a dict; with several boards, {"model", "precision", "boards": [one per board],
    "cross_board": each layer's count side by side}. With a meter, measure_energy() on the real board at port."""
    if meter is not None:
        return measure_energy(model, boards, precision, meter, port, flash_with, progress)
    for name in boards:
        emulated_board(name)  # a wrong board is refused before anything is built
    results = []
    for name in boards:
        if progress:
            progress(f"profile {model} on {name}")
        results.append(profile_board(model, name, precision, stack=stack).as_dict())
    if len(results) == 1:
        return results[0]
    return {
        "model": results[0]["model"],
        "precision": precision,
        "boards": results,
        "cross_board": cross_board(results),
    }


def measure_energy(
    model: str,
    boards: list[str],
    precision: str,
    meter: str,
    port: str | None,
    flash_with: str = "pyocd",
    progress=None,
) -> dict:
    """profile --meter: the model's normal build on the real board at port, flashed first, its inferences' counts
    (DWT cycles) and the energy the meter measured over the energy pin's windows, beside the estimate. The layers need
    the profile build's counts in the emulator, so there are none here. Everything is checked, and the meter looked
    for, before anything is built."""
    from tinyrobust.device.meter import open_meter, run_measured

    if port is None:
        raise UserError("--meter measures a real board through its serial port; give it with --port, e.g. --port "
                        "/dev/ttyACM0 (see `tinyrobust boards detect`)")  # fmt: skip
    if len(boards) != 1:
        raise UserError(f"--meter measures one board at --port, but {len(boards)} were given; give one --board")
    board = load_board(boards[0])
    if board.emulated:
        raise UserError(f"--meter measures a real board's supply, and {board.name} is emulated; choose a real board "
                        "(see `tinyrobust boards`)")  # fmt: skip
    if board.energy.pin is None:
        driver = FIRMWARE / "boards" / board.family / "energy.c"
        fix = "add one to its file"
        if not driver.is_file():
            fix = f"its {board.family} firmware layer needs a pin driver first (firmware/boards/{board.family}/"
            fix += f"{driver.name}, as in stm32v2/), then the pin in its file"
        raise UserError(f"{board.name}'s board file names no [energy] pin for the meter to watch: {fix}")
    instrument = open_meter(meter, board)
    tflite = zoo.load_tflite(model, precision)
    compiled = compile_model(tflite)
    check_precision(compiled.input.type_name, precision)
    check_output_fits(compiled.output.nbytes)
    inputs = [x.tobytes() for x in random_inputs(compiled.input, INFERENCES, 0)]
    if progress:
        progress(f"measure {model} on {board.name} at {port} with the {meter}")
    with tempfile.TemporaryDirectory(prefix="tinyrobust-profile-") as work:
        firmware = build_firmware(compiled, board, Path(work), "uart")
        answers, measured = run_measured(board, firmware.elf, port, flash_with, compiled.model_hash, inputs, instrument)
    counts = latency(board, [ticks for _, ticks in answers], board.counter)
    energy = counts["energy"] or {"estimate_uj": None, "basis": "no estimate: the board file gives no datasheet "
                                  "figures", "source": None}  # fmt: skip
    return {
        "model": zoo.model_name(model), "board": board.name, "precision": precision, "port": port,
        "unit": counts["unit"], "counted": counts["source"], "inferences": INFERENCES,
        "per_inference": counts["per_inference"], "energy": {**energy, "measured": measured},
    }  # fmt: skip


def cross_board(boards: list[dict]) -> dict:
    """Each layer's count on every board, side by side, and each board's total; the boards run the same schedule."""
    units = {b["board"]: b["unit"] for b in boards}
    rows = []
    for i, layer in enumerate(boards[0]["layers"]):
        rows.append({"index": i, "op": layer["op"], "counts": {b["board"]: b["layers"][i]["count"] for b in boards}})
    totals = {b["board"]: b["total"] for b in boards}
    return {"boards": [b["board"] for b in boards], "units": units, "layers": rows, "totals": totals}


# ---- text ------------------------------------------------------------------------------------------------------

PER_UNIT = {"instructions": "MACs/instr", "cycles": "MACs/cycle"}


def _shape(shape: list[int]) -> str:
    return "x".join(map(str, shape)) or "-"


def format_profile(p: dict) -> str:
    """One board's rows, the sum check and the memory, as the terminal shows them."""
    unit, check, arena = p["unit"], p["sum_check"], p["arena"]
    lines = [
        f"{p['model']} ({p['precision']}) on {p['board']}: {unit} per layer, mean of {p['inferences']} random inputs",
        f"counted: {p['counted']}",
        f"{'#':>3}  {'op':<18} {'output shape':<14} {'MACs':>12} {unit:>13} {'share':>7} {PER_UNIT[unit]:>10} "
        f"{'arena live B':>12}" + (f" {'uJ (estimate)':>13}" if p["energy"] else ""),
    ]
    for layer, step in zip(p["layers"], arena["steps"], strict=True):
        per = f"{layer['macs_per_count']:.3f}" if layer["macs_per_count"] is not None else "-"
        lines.append(
            f"{layer['index']:>3}  {layer['op']:<18} {_shape(layer['output_shape']):<14} {layer['macs']:>12,} "
            f"{layer['count']:>13,.0f} {layer['share']:>7.1%} {per:>10} {step['bytes']:>12,}"
            + (f" {layer['energy_estimate_uj']:>13.3f}" if p["energy"] else "")
        )
    macs = sum(layer["macs"] for layer in p["layers"])
    lines.append(
        f"{'':>3}  {'total (INFER)':<18} {'':<14} {macs:>12,} {p['total']:>13,.0f} {'':>7} {macs / p['total']:>10.3f}"
    )
    verdict = "within" if check["within_tolerance"] else "NOT within"
    lines.append(
        f"sum check: the layers add up to {check['layers_sum']:,.0f} {unit}, the normal build's INFER on the same "
        f"inputs to {check['inference_total']:,.0f}: {check['difference']:+.2%}, {verdict} "
        f"{check['tolerance']:.0%}; outputs {'identical' if check['same_outputs'] else 'DIFFERENT'} in both builds"
    )
    lines.append(f"counter reads: {check['counter_reads']}")
    peak = arena["peak"]
    lines.append(
        f"arena {arena['bytes']:,} B as planned: at most {peak['bytes']:,} B live "
        f"({peak['bytes'] / arena['bytes']:.0%} of it), at step {peak['index']} {peak['op']}; 'arena live B' is the "
        "bytes of the tensors live at each step"
    )
    lines += format_energy(p["energy"], p["board"])
    lines += format_memory(p["memory"])
    return "\n".join(lines)


def format_energy(energy: dict | None, board: str) -> list[str]:
    """The energy per inference: the estimate with its basis and source, and what a meter measured."""
    if energy is None:
        return [f"energy: no estimate: {board}'s board file gives no datasheet figures ([energy])"]
    lines = []
    if energy["estimate_uj"] is not None:
        lines.append(f"energy (estimate): {energy['estimate_uj']:,.3f} uJ per inference; {energy['basis']}; source: "
                     f"{energy['source']}")  # fmt: skip
    else:
        lines.append(f"energy: {energy['basis']}")
    if energy.get("measured"):
        m = energy["measured"]
        uj = m["measured_uj"]
        lines.append(f"energy (measured by the {m['meter']}): {uj['median']:,.3f} uJ per inference (median of "
                     f"{m['windows']} pin windows, {uj['min']:,.3f} to {uj['max']:,.3f}); {m['basis']}")  # fmt: skip
    return lines


def format_measured(p: dict) -> str:
    """profile --meter: the real board's inferences and their energy."""
    count = p["per_inference"]
    lines = [
        f"{p['model']} ({p['precision']}) on {p['board']} at {p['port']}: whole inferences, {p['inferences']} random "
        "inputs (the layers need the emulator: profile without --meter)",
        f"counted: {p['counted']}",
        f"{p['unit']} per inference: median {count['median']:,.0f} (min {count['min']:,.0f}, max {count['max']:,.0f})",
    ]
    return "\n".join(lines + format_energy(p["energy"], p["board"]))


def format_memory(m: dict) -> list[str]:
    flash, ram = m["flash"], m["ram"]
    labels = {"quant_params": "quantization parameters", "coder_tables": "coder tables",
              "other_constants": "other constant tables", "initial_data": "initial data",
              "link_buffers": "link buffers", "stack_reserved": "stack reserved"}  # fmt: skip

    def parts(d: dict) -> str:
        return ", ".join(f"{labels.get(k, k)} {v:,}" for k, v in d.items() if v)

    largest = ", ".join(f"{f['name']} {f['bytes']:,}" for f in m["largest_functions"])
    share, least = STACK_MARGIN
    return [
        f"flash {m['flash_bytes']:,} B: {parts(flash)}",
        f"RAM {m['ram_bytes']:,} B: {parts(ram)}; stack used at most {m['stack_high_water_bytes']:,} of "
        f"{m['stack_reserved_bytes']:,} B",
        f"recommended stack reserve {m['stack_recommended_bytes']:,} B (the high-water mark plus {share:.0%} or "
        f"{least} B, whichever is larger, rounded up to 8 B); build with it: --stack {m['stack_recommended_bytes']}",
        f"largest functions (B): {largest}",
    ]


def format_cross_board(results: dict) -> str:
    """The layers' counts on every board side by side, and the totals."""
    table = results["cross_board"]
    names, units = table["boards"], table["units"]
    width = max(14, *(len(n) for n in names))
    same_unit = len(set(units.values())) == 1
    title = f"{next(iter(units.values()))} per layer" if same_unit else "counts per layer (unit per board below)"
    lines = [f"{results['model']} ({results['precision']}), {title}, on every board",
             f"{'#':>3}  {'op':<18} " + " ".join(f"{n:>{width}}" for n in names)]  # fmt: skip
    if not same_unit:
        lines.append(f"{'':>3}  {'':<18} " + " ".join(f"{units[n]:>{width}}" for n in names))
    for row in table["layers"]:
        counts = " ".join(f"{row['counts'][n]:>{width},.0f}" for n in names)
        lines.append(f"{row['index']:>3}  {row['op']:<18} {counts}")
    lines.append(f"{'':>3}  {'total (INFER)':<18} " + " ".join(f"{table['totals'][n]:>{width},.0f}" for n in names))
    return "\n".join(lines)


def write_csv(results: dict, path: Path) -> None:
    """The layers of every board's profile as CSV, one row per board and layer (the JSON's layers, flattened)."""
    import csv

    columns = ["board", "unit", "index", "op", "kernel", "output_shape", "macs", "count", "share", "macs_per_count"]
    boards = results.get("boards", [results])
    energy = any(layer.get("energy_estimate_uj") is not None for b in boards for layer in b["layers"])
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns + ["energy_uj_estimate"] * energy, extrasaction="ignore")
        writer.writeheader()
        for b in boards:
            for layer in b["layers"]:
                writer.writerow({**layer, "board": b["board"], "unit": b["unit"],
                                 "output_shape": "x".join(map(str, layer["output_shape"])),
                                 "energy_uj_estimate": layer.get("energy_estimate_uj")})  # fmt: skip


def format_results(results: dict) -> str:
    """What the command prints: each board's profile, then with several boards the cross-board table."""
    if "layers" not in results and "boards" not in results:
        return format_measured(results)
    boards = results.get("boards", [results])
    text = "\n\n".join(format_profile(p) for p in boards)
    if len(boards) > 1:
        text += "\n\n" + format_cross_board(results)
    return text
