"""Run firmware in QEMU with its UART on a TCP socket; the emulator is always stopped when the run ends."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

from .boards import Board
from .errors import UserError

START_TIMEOUT_S = 20.0


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def qemu_command(board: Board, elf: Path, port: int) -> list[str]:
    # -icount shift=0: one instruction is one nanosecond of virtual time, so SysTick counts instructions
    # exactly and repeatably. nodelay=on: without it every reply waits for Nagle's algorithm.
    return [
        board.emulator["program"], "-machine", board.emulator["machine"],
        "-display", "none", "-monitor", "none",
        "-serial", f"tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on",
        "-icount", "shift=0", "-kernel", str(elf),
    ]  # fmt: skip


class Emulator:
    """A QEMU process serving the board's UART on 127.0.0.1:port; use as a context manager."""

    def __init__(self, board: Board, elf: Path, port: int | None = None, log: Path | None = None):
        if not board.emulated:
            raise UserError(f"{board.name} is a real board, not an emulated one; pass --port to reach it")
        if shutil.which(board.emulator["program"]) is None:
            raise UserError(f"{board.emulator['program']} is not installed; run: apt-get install -y qemu-system-arm")
        self.board, self.elf, self.requested_port = board, elf, port
        self.log = log
        self.process: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def start(self):
        """Start QEMU and return a pyserial connection to the board's UART."""
        import serial

        self.port = self.requested_port or free_tcp_port()
        if self.requested_port and not _port_free(self.port):
            raise UserError(f"TCP port {self.port} is already in use; choose another port or stop its user")
        log = self.log.open("wb") if self.log else subprocess.DEVNULL
        self.process = subprocess.Popen(
            qemu_command(self.board, self.elf, self.port), stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                detail = self.log.read_text(errors="replace").strip() if self.log else ""
                self.process = None
                if "Address already in use" in detail:
                    raise UserError(f"TCP port {self.port} is already in use; choose another port or stop its user")
                raise UserError(f"the emulator exited at start ({detail or 'no message'})")
            # QEMU holds the guest (wait=on) until its one client, this connection, arrives.
            try:
                return serial.serial_for_url(self.url, timeout=1.0)
            except serial.SerialException:
                time.sleep(0.02)
        self.stop()
        raise UserError(f"the emulator did not open port {self.port} within {START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def instructions_per_tick(board: Board) -> float:
    """Executed instructions per counter tick: under -icount shift=0 an instruction takes 1 ns of virtual
    time and SysTick counts the machine's cpuclk. Emulated boards record the value measured by calibrate()."""
    if board.emulated and "instructions_per_tick" in board.emulator:
        return float(board.emulator["instructions_per_tick"])
    return 1e9 / board.clock_hz


CALIBRATION = struct.Struct("<IIQQ")  # short and long loop iterations, ticks of each


def calibrate(board: Board, out_dir: Path) -> float:
    """Measure instructions per counter tick in the emulator: firmware/boards/calibrate.c times two spin
    loops of two instructions per iteration; their difference cancels every fixed overhead."""
    from .build import build_calibration

    elf = build_calibration(board, out_dir)
    reply = b""
    with Emulator(board, elf, log=out_dir / "calibrate.log") as emulator:
        port = emulator.start()
        port.timeout = 0.5
        # Some UART models (QEMU's STM32 USART) drop what arrives before the firmware enabled them: say
        # "start" again until the reply comes; the firmware ignores the extra bytes.
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(reply) < CALIBRATION.size and time.monotonic() < deadline:
            port.write(b"\x00")
            reply += port.read(CALIBRATION.size - len(reply))
        port.close()
    if len(reply) != CALIBRATION.size:
        log = out_dir / "calibrate.log"
        raise UserError(f"the calibration firmware on {board.name} did not answer; see {log}")
    short_loops, long_loops, short_ticks, long_ticks = CALIBRATION.unpack(reply)
    return 2 * (long_loops - short_loops) / (long_ticks - short_ticks)
