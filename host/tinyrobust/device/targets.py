"""A target gives the rest of the system a serial connection to the device and a way to get a fresh one."""

from __future__ import annotations

from pathlib import Path

from tinyrobust.device.boards import Board
from tinyrobust.device.emulator import Emulator

# QEMU's CMSDK UART moves about one byte per 20 us of host time (measured, see docs), whatever the baud rate.
EMULATED_UART_BYTES_PER_S = 44_000
# Semihosting file I/O on FIFOs: a 3 KB frame in about 0.03 ms (measured); the link derives its timeouts
# from this, so it is a conservative figure.
SEMIHOSTING_BYTES_PER_S = 10_000_000


def emulated_uart_bytes_per_s(board: Board) -> float:
    """How fast an emulated board's UART moves bytes in host time: the board file's figure for its emulator
    ([emulator] uart_bytes_per_s, Renode's), or QEMU's."""
    return float(board.emulator.get("uart_bytes_per_s", EMULATED_UART_BYTES_PER_S))


class EmulatorTarget:
    """The board emulated by QEMU or Renode, through its UART or the semihosting channel the firmware was
    built for; restarting it is starting a new emulator."""

    restartable = True

    def __init__(self, board: Board, elf: Path, log: Path | None = None, channel: str = "uart"):
        self.board = board
        self.emulator = Emulator(board, elf, log=log, channel=channel)
        self.bytes_per_s = SEMIHOSTING_BYTES_PER_S if channel == "semihosting" else emulated_uart_bytes_per_s(board)
        self._fresh = None

    def start(self):
        self._fresh = self.emulator.start()
        return self

    def open(self):
        """A connection to the device: the one made at start, then new ones to the same emulator."""
        if self._fresh is not None:
            port, self._fresh = self._fresh, None
            return port
        return self.emulator.connect()

    def restart(self) -> None:
        if self._fresh is not None:
            self._fresh.close()
            self._fresh = None
        self.emulator.stop()
        self.start()

    def close(self) -> None:
        if self._fresh is not None:
            self._fresh.close()
            self._fresh = None
        self.emulator.stop()


def start_emulator(board: Board, elf: Path, channel: str = "uart", log: Path | None = None) -> EmulatorTarget:
    """A new emulator of the board running elf, logging beside the ELF unless told where."""
    return EmulatorTarget(board, elf, log=log or elf.parent / "emulator.log", channel=channel).start()


class SerialTarget:
    """A device that is already running behind a pyserial URL: an attached board's serial port
    (/dev/ttyACM0) or `tinyrobust emulate`'s UART (socket://127.0.0.1:PORT). It cannot be restarted from
    here, only reconnected."""

    restartable = False

    def __init__(self, url: str, board: Board):
        self.url, self.board = url, board
        baud = board.uart.baud
        # An emulated UART runs at its emulator's pace; a real one at the baud rate, 10 bits per byte (8N1).
        self.bytes_per_s = emulated_uart_bytes_per_s(board) if board.emulated else baud / 10

    def start(self):
        return self

    def open(self):
        import serial

        from tinyrobust.errors import UserError

        try:
            return serial.serial_for_url(self.url, baudrate=self.board.uart.baud, timeout=1.0)
        except (serial.SerialException, ValueError) as exc:
            raise UserError(
                f"cannot open {self.url} ({exc}); check the port with `tinyrobust boards detect`, "
                "or start the emulator with `tinyrobust emulate`"
            ) from None

    def restart(self) -> None:
        pass  # nothing to restart: the next connection is a reconnect

    def close(self) -> None:
        pass
