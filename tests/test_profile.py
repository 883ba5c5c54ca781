"""`profile`: per-layer counts from a profile build of the firmware, checked against a normal build's inference, with
MACs from the compiled schedule and memory from the ELF; and a normal build that profiling leaves as it was."""

import csv
import itertools
import json
import re
import subprocess

import numpy as np
import pytest

from conftest import tinyrobust
from tinyrobust.assets import FIRMWARE
from tinyrobust.build.firmware import ARM_GCC, STACK_BYTES, build_firmware, cpu_flags, memory_report
from tinyrobust.build.memory import LARGEST_FUNCTIONS, memory_breakdown
from tinyrobust.compile.graph import read_tflite
from tinyrobust.compile.model import compile_model
from tinyrobust.compile.render import render
from tinyrobust.device.boards import DEFAULT_BOARD, load_board
from tinyrobust.device.counter import count_unit
from tinyrobust.device.energy import estimate_uj
from tinyrobust.device.pool import run_on_emulator
from tinyrobust.errors import UserError
from tinyrobust.model.reference import random_inputs
from tinyrobust.profile import INFERENCES, arena_occupancy, layer_macs

LAYER_KEYS = {"index", "op", "output_shape", "macs", "count", "share"}


@pytest.fixture(scope="module")
def profile_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("profile")


@pytest.fixture(scope="module")
def profiled(profile_dir):
    """digits-cnn profiled on the default board through the command line, with its JSON, page and output."""
    out = profile_dir
    result = tinyrobust("profile", "digits-cnn", "--json", out / "profile.json", "--csv", out / "profile.csv",
                        "--html", out / "profile.html", cwd=out)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout, json.loads((out / "profile.json").read_text()), (out / "profile.html").read_text()


@pytest.mark.emulator
def test_the_csv_has_the_jsons_layers(profiled, profile_dir):
    _, results, _ = profiled
    rows = list(csv.DictReader((profile_dir / "profile.csv").open()))
    assert [(int(r["index"]), r["op"]) for r in rows] == [(layer["index"], layer["op"]) for layer in results["layers"]]
    for row, layer in zip(rows, results["layers"], strict=True):
        assert float(row["count"]) == layer["count"] and int(row["macs"]) == layer["macs"]
        assert row["board"] == results["board"] and row["unit"] == results["unit"]
        assert float(row["energy_uj_estimate"]) == pytest.approx(layer["energy_estimate_uj"])


@pytest.mark.emulator
def test_layers_add_up_to_the_inference_within_two_percent(profiled):
    stdout, results, _ = profiled
    check = results["sum_check"]
    layers_sum = sum(layer["count"] for layer in results["layers"])
    assert layers_sum == pytest.approx(check["layers_sum"])
    assert check["inference_total"] == results["total"] > 0
    assert abs(layers_sum - results["total"]) <= 0.02 * results["total"]
    assert check["within_tolerance"] and check["same_outputs"]
    assert "sum check: the layers add up to" in stdout and "within 2%" in stdout
    assert "counter reads: excluded" in stdout


@pytest.mark.emulator
def test_every_step_of_the_schedule_is_a_row_with_real_figures(profiled, digits):
    stdout, results, _ = profiled
    compiled = compile_model(digits.tflite)
    assert [layer["op"] for layer in results["layers"]] == [s.op.kind for s in compiled.steps]
    for i, step in enumerate(compiled.steps):
        assert re.search(rf"^\s*{i}\s+{step.op.kind}\s", stdout, re.M), step.op.kind
    for i, layer in enumerate(results["layers"]):
        assert set(layer) >= LAYER_KEYS and layer["index"] == i
        assert layer["count"] > 0 and 0 < layer["share"] < 1 and layer["output_shape"]
        assert (layer["macs"] > 0) == (layer["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"))
    assert (results["model"], results["board"], results["precision"]) == ("digits-cnn", DEFAULT_BOARD, "int8")
    assert results["unit"] == "instructions" and "executed instructions" in results["counted"]
    assert sum(layer["share"] for layer in results["layers"]) == pytest.approx(1, abs=0.02)


@pytest.mark.emulator
def test_memory_and_stack_high_water_are_reported(profiled, digits):
    stdout, results, html = profiled
    memory = results["memory"]
    assert sum(memory["flash"].values()) == memory["flash_bytes"] and memory["flash"]["weights"] > 0
    assert (
        sum(memory["ram"].values()) == memory["ram_bytes"]
        and memory["ram"]["arena"] == compile_model(digits.tflite).arena_bytes
    )
    assert 256 < memory["stack_high_water_bytes"] < memory["stack_reserved_bytes"] == memory["ram"]["stack_reserved"]
    assert memory["stack_high_water_bytes"] < memory["stack_recommended_bytes"] < memory["stack_reserved_bytes"]
    assert len(memory["largest_functions"]) == LARGEST_FUNCTIONS
    assert "stack used at most" in stdout and "largest functions" in stdout
    assert f"--stack {memory['stack_recommended_bytes']}" in stdout
    assert html.count("data:image/png;base64,") == 2 and "Sum check" in html and "<h2>Arena</h2>" in html


