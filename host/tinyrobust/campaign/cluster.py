"""Campaigns on a Ray cluster: every device is a Ray actor that owns its target and its link (an emulator, or a
board attached to the actor's node), transfer attacks and the host references are made as Ray tasks on any node,
and the driver stays the store's only writer, so a cluster run stores exactly what --jobs 1 stores.

A node advertises the boards attached to it as the custom resources board:<name>
(`ray start --resources "$(tinyrobust boards detect --ray-resources)"`); emulated boards need QEMU on the node.
A device actor that dies (its node lost, or killed) has the inputs it held sent to the other devices and is
replaced where the cluster has room; the run counts those inputs as re-run."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyrobust.device.boards import Board, load_board
from tinyrobust.device.link import LinkError
from tinyrobust.device.pool import LinkStats, Worker
from tinyrobust.errors import UserError

RAY_MISSING = "--ray needs Ray, which is an optional part of tinyrobust: install it with pip install 'tinyrobust[ray]'"
# Calls queued at each device actor, so that it starts the next call while the driver stores the last answers,
# and inputs per call: a Ray round trip costs the driver about 1 ms (benchmarks/cluster.py), longer than a small
# model's inference in an emulator.
IN_FLIGHT = 2
CALL_INPUTS = 16
# Actors started in place of dead ones, at most this many per device first placed; then the others carry on.
REPLACEMENTS = 4


def ray_module():
    try:
        import ray
    except ImportError:
        raise UserError(RAY_MISSING) from None
    return ray


def board_resource(board: str) -> str:
    return f"board:{board}"


class Cluster:
    """A Ray cluster joined for one run: `local` starts Ray on this machine (stopped when the run ends), `auto`
    joins the cluster this machine belongs to, and an address joins that head. devices_per_node device actors go
    on each node that can run the board."""

    def __init__(self, address: str, devices_per_node: int = 1):
        if devices_per_node < 1:
            raise UserError(f"--devices-per-node must be at least 1, not {devices_per_node}")
        self.address, self.devices_per_node = address, devices_per_node
        self.ray = ray_module()
        self.connected_here = False
        self.nodes: dict[str, Counter] = {}  # per node: devices, inferences, queries, recoveries, tasks done
        self.reruns = 0
        self.shared: dict[int, tuple] = {}  # id -> (the object, kept alive; its object store reference)
        self.addresses: dict[str, str] = {}  # node id -> IP address, of the nodes seen alive

    def __enter__(self) -> Cluster:
        ray = self.ray
        if not ray.is_initialized():
            quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
            try:
                if self.address == "local":
                    ray.init(**quiet)
                else:
                    ray.init(address=self.address, **quiet)
                self.connected_here = True
            except ConnectionError as exc:
                raise UserError(f"no Ray cluster answers at {self.address} ({exc}); start its head with `ray start "
                                "--head`, or run on this machine alone with --ray local") from None  # fmt: skip
        return self

    def __exit__(self, *exc) -> None:
        if self.connected_here:  # stops a local Ray, and leaves a cluster it joined
            self.ray.shutdown()

    def count(self, node: str, what: str, n: int = 1) -> None:
        """Count n of what (devices, inferences, ...) on the node of this id."""
        self.nodes.setdefault(node, Counter())[what] += n

    def summary(self) -> dict:
        """Per node (by its Ray id, with its IP address): devices placed, inferences, queries, recoveries, and
        attack and reference batches made; and the inputs re-run after a device died."""
        keys = ("devices", "inferences", "queries", "recoveries", "attack_batches", "reference_batches")
        if set(self.nodes) - set(self.addresses) and self.ray.is_initialized():  # a node that joined later
            self.addresses.update({n["NodeID"]: n["NodeManagerAddress"] for n in self.ray.nodes()})
        return {
            "address": self.address,
            "devices_per_node": self.devices_per_node,
            "nodes": {node: {"address": self.addresses.get(node), **{k: counts[k] for k in keys}}
                      for node, counts in sorted(self.nodes.items())},  # fmt: skip
            "rerun_inputs": self.reruns,
        }

    # ---- devices ----------------------------------------------------------------------------------------------

    def placements(self, board: Board) -> list[tuple[str, dict]]:
        """(node id, resources) of every device actor to start: devices_per_node on each live node, and for a real
        board at most as many as the node advertises."""
        places = []
        for node in self.ray.nodes():
            if not node["Alive"]:
                continue
            self.addresses[node["NodeID"]] = node["NodeManagerAddress"]
            if board.emulated:
                places += [(node["NodeID"], {})] * self.devices_per_node
                continue
            attached = int(node["Resources"].get(board_resource(board.name), 0))
            n = min(self.devices_per_node, attached)
            places += [(node["NodeID"], {board_resource(board.name): 1})] * n
        if not places:
            raise UserError(f"no node of the Ray cluster advertises a {board.name} (resource "
                            f"{board_resource(board.name)}); start its node with ray start --resources "
                            "\"$(tinyrobust boards detect --ray-resources)\"")  # fmt: skip
        return places

    def pool(self, board: Board, elf: Path, channel: str, model_hash: bytes, flash_with: str) -> ClusterPool:
        return ClusterPool(self, board, elf, channel, model_hash, flash_with)

    # ---- attacks ----------------------------------------------------------------------------------------------

    def _put(self, thing, saved=lambda thing: thing):
        """thing in the object store, put once (by identity) for the tasks that read it: a float model travels as
        its saved file, a .tflite as its bytes."""
        if id(thing) not in self.shared:
            self.shared[id(thing)] = (thing, self.ray.put(None if thing is None else saved(thing)))
        return self.shared[id(thing)][1]

    def attack(self, keras_model, name: str, x, y, eps: float, seed: int, params: dict, clip):
        """A Ray task that makes the attack's unbounded output for a batch (attacks.unbounded), on any node."""
        task = self.ray.remote(num_cpus=1)(make_attack)
        return task.remote(self._put(keras_model, saved_model), name, x, y, eps, seed, params, clip)

    def _get(self, ref):
        """A task's value; its exception raised as itself (a UserError stays one sentence)."""
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:
            raise exc.cause from None

    def attack_result(self, ref) -> np.ndarray:
        made, node = self._get(ref)
        self.count(node, "attack_batches")
        return made

    def references(self, keras_model, tflite: bytes, xq, tensor, x):
        """A Ray task that computes the host references of quantized inputs (reference.every_engine)."""
        task = self.ray.remote(num_cpus=1)(make_references)
        return task.remote(self._put(keras_model, saved_model), self._put(tflite), xq, tensor, x)

    def result(self, ref) -> tuple:
        outputs, node = self._get(ref)
        self.count(node, "reference_batches")
        return outputs


