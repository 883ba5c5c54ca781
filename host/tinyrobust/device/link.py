"""Host side of the framed host-device protocol (docs/protocol.md), over any pyserial connection."""

from __future__ import annotations

import secrets
import struct
import time
import zlib
from dataclasses import dataclass

from tinyrobust.errors import UserError

SYNC = b"\xa5\x5a"
HEADER = struct.Struct("<BHH")  # type, seq, length
PROTOCOL_VERSION = 1
MSG_INFO, MSG_INFER, MSG_SESSION, MSG_LOAD, MSG_REPLY, MSG_ERROR = 0x01, 0x02, 0x03, 0x04, 0x80, 0x7F
MSG_ENCODE, MSG_FETCH = 0x05, 0x06  # a split build's: the head's output entropy-coded, and the rest of its stream
MSG_PROFILE = 0x07  # a profile build's: each step's ticks of the last inference, and the stack's high-water mark
PROFILE_REPLY = struct.Struct("<II")  # steps, deepest stack use since reset (bytes); then u64 ticks per step
MSG_TENSOR = 0x08  # a profile build's: one step of the schedule run, and its output tensor from a byte offset
TENSOR_REQUEST = struct.Struct("<II")  # step, byte offset into its output
TENSOR_CHUNK_BYTES = 1024  # the most tensor bytes a device sends in one TENSOR reply
LOAD_OFFSET = struct.Struct("<I")
ENCODE_REPLY = struct.Struct("<QQI")  # head ticks, coder ticks, stream bytes; then the stream's first part
STREAM_CHUNK_BYTES = 1024  # the most stream bytes a device sends in one ENCODE or FETCH reply
ERR_UNKNOWN_TYPE = 3
DEVICE_ERRORS = {
    1: "bad CRC", 2: "frame too long", ERR_UNKNOWN_TYPE: "unknown message type", 4: "wrong payload length",
    5: "the stream did not fit the device's buffer",
}  # fmt: skip
COUNTERS = {0: "systick", 1: "dwt"}  # INFO's counter field: SysTick, or DWT CYCCNT (core cycles)
INFO = struct.Struct("<BBHIIIII32s")
FRAME_OVERHEAD = 2 + HEADER.size + 4
# The header's length field is 16 bits, and a reply carries 8 bytes of counter before the output tensor. Inputs
# have no such limit: they travel in chunks.
MAX_OUTPUT_BYTES = 0xFFFF - 8
# Until the first inference is measured, allow this much for the device's work on one request.
INITIAL_WORK_S = 2.0


class LinkError(Exception):
    """The device did not answer correctly within the retries."""


def check_output_fits(output_bytes: int) -> None:
    """Refuse, before building, a model whose output cannot travel in one reply frame."""
    if output_bytes > MAX_OUTPUT_BYTES:
        raise UserError(
            f"the model's {output_bytes}-byte output does not fit a reply frame of the link "
            f"({MAX_OUTPUT_BYTES} bytes at most); choose a model with a smaller output"
        )


def encode_frame(msg_type: int, seq: int, payload: bytes = b"") -> bytes:
    body = HEADER.pack(msg_type, seq & 0xFFFF, len(payload)) + payload
    return SYNC + body + struct.pack("<I", zlib.crc32(body))


@dataclass
class DeviceInfo:
    protocol_version: int
    counter: str  # what the device counts: "systick" (core clock ticks) or "dwt" (CYCCNT, core cycles)
    max_request: int  # the largest request payload the device accepts
    input_bytes: int
    output_bytes: int
    arena_bytes: int
    clock_hz: int
    session: int  # set by the host after the handshake; 0 after the device (re)booted
    model_hash: bytes


