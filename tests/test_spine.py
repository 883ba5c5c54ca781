"""flash-and-evaluate end to end on the emulated Cortex-M4: real compiler, emulator and references."""

import json
import signal
import socket
import subprocess

import keras
import numpy as np
import pytest

from conftest import TINYROBUST, interruptible, quantized_model
from tinyrobust.build.firmware import build_firmware
from tinyrobust.campaign.store import Store
from tinyrobust.compile.model import compile_model
from tinyrobust.device.boards import load_board
from tinyrobust.device.emulator import Emulator, free_tcp_port
from tinyrobust.device.link import Device
from tinyrobust.device.targets import EMULATED_UART_BYTES_PER_S, EmulatorTarget
from tinyrobust.errors import UserError
from tinyrobust.evaluate import Settings, flash_and_evaluate
from tinyrobust.model import reference

pytestmark = pytest.mark.emulator
BOARD = "qemu-mps2-an386"


@pytest.fixture(scope="module")
def firmware(digits, tmp_path_factory):
    compiled = compile_model(digits.tflite)
    return compiled, build_firmware(compiled, load_board(BOARD), tmp_path_factory.mktemp("fw"))


def qemu_running(elf) -> bool:
    return subprocess.run(["pgrep", "-f", str(elf)], capture_output=True).returncode == 0


def test_flash_and_evaluate_is_bit_exact_clean_and_adversarial(digits, tmp_path):
    out = tmp_path / "run"
    results = flash_and_evaluate(Settings(samples=60, eps=[0.05, 0.2], out=out), progress=False)

    assert [(r["attack"], r["eps"]) for r in results["runs"]] == [
        ("none", 0.0), ("fgsm", 0.05), ("fgsm", 0.2), ("pgd", 0.05), ("pgd", 0.2)
    ]  # fmt: skip
    for run in results["runs"]:
        assert run["samples"] == 60
        assert run["agreement"]["device_vs_tflm_bit_exact"] == 1.0, run
        assert all(0.0 <= v <= 1.0 for v in run["agreement"].values())
        assert run["accuracy"]["device"] == run["accuracy"]["tflm"]
    clean, strongest = results["runs"][0], results["runs"][-1]
    assert clean["accuracy"]["device"] > 0.9
    assert strongest["accuracy"]["device"] < clean["accuracy"]["device"] - 0.3  # PGD at eps 0.2 must hurt

    latency = results["latency"]
    assert latency["unit"] == "instructions" and latency["inferences"] == 5 * 60
    assert 0 < latency["per_inference"]["min"] <= latency["per_inference"]["median"] <= latency["per_inference"]["max"]
    memory = results["memory"]
    assert 0 < memory["weights_bytes"] < memory["flash_bytes"]
    assert 0 < memory["arena_bytes"] < memory["ram_bytes"]

    saved = json.loads((out / "results.json").read_text())
    assert saved["runs"] == results["runs"]
    report = (out / "report.html").read_text()
    assert "data:image/png;base64," in report and "TFLM reference int8" in report
    store = Store(out / "results.sqlite")
    stored = store.outputs(store.condition("pgd", 0.2), np.int8)
    assert len(stored["device"]) == 60 and np.array_equal(stored["device"], stored["tflm"])
    assert not qemu_running(out / "firmware" / "firmware.elf")


def test_instruction_counts_repeat_for_the_same_input(digits, firmware):
    compiled, fw = firmware
    xq = reference.quantize_inputs(digits.x_test[:3], compiled.input)
    with Emulator(load_board(BOARD), fw.elf) as emulator:
        device = Device(emulator.start(), EMULATED_UART_BYTES_PER_S)
        device.handshake(compiled.model_hash)
        first = [device.infer(x.tobytes()) for x in xq]
        second = [device.infer(x.tobytes()) for x in xq]
    assert first == second
    assert all(ticks > 0 for _, ticks in first)


def test_device_running_another_model_is_refused(firmware):
    compiled, fw = firmware
    with Emulator(load_board(BOARD), fw.elf) as emulator:
        device = Device(emulator.start(), EMULATED_UART_BYTES_PER_S)
        with pytest.raises(UserError, match="flash the firmware built for this model"):
            device.handshake(bytes(32))


def test_emulator_is_stopped_when_the_run_fails(firmware):
    _, fw = firmware
    with pytest.raises(RuntimeError), Emulator(load_board(BOARD), fw.elf) as emulator:
        emulator.start()
        assert qemu_running(fw.elf)
        raise RuntimeError("failure in the middle of a run")
    assert not qemu_running(fw.elf)