# ---- what runs on the nodes ---------------------------------------------------------------------------------------

_loaded: dict[str, object] = {}  # a worker process's float models, by the hash of their saved file


def saved_model(keras_model) -> tuple[str, bytes]:
    """The float model as the bytes of its saved file, with the Keras that reads it: Keras 3's .keras, or
    tf-keras's .h5 for a model that was loaded from an old .h5 file."""
    kind = "tf_keras" if type(keras_model).__module__.startswith("tf_keras") else "keras"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ("model.h5" if kind == "tf_keras" else "model.keras")
        keras_model.save(path)
        return kind, path.read_bytes()


def load_saved(saved: tuple[str, bytes]):
    kind, data = saved
    digest = hashlib.sha256(data).hexdigest()
    if digest not in _loaded:
        import importlib

        keras = importlib.import_module("tf_keras" if kind == "tf_keras" else "keras")
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / ("model.h5" if kind == "tf_keras" else "model.keras")
            path.write_bytes(data)
            _loaded[digest] = keras.models.load_model(path, compile=False)
    return _loaded[digest]


def make_attack(saved, name: str, x, y, eps: float, seed: int, params: dict, clip) -> tuple[np.ndarray, str]:
    """An attack task's body: the unbounded output on the batch, and the node that made it."""
    import ray

    from tinyrobust.campaign import attacks

    classifier = attacks.classifier(load_saved(saved), clip)
    return attacks.unbounded(name, classifier, x, y, eps, seed, params), ray.get_runtime_context().get_node_id()


