"""The entropy coder of the split network's latent: a numpy reference of firmware/entropy/tr_rans.c that writes the
same bytes. The stream format (32-bit rANS state, byte-wise renormalization, the escape of symbols outside a
table's support) is described in tr_rans.h; each constant here is the one of the same name there."""

import bisect
import hashlib
import heapq
import math
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PRECISION = 16
_ONE = 1 << PRECISION
_L = 1 << 23  # TR_RANS_L: the state stays in [_L, 2^31)
_CHUNK_BITS = 4
_CHUNK_FREQ = _ONE >> _CHUNK_BITS
_MAX_CHUNKS = 5  # an overflow within the int16 range is below 2^17
MAX_TABLES = 256  # the device's indexes are uint8
_INT16_MIN, _INT16_MAX = -(1 << 15), (1 << 15) - 1


class MalformedStream(ValueError):
    """A stream that is not the encoding of as many symbols as there are indexes, with these tables."""


@dataclass(frozen=True, eq=False)  # eq=False: arrays do not compare to one bool
class Table:
    """A quantized distribution over the symbols offset .. offset + size - 1 and an escape for every other int16.

    cdf (uint32, size + 2 entries) runs from 0 to 2^PRECISION, strictly increasing: symbol s takes
    [cdf[s - offset], cdf[s - offset + 1]), the escape the last interval [cdf[size], cdf[size + 1])."""

    offset: int
    cdf: np.ndarray

    def __post_init__(self) -> None:
        cdf = np.asarray(self.cdf)
        if cdf.ndim != 1 or len(cdf) < 2 or not np.issubdtype(cdf.dtype, np.integer):
            raise ValueError("a table's cdf must be a 1-D integer array of at least 2 entries (0 and 2^16).")
        if cdf[0] != 0 or cdf[-1] != _ONE or np.any(np.diff(cdf.astype(np.int64)) <= 0):
            raise ValueError("a table's cdf must rise strictly from 0 to 2^16, so that every symbol can be coded.")
        if self.offset < _INT16_MIN or self.offset + len(cdf) - 2 > _INT16_MAX + 1:
            raise ValueError(f"a table's support must lie in the int16 range, not {self.offset} + {len(cdf) - 2}.")
        cdf = cdf.astype(np.uint32)
        cdf.flags.writeable = False
        object.__setattr__(self, "offset", int(self.offset))
        object.__setattr__(self, "cdf", cdf)

    @property
    def size(self) -> int:
        """The number of symbols in the support (the escape not counted)."""
        return len(self.cdf) - 2


def table_from_pmf(pmf: np.ndarray, offset: int) -> Table:
    """The table closest in code length to pmf: the probabilities of the symbols offset, offset + 1, ..., then the
    tail mass (everything outside the support), quantized to frequencies of at least 1 summing to 2^PRECISION."""
    pmf = np.asarray(pmf, dtype=np.float64)
    if pmf.ndim != 1 or not 1 <= len(pmf) <= _ONE:
        raise ValueError("a pmf must be a 1-D array of 1 to 65536 probabilities: the support's, then the tail mass.")
    if not np.all(np.isfinite(pmf)) or np.any(pmf < 0) or pmf.sum() <= 0:
        raise ValueError("a pmf's probabilities must be finite, nonnegative and not all zero.")
    p = pmf / pmf.sum()
    freq = np.maximum(1, np.rint(p * _ONE)).astype(np.int64)
    # Rounding leaves the total off by a few counts (more where small probabilities were raised to 1). Fix it one
    # count at a time where that costs the fewest bits, sum(p * log2(2^16 / freq)); the cost is convex in each
    # count, so the greedy choice is the best one for each count. Ties go to the lowest index: deterministic.
    excess = int(freq.sum()) - _ONE
    if excess > 0:
        heap = [(p[i] * math.log2(f / (f - 1)), i) for i, f in enumerate(freq.tolist()) if f > 1]
        heapq.heapify(heap)
        for _ in range(excess):
            _, i = heapq.heappop(heap)
            freq[i] -= 1
            if freq[i] > 1:
                heapq.heappush(heap, (p[i] * math.log2(freq[i] / (freq[i] - 1)), i))
    elif excess < 0:
        heap = [(-p[i] * math.log2((f + 1) / f), i) for i, f in enumerate(freq.tolist())]
        heapq.heapify(heap)
        for _ in range(-excess):
            _, i = heapq.heappop(heap)
            freq[i] += 1
            heapq.heappush(heap, (-p[i] * math.log2((freq[i] + 1) / freq[i]), i))
    # Then move single counts between bins while that saves bits. Where no move does, no other frequencies do
    # better (the cost is a sum of convex terms); the greedy fix above leaves at most a few such moves.
    while True:
        gain = p * np.log2((freq + 1) / freq)
        cost = np.where(freq > 1, p * np.log2(freq / np.maximum(freq - 1, 1)), np.inf)
        i, j = int(np.argmax(gain)), int(np.argmin(cost))
        if gain[i] <= cost[j]:
            break
        freq[i] += 1
        freq[j] -= 1
    return Table(offset, np.concatenate([[0], np.cumsum(freq)]).astype(np.uint32))


