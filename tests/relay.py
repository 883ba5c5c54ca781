"""A TCP relay between the host and the emulator's UART socket that injects faults, seeded and bounded."""

from __future__ import annotations

import os
import random
import signal
import socket
import threading
import time

from tinyrobust.device.targets import EmulatorTarget

FAULTS = ("drop", "flip", "delay", "split", "close", "restart")


class FaultyRelay:
    """Listens on a local port; each connection is relayed to the emulator, with one kind of fault.

    Faults hit each relayed byte with probability `rate` (QEMU's UART sends byte by byte, the host whole
    frames), at most `limit` times, and never within `grace` bytes of the start or of the last fault, so
    that a recovery's handshake gets through."""

    def __init__(self, target: EmulatorTarget, fault: str | None, seed: int = 0, rate: float = 0.003, limit: int = 6):
        self.target, self.fault, self.rate, self.limit = target, fault, rate, limit
        self.random = random.Random(seed)
        self.injected = 0
        self.relayed = 0
        self.grace = 400
        self.quiet_until = self.grace
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.server.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.target.emulator.port))
            except OSError:  # the emulator is down: so is the link
                down.close()
                continue
            for s in (down, up):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connections += [down, up]
            threading.Thread(target=self._pump, args=(down, up), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down), daemon=True).start()

    def _strike(self, size: int) -> bool:
        with self.lock:
            self.relayed += size
            if self.fault is None or self.injected >= self.limit or self.relayed <= self.quiet_until:
                return False
            if self.random.random() < 1 - (1 - self.rate) ** size:
                self.injected += 1
                self.quiet_until = self.relayed + self.grace
                return True
            return False

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(4096):
                if self._strike(len(data)):
                    data = self._apply(data, src, dst)
                    if data is None:
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                s.close()

    def _apply(self, data: bytes, src: socket.socket, dst: socket.socket) -> bytes | None:
        r = self.random
        if self.fault == "drop":
            i = r.randrange(len(data))
            return data[:i] + data[i + 1 :]
        if self.fault == "flip":
            i = r.randrange(len(data))
            return data[:i] + bytes([data[i] ^ (1 << r.randrange(8))]) + data[i + 1 :]
        if self.fault == "delay":
            time.sleep(r.uniform(0.05, 0.6))
            return data
        if self.fault == "split":
            for i in range(len(data)):
                dst.sendall(data[i : i + 1])
                time.sleep(0.001)
            return b""
        if self.fault == "close":
            return None
        if self.fault == "restart":  # the emulator dies mid-campaign, as a board losing power would
            os.kill(self.target.emulator.process.pid, signal.SIGKILL)
            return None
        raise ValueError(self.fault)

    def close(self) -> None:
        self.server.close()
        for s in self.connections:
            s.close()


class RelayedTarget(EmulatorTarget):
    """The emulator, reached through a FaultyRelay."""

    def __init__(self, board, elf, fault: str | None, seed: int = 0):
        super().__init__(board, elf)
        self.relay = FaultyRelay(self, fault, seed)

    def start(self):
        super().start()
        EmulatorTarget.open(self).close()  # free QEMU's one client place for the relay
        return self

    def open(self):
        import serial

        return serial.serial_for_url(f"socket://127.0.0.1:{self.relay.port}", timeout=1.0)

    def close(self) -> None:
        super().close()
        self.relay.close()
