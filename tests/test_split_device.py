"""The split network's device path: a head whose int8 output is the latent's symbols (split.head), the coding that
says which table codes each symbol (split.coder.Coding), and the split firmware that runs the head and sends the
output rANS-coded (ENCODE and FETCH, docs/protocol.md): byte for byte the stream the Python coder writes for
TFLM's symbols, on the Cortex-M4 (DSP kernels) and the Cortex-M3 (plain C)."""

import struct

import keras
import numpy as np
import pytest
from relay import RelayedTarget

from conftest import quantized_model
from tinyrobust.build.firmware import build_firmware, build_native, run_native
from tinyrobust.compile.graph import read_tflite
from tinyrobust.compile.model import compile_model
from tinyrobust.device import link
from tinyrobust.device.boards import load_board
from tinyrobust.device.counter import instructions_per_tick
from tinyrobust.device.link import Device, LinkError
from tinyrobust.device.pool import Pool, Worker
from tinyrobust.device.targets import start_emulator
from tinyrobust.errors import UserError
from tinyrobust.model.reference import dequantize, tflm_outputs
from tinyrobust.split import coder
from tinyrobust.split.entropy import gaussian_tables
from tinyrobust.split.head import with_symbol_output

L = keras.layers
INPUT_SHAPE = (16, 16, 1)
CHANNELS = 8
# Gaussian tables of a few scales, and the one each channel takes. Channel 0's is narrower than its symbols, so
# that some of them escape.
SCALES = [0.5, 2.0, 3.0]
CHANNEL_TABLE = [0, 1, 1, 1, 2, 1, 1, 2]


def head_layers(flatten: bool = False) -> list:
    """Two convolutions, the last one linear, with weights large enough for symbols of a few units."""
    # Seeded here: an initializer without a seed takes one from Python's random state when it is made.
    first, wide = keras.initializers.GlorotUniform(seed=1), keras.initializers.RandomNormal(stddev=1.5, seed=2)
    layers = [L.Conv2D(8, 3, padding="same", activation="relu", kernel_initializer=first),
              L.Conv2D(CHANNELS, 3, padding="same", kernel_initializer=wide)]  # fmt: skip
    return [*layers, L.Flatten()] if flatten else layers


