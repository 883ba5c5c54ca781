"""The stack reserve: a fixed default, or one given with --stack, refused below the high-water mark a profile build
measures; `profile` recommends the measurement plus a margin, and a firmware built with that reserve stays exact."""

import json
import re

import pytest

from conftest import tinyrobust
from tinyrobust.build.firmware import STACK_BYTES, STACK_MARGIN, recommended_stack
from tinyrobust.build.memory import memory_breakdown


def test_the_recommended_reserve_is_the_mark_plus_the_larger_margin_rounded_to_8():
    share, least = STACK_MARGIN
    assert (share, least) == (0.25, 512)
    assert recommended_stack(2632) == 3296  # 2,632 + 658, rounded up to 8
    assert recommended_stack(1000) == 1512  # 25% would be 250: 512 is larger
    assert recommended_stack(8000) == 10000
    for high in (1, 7, 999, 2049, 4097, 10001):
        reserve, margin = recommended_stack(high), max(share * high, least)
        assert reserve % 8 == 0 and margin <= reserve - high < margin + 8


def test_a_stack_that_is_not_a_multiple_of_8_is_refused_before_anything_is_built(digits, tmp_path):
    result = tinyrobust("validate", "digits-cnn", "--stack", 3300, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "error: a 3300-byte stack is not a positive multiple of 8 (the stack pointer's alignment); give --stack 3304"
    )


@pytest.fixture(scope="module")
def measured(digits, tmp_path_factory):
    """digits-cnn profiled with the default reserve: its stack's high-water mark and the reserve recommended."""
    out = tmp_path_factory.mktemp("stack")
    result = tinyrobust("profile", "digits-cnn", "--json", out / "profile.json", cwd=out)
    assert result.returncode == 0, result.stderr
    memory = json.loads((out / "profile.json").read_text())["memory"]
    return result.stdout, memory["stack_high_water_bytes"], memory["stack_recommended_bytes"]


@pytest.mark.emulator
def test_profile_prints_the_reserve_it_recommends(measured):
    stdout, high, recommended = measured
    assert 0 < high < recommended == recommended_stack(high) < STACK_BYTES
    assert f"recommended stack reserve {recommended:,} B" in stdout and f"--stack {recommended}" in stdout
    assert "plus 25% or 512 B, whichever is larger, rounded up to 8 B" in stdout


@pytest.mark.emulator
def test_a_build_with_the_measured_reserve_runs_and_stays_bit_exact(measured, tmp_path):
    _, _, recommended = measured
    result = tinyrobust("validate", "digits-cnn", "--stack", recommended, "--samples", 5, "--json", tmp_path / "v.json")
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "v.json").read_text())
    assert results["stack_bytes"] == recommended and results["device_vs_tflm"]["bit_exact"] == 1.0
    out = tmp_path / "evaluate"
    result = tinyrobust("flash-and-evaluate", "--attacks", "", "--samples", 10, "--stack", recommended, "--out", out)
    assert result.returncode == 0, result.stderr
    evaluated = json.loads((out / "results.json").read_text())
    assert evaluated["runs"][0]["agreement"]["device_vs_tflm_bit_exact"] == 1.0
    assert memory_breakdown(out / "firmware" / "firmware.elf").stack_reserved_bytes == recommended


@pytest.mark.emulator
def test_a_stack_below_the_measured_high_water_mark_is_refused_naming_both(measured, tmp_path):
    _, high, recommended = measured
    result = tinyrobust("validate", "digits-cnn", "--stack", 512, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1
    found = re.fullmatch(
        r"error: a 512-byte stack is below the (\d+) bytes this firmware's stack reached when measured on "
        r"qemu-mps2-an386; give --stack (\d+) \(the measurement plus its margin\) or more",
        message,
    )
    assert found, message
    assert int(found[1]) == high and int(found[2]) == recommended