def _check_indexes(tables: list[Table], indexes) -> np.ndarray:
    indexes = np.asarray(indexes)
    if not 1 <= len(tables) <= MAX_TABLES:
        raise ValueError(f"give 1 to {MAX_TABLES} tables (the device's indexes are uint8), not {len(tables)}.")
    if indexes.size and (not np.issubdtype(indexes.dtype, np.integer) or indexes.min() < 0 or
                         indexes.max() >= len(tables)):  # fmt: skip
        raise ValueError(f"indexes must be integers that pick one of the {len(tables)} tables.")
    return indexes


def _check(symbols, tables: list[Table], indexes) -> tuple[np.ndarray, np.ndarray]:
    """symbols and indexes flattened, after checking them: int16 symbols, one index into tables for each."""
    symbols, indexes = np.asarray(symbols), _check_indexes(tables, indexes)
    if symbols.shape != indexes.shape:
        raise ValueError(f"give one index per symbol: {indexes.shape} indexes for {symbols.shape} symbols.")
    if symbols.size and (not np.issubdtype(symbols.dtype, np.integer) or symbols.min() < _INT16_MIN or
                         symbols.max() > _INT16_MAX):  # fmt: skip
        raise ValueError("symbols must be integers in the int16 range [-32768, 32767].")
    return symbols.ravel(), indexes.ravel()


