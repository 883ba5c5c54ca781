"""Link throughput on a board: inferences per second, link bytes per second, and the host's share of the
wall time (time not spent waiting for the device or the link), with results stored as a campaign stores them.

    python benchmarks/throughput.py [--model digits-cnn] [--board qemu-mps2-an386] [--inferences 500]
                                    [--channel semihosting|uart]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from tinyrobust.build.firmware import build_firmware
from tinyrobust.campaign.store import Store
from tinyrobust.compile.model import compile_model
from tinyrobust.device.boards import DEFAULT_BOARD, load_board
from tinyrobust.device.counter import instructions_per_tick
from tinyrobust.device.link import FRAME_OVERHEAD, Device
from tinyrobust.device.targets import EmulatorTarget
from tinyrobust.model import zoo


class TimedPort:
    """A pyserial port that adds up the time spent blocked reading (waiting for device and link)."""

    def __init__(self, port):
        self.port, self.waiting_s = port, 0.0

    def read(self, size):
        started = time.perf_counter()
        data = self.port.read(size)
        self.waiting_s += time.perf_counter() - started
        return data

    def __getattr__(self, name):
        return getattr(self.port, name)

    def __setattr__(self, name, value):
        if name in ("port", "waiting_s"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.port, name, value)


def measure(model_name: str, board_name: str, inferences: int, work: Path, channel: str | None = None) -> dict:
    model = zoo.load_builtin(model_name) if not model_name.endswith(".tflite") else None
    tflite = model.tflite if model else Path(model_name).read_bytes()
    compiled = compile_model(tflite)
    board = load_board(board_name)
    channel = channel or board.default_channel
    firmware = build_firmware(compiled, board, work / "firmware", channel)
    inputs = np.random.default_rng(0).integers(-128, 128, (inferences, compiled.input.nbytes), dtype=np.int8)
    store = Store(work / "bench.sqlite")
    condition = store.condition("none", 0.0)
    zeros = np.zeros((inferences, compiled.output.nbytes), np.int8)
    store.add_samples(condition, np.zeros(inferences), inputs, zeros, zeros, None)
    target = EmulatorTarget(board, firmware.elf, channel=channel).start()
    try:
        port = TimedPort(target.open())
        device = Device(port, target.bytes_per_s)
        device.handshake(compiled.model_hash)
        port.waiting_s = 0.0
        started = time.perf_counter()
        counts, digest = [], hashlib.sha256()
        for sample, tensor in store.pending(condition):
            output, ticks = device.infer(tensor)
            store.add_device_output(condition, sample, output, ticks)
            counts.append(ticks)
            digest.update(output)
        wall = time.perf_counter() - started
    finally:
        target.close()
        store.close()
    wire = inferences * (compiled.input.nbytes + 8 + compiled.output.nbytes + 2 * FRAME_OVERHEAD)
    return {
        "model": model_name,
        "board": board_name,
        "channel": channel,
        "inferences": inferences,
        "wall_seconds": round(wall, 3),
        "inferences_per_second": round(inferences / wall, 1),
        "link_bytes_per_second": round(wire / wall, 1),
        "host_share_of_wall_time": round((wall - port.waiting_s) / wall, 4),
        # The same (seeded) inputs on every channel: the counts and outputs must not depend on it.
        "instructions_total": round(sum(counts) * instructions_per_tick(board)),
        "outputs_sha256": digest.hexdigest(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits-cnn")
    parser.add_argument("--board", default=DEFAULT_BOARD)
    parser.add_argument("--inferences", type=int, default=500)
    parser.add_argument("--channel", choices=["semihosting", "uart"], help="default: semihosting when emulated")
    parser.add_argument("--json", type=Path, default=Path("throughput.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        result = measure(args.model, args.board, args.inferences, Path(work), args.channel)
    for key, value in result.items():
        print(f"{key:>26}: {value}")
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
