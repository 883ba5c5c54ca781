"""Faults between host and device: each must leave the campaign's results identical to a clean run's."""

import os
import signal
import subprocess
import time

import pytest
from relay import FAULTS, RelayedTarget

from conftest import TINYROBUST, interruptible
from tinyrobust.campaign.store import Store
from tinyrobust.evaluate import Settings, flash_and_evaluate

pytestmark = pytest.mark.emulator
LOSSY = {"drop", "flip", "close", "restart"}  # faults that lose data, where the host must recover


def settings(out, samples=40):
    # The relay sits on the UART's TCP socket, so these campaigns run on the UART channel.
    return Settings(samples=samples, attacks=["fgsm"], eps=[0.1], out=out, channel="uart")


def device_rows(out):
    store = Store(out / "results.sqlite")
    rows = store.db.execute("SELECT condition, sample, output, ticks FROM device ORDER BY condition, sample").fetchall()
    store.close()
    return rows


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("clean")
    results = flash_and_evaluate(settings(out), progress=False)
    return results, device_rows(out)


@pytest.mark.parametrize("fault", FAULTS)
def test_campaign_survives_fault(fault, clean_run, tmp_path):
    clean_results, clean_rows = clean_run
    out = tmp_path / fault
    targets = []

    def connect(board, elf):
        targets.append(RelayedTarget(board, elf, fault, seed=7).start())
        return targets[-1]

    results = flash_and_evaluate(settings(out), progress=False, connect=connect)

    assert targets[0].relay.injected > 0, f"no {fault} fault was injected"
    assert device_rows(out) == clean_rows
    assert results["runs"] == clean_results["runs"]
    if fault in LOSSY:
        assert sum(results["link"].values()) > 0, "the recovery was not counted"


# Interrupted runs are long enough (2 x 200 inferences over the UART) that the host stops them mid-condition.
LONG = ["--samples", "200", "--attacks", "fgsm", "--eps", "0.1", "--channel", "uart"]


@pytest.fixture(scope="module")
def long_rows(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("long")
    subprocess.run([*TINYROBUST, "flash-and-evaluate", *LONG, "--out", str(out)], check=True)
    return device_rows(out)


def _interrupt_when(out, process, rows: int) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(_rows_if_any(out)) < rows and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"


def test_interrupted_then_resumed_campaign_equals_uninterrupted(long_rows, tmp_path):
    out = tmp_path / "interrupted"
    command = [*TINYROBUST, "flash-and-evaluate", *LONG, "--out", str(out)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=interruptible)  # fmt: skip
    _interrupt_when(out, process, 100)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert f"--resume {out}" in stderr
    partial = _rows_if_any(out)
    assert 100 <= len(partial) < len(long_rows)
    assert subprocess.run(["pgrep", "-f", str(out / "firmware")], capture_output=True).returncode != 0

    resumed = subprocess.run([*TINYROBUST, "flash-and-evaluate", "--resume", str(out)])
    assert resumed.returncode == 0
    assert device_rows(out) == long_rows


def test_terminated_run_stops_its_emulator_and_resumes_to_the_same_results(long_rows, tmp_path):
    out = tmp_path / "terminated"
    command = [*TINYROBUST, "flash-and-evaluate", *LONG, "--out", str(out)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _interrupt_when(out, process, 100)
    process.terminate()  # SIGTERM to the host only: it must stop its emulator itself
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert subprocess.run(["pgrep", "-f", str(out / "firmware")], capture_output=True).returncode != 0
    resumed = subprocess.run([*TINYROBUST, "flash-and-evaluate", "--resume", str(out)])
    assert resumed.returncode == 0
    assert device_rows(out) == long_rows


def test_killed_then_resumed_campaign_equals_uninterrupted(long_rows, tmp_path):
    out = tmp_path / "killed"
    command = [*TINYROBUST, "flash-and-evaluate", *LONG, "--out", str(out)]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL, start_new_session=True)
    _interrupt_when(out, process, 150)
    os.killpg(process.pid, signal.SIGKILL)  # the host and its emulator die without cleaning up
    process.wait()
    assert 150 <= len(_rows_if_any(out)) < len(long_rows)
    resumed = subprocess.run([*TINYROBUST, "flash-and-evaluate", "--resume", str(out)])
    assert resumed.returncode == 0
    assert device_rows(out) == long_rows


def _rows_if_any(out):
    if not (out / "results.sqlite").is_file():
        return []
    try:
        return device_rows(out)
    except Exception:  # the store may be mid-creation
        return []
