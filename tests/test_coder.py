"""The split network's entropy coder: the numpy reference (tinyrobust.split.coder) and the firmware's tr_rans.c,
compiled natively with sanitizers and for the Cortex-M4, write the same bytes and read each other's streams."""

import math
import struct
import subprocess

import numpy as np
import pytest

from tinyrobust.assets import FIRMWARE
from tinyrobust.split.coder import (
    PRECISION,
    MalformedStream,
    Table,
    c_tables,
    decode,
    encode,
    ideal_bits,
    table_from_pmf,
)

INT16_EXTREMES = (-32768, 32767)


def gaussian_pmf(scale: float, half_width: int) -> np.ndarray:
    """A Gaussian rounded to the integers -half_width .. half_width, then the mass beyond them."""
    edges = (np.arange(-half_width, half_width + 2) - 0.5) / (scale * math.sqrt(2))
    cdf = 0.5 * (1 + np.array([math.erf(e) for e in edges]))
    inside = np.diff(cdf)
    return np.append(inside, max(0.0, 1 - inside.sum()))


def random_table(rng: np.random.Generator, wide: bool) -> Table:
    n = int(rng.integers(300, 5000)) if wide else int(rng.integers(0, 12))
    pmf = rng.dirichlet(np.full(n + 1, rng.choice([0.05, 1.0, 20.0])))
    pmf[rng.random(n + 1) < 0.1] = 0  # a zero probability still gets a frequency
    pmf[-1] += 1e-9
    return table_from_pmf(pmf, int(rng.integers(-32768, 32768 - n + 1)))


def sample(rng: np.random.Generator, tables: list[Table], indexes: np.ndarray, escapes: float = 0.05) -> np.ndarray:
    """Symbols drawn from their tables' own distributions, and a share `escapes` of them outside the support:
    the int16 extremes, the values next to the support, or anywhere else."""
    symbols = np.zeros(len(indexes), np.int64)
    for k in np.unique(indexes):
        table, where = tables[k], np.flatnonzero(indexes == k)
        u = rng.integers(0, 1 << PRECISION, len(where))
        index = np.searchsorted(table.cdf, u, side="right") - 1
        escaped = (index == table.size) | (rng.random(len(where)) < escapes)
        outside = [*INT16_EXTREMES, table.offset - 1, table.offset + table.size, *rng.integers(-32768, 32768, 4)]
        outside = [v for v in outside if not table.offset <= v < table.offset + table.size and -32768 <= v < 32768]
        symbols[where] = np.where(escaped, rng.choice(outside, len(where)), table.offset + index)
    return symbols.astype(np.int16)