def make_references(saved, tflite: bytes, xq, tensor, x) -> tuple[tuple, str]:
    """A reference task's body: every engine's outputs on the inputs, and the node that computed them."""
    import ray

    from tinyrobust.model import reference

    keras_model = None if saved is None else load_saved(saved)
    return reference.every_engine(keras_model, tflite, xq, tensor, x), ray.get_runtime_context().get_node_id()


class DeviceActor:
    """A device on a node (made a Ray actor by ClusterPool): an emulator started there, or a board attached there
    (the index-th of its kind that mbed-tools lists), flashed with the firmware the driver sent."""

    def __init__(self, board_name: str, elf_name: str, elf: bytes, channel: str, model_hash: bytes,
                 flash_with: str, index: int):  # fmt: skip
        from tinyrobust.device.targets import SerialTarget, start_emulator

        board = load_board(board_name)
        self.folder = Path(tempfile.mkdtemp(prefix="tinyrobust-device-"))
        path = self.folder / elf_name
        path.write_bytes(elf)
        if board.emulated:
            target = start_emulator(board, path, channel)
        else:
            from tinyrobust.device.flashing import attached_of, flash

            attached = attached_of(board)
            if index >= len(attached):
                raise UserError(f"this node has {len(attached)} {board.name} attached, not {index + 1}")
            if flash_with != "none":
                flash(board, path, flash_with, attached[index])
            target = SerialTarget(attached[index]["serial_port"], board).start()
        self.worker = Worker(target, model_hash)

    def connect(self) -> tuple[str | None, str]:
        """Connect and check the model; the device's counter, and the id of the node this actor runs on."""
        import ray

        self.worker.recovering(lambda: None)
        return self.worker.counter, ray.get_runtime_context().get_node_id()

    def run(self, operation: str, tensors: list[bytes]) -> list:
        """The Worker operation's (infer, encode) answer for each input, in order."""
        work = getattr(self.worker, operation)
        return [work(tensor) for tensor in tensors]

    def link(self) -> dict:
        stats, self.worker.link = self.worker.link, LinkStats()
        return vars(stats)

    def close(self) -> None:
        self.worker.close()


@dataclass(eq=False)
class Placed:
    """A device actor: where it was asked to run (a node id, the resources it holds, its index among the node's
    boards of its kind) and the node it runs on, known once connected."""

    actor: object
    home: str
    resources: dict
    index: int
    node: str = ""


