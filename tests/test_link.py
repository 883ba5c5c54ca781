"""The framing on both sides: the firmware's C parser (compiled natively) and the host's reader."""

import ctypes
import subprocess
import zlib

import pytest
import serial

from tinyrobust.assets import FIRMWARE
from tinyrobust.device.link import MSG_INFER, MSG_REPLY, Device, LinkError, encode_frame

FEED_MORE, FEED_FRAME, FEED_BAD_CRC, FEED_TOO_LONG = 0, 1, -1, -2


class Parser(ctypes.Structure):
    _fields_ = [
        ("buffer", ctypes.POINTER(ctypes.c_uint8)),
        ("capacity", ctypes.c_uint16),
        ("state", ctypes.c_uint8),
        ("header", ctypes.c_uint8 * 5),
        ("count", ctypes.c_uint16),
        ("crc_bytes", ctypes.c_uint8 * 4),
        ("type", ctypes.c_uint8),
        ("seq", ctypes.c_uint16),
        ("length", ctypes.c_uint16),
    ]


@pytest.fixture(scope="module")
def frame_lib(tmp_path_factory):
    lib = tmp_path_factory.mktemp("frame") / "libframe.so"
    src = FIRMWARE / "link" / "tr_frame.c"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o", str(lib), str(src)], check=True)
    return ctypes.CDLL(str(lib))


def feed(lib, capacity: int, data: bytes):
    buffer = (ctypes.c_uint8 * max(capacity, 1))()
    parser = Parser()
    lib.tr_parser_init(ctypes.byref(parser), buffer, capacity)
    events = []
    for byte in data:
        result = lib.tr_parser_feed(ctypes.byref(parser), byte)
        if result != FEED_MORE:
            events.append((result, parser.type, parser.seq, bytes(buffer[: parser.length])))
    return events


def test_c_crc_matches_zlib(frame_lib):
    frame_lib.tr_crc32_update.restype = ctypes.c_uint32
    for data in (b"", b"a", b"123456789", bytes(range(256)) * 3):
        crc = frame_lib.tr_crc32_update(ctypes.c_uint32(0xFFFFFFFF), data, len(data)) ^ 0xFFFFFFFF
        assert crc == zlib.crc32(data)


def test_c_parser_reads_host_frames_after_garbage(frame_lib):
    payload = bytes(range(64))
    stream = b"\x00\xa5\x13garbage\xa5" + encode_frame(MSG_INFER, 513, payload) + encode_frame(0x01, 514)
    events = feed(frame_lib, 64, stream)
    assert events == [(FEED_FRAME, MSG_INFER, 513, payload), (FEED_FRAME, 0x01, 514, b"")]


def test_c_parser_rejects_corrupt_and_oversize_frames(frame_lib):
    corrupt = bytearray(encode_frame(MSG_INFER, 7, b"abcd"))
    corrupt[9] ^= 0x10
    events = feed(
        frame_lib,
        8,
        bytes(corrupt) + encode_frame(MSG_INFER, 8, b"x" * 9) + encode_frame(MSG_INFER, 9, b"ok"),
    )
    assert [(e[0], e[2]) for e in events] == [(FEED_BAD_CRC, 7), (FEED_TOO_LONG, 8), (FEED_FRAME, 9)]
    assert events[-1][3] == b"ok"


def test_host_reader_skips_noise_stale_and_corrupt_replies():
    port = serial.serial_for_url("loop://", timeout=0.2)
    device = Device(port, bytes_per_s=1e6)
    device.seq = 41  # the next request is 42
    bad = bytearray(encode_frame(MSG_INFER | MSG_REPLY, 42, b"\x00" * 12))
    bad[-1] ^= 1
    # What the host reads back over the loop: its own request, noise, a stale reply, a corrupt one, the real one.
    port.write(b"\xa5\xa5noise" + encode_frame(MSG_INFER | MSG_REPLY, 40, b"\x01" * 12) + bytes(bad))
    port.write(encode_frame(MSG_INFER | MSG_REPLY, 42, (1234).to_bytes(8, "little") + b"\x05\x06\x07\x08"))
    output, ticks = device.infer(b"\x09" * 4)
    assert (output, ticks) == (b"\x05\x06\x07\x08", 1234)


def test_a_silent_device_ends_in_a_link_error_after_one_session_check_per_request():
    # The loop hands the host back its own requests, which answer nothing: a device that stopped (a crashed firmware).
    port = serial.serial_for_url("loop://", timeout=0.05)
    device = Device(port, bytes_per_s=1e6, retries=2)
    device.model_hash, device.work_s = b"\x00" * 32, 0.001  # a session to check, and short timeouts
    with pytest.raises(LinkError, match="failed after 3 attempts"):
        device.infer(b"\x09" * 4)
    assert device.retransmissions == 2 + 2  # the INFER's and its one session check's (INFO)
