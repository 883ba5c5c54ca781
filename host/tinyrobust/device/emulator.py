"""Run firmware in an emulator: QEMU, reached through its UART on a TCP socket or through semihosting file I/O
on two FIFOs (the fast channel), or Renode, reached through its UART on a TCP socket (a generated .resc
script); the emulator is always stopped when the run ends."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tinyrobust.device.boards import Board
from tinyrobust.errors import UserError

START_TIMEOUT_S = 20.0
# Renode is a .NET program: its runtime and the platform description take seconds to load.
RENODE_START_TIMEOUT_S = 90.0
RENODE_RELEASES = "https://github.com/renode/renode/releases"
# How to get each emulator: QEMU from the distribution, Renode from its releases (it is on neither apt nor PyPI).
INSTALL = {
    "qemu-system-arm": "run: apt-get install -y qemu-system-arm",
    "renode": f"install a Renode release ({RENODE_RELEASES}) and put its renode executable on PATH",
}


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


def qemu_command(board: Board, elf: Path, port: int | None) -> list[str]:
    """QEMU serving the UART on TCP port, or with port None, semihosting on (the FIFO channel)."""
    # -icount shift=0: one instruction is one nanosecond of virtual time, so SysTick counts instructions
    # exactly and repeatably. nodelay=on: without it every reply waits for Nagle's algorithm.
    if port is None:
        channel = ["-serial", "null", "-semihosting-config", "enable=on,target=native"]
    else:
        channel = ["-serial", f"tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on"]
    return [
        board.emulator["program"], "-machine", board.emulator["machine"],
        "-display", "none", "-monitor", "none", *channel,
        "-icount", "shift=0", "-kernel", str(Path(elf).resolve()),
    ]  # fmt: skip


def renode_script(board: Board, elf: Path, port: int) -> str:
    """The Renode monitor script (.resc) that runs elf on the board with its UART on TCP port 127.0.0.1:port.
    The socket is opened last, after every command that can fail, so that a connection means the machine was
    built and the firmware loaded."""
    emulator = board.emulator
    lines = [
        f"# tinyrobust: {board.name} runs {Path(elf).resolve()}; its UART is on TCP port {port}",
        f'mach create "{board.name}"',
        f"machine LoadPlatformDescription @{emulator['platform']}",
    ]
    for name in emulator.get("map", []):
        region = board.extra_ram[name]
        lines.append(
            f'machine LoadPlatformDescriptionFromString "{name}: Memory.MappedMemory @ sysbus '
            f'{region.origin:#x} {{ size: {region.size:#x} }}"'
        )
    lines += [
        # Virtual time is executed instructions over this rate; SysTick counts clock_hz of virtual time, so
        # one tick is mips * 1e6 / clock_hz executed instructions (see instructions_per_tick).
        f"sysbus.cpu PerformanceInMips {emulator['mips']}",
        f"sysbus.nvic Frequency {board.clock_hz}",
        f"sysbus LoadELF @{Path(elf).resolve()}",
        # The vector table is at the start of flash (the linker script puts it there).
        f"sysbus.cpu VectorTableOffset {board.flash.origin:#010x}",
        # false: a raw byte stream, no telnet negotiation.
        f'emulation CreateServerSocketTerminal {port} "uart" false',
        f"connector Connect {emulator['uart']} uart",
        "start",
    ]
    return "\n".join(lines) + "\n"


def renode_command(board: Board, script: Path) -> list[str]:
    """Renode without its GUI and without a Monitor (--port -2: not the telnet Monitor on port 1234 that
    --disable-xwt alone opens, which two emulators side by side would both claim; --hide-monitor: no Monitor
    window either, which older releases do not imply), its log plain on stdout, running the script."""
    program = board.emulator["program"]
    return [program, "--disable-xwt", "--hide-monitor", "--port", "-2", "--plain", "-e", f"include @{script}"]


class FifoConnection:
    """The host's end of the semihosting channel: two FIFOs, with the part of pyserial's interface the link
    uses (read, write, timeout, in_waiting, close). A stopped emulator reads as a lost connection."""

    def __init__(self, directory: Path, alive: Callable[[], bool], timeout: float | None = 1.0):
        self.timeout = timeout
        self._alive = alive
        self._pending = bytearray()
        self._in = os.open(directory / "from-device", os.O_RDONLY | os.O_NONBLOCK)
        self._out = -1
        deadline = time.monotonic() + START_TIMEOUT_S
        while self._out < 0:
            # Opening the device's input for writing succeeds once the firmware holds it open for reading.
            try:
                self._out = os.open(directory / "to-device", os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                if not alive() or time.monotonic() > deadline:
                    os.close(self._in)
                    raise _lost("the emulated firmware did not open its semihosting channel") from None
                time.sleep(0.005)

    def _fill(self) -> None:
        try:
            while chunk := os.read(self._in, 65536):
                self._pending += chunk
        except BlockingIOError:
            pass

    @property
    def in_waiting(self) -> int:
        self._fill()
        return len(self._pending)

    def read(self, size: int = 1) -> bytes:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        self._fill()
        while len(self._pending) < size:
            remaining = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if remaining <= 0:
                break
            if not self._alive():
                raise _lost("the emulator stopped")
            select.select([self._in], [], [], remaining)
            self._fill()
        data = bytes(self._pending[:size])
        del self._pending[:size]
        return data

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            if not self._alive():
                raise _lost("the emulator stopped")
            try:
                view = view[os.write(self._out, view) :]
            except BlockingIOError:
                select.select([], [self._out], [], 0.1)
            except BrokenPipeError:
                raise _lost("the emulated firmware closed its semihosting channel") from None
        return len(data)

    def close(self) -> None:
        for fd in (self._in, self._out):
            if fd >= 0:
                os.close(fd)
        self._in = self._out = -1


def _lost(why: str) -> Exception:
    import serial

    return serial.SerialException(why)


class Emulator:
    """An emulator process: QEMU reached through the board's UART on 127.0.0.1:port (channel "uart") or
    through semihosting on two FIFOs (channel "semihosting"), or Renode through the UART; use as a context
    manager."""

    def __init__(
        self, board: Board, elf: Path, port: int | None = None, log: Path | None = None, channel: str = "uart"
    ):
        if not board.emulated:
            raise UserError(f"{board.name} is a real board, not an emulated one; pass --port to reach it")
        if channel not in board.channels:
            raise UserError(
                f"{board.name} has no {channel} channel (it offers {', '.join(board.channels)}); use --channel uart"
            )
        program = board.emulator["program"]
        if shutil.which(program) is None:
            how = INSTALL.get(Path(program).name, f"install {program}")
            raise UserError(f"{program} is not installed; {how}")
        if port is not None and channel != "uart":
            raise UserError("a TCP port serves the UART; use --channel uart with --port-tcp")
        self.board, self.elf, self.requested_port, self.channel = board, elf, port, channel
        self.log = log
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.fifo_dir: Path | None = None
        self.work_dir: Path | None = None  # Renode: its script and a copy of the firmware

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def connect(self):
        """A new connection to the running emulator (pyserial, or FifoConnection for semihosting)."""
        import serial

        if self.channel == "semihosting":
            process = self.process
            return FifoConnection(self.fifo_dir, lambda: process is not None and process.poll() is None)
        return serial.serial_for_url(self.url, timeout=1.0)

    def start(self):
        """Start QEMU and return a connection to the firmware."""
        if self.channel == "semihosting":
            return self._start_semihosting()
        return self._start_uart()

    def _start_semihosting(self) -> FifoConnection:
        self.fifo_dir = Path(tempfile.mkdtemp(prefix="tinyrobust-fifo-"))
        for name in ("to-device", "from-device"):
            os.mkfifo(self.fifo_dir / name)
        log = self.log.open("wb") if self.log else subprocess.DEVNULL
        # The firmware opens the FIFOs by relative name: QEMU runs in their directory.
        self.process = subprocess.Popen(
            qemu_command(self.board, self.elf, None), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            cwd=self.fifo_dir,
        )  # fmt: skip
        try:
            return self.connect()
        except Exception:
            detail = self.log.read_text(errors="replace").strip() if self.log else ""
            self.stop()
            raise UserError(f"the emulator did not start its semihosting channel ({detail or 'no message'})") from None

    def _launch_uart(self, log) -> subprocess.Popen:
        if not self.board.renode:
            return subprocess.Popen(
                qemu_command(self.board, self.elf, self.port), stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        # Renode reads its script and the firmware from a directory of ours (no spaces in the paths the
        # Monitor parses); its own session, so that stopping it reaches a launcher script's children too.
        self.work_dir = Path(tempfile.mkdtemp(prefix="tinyrobust-renode-"))
        elf = self.work_dir / "firmware.elf"
        shutil.copyfile(self.elf, elf)
        script = self.work_dir / f"{self.board.name}.resc"
        script.write_text(renode_script(self.board, elf, self.port))
        return subprocess.Popen(
            renode_command(self.board, script), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            cwd=self.work_dir, start_new_session=True,
        )  # fmt: skip

    def _start_uart(self):
        import serial

        self.port = self.requested_port or free_tcp_port()
        if self.requested_port and not _port_free(self.port):
            raise UserError(f"TCP port {self.port} is already in use; choose another port or stop its user")
        log = self.log.open("wb") if self.log else subprocess.DEVNULL
        self.process = self._launch_uart(log)
        timeout = RENODE_START_TIMEOUT_S if self.board.renode else START_TIMEOUT_S
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                detail = self._log_text()
                if self.board.renode:  # a long log: its errors, or its end
                    lines = detail.splitlines()
                    detail = " / ".join([line for line in lines if "[ERROR]" in line][-3:] or lines[-3:])
                self.process = None
                self._remove_work_dir()
                if "Address already in use" in detail:
                    raise UserError(f"TCP port {self.port} is already in use; choose another port or stop its user")
                raise UserError(f"the emulator exited at start ({detail or 'no message'})")
            # QEMU holds the guest (wait=on) until its one client, this connection, arrives; Renode opens the
            # socket once the machine is built and the firmware loaded, and runs the firmware at once (the
            # firmware only ever answers, so it has nothing to say before this connection).
            try:
                return serial.serial_for_url(self.url, timeout=1.0)
            except serial.SerialException:
                time.sleep(0.02)
        errors = [line for line in self._log_text().splitlines() if "[ERROR]" in line][-3:]
        self.stop()
        raise UserError(
            f"the emulator did not open port {self.port} within {timeout:.0f} s"
            + (f" ({' / '.join(errors)})" if errors else "")
        )

    def _log_text(self) -> str:
        return self.log.read_text(errors="replace").strip() if self.log and self.log.exists() else ""

    def _remove_work_dir(self) -> None:
        if self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self.work_dir = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            if self.board.renode:
                # Its session (start_new_session) is ours: the process group whose id is its pid.
                _signal_group(self.process, signal.SIGTERM)
            elif self.channel == "semihosting":
                # A semihosting read blocks QEMU's main loop, so SIGTERM would wait; there is no state to save.
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                if self.board.renode:
                    _signal_group(self.process, signal.SIGKILL)
                self.process.kill()
                self.process.wait()
        self.process = None
        if self.fifo_dir is not None:
            shutil.rmtree(self.fifo_dir, ignore_errors=True)
            self.fifo_dir = None
        self._remove_work_dir()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