class Device:
    """Requests and replies with sequence numbers, CRC checks and retries.

    A request's timeout is derived from the link's byte rate and the device's work, learned from the
    round trips measured so far. A request that gets no reply is sent again with the same sequence number,
    which the device answers from its last reply; after two silent attempts the host checks the session,
    and if the device was reset, hands shakes again (checking the model hash) before resending."""

    def __init__(self, port, bytes_per_s: float, retries: int = 4):
        self.port = port
        self.bytes_per_s = bytes_per_s
        self.retries = retries
        self.seq = 0
        self.work_s = INITIAL_WORK_S
        self.max_reply = INFO.size  # longer frames are noise: the parser skips them
        self.max_request = 0
        self.model_hash: bytes | None = None
        self.session = 0
        self.output_bytes = 0
        self.resets = 0  # device resets detected and recovered from
        self._recovering = False  # asking a silent device for its session must not recover again, and again
        self.retransmissions = 0
        self._buffer = bytearray()

    def timeout_s(self, msg_type: int, request_bytes: int, reply_bytes: int) -> float:
        wire = (request_bytes + reply_bytes + 2 * FRAME_OVERHEAD) / self.bytes_per_s
        return 0.25 + 4 * (wire + (self.work_s if msg_type in (MSG_INFER, MSG_ENCODE, MSG_TENSOR) else 0.0))

    def request(self, msg_type: int, payload: bytes = b"", reply_bytes: int = 0) -> bytes:
        self.seq = (self.seq + 1) & 0xFFFF
        seq, frame = self.seq, encode_frame(msg_type, self.seq, payload)
        timeout = self.timeout_s(msg_type, len(payload), reply_bytes)
        problem = "no reply"
        for attempt in range(self.retries + 1):
            if attempt:
                self.retransmissions += 1
            if attempt >= 2 and self.model_hash is not None and not self._recovering:
                self._recover_from_reset()
            started = time.monotonic()
            self.port.write(frame)
            reply = self._read_reply(seq, started + timeout)
            if reply is None:
                problem = f"no reply within {timeout:.2f} s"
                continue
            reply_type, body = reply
            if reply_type == msg_type | MSG_REPLY:
                if msg_type in (MSG_INFER, MSG_ENCODE) and attempt == 0:
                    wire = (len(frame) + len(body) + FRAME_OVERHEAD) / self.bytes_per_s
                    self.work_s = max(0.001, 2 * (time.monotonic() - started - wire))
                return body
            if reply_type == MSG_ERROR:
                code = body[0] if body else 0
                if code == ERR_UNKNOWN_TYPE and msg_type in (MSG_ENCODE, MSG_FETCH):  # asking again cannot help
                    raise UserError(
                        "the device's firmware does not encode: build it with a coding (build_firmware's coding)"
                    )
                if code == ERR_UNKNOWN_TYPE and msg_type in (MSG_PROFILE, MSG_TENSOR):
                    raise UserError("the device's firmware does not profile: build it with build_firmware's profile")
                problem = f"device error: {DEVICE_ERRORS.get(code, 'unknown')}"
                continue
            problem = f"unexpected reply type {reply_type:#x}"
        raise LinkError(f"request {msg_type:#x} failed after {self.retries + 1} attempts: {problem}")

    def _recover_from_reset(self) -> None:
        """If the device lost the session the host set, it was reset: shake hands again."""
        self._recovering = True
        try:
            info = self.info()
        except LinkError:
            return  # still silent; the caller keeps retrying
        finally:
            self._recovering = False
        if info.session != self.session:
            self.resets += 1
            self.handshake(self.model_hash)

    def _read_reply(self, seq: int, deadline: float) -> tuple[int, bytes] | None:
        """The next valid frame answering sequence number seq; stale or corrupt frames are skipped."""
        while (remaining := deadline - time.monotonic()) > 0:
            frame = self._parse()
            if frame is None:
                self.port.timeout = min(remaining, 0.5)
                self._buffer += self.port.read(max(1, self.port.in_waiting))
                continue
            msg_type, frame_seq, payload = frame
            if frame_seq == seq:
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
            if length <= self.max_reply:
                if len(buf) < end + 4:
                    return None
                (crc,) = struct.unpack_from("<I", buf, end)
                if zlib.crc32(bytes(buf[2:end])) == crc:
                    payload = bytes(buf[2 + HEADER.size : end])
                    del buf[: end + 4]
                    return msg_type, seq, payload
            del buf[:1]  # not a frame after all: hunt for the next sync

    def info(self) -> DeviceInfo:
        body = self.request(MSG_INFO, reply_bytes=INFO.size)
        fields = INFO.unpack_from(body)
        if fields[0] != PROTOCOL_VERSION:
            raise UserError(
                f"the device speaks protocol version {fields[0]}, this host {PROTOCOL_VERSION}; rebuild the firmware"
            )
        info = DeviceInfo(fields[0], COUNTERS.get(fields[1], f"counter{fields[1]}"), *fields[2:])
        self.max_request = info.max_request
        self.max_reply = max(INFO.size, 8 + info.output_bytes, ENCODE_REPLY.size + STREAM_CHUNK_BYTES)
        return info

    def handshake(self, model_hash: bytes) -> DeviceInfo:
        """Check that the device runs the model we are about to evaluate, and open a session on it."""
        info = self.info()
        if info.model_hash != model_hash:
            raise UserError(
                f"the device runs model {info.model_hash.hex()[:16]}, not the one evaluated "
                f"({model_hash.hex()[:16]}); flash the firmware built for this model"
            )
        self.model_hash = model_hash
        self.session = secrets.randbits(32) | 1  # never 0, the value of a freshly booted device
        self.request(MSG_SESSION, struct.pack("<I", self.session))
        self.output_bytes = info.output_bytes
        return info

    def infer(self, tensor: bytes) -> tuple[bytes, int]:
        """Run one inference; returns the raw output tensor bytes and the counter ticks it took.

        An input longer than the device's largest request goes in LOAD chunks first; if the device was reset
        on the way (its loaded input lost with it), the whole input is sent again."""
        while True:
            resets = self.resets
            payload = self._load(tensor)
            body = self.request(MSG_INFER, payload, reply_bytes=8 + self.output_bytes)
            if self.resets == resets:
                break
        (ticks,) = struct.unpack_from("<Q", body)
        return body[8:], ticks

    def _load(self, tensor: bytes, always: bool = False) -> bytes:
        """The payload of an INFER or ENCODE request: the input, or nothing after sending it in LOAD chunks when
        it is longer than the device's largest request (or always)."""
        if len(tensor) <= self.max_request and not always:
            return tensor
        chunk = self.max_request - LOAD_OFFSET.size
        for offset in range(0, len(tensor), chunk):
            self.request(MSG_LOAD, LOAD_OFFSET.pack(offset) + tensor[offset : offset + chunk])
        return b""

    def profile(self, steps: int) -> tuple[list[int], int]:
        """A profile build's record of the last inference (PROFILE): the counter ticks of each of the schedule's
        steps, and the deepest the stack has reached since reset, in bytes."""
        reply_bytes = PROFILE_REPLY.size + 8 * steps
        self.max_reply = max(self.max_reply, reply_bytes)
        body = self.request(MSG_PROFILE, reply_bytes=reply_bytes)
        count, stack_bytes = PROFILE_REPLY.unpack_from(body)
        if count != steps or len(body) != reply_bytes:  # restarting cannot help: another build answered
            raise UserError(f"the device's firmware profiles {count} steps, not the model's {steps}; rebuild it")
        return list(struct.unpack_from(f"<{steps}Q", body, PROFILE_REPLY.size)), stack_bytes

    def walk(self, tensor: bytes, sizes: list[int]) -> list[bytes]:
        """A profile build's output of every step of the schedule for the input, in schedule order, sizes[k] bytes
        for step k: the input goes in LOAD chunks, then TENSOR asks for each step's output chunk by chunk, the first
        chunk running the step. If the device was reset on the way (the walk lost with it), it starts again."""
        while True:
            resets = self.resets
            outputs: list[bytes] = []
            try:
                self._load(tensor, always=True)
                for step, size in enumerate(sizes):
                    if self.resets != resets:
                        break
                    outputs.append(self._step_output(step, size))
            except LinkError:
                if self.resets == resets:
                    raise  # a reset refuses the walk's next step (its arena is gone): start again below
            if self.resets == resets:
                return outputs

    def _step_output(self, step: int, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            expected = min(TENSOR_CHUNK_BYTES, size - len(data))
            part = self.request(MSG_TENSOR, TENSOR_REQUEST.pack(step, len(data)), reply_bytes=expected)
            if len(part) != expected:  # restarting cannot help: another build answered
                raise UserError(f"the device's firmware gives step {step} an output of another size than the model's "
                                f"{size} bytes; rebuild it")  # fmt: skip
            data += part
        return bytes(data)

    def encode(self, tensor: bytes) -> tuple[bytes, int, int]:
        """Run a split build's head and code its output (ENCODE, then FETCH for a stream longer than one reply);
        returns the stream and the counter ticks of the head and of the coder. The input travels as for infer. If
        the device was reset on the way (its input or stream lost with it), the whole request is made again."""
        while True:
            resets = self.resets
            payload = self._load(tensor)
            reply_bytes = ENCODE_REPLY.size + STREAM_CHUNK_BYTES
            body = self.request(MSG_ENCODE, payload, reply_bytes=reply_bytes)
            head_ticks, coder_ticks, length = ENCODE_REPLY.unpack_from(body)
            stream = bytearray(body[ENCODE_REPLY.size :])
            try:
                while len(stream) < length and self.resets == resets:
                    part = self.request(MSG_FETCH, LOAD_OFFSET.pack(len(stream)), reply_bytes=STREAM_CHUNK_BYTES)
                    if not part:
                        raise LinkError(f"the device sent an empty part of its stream at byte {len(stream)}")
                    stream += part
            except LinkError:
                if self.resets == resets:
                    raise  # a reset refuses FETCH (the stream is gone): start again below
            if self.resets == resets:
                break
        if len(stream) != length:
            raise LinkError(f"the device sent {len(stream)} bytes of a {length}-byte stream")
        return bytes(stream), head_ticks, coder_ticks
