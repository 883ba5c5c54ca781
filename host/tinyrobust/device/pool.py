"""Devices running the same firmware: each one (an emulator or a board) with its link, recovering from a lost
connection (reconnect) or a silent device (restart), and a pool that shares a list of inputs between them."""

from __future__ import annotations

import queue
import threading
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path

from tinyrobust.device.boards import Board
from tinyrobust.device.link import Device, LinkError
from tinyrobust.device.targets import start_emulator

# How often one input may lose its link (reconnect, then restart the device) before the run gives up.
MAX_RECOVERIES = 4


@dataclass
class LinkStats:
    """What the link recovered from: frames sent again, device-side resets of its parser, reconnections and
    restarts of the device."""

    retransmissions: int = 0
    device_resets: int = 0
    reconnects: int = 0
    device_restarts: int = 0

    def __iadd__(self, other: LinkStats) -> LinkStats:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


class Worker:
    """One device (an emulator or a board) and its link, surviving a lost connection (reconnect) or a silent
    device (restart)."""

    def __init__(self, target, model_hash: bytes):
        self.target, self.model_hash = target, model_hash
        self.device: Device | None = None
        self.counter = None
        self.link = LinkStats()

    def _connect(self) -> None:
        if self.device is not None:
            self.device.port.close()  # an emulator serves one client: free its place first
        self.device = Device(self.target.open(), self.target.bytes_per_s)
        self.counter = self.device.handshake(self.model_hash).counter

    def recovering(self, action):
        import serial

        problem: Exception | None = None
        for attempt in range(MAX_RECOVERIES + 1):
            try:
                if attempt:
                    restartable = getattr(self.target, "restartable", True)
                    if restartable and (attempt > 1 or isinstance(problem, LinkError)):
                        self.link.device_restarts += 1
                        self.target.restart()
                    self.link.reconnects += 1
                if attempt or self.device is None:
                    self._connect()
                return action()
            except (LinkError, serial.SerialException, OSError) as exc:
                problem = exc
            finally:
                if self.device is not None:
                    self.link.retransmissions += self.device.retransmissions
                    self.link.device_resets += self.device.resets
                    self.device.retransmissions = self.device.resets = 0
        raise LinkError(f"the device stopped answering after {MAX_RECOVERIES} recoveries ({problem})")

    def infer(self, tensor: bytes) -> tuple[bytes, int]:
        return self.recovering(lambda: self.device.infer(tensor))

    def encode(self, tensor: bytes) -> tuple[bytes, int, int]:
        """A split build's stream for the input, with the head's and the coder's ticks (Device.encode)."""
        return self.recovering(lambda: self.device.encode(tensor))

    def close(self) -> None:
        self.target.close()


class Pool:
    """Devices running the same firmware; a list of inputs is shared between them, one thread per device."""

    def __init__(self, workers: list[Worker]):
        self.workers = workers
        self.calls: Counter = Counter()  # inputs run, by kind: "inferences" measured, "queries" of attacks

    def connect(self) -> str | None:
        """Connect every device and check its model; the device's counter."""
        for w in self.workers:
            w.recovering(lambda: None)
        return self.workers[0].counter

    def take_link(self) -> LinkStats:
        """What the links recovered from since the last call."""
        total = LinkStats()
        for w in self.workers:
            total += w.link
            w.link = LinkStats()
        return total

    def run(self, items: list[tuple[int, bytes]], done, operation=Worker.infer, kind: str = "inferences") -> None:
        """Run operation (Worker.infer, or Worker.encode on a split build) on every (key, input); done(key, answer)
        is called in this thread as answers arrive, answer being (output, ticks) for an inference."""
        self.calls[kind] += len(items)
        if len(self.workers) == 1:
            for key, tensor in items:
                done(key, operation(self.workers[0], tensor))
            return
        work: queue.Queue = queue.Queue()
        for item in items:
            work.put(item)
        answers: queue.Queue = queue.Queue()
        stop = threading.Event()

        def serve(worker: Worker) -> None:
            while not stop.is_set():
                try:
                    key, tensor = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    answers.put((key, operation(worker, tensor), None))
                except BaseException as exc:  # handed to the caller's thread
                    answers.put((key, None, exc))
                    return

        threads = [threading.Thread(target=serve, args=(w,), daemon=True) for w in self.workers]
        for t in threads:
            t.start()
        try:
            for _ in range(len(items)):
                while True:
                    try:
                        key, answer, problem = answers.get(timeout=0.2)
                        break
                    except queue.Empty:
                        if not any(t.is_alive() for t in threads) and answers.empty():
                            raise LinkError("every device stopped before the inputs were done") from None
                if problem is not None:
                    raise problem
                done(key, answer)
        finally:
            stop.set()
            for t in threads:
                t.join()

    def infer_all(self, tensors: list[bytes], operation=Worker.infer, kind: str = "inferences") -> list:
        """operation's answer for every input, in order: (output, ticks) for Worker.infer."""
        answers: dict[int, tuple] = {}
        self.run(list(enumerate(tensors)), answers.__setitem__, operation, kind)
        return [answers[i] for i in range(len(tensors))]

    def close(self) -> None:
        for w in self.workers:
            w.close()


def run_on_emulator(
    board: Board, elf: Path, channel: str, model_hash: bytes, tensors: list[bytes], operation=Worker.infer
) -> list:
    """Each input once on the firmware in a new emulator of the board: (raw output, counter ticks) per input, or
    what another operation answers (Worker.encode: stream, head ticks, coder ticks)."""
    pool = Pool([Worker(start_emulator(board, elf, channel), model_hash)])
    try:
        return pool.infer_all(tensors, operation)
    finally:
        pool.close()