@pytest.mark.emulator
def test_the_arena_per_step_is_in_the_json_and_the_text(profiled, digits):
    stdout, results, _ = profiled
    arena = results["arena"]
    assert arena == json.loads(json.dumps(arena_occupancy(compile_model(digits.tflite))))
    peak = arena["peak"]
    assert f"arena {arena['bytes']:,} B as planned: at most {peak['bytes']:,} B live" in stdout
    for step in arena["steps"]:
        row = rf"^\s*{step['index']}\s+{step['op']}\s.*\s{step['bytes']:,}( +\S+)?$"  # then the energy, if any
        assert re.search(row, stdout, re.M), step["index"]


def test_the_arena_occupancy_follows_the_planned_lifetimes(digits):
    """At every step the buffers live hold the step's arena operands, and no two of them share a byte but the step's
    output and an input it writes over (the depthwise layer's); the bytes live count shared bytes once."""
    compiled = compile_model(digits.tflite)
    arena = arena_occupancy(compiled)
    assert arena["bytes"] == compiled.arena_bytes and len(arena["steps"]) == len(compiled.steps)
    shared = 0
    for step, at in zip(compiled.steps, arena["steps"], strict=True):
        offsets = {b["offset"] for b in at["live"]}
        assert all(compiled.offsets[t] in offsets for t in [*step.inputs, step.output] if t in compiled.offsets)
        covered = set()
        for a, b in itertools.combinations(at["live"], 2):
            if a["offset"] < b["offset"] + b["bytes"] and b["offset"] < a["offset"] + a["bytes"]:
                assert {a["tensor"], b["tensor"]} <= {*step.inputs, step.output} and step.output in (
                    a["tensor"],
                    b["tensor"],
                )
                shared += 1
        for b in at["live"]:
            covered |= set(range(b["offset"], b["offset"] + b["bytes"]))
        assert at["bytes"] == len(covered) and max(covered) < arena["bytes"]
    assert shared == 1
    assert arena["peak"]["bytes"] == max(at["bytes"] for at in arena["steps"]) <= arena["bytes"]
    writers = [b["written_by"] for b in arena["buffers"]]
    assert writers.count(None) == 1 and sorted(w for w in writers if w is not None) == list(range(len(compiled.steps)))


@pytest.mark.emulator
def test_the_normal_build_counts_the_inference_the_profile_reports(profiled, digits, tmp_path):
    """A build without TR_PROFILE, made here, runs the profile's inputs in the instructions the profile reports as
    the whole inference, and has no profiling code: it answers PROFILE as an unknown message."""
    _, results, _ = profiled
    board = load_board(DEFAULT_BOARD)
    compiled = compile_model(digits.tflite)
    firmware = build_firmware(compiled, board, tmp_path, board.default_channel)
    steps = len(compiled.steps)

    def infer_then_profile(worker, tensor):
        answer = worker.infer(tensor)
        with pytest.raises(UserError, match="does not profile"):
            worker.device.profile(steps)
        return answer

    inputs = [x.tobytes() for x in random_inputs(compiled.input, INFERENCES)]
    answers = run_on_emulator(board, firmware.elf, firmware.channel, compiled.model_hash, inputs, infer_then_profile)
    per_tick = count_unit(board)[1]
    assert np.mean([ticks for _, ticks in answers]) * per_tick == pytest.approx(results["total"], abs=1e-6)
    symbols = subprocess.run(["arm-none-eabi-nm", str(firmware.elf)], capture_output=True, text=True).stdout
    assert "tr_profile_ticks" not in symbols and "tr_stack_high_water" not in symbols


def test_profiling_hooks_compile_to_nothing_in_a_normal_build(digits, tmp_path):
    """The generated model.c compiles to the same code as it would without its profiling lines."""
    compiled = compile_model(digits.tflite)
    render(compiled, tmp_path)
    source = (tmp_path / "model.c").read_text()
    without = re.sub(r"#ifdef TR_PROFILE\n.*?#endif\n", "", source, flags=re.S)
    without = "\n".join(line for line in without.splitlines() if "STEP_START" not in line and "STEP_STOP" not in line)
    assert without != source
    (tmp_path / "without.c").write_text(without)
    code = []
    for name in ("model.c", "without.c"):
        obj = tmp_path / f"{name}.o"
        command = [ARM_GCC, *cpu_flags(load_board(DEFAULT_BOARD)), "-O2", "-std=c11", f"-I{tmp_path}",
                   f"-I{FIRMWARE / 'runtime'}", "-c", str(tmp_path / name), "-o", str(obj)]  # fmt: skip
        subprocess.run(command, check=True)
        for section in (".text", ".rodata"):
            binary = tmp_path / f"{name}{section}"
            subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", "-j", section, str(obj), str(binary)], check=True)
            code.append(binary.read_bytes())
    assert code[:2] == code[2:] and len(code[0]) > 0