class ClusterPool:
    """Device actors running the same firmware, sharing lists of inputs like device.pool.Pool."""

    def __init__(self, cluster: Cluster, board: Board, elf: Path, channel: str, model_hash: bytes, flash_with: str):
        self.cluster, self.ray = cluster, cluster.ray
        self.args = (board.name, elf.name, elf.read_bytes(), channel, model_hash, flash_with)
        self.actors: list[Placed] = []  # the live ones
        self.calls: Counter = Counter()  # answers received, by kind, as device.pool.Pool counts them
        indices: Counter = Counter()
        for node_id, resources in cluster.placements(board):
            self._start(node_id, resources, indices[node_id], soft=False)
            indices[node_id] += 1
        self.spare = REPLACEMENTS * len(self.actors)

    def connect(self) -> str | None:
        """Connect every device and check its model; the device's counter."""
        return self._connect(self.actors)

    def _start(self, node_id: str, resources: dict, index: int, soft: bool) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        remote = self.ray.remote(DeviceActor).options(
            num_cpus=0, resources=resources, max_restarts=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=soft))  # fmt: skip
        self.actors.append(Placed(remote.remote(*self.args, index), node_id, resources, index))

    def _connect(self, placed: list[Placed]) -> str | None:
        """Connect each actor to its device, refusing in one sentence a node that cannot run it; the counter."""
        ray = self.ray
        try:
            answers = ray.get([p.actor.connect.remote() for p in placed])
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
            cause = getattr(exc, "cause", None) or exc
            raise UserError(f"a device could not start on the cluster ({str(cause).strip().splitlines()[-1]}); "
                            "run tinyrobust doctor on that node") from None  # fmt: skip
        for p, (_, node) in zip(placed, answers, strict=True):
            p.node = node
            self.cluster.count(node, "devices")
        return answers[0][0]

    def run(self, items: list[tuple[int, bytes]], done, operation=Worker.infer, kind: str = "inferences") -> None:
        """Run operation on every (key, input) across the actors, up to CALL_INPUTS inputs per call; done(key,
        answer) is called here as answers arrive. Inputs held by an actor that dies go to the others (and to its
        replacement)."""
        ray, cluster = self.ray, self.cluster
        waiting = deque(items)
        flying: dict = {}  # ref -> (the actor's Placed, [(key, input)])
        load: Counter = Counter()

        def feed() -> None:
            for placed in self.actors:
                while waiting and load[placed] < IN_FLIGHT:
                    # a short list is spread over every actor rather than given to the first
                    size = max(1, min(CALL_INPUTS, len(waiting) // (IN_FLIGHT * len(self.actors))))
                    part = [waiting.popleft() for _ in range(min(size, len(waiting)))]
                    ref = placed.actor.run.remote(operation.__name__, [tensor for _, tensor in part])
                    flying[ref] = (placed, part)
                    load[placed] += 1

        feed()
        while flying:
            (ref,), _ = ray.wait(list(flying), num_returns=1)
            placed, part = flying.pop(ref)
            load[placed] -= 1
            try:
                answers = ray.get(ref)
            except ray.exceptions.RayActorError:
                waiting.extendleft(reversed(part))
                cluster.reruns += len(part)
                self._lost(placed)
            except ray.exceptions.RayTaskError as exc:  # the device's own error (LinkError), raised as itself
                raise exc.cause from None
            else:
                cluster.count(placed.node, kind, len(part))
                self.calls[kind] += len(part)
                for (key, _), answer in zip(part, answers, strict=True):
                    done(key, answer)
            if not self.actors:
                raise LinkError("every device of the cluster stopped before the inputs were done")
            feed()

    def _lost(self, placed: Placed) -> None:
        """An actor died: count a recovery on its node and start another device in its place, on the same node
        when it is alive, else where the cluster has room."""
        if placed not in self.actors:
            return  # its other calls failed already
        self.actors.remove(placed)
        self.cluster.count(placed.node, "recoveries")
        if self.spare > 0:
            self.spare -= 1
            self._start(placed.home, placed.resources, placed.index, soft=True)
            try:
                self._connect(self.actors[-1:])
            except UserError:
                self.actors.pop()

    def infer_all(self, tensors: list[bytes], operation=Worker.infer, kind: str = "inferences") -> list:
        answers: dict[int, tuple] = {}
        self.run(list(enumerate(tensors)), answers.__setitem__, operation, kind)
        return [answers[i] for i in range(len(tensors))]

    def take_link(self) -> LinkStats:
        """The link statistics of the live actors since the last call, their recoveries counted per node."""
        total = LinkStats()
        for placed in self.actors:
            try:
                stats = LinkStats(**self.ray.get(placed.actor.link.remote()))
            except self.ray.exceptions.RayActorError:
                continue
            self.cluster.count(placed.node, "recoveries", stats.reconnects + stats.device_restarts)
            total += stats
        return total

    def close(self) -> None:
        for placed in self.actors:
            with contextlib.suppress(self.ray.exceptions.RayActorError):
                self.ray.get(placed.actor.close.remote())
            self.ray.kill(placed.actor)
        self.actors = []