def random_case(seed: int, count: int) -> tuple[list[Table], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    tables = [random_table(rng, wide=bool(k % 2)) for k in range(int(rng.integers(1, 5)))]
    indexes = rng.integers(0, len(tables), count).astype(np.uint8)
    symbols = sample(rng, tables, indexes)
    symbols[: min(count, 2)] = INT16_EXTREMES[: min(count, 2)]  # in or outside a support, they must round-trip
    return tables, indexes, symbols


def latent_case(seed: int, channels: int = 32, pixels: int = 320) -> tuple[list[Table], np.ndarray, np.ndarray]:
    """A realistic latent: one table per channel, each a Gaussian of its own scale over about 6 sigma, and
    symbols that are rounded draws of that Gaussian (so escapes come at the true tail mass)."""
    rng = np.random.default_rng(seed)
    scales = np.geomspace(0.3, 12, channels)
    tables = []
    for scale in scales:
        half_width = int(math.ceil(6 * scale))
        tables.append(table_from_pmf(gaussian_pmf(scale, half_width), -half_width))
    indexes = np.tile(np.arange(channels, dtype=np.uint8), pixels)
    symbols = np.rint(rng.normal(0, scales[indexes])).astype(np.int16)
    return tables, indexes, symbols


def corruptions(data: bytes, rng: np.random.Generator, count: int):
    for _ in range(count):
        corrupt = bytearray(data)
        for position in rng.integers(0, len(data), int(rng.integers(1, 3))):
            corrupt[position] ^= int(rng.integers(1, 256))
        yield bytes(corrupt)


# ---------------------------------------------------------------------------------------------------------
# Tables


def test_table_from_pmf_gives_positive_frequencies_summing_to_the_precision():
    rng = np.random.default_rng(0)
    pmfs = [
        np.array([1.0]),  # nothing but the escape
        np.array([0.0, 0.0, 1.0, 0.0]),
        np.array([1 - 1e-12, 1e-12]),
        np.full(65536, 1.0),  # the most bins there can be: every frequency is 1
        rng.dirichlet(np.full(3000, 0.02)),  # most probabilities far below 2^-16
        gaussian_pmf(3.0, 20) * 7,  # not normalized: scaled to sum to 1
    ]
    for pmf in pmfs:
        table = table_from_pmf(pmf, -(len(pmf) // 2))
        freq = np.diff(table.cdf.astype(np.int64))
        assert table.cdf.dtype == np.uint32 and table.size == len(pmf) - 1
        assert table.cdf[0] == 0 and table.cdf[-1] == 1 << PRECISION and freq.min() >= 1


def test_table_from_pmf_is_the_best_table_for_its_pmf():
    # The code length sum(p * -log2(freq / 2^16)) is a sum of convex terms, so frequencies that no single move of
    # one count from a bin to another improves are optimal among all tables of positive frequencies.
    rng = np.random.default_rng(1)
    for n, alpha in [(4, 1.0), (40, 0.05), (700, 0.3), (5000, 5.0)]:
        p = rng.dirichlet(np.full(n + 1, alpha))
        freq = np.diff(table_from_pmf(p, 0).cdf.astype(np.float64))
        gain = p * np.log2((freq + 1) / freq)
        cost = np.where(freq > 1, p * np.log2(freq / np.maximum(freq - 1, 1)), np.inf)
        assert gain.max() <= cost.min()
    p = gaussian_pmf(2.0, 12)
    freq = np.diff(table_from_pmf(p, -12).cdf.astype(np.float64))
    kl = float(np.sum(p * np.log2(p / (freq / (1 << PRECISION)))))
    # Bits per symbol lost to quantizing a Gaussian of scale 2: mostly the 2^-16 that each of its far bins needs.
    assert kl < 3e-4


def test_table_from_pmf_is_deterministic():
    pmf = np.random.default_rng(2).dirichlet(np.full(300, 0.1))
    assert np.array_equal(table_from_pmf(pmf, 5).cdf, table_from_pmf(pmf.copy(), 5).cdf)


@pytest.mark.parametrize(
    "pmf",
    [[], [[0.5, 0.5]], [0.5, -0.1, 0.6], [0.5, np.nan], [0.5, np.inf], [0.0, 0.0], np.full(65537, 1.0)],
    ids=["empty", "2-D", "negative", "nan", "inf", "all zero", "too many bins"],
)
def test_table_from_pmf_refuses_a_bad_pmf(pmf):
    with pytest.raises(ValueError, match="pmf"):
        table_from_pmf(np.array(pmf, dtype=np.float64), 0)


@pytest.mark.parametrize(
    "offset, cdf",
    [(0, [0, 65535]), (0, [0, 100, 100, 65536]), (0, [0, 200, 100, 65536]), (0, [65536]), (-32769, [0, 1, 65536]),
     (32767, [0, 1, 2, 65536]), (0, [0.0, 65536.0])],
    ids=["short of 2^16", "empty bin", "falling", "one entry", "below int16", "above int16", "floats"],
)  # fmt: skip
def test_a_table_refuses_a_cdf_that_cannot_code_every_symbol(offset, cdf):
    with pytest.raises(ValueError, match="table's"):
        Table(offset, np.array(cdf))


def test_c_tables_compile_beside_the_header(tmp_path):
    tables, _, _ = random_case(3, 0)
    source = tmp_path / "tables.c"
    source.write_text('#include "tr_rans.h"\n' + c_tables(tables, "latent_tables"))
    subprocess.run(
        ["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", f"-I{FIRMWARE / 'entropy'}", "-c", str(source), "-o",
         str(tmp_path / "tables.o")],
        check=True, capture_output=True,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# The Python coder


@pytest.mark.parametrize("seed", range(12))
def test_python_round_trip_over_random_tables_and_symbols_with_escapes(seed):
    tables, indexes, symbols = random_case(seed, 1500)
    decoded = decode(encode(symbols, tables, indexes), tables, indexes)
    assert decoded.dtype == np.int16
    np.testing.assert_array_equal(decoded, symbols)


def test_every_int16_symbol_round_trips_through_one_narrow_table():
    table = table_from_pmf(gaussian_pmf(1.0, 3), -3)
    symbols = np.arange(-32768, 32768, dtype=np.int16)
    indexes = np.zeros(len(symbols), np.uint8)
    np.testing.assert_array_equal(decode(encode(symbols, [table], indexes), [table], indexes), symbols)


def test_shapes_are_kept_and_empty_input_is_the_state_alone():
    tables, indexes, symbols = latent_case(0, channels=4, pixels=6)
    latent, latent_indexes = symbols.reshape(6, 4), indexes.reshape(6, 4)
    assert decode(encode(latent, tables, latent_indexes), tables, latent_indexes).shape == (6, 4)
    empty = encode(np.zeros(0, np.int16), tables, np.zeros(0, np.uint8))
    assert empty == (1 << 23).to_bytes(4, "little")
    assert decode(empty, tables, []).shape == (0,)


def test_encode_refuses_symbols_beyond_int16_and_indexes_beyond_the_tables():
    table = table_from_pmf(gaussian_pmf(1.0, 3), -3)
    with pytest.raises(ValueError, match="int16"):
        encode([40000], [table], [0])
    with pytest.raises(ValueError, match="pick one of the 1 tables"):
        encode([0], [table], [1])
    with pytest.raises(ValueError, match="one index per symbol"):
        encode([0, 1], [table], [0])
    with pytest.raises(ValueError, match="tables"):
        encode([0], [table] * 257, [0])


def test_stream_costs_its_state_and_a_fraction_of_a_permille_over_the_ideal_bits():
    # What a stream costs over the ideal: the initial state's 23 bits, which the encoder writes out, and the unused
    # top bits of the final state's 4 bytes: 23 to 32 bits. rANS's rounding with 2^16 precision below a state of
    # at least 2^23 adds next to nothing (measured: 27-30 bits in all on 192,000 symbols, about 73 KB).
    for tables, indexes, symbols in [latent_case(4), random_case(5, 5000)]:
        ideal = ideal_bits(symbols, tables, indexes)
        actual = 8 * len(encode(symbols, tables, indexes))
        assert ideal > 8 * 3000
        assert ideal <= actual <= ideal + 32 + 0.0002 * ideal, (actual, ideal)


def test_ideal_bits_agree_with_constriction_coding_the_same_frequencies():
    # An independent coder: constriction's ANS coder, given the quantized probabilities of our tables (freq / 2^16,
    # exact in its own 24-bit fixed point), codes the table indices of in-support symbols. Its size must match
    # ideal_bits (our sum of -log2 freq / 2^16, no bypass bits since nothing escapes), up to its 64-bit state
    # and 32-bit words: so ideal_bits counts the right intervals, and our stream is as short as a mature coder's.
    constriction = pytest.importorskip("constriction")
    tables, indexes, symbols = latent_case(6, channels=8, pixels=1000)
    inside = np.array([0 <= s - tables[k].offset < tables[k].size for s, k in zip(symbols, indexes, strict=True)])
    symbols, indexes = symbols[inside], indexes[inside]
    coder = constriction.stream.stack.AnsCoder()
    family = constriction.stream.model.Categorical(perfect=False)
    width = max(t.size for t in tables) + 1
    probabilities = np.zeros((len(symbols), width))
    for i, k in enumerate(indexes):
        freq = np.diff(tables[k].cdf.astype(np.float64))
        probabilities[i, : len(freq)] = freq / (1 << PRECISION)
    categories = np.array([s - tables[k].offset for s, k in zip(symbols, indexes, strict=True)], dtype=np.int32)
    coder.encode_reverse(categories, family, probabilities)
    ideal = ideal_bits(symbols, tables, indexes)
    assert abs(coder.num_bits() - ideal) <= 64 + 32 + 0.001 * ideal, (coder.num_bits(), ideal)
    assert abs(8 * len(encode(symbols, tables, indexes)) - coder.num_bits()) <= 64 + 32 + 0.001 * ideal


def test_python_decode_refuses_truncated_streams_and_accepts_only_real_encodings():
    tables, indexes, symbols = random_case(7, 60)
    data = encode(symbols, tables, indexes)
    for length in range(len(data)):
        with pytest.raises(MalformedStream):
            decode(data[:length], tables, indexes)
    with pytest.raises(MalformedStream):
        decode(data + b"\x00", tables, indexes)
    refused = 0
    for corrupt in corruptions(data, np.random.default_rng(8), 300):
        try:
            decoded = decode(corrupt, tables, indexes)
        except MalformedStream:
            refused += 1
        else:  # a corruption that decodes is the exact encoding of what it decodes to
            assert encode(decoded, tables, indexes) == corrupt
    assert refused >= 290


# ---------------------------------------------------------------------------------------------------------
# The C coder, native with sanitizers and for the Cortex-M4


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    exe = tmp_path_factory.mktemp("rans") / "rans_harness"
    command = [
        "gcc", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-std=c11", "-Wall",
        "-Wextra", "-Werror", f"-I{FIRMWARE / 'entropy'}", str(FIRMWARE / "entropy" / "tr_rans.c"),
        str(FIRMWARE / "native" / "rans_harness.c"), "-o", str(exe),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    return exe


def run_harness(exe, tables: list[Table], indexes, tail: bytes, *args) -> tuple[int, bytes]:
    """The harness's exit code and output; fails the test on anything the sanitizers report."""
    head = [struct.pack("<I", len(tables))]
    for t in tables:
        head += [struct.pack("<iI", t.offset, t.size), t.cdf.astype("<u4").tobytes()]
    indexes = np.asarray(indexes, np.uint8)
    stdin = b"".join([*head, struct.pack("<I", len(indexes)), indexes.tobytes(), tail])
    result = subprocess.run([str(exe), *map(str, args)], input=stdin, capture_output=True, timeout=60)
    assert result.stderr == b"", result.stderr.decode(errors="replace")
    return result.returncode, result.stdout


def c_encode(exe, tables, indexes, symbols, *capacity) -> bytes | None:
    code, out = run_harness(exe, tables, indexes, np.asarray(symbols, "<i2").tobytes(), "encode", *capacity)
    assert code in (0, 4)
    return out if code == 0 else None


def c_decode(exe, tables, indexes, data: bytes) -> np.ndarray | None:
    code, out = run_harness(exe, tables, indexes, data, "decode")
    assert code in (0, 3)
    return np.frombuffer(out, "<i2") if code == 0 else None


@pytest.mark.parametrize("seed", range(6))
def test_c_coder_writes_the_bytes_python_writes_and_each_reads_the_other(harness, seed):
    tables, indexes, symbols = random_case(100 + seed, [0, 1, 7, 300, 2000, 6000][seed])
    data = encode(symbols, tables, indexes)
    assert c_encode(harness, tables, indexes, symbols) == data
    np.testing.assert_array_equal(c_decode(harness, tables, indexes, data), symbols)
    np.testing.assert_array_equal(decode(data, tables, indexes), symbols)


def test_c_coder_on_a_realistic_latent_and_every_int16_symbol(harness):
    tables, indexes, symbols = latent_case(9)
    data = encode(symbols, tables, indexes)
    assert c_encode(harness, tables, indexes, symbols) == data
    np.testing.assert_array_equal(c_decode(harness, tables, indexes, data), symbols)
    table = table_from_pmf(gaussian_pmf(1.0, 3), -3)
    everything = np.arange(-32768, 32768, dtype=np.int16)
    zeros = np.zeros(len(everything), np.uint8)
    data = c_encode(harness, [table], zeros, everything)
    assert data == encode(everything, [table], zeros)
    np.testing.assert_array_equal(c_decode(harness, [table], zeros, data), everything)


def test_c_encoder_returns_zero_when_the_stream_does_not_fit(harness):
    tables, indexes, symbols = random_case(10, 200)
    data = encode(symbols, tables, indexes)
    assert c_encode(harness, tables, indexes, symbols, len(data)) == data
    for capacity in (len(data) - 1, 4, 3, 0):
        assert c_encode(harness, tables, indexes, symbols, capacity) is None
    assert c_encode(harness, tables, [], [], 3) is None
    assert c_encode(harness, tables, [], [], 4) == encode([], tables, [])


def test_c_decoder_refuses_malformed_streams_as_python_does_within_bounds(harness):
    # Under the sanitizers, with the stream in a buffer of its exact size: no read past its end, no overflow.
    tables, indexes, symbols = random_case(11, 25)
    data = encode(symbols, tables, indexes)
    for length in range(len(data)):
        assert c_decode(harness, tables, indexes, data[:length]) is None
    assert c_decode(harness, tables, indexes, data + b"\x00") is None
    escape = table_from_pmf([0.5, 0.5], 0)  # symbol 0 or the escape
    forged = [
        (1 << 23).to_bytes(4, "little"),  # a valid empty stream, given one symbol
        ((1 << 23) - 1).to_bytes(4, "little"),
        (1 << 31).to_bytes(4, "little"),
        bytes([0xFF] * 4),
    ]
    for stream in forged:
        assert c_decode(harness, [escape], [0], stream) is None
        with pytest.raises(MalformedStream):
            decode(stream, [escape], [0])
    for corrupt in corruptions(data, np.random.default_rng(12), 60):
        try:
            expected = decode(corrupt, tables, indexes)
        except MalformedStream:
            expected = None
        got = c_decode(harness, tables, indexes, corrupt)
        assert (got is None) == (expected is None)
        if got is not None:
            np.testing.assert_array_equal(got, expected)


def test_tr_rans_builds_for_cortex_m4_without_warnings_or_64_bit_division(tmp_path):
    obj = tmp_path / "tr_rans.o"
    subprocess.run(
        ["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-c",
         str(FIRMWARE / "entropy" / "tr_rans.c"), "-o", str(obj)],
        check=True, capture_output=True,
    )  # fmt: skip
    symbols = subprocess.run(["arm-none-eabi-nm", str(obj)], check=True, capture_output=True, text=True).stdout
    assert "tr_rans_encode" in symbols and "tr_rans_decode" in symbols
    for helper in ("__aeabi_uldivmod", "__aeabi_ldivmod", "__aeabi_lmul", "__aeabi_d", "__aeabi_f", "malloc"):
        assert helper not in symbols