def _put(x: int, out: bytearray, start: int, freq: int) -> int:
    """The state after pushing [start, start + freq), its renormalization bytes appended to out (last first)."""
    x_max = ((_L >> PRECISION) << 8) * freq
    while x >= x_max:
        out.append(x & 0xFF)
        x >>= 8
    return ((x // freq) << PRECISION) + x % freq + start


def _overflow(symbol: int, table: Table) -> int:
    """The zig-zag overflow of a symbol outside the support: even above it, odd below it."""
    index = symbol - table.offset
    return (index - table.size) << 1 if index >= 0 else ((-1 - index) << 1) | 1


def _chunks(overflow: int) -> int:
    return (overflow.bit_length() + _CHUNK_BITS - 1) // _CHUNK_BITS


def encode(symbols, tables: list[Table], indexes) -> bytes:
    """The stream of symbols[i] coded with tables[indexes[i]] (any shape, the same for both), as tr_rans_encode."""
    symbols, indexes = _check(symbols, tables, indexes)
    cdfs = [t.cdf.tolist() for t in tables]
    x, out = _L, bytearray()
    for symbol, k in zip(reversed(symbols.tolist()), reversed(indexes.tolist()), strict=True):
        table, cdf = tables[k], cdfs[k]
        index = symbol - table.offset
        if 0 <= index < table.size:
            x = _put(x, out, cdf[index], cdf[index + 1] - cdf[index])
            continue
        overflow = _overflow(symbol, table)
        chunks = _chunks(overflow)
        for j in reversed(range(chunks)):
            x = _put(x, out, ((overflow >> (_CHUNK_BITS * j)) & 15) * _CHUNK_FREQ, _CHUNK_FREQ)
        x = _put(x, out, chunks * _CHUNK_FREQ, _CHUNK_FREQ)
        x = _put(x, out, cdf[table.size], _ONE - cdf[table.size])
    out.reverse()
    return x.to_bytes(4, "little") + bytes(out)


class _Decoder:
    def __init__(self, data: bytes):
        if len(data) < 4:
            raise MalformedStream(f"the stream has {len(data)} bytes, fewer than the 4 of its state.")
        self.data, self.pos = data, 4
        self.x = int.from_bytes(data[:4], "little")
        if not _L <= self.x < 1 << 31:
            raise MalformedStream(f"the stream's state {self.x:#x} lies outside [2^23, 2^31).")

    def pop(self, start: int, freq: int) -> None:
        x = freq * (self.x >> PRECISION) + (self.x & (_ONE - 1)) - start
        while x < _L:
            if self.pos == len(self.data):
                raise MalformedStream(f"the stream ends after {len(self.data)} bytes, before its symbols do.")
            x = (x << 8) | self.data[self.pos]
            self.pos += 1
        self.x = x

    def chunk(self) -> int:
        chunk = (self.x & (_ONE - 1)) // _CHUNK_FREQ
        self.pop(chunk * _CHUNK_FREQ, _CHUNK_FREQ)
        return chunk


def decode(data: bytes, tables: list[Table], indexes) -> np.ndarray:
    """The int16 symbols (in the shape of indexes) of a stream written by encode or tr_rans_encode; raises
    MalformedStream for anything else, as tr_rans_decode fails."""
    symbols, used = decode_prefix(data, tables, indexes)
    if used != len(data):
        raise MalformedStream("the stream does not end where its symbols do: it is corrupt or was cut.")
    return symbols


def decode_prefix(data: bytes, tables: list[Table], indexes) -> tuple[np.ndarray, int]:
    """The symbols of the stream at the start of data, and its length: a stream ends where its decoder's state
    is back to its initial value, so streams written one after another need no lengths between them."""
    indexes = _check_indexes(tables, indexes)
    shape, indexes = indexes.shape, indexes.ravel()
    cdfs = [t.cdf.tolist() for t in tables]
    decoder = _Decoder(bytes(data))
    symbols = []
    for k in indexes.tolist():
        table, cdf = tables[k], cdfs[k]
        index = bisect.bisect_right(cdf, decoder.x & (_ONE - 1)) - 1
        decoder.pop(cdf[index], cdf[index + 1] - cdf[index])
        if index < table.size:
            symbols.append(table.offset + index)
            continue
        chunks = decoder.chunk()
        if chunks > _MAX_CHUNKS:
            raise MalformedStream(f"an escape in the stream has {chunks} chunks, more than {_MAX_CHUNKS}.")
        values = [decoder.chunk() for _ in range(chunks)]
        if values and values[-1] == 0:
            raise MalformedStream("an escape in the stream has a zero top chunk, which no encoder writes.")
        overflow = sum(c << (_CHUNK_BITS * j) for j, c in enumerate(values))
        half = overflow >> 1
        symbol = table.offset - 1 - half if overflow & 1 else table.offset + table.size + half
        if not _INT16_MIN <= symbol <= _INT16_MAX:
            raise MalformedStream(f"an escape in the stream decodes to {symbol}, outside the int16 range.")
        symbols.append(symbol)
    if decoder.x != _L:
        raise MalformedStream("the stream does not end where its symbols do: it is corrupt or was cut.")
    return np.array(symbols, dtype=np.int16).reshape(shape), decoder.pos


class NativeDecoder:
    """tr_rans_decode compiled for this machine (build.firmware.build_decoder): the device's own C decoder, run on
    the host as a second, independent decoding of every stream, many streams to one process."""

    def __init__(self, exe: Path):
        self.exe = exe

    def decode_many(self, tables: list[Table], streams: list[tuple[np.ndarray, bytes]]) -> list[np.ndarray | None]:
        """The symbols of each (indexes, stream), in the indexes' shape, or None where tr_rans_decode refuses it."""
        head = [struct.pack("<I", len(tables))]
        head += [struct.pack("<iI", t.offset, t.size) + t.cdf.astype("<u4").tobytes() for t in tables]
        records = [struct.pack("<I", np.size(ix)) + np.asarray(ix, np.uint8).tobytes() + struct.pack("<I", len(d)) + d
                   for ix, d in streams]  # fmt: skip
        out = subprocess.run([str(self.exe)], input=b"".join(head + records), capture_output=True, check=True).stdout
        decoded, pos = [], 0
        for indexes, _ in streams:
            count = int(np.size(indexes))
            status = struct.unpack_from("<i", out, pos)[0]
            symbols = np.frombuffer(out, "<i2", count, pos + 4).reshape(np.shape(indexes))
            decoded.append(None if status else symbols.astype(np.int16))
            pos += 4 + 2 * count
        return decoded


def ideal_bits(symbols, tables: list[Table], indexes) -> float:
    """The code length the quantized tables give: sum of -log2 p over the symbols, for an escaped symbol the escape's
    plus its bypass bits (4 for the chunk count, 4 per chunk). encode's bytes * 8 exceed it by the coder's cost."""
    symbols, indexes = _check(symbols, tables, indexes)
    bits = 0.0
    for k in np.unique(indexes).tolist():
        table = tables[k]
        s = symbols[indexes == k].astype(np.int64)
        freq = np.diff(table.cdf.astype(np.int64))
        index = s - table.offset
        inside = (index >= 0) & (index < table.size)
        bits += float(np.sum(PRECISION - np.log2(freq[index[inside]])))
        escaped = s[~inside].tolist()
        bypass = sum(_CHUNK_BITS * (1 + _chunks(_overflow(v, table))) for v in escaped)
        bits += len(escaped) * (PRECISION - math.log2(freq[-1])) + bypass
    return bits


def c_tables(tables: list[Table], name: str) -> str:
    """C definitions of the tables as `const tr_cdf_table name[]` (with tr_rans.h included), for the firmware."""
    lines = []
    for k, table in enumerate(tables):
        values = ", ".join(map(str, table.cdf.tolist()))
        lines.append(f"static const uint32_t {name}_cdf{k}[{len(table.cdf)}] = {{{values}}};")
    entries = "".join(f"    {{{t.offset}, {t.size}, {name}_cdf{k}}},\n" for k, t in enumerate(tables))
    lines.append(f"const tr_cdf_table {name}[{len(tables)}] = {{\n{entries}}};")
    return "\n".join(lines) + "\n"


# A put of frequency f makes the big-number state (the 32-bit state times 256 per byte written) at most
# 2^16 / f * (1 + 2^-7) times larger: the state x it codes is at least 2^7 * f after renormalization, and the coded
# state is below 2^16 * (x + f) / f. Starting from 2^23 and ending at 2^23 or more, the bytes written after the
# 4-byte state, E, satisfy 8 * E < sum over puts of (16 - log2 f + _PUT_SLACK_BITS).
_PUT_SLACK_BITS = math.log2(1 + 2**-7)


def _worst_bits(table: Table, low: int, high: int) -> float:
    """The most any one symbol in [low, high] can add to the stream under the bound above, escapes included."""
    symbols = np.arange(low, high + 1, dtype=np.int64)
    freq = np.diff(table.cdf.astype(np.int64))
    index = symbols - table.offset
    inside = (index >= 0) & (index < table.size)
    bits = np.where(inside, PRECISION - np.log2(freq[np.clip(index, 0, table.size)]) + _PUT_SLACK_BITS, 0.0)
    # An escape: the escape interval, the chunk count and its chunks, each a put.
    overflow = np.where(index >= 0, (index - table.size) << 1, ((-1 - index) << 1) | 1)
    chunks = sum((overflow >> (_CHUNK_BITS * j)) > 0 for j in range(_MAX_CHUNKS))
    escape = PRECISION - math.log2(int(freq[-1])) + _CHUNK_BITS * (1 + chunks) + (2 + chunks) * _PUT_SLACK_BITS
    return float(np.max(np.where(inside, bits, escape)))


@dataclass(frozen=True, eq=False)
class Coding:
    """How a split build codes its head's output tensor, the latent's integer symbols: element i of the tensor in
    NHWC order is coded with tables[channel_table[i % channels]], one table per channel for a factorized prior."""

    tables: list[Table]
    channel_table: list[int]

    def __post_init__(self) -> None:
        if not 1 <= len(self.tables) <= MAX_TABLES:
            raise ValueError(f"give 1 to {MAX_TABLES} tables (the device's indexes are uint8), not {len(self.tables)}.")
        if not self.channel_table or any(not 0 <= int(k) < len(self.tables) for k in self.channel_table):
            raise ValueError(f"give each channel a table index below {len(self.tables)}, for at least one channel.")
        object.__setattr__(self, "tables", list(self.tables))
        object.__setattr__(self, "channel_table", [int(k) for k in self.channel_table])

    @property
    def channels(self) -> int:
        return len(self.channel_table)

    def indexes(self, shape) -> np.ndarray:
        """Every element's table index (uint8) for a latent of this shape (NHWC, or any shape whose last axis is the
        channels): what encode and decode take, and what the firmware holds."""
        shape = tuple(int(n) for n in shape)
        if not shape or shape[-1] != self.channels:
            raise ValueError(f"the latent's last axis must be its {self.channels} channels, not shape {shape}.")
        return np.broadcast_to(np.array(self.channel_table, dtype=np.uint8), shape).copy()

    def max_stream_bytes(self, shape, dtype=np.int8) -> int:
        """The most bytes a latent of this shape and integer type can take: every element its table's costliest
        symbol of the type's range (an escape, for any table narrower than the range), through the bound above."""
        shape = self.indexes(shape).shape  # checks it
        info = np.iinfo(dtype)
        per_table = {k: _worst_bits(self.tables[k], info.min, info.max) for k in set(self.channel_table)}
        pixels = int(np.prod(shape, dtype=np.int64)) // self.channels
        bits = pixels * sum(per_table[k] for k in self.channel_table)
        return 4 + math.floor(bits / 8) + 1  # + 1: room for rounding in the float sum

    def firmware_hash(self, model_hash: bytes) -> bytes:
        """The hash a split firmware reports in INFO: the model's, extended with the tables and the channels' table
        indexes, so that a device coding with other tables fails the handshake."""
        digest = hashlib.sha256(model_hash + b"\0tinyrobust-coding\0")
        digest.update(np.array(self.channel_table, dtype="<u2").tobytes())
        for table in self.tables:
            digest.update(np.array([table.offset, table.size], dtype="<i4").tobytes())
            digest.update(table.cdf.astype("<u4").tobytes())
        return digest.digest()

    # The same interface as HyperpriorCoding's, on the head's outputs: here only the latent.
    symbol_outputs = 1

    def encode(self, outputs: list[np.ndarray]) -> bytes:
        """The stream the device sends for one input, from the head's outputs (the latent)."""
        return encode(outputs[0], self.tables, self.indexes(outputs[0].shape))

    def decode(self, stream: bytes, shapes: list[tuple], hyper_decoder=None) -> list[np.ndarray]:
        """The latent a stream carries, in the given shape (the head's first output's)."""
        return [decode(stream, self.tables, self.indexes(shapes[0]))]

    def ideal_bits(self, outputs: list[np.ndarray]) -> float:
        return ideal_bits(outputs[0], self.tables, self.indexes(outputs[0].shape))

    def decode_native(self, native: NativeDecoder, streams: list[bytes], shapes: list[tuple], hyper_decoder=None):
        """decode's result for each stream, by the native decoder; None for a stream it refuses."""
        indexes = self.indexes(shapes[0])
        return [None if y is None else [y] for y in native.decode_many(self.tables, [(indexes, s) for s in streams])]


@dataclass(frozen=True, eq=False)
class HyperpriorCoding:
    """How a split build codes a mean-scale hyperprior head's outputs: the latent y (int8, NHWC), the side latent
    z, and the hyper-decoder's output h (int8), whose first `channels` channels are y's means and the others its
    scales before the softplus.

    The stream is z's, coded with `z`'s factorized tables, followed by y's: each element as the symbol
    y - means[m + 128] with gaussian[scales[s + 128]], where m and s are the element's mean and scale in h. The
    two lookup tables turn h's int8 values into what the float model computes from them (the rounded mean, and
    the Gaussian table of the scale), once at compile time. The receiver decodes z, runs the hyper-decoder on it
    to get h, and decodes y with it."""

    z: Coding
    gaussian: list[Table]
    means: np.ndarray  # int16, 256 entries: the rounded mean for each int8 value of h
    scales: np.ndarray  # uint8, 256 entries: the index into gaussian for each int8 value of h

    symbol_outputs = 2  # y and z; h is only read by the coder

    def __post_init__(self) -> None:
        if not 1 <= len(self.z.tables) + len(self.gaussian) <= MAX_TABLES:
            raise ValueError(f"give at most {MAX_TABLES} tables in all (the device's indexes are uint8).")
        means, scales = np.asarray(self.means), np.asarray(self.scales)
        if means.shape != (256,) or scales.shape != (256,) or scales.max() >= len(self.gaussian):
            raise ValueError("give a mean and a Gaussian table index for each of the 256 int8 values.")
        object.__setattr__(self, "gaussian", list(self.gaussian))
        object.__setattr__(self, "means", means.astype(np.int16))
        object.__setattr__(self, "scales", scales.astype(np.uint8))

    def lookup(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rounded mean and the Gaussian table index of each element of y, from the hyper-decoder's output h
        (int8): its first half of channels looked up in means, its second in scales."""
        mean, scale = np.split(np.asarray(h).astype(np.int16) + 128, 2, axis=-1)
        return self.means[mean], self.scales[scale]

    def y_symbols(self, y: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """y's symbols and their Gaussian table indexes, from y and the hyper-decoder's output h (int8)."""
        means, indexes = self.lookup(h)
        if means.shape != y.shape:
            raise ValueError(f"the hyper-decoder's output {h.shape} must give a mean and a scale per element of y.")
        return y.astype(np.int16) - means, indexes

    def encode(self, outputs: list[np.ndarray]) -> bytes:
        y, z, h = outputs
        symbols, indexes = self.y_symbols(y, h)
        return self.z.encode([z]) + encode(symbols, self.gaussian, indexes)

    def decode(self, stream: bytes, shapes: list[tuple], hyper_decoder) -> list[np.ndarray]:
        """(y, z) from a stream, given their shapes and the hyper-decoder: z's int8 values -> h's."""
        z, used = decode_prefix(stream, self.z.tables, self.z.indexes(shapes[1]))
        means, indexes = self.lookup(hyper_decoder(z.astype(np.int8)))
        symbols = decode(stream[used:], self.gaussian, indexes.reshape(shapes[0]))
        y = symbols.astype(np.int32) + means.reshape(shapes[0])
        if y.min(initial=0) < -128 or y.max(initial=0) > 127:
            raise MalformedStream("the stream decodes to a latent outside the int8 range.")
        return [y.astype(np.int16), z]

    def decode_native(self, native: NativeDecoder, streams: list[bytes], shapes: list[tuple], hyper_decoder):
        """decode's result for each stream, by the native decoder; None for a stream it refuses. z's stream ends
        where the Python decoder's state is back to its start; the native decoder then checks that it is exactly
        the encoding of z, and decodes y with the means and scales the hyper-decoder gives for the z it decoded."""
        z_indexes = self.z.indexes(shapes[1])
        ends = []
        for stream in streams:
            try:
                ends.append(decode_prefix(stream, self.z.tables, z_indexes)[1])
            except MalformedStream:
                ends.append(None)
        zs = self.z.decode_native(native, [s[:e or 0] for s, e in zip(streams, ends, strict=True)], [shapes[1]])
        jobs, means = [], []
        for stream, end, z in zip(streams, ends, zs, strict=True):
            if end is None or z is None:
                jobs.append((np.zeros(0, np.uint8), b""))
                means.append(None)
                continue
            mean, indexes = self.lookup(hyper_decoder(z[0].astype(np.int8)))
            jobs.append((indexes.reshape(shapes[0]), stream[end:]))
            means.append(mean.reshape(shapes[0]))
        decoded = []
        for z, mean, symbols in zip(zs, means, native.decode_many(self.gaussian, jobs), strict=True):
            ok = mean is not None and symbols is not None
            decoded.append([(symbols.astype(np.int32) + mean).astype(np.int16), z[0]] if ok else None)
        return decoded

    def ideal_bits(self, outputs: list[np.ndarray]) -> float:
        y, z, h = outputs
        symbols, indexes = self.y_symbols(y, h)
        return self.z.ideal_bits([z]) + ideal_bits(symbols, self.gaussian, indexes)

    def max_stream_bytes(self, y_shape, z_shape) -> int:
        """The most bytes the stream can take, z's and y's bounds added: every y symbol (an int8 minus a mean)
        its costliest under the widest-reaching of the tables the lookup can pick."""
        low, high = -128 - int(self.means.max()), 127 - int(self.means.min())
        worst = max(_worst_bits(self.gaussian[k], low, high) for k in set(self.scales.tolist()))
        y_bits = int(np.prod(y_shape, dtype=np.int64)) * worst
        return self.z.max_stream_bytes(z_shape) + 4 + math.floor(y_bits / 8) + 1

    def firmware_hash(self, model_hash: bytes) -> bytes:
        """As Coding.firmware_hash, over z's coding, the Gaussian tables and both lookup tables."""
        digest = hashlib.sha256(self.z.firmware_hash(model_hash) + b"\0tinyrobust-hyperprior\0")
        digest.update(self.means.astype("<i2").tobytes() + self.scales.tobytes())
        for table in self.gaussian:
            digest.update(np.array([table.offset, table.size], dtype="<i4").tobytes())
            digest.update(table.cdf.astype("<u4").tobytes())
        return digest.digest()