def test_macs_come_from_the_schedule_as_the_graph_shapes_give_them(digits):
    """One multiply-accumulate per output element and weight of its window: convolution weights are
    [out_c, k_h, k_w, in_c], depthwise [1, k_h, k_w, out_c], fully connected [out_n, in_n]."""
    compiled = compile_model(digits.tflite)
    graph = read_tflite(digits.tflite)
    kinds = set()
    for step in compiled.steps:
        kinds.add(step.op.kind)
        out = int(np.prod(graph.tensors[step.output].shape))
        weights = graph.tensors[step.op.inputs[1]].shape if len(step.op.inputs) > 1 else ()
        if step.op.kind == "CONV_2D":
            expected = out * int(np.prod(weights[1:]))
        elif step.op.kind == "DEPTHWISE_CONV_2D":
            expected = out * int(np.prod(weights[1:3]))
        elif step.op.kind == "FULLY_CONNECTED":
            expected = out * weights[1]
        else:
            expected = 0
        assert layer_macs(step) == expected, step.op.kind
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= kinds


def test_memory_breakdown_adds_up_to_the_memory_report(digits, tmp_path):
    compiled = compile_model(digits.tflite)
    firmware = build_firmware(compiled, load_board(DEFAULT_BOARD), tmp_path)
    memory = memory_breakdown(firmware.elf)
    report = memory_report(firmware.elf, compiled.arena_bytes)
    assert (memory.flash_bytes, memory.ram_bytes) == (report.flash_bytes, report.ram_bytes)
    assert sum(memory.flash.values()) == memory.flash_bytes and sum(memory.ram.values()) == memory.ram_bytes
    assert (memory.flash["weights"], memory.flash["quant_params"]) == (report.weights_bytes, report.quant_params_bytes)
    assert memory.ram["arena"] == compiled.arena_bytes and memory.ram["link_buffers"] > 512
    assert memory.stack_reserved_bytes == STACK_BYTES and 0 <= memory.flash["other"] < 64
    sizes = [f["bytes"] for f in memory.largest_functions]
    assert sizes == sorted(sizes, reverse=True) and "tr_conv_s8_opt" in {f["name"] for f in memory.largest_functions}


@pytest.mark.emulator
def test_two_boards_give_a_cross_board_table(tmp_path):
    boards = ["qemu-mps2-an386", "qemu-mps2-an385"]
    out = tmp_path / "profile.json"
    result = tinyrobust(
        "profile", "digits-cnn", "--board", boards[0], "--board", boards[1], "--json", out, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    results = json.loads(out.read_text())
    assert [b["board"] for b in results["boards"]] == boards
    table = results["cross_board"]
    assert table["boards"] == boards and len(table["layers"]) == len(results["boards"][0]["layers"])
    for board in results["boards"]:
        assert board["sum_check"]["within_tolerance"]
        assert [row["counts"][board["board"]] for row in table["layers"]] == [x["count"] for x in board["layers"]]
        assert table["totals"][board["board"]] == board["total"]
    header = result.stdout.split("on every board\n")[1].splitlines()[0]
    assert header.split()[2:] == boards


def test_a_wrong_board_is_one_clear_sentence(tmp_path):
    result = tinyrobust("profile", "digits-cnn", "--board", "qemu-mps2-an999", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: there is no board 'qemu-mps2-an999'; choose one of:" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.emulator
def test_the_energy_estimate_is_shown_per_inference_and_per_layer_and_labelled(profiled):
    """The default board's file gives datasheet figures (an STM32F407 standing in for the AN386), so the profile
    estimates the energy of the whole inference and of each layer from their counts, and says it is an estimate."""
    stdout, results, html = profiled
    board = load_board(DEFAULT_BOARD)
    energy = results["energy"]
    assert set(energy) == {"estimate_uj", "basis", "source"}
    assert energy["estimate_uj"] == pytest.approx(estimate_uj(board, results["total"])) and energy["estimate_uj"] > 0
    assert energy["basis"].startswith("estimate: executed instructions") and "lower bound" in energy["basis"]
    assert energy["source"].startswith("datasheet figures for the STM32F407")
    for layer in results["layers"]:
        assert layer["energy_estimate_uj"] == pytest.approx(estimate_uj(board, layer["count"]))
    layers_sum = sum(layer["energy_estimate_uj"] for layer in results["layers"])
    assert layers_sum == pytest.approx(energy["estimate_uj"], rel=0.02)  # as the counts add up to the inference
    header = next(line for line in stdout.splitlines() if line.lstrip().startswith("#"))
    assert header.endswith("uJ (estimate)")
    assert f"energy (estimate): {energy['estimate_uj']:,.3f} uJ per inference; estimate: " in stdout
    assert "µJ (estimate)" in html and "Energy per inference (estimate)" in html