def head_inputs(count: int = 20) -> np.ndarray:
    """Inputs over the whole int8 range, whose streams take more than one reply frame, then inputs 16 times
    smaller, whose streams fit one."""
    xq = np.random.default_rng(1).integers(-128, 128, (count, *INPUT_SHAPE)).astype(np.int8)
    xq[count // 2 :] //= 16
    return xq


@pytest.fixture(scope="module")
def head() -> bytes:
    return with_symbol_output(quantized_model(head_layers(), INPUT_SHAPE))


@pytest.fixture(scope="module")
def coding() -> coder.Coding:
    tables = [coder.table_from_pmf(pmf, offset) for pmf, offset in gaussian_tables(np.array(SCALES))]
    return coder.Coding(tables, CHANNEL_TABLE)


# --- The head ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flatten", [False, True], ids=["conv", "conv-reshape"])
def test_a_head_with_symbol_output_gives_the_rounded_float_outputs(flatten):
    layers = head_layers(flatten)
    tflite = quantized_model(layers, INPUT_SHAPE)
    patched = with_symbol_output(tflite)
    graph = read_tflite(patched)
    x_tensor, y_tensor = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    assert (y_tensor.scale.tolist(), y_tensor.zero_point.tolist()) == ([1.0], [0])
    assert read_tflite(tflite).tensors[graph.outputs[0]].scale.tolist() != [1.0]
    xq = head_inputs(8)
    symbols = tflm_outputs(patched, xq).astype(np.int64)
    # The layers hold the float weights the head was quantized from.
    y = keras.Sequential([keras.Input(INPUT_SHAPE), *layers]).predict(dequantize(xq, x_tensor), verbose=0)
    y = y.reshape(len(xq), -1)
    representable = np.abs(y) < 127
    assert representable.mean() > 0.99 and np.abs(symbols).max() > 5
    # The int8 head carries its quantization error into the symbols: most are the rounded float, none far off.
    error = np.abs(symbols - np.round(y))[representable]
    assert error.max() <= 2 and (error == 0).mean() > 0.8, (error.max(), (error == 0).mean())


def test_a_head_with_symbol_output_compiles_bit_exact_with_tflm(head, tmp_path):
    xq = head_inputs(8)
    exe = build_native(compile_model(head), tmp_path)
    outputs = np.frombuffer(run_native(exe, xq), np.int8).reshape(len(xq), -1)
    np.testing.assert_array_equal(outputs, tflm_outputs(head, xq).reshape(len(xq), -1))


def test_with_symbol_output_refuses_a_head_ending_in_softmax():
    tflite = quantized_model([L.Flatten(), L.Dense(4), L.Softmax()], (4, 4, 1))
    with pytest.raises(UserError, match="SOFTMAX"):
        with_symbol_output(tflite)


# --- The coding -------------------------------------------------------------------------------------------------


def test_coding_indexes_give_each_element_its_channels_table():
    tables = [coder.table_from_pmf(pmf, offset) for pmf, offset in gaussian_tables(np.array([0.5, 2.0, 8.0]))]
    coding = coder.Coding(tables, [2, 0, 1, 1])
    indexes = coding.indexes((1, 3, 2, 4))
    assert indexes.dtype == np.uint8 and indexes.shape == (1, 3, 2, 4)
    np.testing.assert_array_equal(indexes.reshape(-1), np.tile([2, 0, 1, 1], 6))  # element i: channel i % 4
    with pytest.raises(ValueError, match="4 channels"):
        coding.indexes((1, 3, 2, 3))
    with pytest.raises(ValueError, match="below 3"):
        coder.Coding(tables, [0, 3])


@pytest.mark.parametrize("dtype", [np.int8, np.int16])
def test_max_stream_bytes_holds_every_symbol_at_its_costliest_and_no_more(dtype):
    """The bound is met by its own worst case: each element the symbol of its type's range that costs the most
    with its table (its rarest symbol, or an escape at the range's far end), within a few bytes."""
    rng = np.random.default_rng(3)
    tables = [coder.table_from_pmf(pmf, offset) for pmf, offset in gaussian_tables(np.array([0.11, 0.7, 3.0, 40.0]))]
    tables.append(coder.table_from_pmf(rng.dirichlet(np.ones(9)), 200 if dtype == np.int16 else 5))
    coding = coder.Coding(tables, [4, 0, 1, 2, 3, 3])
    shape = (1, 7, 5, 6)
    info = np.iinfo(dtype)
    costliest = []
    for k, table in enumerate(tables):
        support = np.arange(table.offset, table.offset + table.size)
        frequencies = np.diff(table.cdf.astype(np.int64))[:-1]
        inside = (support >= info.min) & (support <= info.max)
        candidates = [int(support[inside][np.argmin(frequencies[inside])]), info.min, info.max]
        cost = [coder.ideal_bits(np.array([s]), tables, np.array([k])) for s in candidates]
        costliest.append(candidates[int(np.argmax(cost))])
    symbols = np.array(costliest, np.int16)[coding.indexes(shape)]
    stream = coder.encode(symbols, tables, coding.indexes(shape))
    bound = coding.max_stream_bytes(shape, dtype)
    assert len(stream) <= bound <= len(stream) * 1.01 + 4, (len(stream), bound)
    random = rng.integers(info.min, info.max + 1, shape).astype(np.int16)
    assert len(coder.encode(random, tables, coding.indexes(shape))) <= bound


def test_firmware_hash_follows_the_model_the_tables_and_the_channels(coding):
    model_hash = bytes(32)
    other_tables = coder.Coding(coding.tables[::-1], coding.channel_table)
    other_channels = coder.Coding(coding.tables, coding.channel_table[::-1])
    hashes = {coding.firmware_hash(model_hash), coding.firmware_hash(b"\1" * 32), model_hash,
              other_tables.firmware_hash(model_hash), other_channels.firmware_hash(model_hash)}  # fmt: skip
    assert len(hashes) == 5 and coding.firmware_hash(model_hash) == coding.firmware_hash(model_hash)


def test_a_split_build_refuses_an_output_that_is_not_symbols_or_a_coding_of_other_channels(head, coding, tmp_path):
    board = load_board("qemu-mps2-an386")
    not_symbols = compile_model(quantized_model(head_layers(), INPUT_SHAPE))
    with pytest.raises(UserError, match="scale 1 and zero point 0"):
        build_firmware(not_symbols, board, tmp_path, coding=coding)
    fewer = coder.Coding(coding.tables, coding.channel_table[:4])
    with pytest.raises(UserError, match="4 channels"):
        build_firmware(compile_model(head), board, tmp_path, coding=fewer)



def test_a_split_build_too_large_for_the_board_is_refused_with_both_numbers(head, tmp_path):
    """Tables of 65,534 symbols per channel (256 KB each) overflow the LM3S6965's 256 KB of flash: the refusal
    names what the firmware needs and what the board has."""
    wide = coder.table_from_pmf(np.full(65535, 1.0), -32767)
    coding = coder.Coding([wide], [0] * CHANNELS)
    board = load_board("qemu-lm3s6965evb")
    with pytest.raises(UserError, match=r"the firmware needs \d+ bytes of flash but qemu-lm3s6965evb has 262144"):
        build_firmware(compile_model(head), board, tmp_path, "semihosting", coding=coding)

# --- The host's side of ENCODE and FETCH, against a fake device that follows the protocol ----------------------


class FakeSplitDevice:
    """A serial port whose other end answers INFO, SESSION, ENCODE and FETCH as the firmware does, with a given
    stream; it can lose a reply, or reset (losing its session and stream) right after answering ENCODE."""

    def __init__(self, stream: bytes, lose_reply_to: int | None = None, reset_after_encode: bool = False):
        self.stream, self.lose_reply_to, self.reset_after_encode = stream, lose_reply_to, reset_after_encode
        self.session, self.encoded, self.requests = 0, b"", []
        self.replies = bytearray()
        self.timeout = 0.1

    @property
    def in_waiting(self) -> int:
        return len(self.replies)

    def write(self, frame: bytes) -> None:
        msg_type, seq, length = link.HEADER.unpack_from(frame, 2)
        payload = frame[7 : 7 + length]
        self.requests.append((msg_type, payload))
        reply_type = msg_type | link.MSG_REPLY
        if msg_type == link.MSG_INFO:
            body = link.INFO.pack(link.PROTOCOL_VERSION, 0, 64, 64, 64, 0, 25_000_000, self.session, bytes(32))
        elif msg_type == link.MSG_SESSION:
            (self.session,), body = struct.unpack("<I", payload), b""
        elif msg_type == link.MSG_ENCODE:
            self.encoded = self.stream
            body = struct.pack("<QQI", 100, 7, len(self.stream)) + self.stream[: link.STREAM_CHUNK_BYTES]
        elif msg_type == link.MSG_FETCH and struct.unpack("<I", payload)[0] < len(self.encoded):
            (offset,) = struct.unpack("<I", payload)
            body = self.encoded[offset : offset + link.STREAM_CHUNK_BYTES]
        else:
            reply_type, body = link.MSG_ERROR, b"\x04"  # no stream, or not that far: wrong payload length
        if len(self.requests) == self.lose_reply_to:
            return
        self.replies += link.encode_frame(reply_type, seq, body)
        if msg_type == link.MSG_ENCODE and self.reset_after_encode:
            self.reset_after_encode, self.session, self.encoded = False, 0, b""

    def read(self, size: int) -> bytes:
        data, self.replies = bytes(self.replies[:size]), self.replies[size:]
        return data

    def close(self) -> None:
        pass


def fetches(device: FakeSplitDevice) -> list[int]:
    return [struct.unpack("<I", p)[0] for t, p in device.requests if t == link.MSG_FETCH]


def test_encode_fetches_a_stream_longer_than_one_reply_in_parts():
    stream = bytes(np.random.default_rng(0).integers(0, 256, 2500, dtype=np.uint8))
    fake = FakeSplitDevice(stream)
    device = Device(fake, bytes_per_s=1e6)
    device.handshake(bytes(32))
    assert device.encode(b"\0" * 64) == (stream, 100, 7)
    assert fetches(fake) == [1024, 2048]


def test_encode_of_a_stream_that_fits_one_reply_fetches_nothing():
    fake = FakeSplitDevice(b"\x00\x00\x80\x00" + b"\x11" * 1020)
    device = Device(fake, bytes_per_s=1e6)
    device.handshake(bytes(32))
    assert device.encode(b"\0" * 64)[0] == fake.stream and fetches(fake) == []


def test_a_lost_fetch_reply_is_asked_again_with_the_same_sequence_number():
    fake = FakeSplitDevice(bytes(range(256)) * 6, lose_reply_to=4)  # INFO, SESSION, ENCODE, then the first FETCH
    device = Device(fake, bytes_per_s=1e6)
    device.handshake(bytes(32))
    assert device.encode(b"\0" * 64)[0] == fake.stream
    assert fetches(fake) == [1024, 1024] and device.retransmissions == 1


def test_a_device_reset_before_fetch_makes_encode_start_again():
    fake = FakeSplitDevice(bytes(range(256)) * 6, reset_after_encode=True)
    device = Device(fake, bytes_per_s=1e6)
    device.handshake(bytes(32))
    assert device.encode(b"\0" * 64)[0] == fake.stream
    assert device.resets == 1 and [t for t, _ in fake.requests].count(link.MSG_ENCODE) == 2


def test_encode_on_firmware_without_a_coding_says_so():
    port = FakeSplitDevice(b"")
    port.write = lambda frame: port.replies.extend(
        link.encode_frame(link.MSG_ERROR, link.HEADER.unpack_from(frame, 2)[1], b"\x03")
    )
    with pytest.raises(UserError, match="coding"):
        Device(port, bytes_per_s=1e6).encode(b"")


def test_a_fetch_the_device_keeps_refusing_without_a_reset_is_a_link_error():
    """For the pool to recover from, by reconnecting or restarting the device."""
    fake = FakeSplitDevice(bytes(2000))
    device = Device(fake, bytes_per_s=1e6, retries=1)
    device.handshake(bytes(32))
    answer = fake.write

    def answer_and_forget(frame):
        answer(frame)
        fake.encoded = b""  # so every FETCH is refused

    fake.write = answer_and_forget
    with pytest.raises(LinkError, match="wrong payload length"):
        device.encode(b"\0" * 64)


# --- On the emulated device -------------------------------------------------------------------------------------


@pytest.mark.emulator
@pytest.mark.parametrize(
    "board_name, channel", [("qemu-mps2-an386", "uart"), ("qemu-mps2-an385", "semihosting")], ids=["m4", "m3"]
)
def test_the_device_sends_the_stream_python_writes_for_tflms_symbols(head, coding, board_name, channel, tmp_path):
    """Both boards give the Python coder's bytes for TFLM's symbols, so the same stream: the Cortex-M4's DSP
    kernels and the Cortex-M3's plain loops agree. Through the pool, as a campaign would run it."""
    board = load_board(board_name)
    compiled = compile_model(head)
    firmware = build_firmware(compiled, board, tmp_path, channel, coding=coding)
    tables_bytes = sum(4 * len(t.cdf) + 12 for t in coding.tables) + compiled.output.nbytes  # cdfs, structs, indexes
    assert firmware.memory.coding_bytes == tables_bytes
    xq = head_inputs()
    symbols = tflm_outputs(head, xq).reshape(len(xq), *compiled.output.shape[1:])
    indexes = coding.indexes(symbols.shape[1:])
    tensors = [x.tobytes() for x in xq]
    pool = Pool([Worker(start_emulator(board, firmware.elf, channel), coding.firmware_hash(compiled.model_hash))])
    try:
        encoded = pool.infer_all(tensors, Worker.encode)
        inferred = pool.infer_all(tensors)  # the normal device path of the same firmware
    finally:
        pool.close()
    for (stream, head_ticks, coder_ticks), (output, _), y in zip(encoded, inferred, symbols, strict=True):
        assert output == y.tobytes()
        assert stream == coder.encode(y.astype(np.int16), coding.tables, indexes)
        np.testing.assert_array_equal(coder.decode(stream, coding.tables, indexes), y)
        assert head_ticks > 0 and coder_ticks > 0
    lengths = [len(stream) for stream, _, _ in encoded]
    assert max(lengths) > link.STREAM_CHUNK_BYTES >= min(lengths)  # fetched in parts, and in the reply alone
    assert max(lengths) <= coding.max_stream_bytes(compiled.output.shape)
    ipt = instructions_per_tick(board)
    head_instructions, coder_instructions = (np.median([a[k] for a in encoded]) * ipt for k in (1, 2))
    print(
        f"{board_name}: stream {np.median(lengths):.0f} B (min {min(lengths)}, max {max(lengths)}), head "
        f"{head_instructions:,.0f} and coder {coder_instructions:,.0f} instructions, tables "
        f"{firmware.memory.coding_bytes:,} B of flash"
    )


@pytest.mark.emulator
@pytest.mark.parametrize("fault", ["flip", "drop", "restart"])
def test_encode_survives_a_faulty_link_with_the_same_streams(head, coding, fault, tmp_path):
    """ENCODE and FETCH go through the link's recovery as INFER does: a damaged or lost frame is sent again, a
    killed emulator is restarted and the request made again, and every stream is the one a clean link gives."""
    board = load_board("qemu-mps2-an386")
    compiled = compile_model(head)
    firmware = build_firmware(compiled, board, tmp_path, "uart", coding=coding)
    xq = head_inputs()
    symbols = tflm_outputs(head, xq).reshape(len(xq), *compiled.output.shape[1:])
    indexes = coding.indexes(symbols.shape[1:])
    target = RelayedTarget(board, firmware.elf, fault, seed=7).start()
    # Replies here are a kilobyte or more, not the digits campaign's 30 bytes: faults a tenth as dense, none before
    # the first requests measured the device's work (which sets the timeouts), and none within a whole request and
    # reply of the last, so that each retried request gets through as a retried INFER does.
    target.relay.rate, target.relay.quiet_until, target.relay.grace = 0.0003, 3000, 3000
    worker = Worker(target, coding.firmware_hash(compiled.model_hash))
    try:
        encoded = Pool([worker]).infer_all([x.tobytes() for x in xq], Worker.encode)
    finally:
        worker.close()
    assert target.relay.injected > 0, f"no {fault} fault was injected"
    assert sum(vars(worker.link).values()) > 0, "the recovery was not counted"
    for (stream, _, _), y in zip(encoded, symbols, strict=True):
        assert stream == coder.encode(y.astype(np.int16), coding.tables, indexes)
