"""Host side of the framed host-device protocol (docs/protocol.md), over any pyserial connection."""

from __future__ import annotations

import struct
import time
import zlib
from dataclasses import dataclass

from .errors import UserError

SYNC = b"\xa5\x5a"
HEADER = struct.Struct("<BHH")  # type, seq, length
PROTOCOL_VERSION = 1
MSG_INFO, MSG_INFER, MSG_REPLY, MSG_ERROR = 0x01, 0x02, 0x80, 0x7F
DEVICE_ERRORS = {1: "bad CRC", 2: "frame too long", 3: "unknown message type", 4: "wrong payload length"}
COUNTERS = {0: "systick"}
INFO = struct.Struct("<BBHIIII32s")


class LinkError(Exception):
    """The device did not answer correctly within the retries."""


def encode_frame(msg_type: int, seq: int, payload: bytes = b"") -> bytes:
    body = HEADER.pack(msg_type, seq & 0xFFFF, len(payload)) + payload
    return SYNC + body + struct.pack("<I", zlib.crc32(body))


@dataclass
class DeviceInfo:
    protocol_version: int
    counter: str  # what the device counts: "systick" (core clock ticks)
    max_payload: int
    input_bytes: int
    output_bytes: int
    arena_bytes: int
    clock_hz: int
    model_hash: bytes


class Device:
    """Requests and replies with sequence numbers, CRC checks and retries."""

    def __init__(self, port, timeout_s: float = 10.0, retries: int = 3):
        self.port = port
        self.timeout_s = timeout_s
        self.retries = retries
        self.seq = 0
        self._buffer = bytearray()

    def request(self, msg_type: int, payload: bytes = b"") -> bytes:
        self.seq = (self.seq + 1) & 0xFFFF
        frame = encode_frame(msg_type, self.seq, payload)
        problem = "no reply"
        for _ in range(self.retries + 1):
            self.port.write(frame)
            reply = self._read_reply(time.monotonic() + self.timeout_s)
            if reply is None:
                problem = f"no reply within {self.timeout_s:.1f} s"
                continue
            reply_type, body = reply
            if reply_type == msg_type | MSG_REPLY:
                return body
            if reply_type == MSG_ERROR:
                problem = f"device error: {DEVICE_ERRORS.get(body[0] if body else 0, 'unknown')}"
                continue
            problem = f"unexpected reply type {reply_type:#x}"
        raise LinkError(f"request {msg_type:#x} failed after {self.retries + 1} attempts: {problem}")

    def _read_reply(self, deadline: float) -> tuple[int, bytes] | None:
        """The next valid frame answering the current sequence number; stale or corrupt frames are skipped."""
        while time.monotonic() < deadline:
            frame = self._parse()
            if frame is None:
                chunk = self.port.read(max(1, self.port.in_waiting))
                self._buffer += chunk
                continue
            msg_type, seq, payload = frame
            if seq == self.seq:
                return msg_type, payload
        return None

    def _parse(self) -> tuple[int, int, bytes] | None:
        buf = self._buffer
        while True:
            start = buf.find(SYNC)
            if start < 0:
                del buf[: max(0, len(buf) - 1)]  # keep a possible first sync byte
                return None
            del buf[:start]
            if len(buf) < 2 + HEADER.size:
                return None
            msg_type, seq, length = HEADER.unpack_from(buf, 2)
            end = 2 + HEADER.size + length
            if len(buf) < end + 4:
                return None
            (crc,) = struct.unpack_from("<I", buf, end)
            if zlib.crc32(bytes(buf[2:end])) == crc:
                payload = bytes(buf[2 + HEADER.size : end])
                del buf[: end + 4]
                return msg_type, seq, payload
            del buf[:1]  # not a frame after all: hunt for the next sync

    def info(self) -> DeviceInfo:
        body = self.request(MSG_INFO)
        fields = INFO.unpack_from(body)
        if fields[0] != PROTOCOL_VERSION:
            raise UserError(
                f"the device speaks protocol version {fields[0]}, this host {PROTOCOL_VERSION}; rebuild the firmware"
            )
        return DeviceInfo(fields[0], COUNTERS.get(fields[1], f"counter{fields[1]}"), *fields[2:])

    def infer(self, tensor: bytes) -> tuple[bytes, int]:
        """Run one inference; returns the raw output tensor bytes and the counter ticks it took."""
        body = self.request(MSG_INFER, tensor)
        (ticks,) = struct.unpack_from("<Q", body)
        return body[8:], ticks


def handshake(device: Device, model_hash: bytes) -> DeviceInfo:
    """Check that the device runs the model we are about to evaluate."""
    info = device.info()
    if info.model_hash != model_hash:
        raise UserError(
            f"the device runs model {info.model_hash.hex()[:16]}, not the one evaluated ({model_hash.hex()[:16]}); "
            "flash the firmware built for this model"
        )
    return info
