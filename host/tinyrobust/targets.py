"""A target gives the rest of the system a serial connection to the device and a way to get a fresh one."""

from __future__ import annotations

from pathlib import Path

from .boards import Board
from .emulator import Emulator

# QEMU's CMSDK UART moves about one byte per 20 us of host time (measured, see docs), whatever the baud rate.
EMULATED_UART_BYTES_PER_S = 44_000


class EmulatorTarget:
    """The board emulated by QEMU; restarting it is starting a new emulator."""

    def __init__(self, board: Board, elf: Path, log: Path | None = None):
        self.board = board
        self.emulator = Emulator(board, elf, log=log)
        self.bytes_per_s = EMULATED_UART_BYTES_PER_S
        self._fresh = None

    def start(self):
        self._fresh = self.emulator.start()
        return self

    def open(self):
        """A connection to the device: the one made at start, then new ones to the same emulator."""
        import serial

        if self._fresh is not None:
            port, self._fresh = self._fresh, None
            return port
        return serial.serial_for_url(self.emulator.url, timeout=1.0)

    def restart(self) -> None:
        self.emulator.stop()
        self.start()

    def close(self) -> None:
        self.emulator.stop()
