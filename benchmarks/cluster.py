"""A campaign on a local Ray cluster against the same campaign with --jobs 2 on this machine: wall times (their
ratio is Ray's overhead here), the two stores compared row for row, and the driver's store write rate, from which
the number of nodes one driver can feed follows (printed with its assumptions), and how many device calls per
second the driver dispatches through Ray, one input per call and CALL_INPUTS per call.

    python benchmarks/cluster.py [--samples 100] [--json cluster.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tinyrobust.campaign.cluster import CALL_INPUTS
from tinyrobust.campaign.store import Store

HERE = Path(__file__).parent
CONFIG = """models = ["digits-cnn"]
board = "qemu-mps2-an386"
samples = {samples}

[[attacks]]
name = "fgsm"
eps = [0.05, 0.1, 0.2]

[[attacks]]
name = "pgd"
eps = [0.05, 0.1, 0.2]

[[attacks]]
name = "square_linf"
eps = [0.1]
mode = "on-device"
params = {{ max_iter = 20 }}
max_queries = 100
"""
# Rows written one commit each, as the driver stores each device answer on arrival.
WRITES = 5000
# Per-device inference rates measured by benchmarks/throughput.py (semihosting, qemu-mps2-an386).
THROUGHPUT = {
    "digits-cnn": "results/throughput-digits-cnn-semihosting.json",
    "resnet8-cifar10": "results/throughput-resnet8-cifar10-semihosting.json",
}


def run(config: Path, out: Path, *options: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tinyrobust", "campaign", "run", str(config), "--out", str(out), *options],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - started


def rows(out: Path) -> list:
    db = sqlite3.connect(out / "results.sqlite")
    found = db.execute(
        "SELECT c.attack, c.eps, c.mode, s.sample, s.input, s.tflm, d.output, d.ticks FROM samples s "
        "JOIN device d USING (condition, sample) JOIN conditions c ON c.id = s.condition ORDER BY c.id, s.sample"
    ).fetchall()
    db.close()
    return found


def write_rates(work: Path) -> dict:
    """Device answers per second that the store takes: committed one by one, and as a run commits them
    (Store.add_device_output: COMMIT_ROWS at a time, or after COMMIT_SECONDS)."""
    store = Store(work / "writes.sqlite")
    inputs = np.zeros((WRITES, 784), np.int8)
    outputs = np.zeros((WRITES, 10), np.int8)
    rates = {}
    for way in ("one_commit_per_answer", "batched_commits"):
        condition = store.condition(way, 0.0)
        store.add_samples(condition, np.zeros(WRITES), inputs, outputs, outputs, None)
        started = time.perf_counter()
        for sample in range(WRITES):
            if way == "batched_commits":
                store.add_device_output(condition, sample, outputs[sample].tobytes(), 1000)
            else:
                with store.db:
                    store.db.execute("INSERT INTO device VALUES (?, ?, ?, ?)",
                                     (condition, sample, outputs[sample].tobytes(), 1000))  # fmt: skip
        store.commit()
        rates[way] = round(WRITES / (time.perf_counter() - started))
    store.close()
    return rates


class Echo:
    """A device actor (campaign.cluster.DeviceActor's run) that answers at once, so that only Ray is timed."""

    def run(self, operation: str, tensors: list[bytes]) -> list:
        return [(tensor[:10], 0) for tensor in tensors]


def import_tensorflow() -> None:
    import tensorflow  # noqa: F401


def fixed_costs(workers: int = 2) -> dict:
    """Seconds a local Ray takes to start and stop, and its workers to import TensorFlow (attack tasks do)."""
    import ray

    started = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    costs = {"ray_start": time.perf_counter() - started}
    started = time.perf_counter()
    ray.get([ray.remote(num_cpus=1)(import_tensorflow).remote() for _ in range(workers)])
    costs[f"{workers}_workers_import_tensorflow"] = time.perf_counter() - started
    started = time.perf_counter()
    ray.shutdown()
    costs["ray_stop"] = time.perf_counter() - started
    return {name: round(seconds, 1) for name, seconds in costs.items()}


def inputs_per_second(inputs_per_call: int, calls: int = 3000, actors: int = 2) -> float:
    """Inputs per second that the driver dispatches through Ray to actors that answer at once, IN_FLIGHT calls
    queued at each as ClusterPool.run does: the driver's ceiling on a cluster."""
    import ray

    from tinyrobust.campaign.cluster import IN_FLIGHT

    ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        echoes = [ray.remote(Echo).options(num_cpus=0).remote() for _ in range(actors)]
        tensors = [bytes(784)] * inputs_per_call
        ray.get([e.run.remote("infer", tensors) for e in echoes])  # started
        flying, sent, started = {}, 0, time.perf_counter()
        for e in echoes:
            for _ in range(IN_FLIGHT):
                flying[e.run.remote("infer", tensors)] = e
                sent += 1
        while flying:
            (ref,), _ = ray.wait(list(flying), num_returns=1)
            echo = flying.pop(ref)
            ray.get(ref)
            if sent < calls:
                flying[echo.run.remote("infer", tensors)] = echo
                sent += 1
        return calls * inputs_per_call / (time.perf_counter() - started)
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--json", type=Path, default=Path("cluster.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        config = work / "campaign.toml"
        config.write_text(CONFIG.format(samples=args.samples))
        jobs_s = run(config, work / "jobs2", "--jobs", "2")
        ray_s = run(config, work / "ray", "--ray", "local", "--devices-per-node", "2")
        identical = rows(work / "jobs2") == rows(work / "ray")
        stored = len(rows(work / "ray"))
        cluster = json.loads((work / "ray" / "results.json").read_text())["cluster"]
        rates = write_rates(work)
    costs = fixed_costs()
    dispatch = {n: inputs_per_second(n) for n in (1, CALL_INPUTS)}
    cores = os.cpu_count() or 1
    feeds = {}
    for model, path in THROUGHPUT.items():
        per_device = json.loads((HERE / path).read_text())["inferences_per_second"]
        # A node runs one emulator per core; the driver stores every answer and dispatches every call (the
        # references are tasks on the nodes). Nodes until the store, or the dispatch, is the limit:
        feeds[model] = {"inferences_per_second_per_device": per_device, "devices_per_node": cores,
                        **{f"nodes_one_driver_feeds_store_{way}": int(rate // (per_device * cores))
                           for way, rate in rates.items()},
                        **{f"nodes_one_driver_feeds_dispatch_{n}_per_call": int(rate // (per_device * cores))
                           for n, rate in dispatch.items()}}  # fmt: skip
    result = {
        "samples": args.samples,
        "device_answers_stored": stored,
        "wall_seconds_jobs_2": round(jobs_s, 1),
        "wall_seconds_ray_local_2_devices": round(ray_s, 1),
        "ray_over_jobs_wall_time_ratio": round(ray_s / jobs_s, 3),
        "stores_identical": identical,
        "fixed_seconds": costs,
        "cluster": cluster,
        "store_answers_per_second": rates,
        "driver_dispatch_inputs_per_second": {f"{n}_per_call": round(rate) for n, rate in dispatch.items()},
        "feeds": feeds,
    }
    for key, value in result.items():
        print(f"{key:>34}: {value}")
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