def test_port_in_use_is_one_clear_error(firmware):
    _, fw = firmware
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        emulator = Emulator(load_board(BOARD), fw.elf, port=port, log=fw.elf.parent / "qemu.log")
        with emulator, pytest.raises(UserError, match=f"TCP port {port} is already in use"):
            emulator.start()


def test_both_channels_give_the_same_outputs_and_instruction_counts(digits, tmp_path):
    """The semihosting channel (the default in the emulator) and the UART run the same firmware apart from the
    channel: every output byte and every count must match, after a reconnect and a restart too."""
    compiled = compile_model(digits.tflite)
    xq = reference.quantize_inputs(digits.x_test[:20], compiled.input)
    replies = {}
    for channel in ("semihosting", "uart"):
        firmware = build_firmware(compiled, load_board(BOARD), tmp_path / channel, channel)
        target = EmulatorTarget(load_board(BOARD), firmware.elf, channel=channel).start()
        try:
            device = Device(target.open(), target.bytes_per_s)
            assert device.handshake(compiled.model_hash).counter == "systick"
            replies[channel] = [device.infer(x.tobytes()) for x in xq]
            device.port.close()
            device = Device(target.open(), target.bytes_per_s)  # reconnect
            device.handshake(compiled.model_hash)
            assert device.infer(xq[0].tobytes()) == replies[channel][0]
            target.restart()
            device = Device(target.open(), target.bytes_per_s)
            device.handshake(compiled.model_hash)
            assert device.infer(xq[1].tobytes()) == replies[channel][1]
        finally:
            target.close()
        assert not qemu_running(firmware.elf)
    assert replies["semihosting"] == replies["uart"]


def test_flash_and_evaluate_reaches_a_running_emulator_by_port(digits, tmp_path):
    port = free_tcp_port()
    command = [*TINYROBUST, "emulate", "digits-cnn", "--port-tcp", str(port)]
    emulate = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=interruptible)  # fmt: skip
    try:
        url = emulate.stdout.readline().strip()  # printed once QEMU serves the UART
        assert url == f"socket://127.0.0.1:{port}", url or emulate.stderr.read()
        settings = Settings(samples=30, attacks=[], out=tmp_path / "run", port=url)
        results = flash_and_evaluate(settings, progress=False)
        clean = results["runs"][0]
        assert clean["samples"] == 30 and clean["agreement"]["device_vs_tflm_bit_exact"] == 1.0
        assert results["latency"]["unit"] == "instructions" and results["link"]["device_restarts"] == 0
    finally:
        emulate.send_signal(signal.SIGINT)
        assert emulate.wait(timeout=30) == 0
    assert subprocess.run(["pgrep", "-f", f"tcp:127.0.0.1:{port},"], capture_output=True).returncode != 0


def test_input_larger_than_a_request_travels_in_chunks(tmp_path):
    tflite = quantized_model(
        [keras.layers.Conv2D(4, 3, strides=2), keras.layers.Flatten(), keras.layers.Dense(5)], (30, 30, 3)
    )
    compiled = compile_model(tflite)
    assert compiled.input.nbytes == 2700  # three LOAD chunks
    firmware = build_firmware(compiled, load_board(BOARD), tmp_path)
    xq = np.random.default_rng(3).integers(-128, 128, (6, 30, 30, 3)).astype(np.int8)
    with Emulator(load_board(BOARD), firmware.elf) as emulator:
        device = Device(emulator.start(), EMULATED_UART_BYTES_PER_S)
        info = device.handshake(compiled.model_hash)
        assert info.max_request < compiled.input.nbytes
        outputs = np.stack([np.frombuffer(device.infer(x.tobytes())[0], np.int8) for x in xq])
    assert np.array_equal(outputs, reference.tflm_outputs(tflite, xq))


def test_flash_and_evaluate_int16x8_is_bit_exact(tmp_path):
    results = flash_and_evaluate(
        Settings(precision="int16x8", samples=30, attacks=["fgsm"], eps=[0.1], out=tmp_path), progress=False
    )
    assert [r["agreement"]["device_vs_tflm_bit_exact"] for r in results["runs"]] == [1.0, 1.0]
    assert results["settings"]["precision"] == "int16x8"
    assert "TFLM reference int16x8" in (tmp_path / "report.html").read_text()
