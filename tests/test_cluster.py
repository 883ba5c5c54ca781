"""Campaigns on a Ray cluster (a local one, started by the run): the store equals one job's row for row, a device
that dies mid-run loses and duplicates nothing, and a missing Ray is one sentence."""

import contextlib
import subprocess
import sys
import threading
import time

import psutil
import pytest
from test_campaign import QUICK, device_rows

from tinyrobust.campaign import adversarial
from tinyrobust.campaign.config import AttackSpec, Campaign
from tinyrobust.campaign.runner import Runner
from tinyrobust.campaign.store import Store

# Transfer attacks in batches of 4 samples, so that 12 samples make three Ray tasks per attack.
BATCH = 4
CAMPAIGN = Campaign(
    samples=12,
    attacks=[
        AttackSpec("fgsm", [0.1]),
        AttackSpec("pgd", [0.1], params=QUICK["pgd"]),
        AttackSpec("square_linf", [0.15], "on-device", QUICK["square_linf"], max_queries=60),
    ],
)


def sample_rows(out):
    store = Store(out / "results.sqlite")
    rows = store.db.execute("SELECT condition, sample, label, input, tflite, tflm, float FROM samples "
                            "ORDER BY condition, sample").fetchall()  # fmt: skip
    store.close()
    return rows


@pytest.fixture(scope="module")
def one_job(tmp_path_factory, digits):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(adversarial, "ATTACK_BATCH", BATCH)
        out = tmp_path_factory.mktemp("one-job")
        return Runner(CAMPAIGN, out, jobs=1).run(progress=False), out


def device_actors() -> list:
    """This run's device actor processes: those whose emulator still runs (an earlier run's are closing)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):  # a process that ends while it is looked at
            if any("DeviceActor" in part for part in process.info["cmdline"] or []) and any(
                "qemu" in child.name() for child in process.children()
            ):
                found.append(process)
    return found


def kill_a_device_when(runner: Runner, out, rows: int, killed: list) -> None:
    """Once the store holds rows device answers, kill one device actor's process and its emulator, as a node
    lost mid-run would."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if (out / "results.sqlite").is_file():
            store = Store(out / "results.sqlite")
            answered = store.db.execute("SELECT count(*) FROM device").fetchone()[0]
            store.close()
            if answered >= rows and runner.pool is not None and hasattr(runner.pool, "actors"):
                actors = device_actors()
                if actors:
                    victim = actors[0]
                    for process in [victim, *victim.children(recursive=True)]:
                        process.kill()
                    killed.append(victim.pid)
                    return
        time.sleep(0.05)


@pytest.mark.emulator
def test_a_ray_cluster_stores_what_one_job_stores(one_job, tmp_path):
    results, out = one_job
    cluster_out = tmp_path / "cluster"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(adversarial, "ATTACK_BATCH", BATCH)
        on_ray = Runner(CAMPAIGN, cluster_out, ray="local", devices_per_node=2).run(progress=False)
    assert device_rows(cluster_out) == device_rows(out)
    # the attacks and references made as Ray tasks equal those made here
    assert sample_rows(cluster_out) == sample_rows(out)
    assert [r | {"queries": None} for r in on_ray["runs"]] == [r | {"queries": None} for r in results["runs"]]

    cluster = on_ray["cluster"]
    assert cluster["rerun_inputs"] == 0 and len(cluster["nodes"]) == 1
    (node,) = cluster["nodes"].values()
    assert node["devices"] == 2
    assert node["inferences"] == len(device_rows(out)) == on_ray["device_calls"]["inferences"]
    assert node["queries"] == results["device_calls"]["queries"] > 0
    assert node["attack_batches"] == 2 * 12 // BATCH  # FGSM and PGD, three batches each
    assert node["reference_batches"] == len(on_ray["runs"])  # one per condition


@pytest.mark.emulator
def test_a_cluster_of_two_nodes_joined_by_address_stores_what_one_job_stores(one_job, tmp_path):
    from ray.cluster_utils import Cluster

    _, out = one_job
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(adversarial, "ATTACK_BATCH", BATCH)
            results = Runner(CAMPAIGN, tmp_path, ray=cluster.address).run(progress=False)
    finally:
        cluster.shutdown()
    assert device_rows(tmp_path) == device_rows(out)
    nodes = results["cluster"]["nodes"]
    assert len(nodes) == 2 and [n["devices"] for n in nodes.values()] == [1, 1]  # one device per node
    assert sum(n["inferences"] for n in nodes.values()) == len(device_rows(out))
    assert sum(n["attack_batches"] for n in nodes.values()) == 2 * 12 // BATCH


@pytest.mark.emulator
def test_a_device_killed_mid_run_loses_and_duplicates_nothing(one_job, tmp_path):
    _, out = one_job
    cluster_out = tmp_path / "killed"
    killed: list = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(adversarial, "ATTACK_BATCH", BATCH)
        runner = Runner(CAMPAIGN, cluster_out, ray="local", devices_per_node=2)
        killer = threading.Thread(target=kill_a_device_when, args=(runner, cluster_out, 6, killed), daemon=True)
        killer.start()
        results = runner.run(progress=False)
        killer.join()
    assert killed, "no device actor was found to kill"
    assert device_rows(cluster_out) == device_rows(out)  # the primary key refuses a sample stored twice
    cluster = results["cluster"]
    (node,) = cluster["nodes"].values()
    assert cluster["rerun_inputs"] >= 1 and node["recoveries"] >= 1
    assert node["devices"] == 3  # the two placed first and the one started in place of the dead


def test_ray_missing_is_one_sentence(tmp_path):
    # Ray made unimportable in the command's own process, as on a machine without the extra.
    script = ("import sys; sys.modules['ray'] = None; from tinyrobust.cli import main; "
              f"sys.argv = ['tinyrobust', 'flash-and-evaluate', '--ray', 'local', '--samples', '2', '--attacks', '', "
              f"'--out', r'{tmp_path / 'run'}']; main()")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "--ray needs Ray" in result.stderr and "pip install 'tinyrobust[ray]'" in result.stderr


def test_ray_with_jobs_or_a_port_is_refused(tmp_path):
    with pytest.raises(Exception, match="--ray places devices on the cluster's nodes"):
        Runner(Campaign(samples=2, attacks=[]), tmp_path, ray="local", jobs=2).run(progress=False)
