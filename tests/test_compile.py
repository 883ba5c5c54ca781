"""The compiler's arithmetic on its own, against the values TFLM's Prepare and TensorFlow's formulas give: the arena
planner, the requantization multipliers and shifts, activation ranges and padding. Fast: no C build, no emulator."""

import itertools
import math

import numpy as np
import pytest

from tinyrobust.compile.arithmetic import (
    Unsupported,
    activation_range,
    input_radius,
    int16_multiplier,
    out_size_and_padding,
    quantize_multiplier,
    round_half_away,
    small_multiplier,
)
from tinyrobust.compile.graph import SAME, VALID, Tensor, fold_shape_arithmetic, read_tflite
from tinyrobust.compile.model import compile_model
from tinyrobust.compile.planner import ALIGNMENT, Buffer, Tie, plan_arena

# ---------------------------------------------------------------------------------------------------------
# The arena planner


def assert_valid_plan(
    buffers: list[Buffer], size: int, offsets: dict[int, int], ties: list[Tie] | tuple[Tie, ...] = ()
) -> None:
    """Every buffer aligned and inside the arena; no two buffers live at the same step share a byte, but a tied pair
    at its shift."""
    assert set(offsets) == {b.key for b in buffers}
    for b in buffers:
        assert offsets[b.key] % ALIGNMENT == 0
        assert offsets[b.key] + b.size <= size
    tied = {frozenset((t.output, t.inside)) for t in ties if offsets[t.inside] == offsets[t.output] + t.shift}
    for a, b in itertools.combinations(buffers, 2):
        if frozenset((a.key, b.key)) in tied:
            continue
        if a.first <= b.last and b.first <= a.last:
            apart = offsets[a.key] + a.size <= offsets[b.key] or offsets[b.key] + b.size <= offsets[a.key]
            assert apart, f"buffers {a} and {b} are live together and overlap"


def test_planner_reuses_the_bytes_of_buffers_that_are_no_longer_live():
    # a chain: each step reads the previous buffer and writes the next
    buffers = [Buffer(0, 100, 0, 1), Buffer(1, 60, 1, 2), Buffer(2, 100, 2, 3), Buffer(3, 10, 3, 4)]
    size, offsets = plan_arena(buffers)
    assert offsets == {0: 0, 2: 0, 1: 112, 3: 112}  # 100 bytes take 112 with the alignment
    assert size == 112 + 64
    assert_valid_plan(buffers, size, offsets)


def test_planner_places_the_largest_buffer_first_and_aligns_each_to_16_bytes():
    buffers = [Buffer(0, 1, 0, 5), Buffer(1, 17, 0, 5), Buffer(2, 33, 0, 5)]  # all live together
    size, offsets = plan_arena(buffers)
    assert offsets == {2: 0, 1: 48, 0: 80}
    assert size == 96


def test_planner_fills_a_gap_left_between_two_buffers():
    # 0 and 2 live throughout, 1 (between them) dies early: 3, born later, takes 1's place
    buffers = [Buffer(0, 64, 0, 9), Buffer(1, 64, 0, 2), Buffer(2, 64, 0, 9), Buffer(3, 48, 5, 9)]
    size, offsets = plan_arena(buffers)
    assert offsets[3] == offsets[1]
    assert size == 3 * 64
    assert_valid_plan(buffers, size, offsets)


def test_planner_never_overlaps_live_buffers_over_random_lifetimes():
    rng = np.random.default_rng(0)
    for _ in range(200):
        buffers = []
        for key in range(int(rng.integers(1, 12))):
            first = int(rng.integers(0, 10))
            buffers.append(Buffer(key, int(rng.integers(1, 300)), first, first + int(rng.integers(0, 4))))
        size, offsets = plan_arena(buffers)
        assert_valid_plan(buffers, size, offsets)
        busiest = max(
            sum(-(-b.size // ALIGNMENT) * ALIGNMENT for b in buffers if b.first <= step <= b.last) for step in range(14)
        )
        assert size >= busiest


def test_planner_places_a_tied_input_inside_its_output_at_the_shift():
    # step 1 reads 1 (64 B) for the last time and writes 2 (128 B) over it, 64 bytes in: 192 B, not 64 + 64 + 128
    buffers = [Buffer(0, 64, 0, 1), Buffer(1, 64, 0, 1), Buffer(2, 128, 1, 2)]
    ties = [Tie(2, 1, 64)]
    size, offsets = plan_arena(buffers, ties)
    assert offsets[1] == offsets[2] + 64
    assert size == 192
    assert_valid_plan(buffers, size, offsets, ties)


def test_planner_chains_ties_into_one_group():
    # a layer written over its input, three times: one buffer's bytes
    buffers = [Buffer(k, 100, k, k + 1) for k in range(4)]
    ties = [Tie(k + 1, k, 0) for k in range(3)]
    size, offsets = plan_arena(buffers, ties)
    assert set(offsets.values()) == {0} and size == 112


def test_planner_drops_a_tie_that_would_overlap_other_live_buffers():
    # 0 and 1 are live together; tying 2 over 1 and 1 over 0 would put 0 and 1 in the same bytes
    buffers = [Buffer(0, 32, 0, 2), Buffer(1, 32, 0, 1), Buffer(2, 32, 1, 3)]
    ties = [Tie(2, 1, 0), Tie(2, 0, 0)]
    size, offsets = plan_arena(buffers, ties)
    assert offsets[2] == offsets[1] and offsets[0] != offsets[1]
    assert_valid_plan(buffers, size, offsets, ties)


def test_planner_with_random_ties_never_overlaps_untied_live_buffers():
    rng = np.random.default_rng(1)
    for _ in range(200):
        buffers = []
        for key in range(int(rng.integers(2, 10))):
            first = int(rng.integers(0, 8))
            buffers.append(Buffer(key, int(rng.integers(1, 300)), first, first + int(rng.integers(0, 3))))
        ties = [
            Tie(int(a), int(b), int(rng.integers(0, 4)) * ALIGNMENT)
            for a, b in rng.integers(0, len(buffers), (3, 2))
            if a != b
        ]
        size, offsets = plan_arena(buffers, ties)
        assert_valid_plan(buffers, size, offsets, ties)


def test_planner_of_an_empty_model_is_an_empty_arena():
    assert plan_arena([]) == (0, {})


def test_compiled_model_keeps_every_live_tensor_apart(digits):
    """The lifetimes the compiler derives from its schedule: a tensor lives from the step that writes it to the
    last that reads it (the input from the start, the output to the end)."""
    compiled = compile_model(digits.tflite)
    graph = read_tflite(digits.tflite)
    fold_shape_arithmetic(graph)
    first, last = {compiled.input.index: 0}, {}
    for i, step in enumerate(compiled.steps):
        for t in [*step.inputs, step.output]:
            if t in compiled.offsets:
                first.setdefault(t, i)
                last[t] = i
    last[compiled.output.index] = len(compiled.steps)
    buffers = [Buffer(t, graph.tensors[t].nbytes, first[t], last[t]) for t in first]
    # the depthwise layer (its 8x8 map fits one patch) writes over its input, which it reads for the last time
    ties = [
        Tie(step.output, step.inputs[0], 0) for step in compiled.steps if step.function == "tr_depthwise3x3_s8_opt"
    ]
    assert ties and all(last[t.inside] == first[t.output] for t in ties)
    assert_valid_plan(buffers, compiled.arena_bytes, {t: compiled.offsets[t] for t in first}, ties)
    aligned_ends = [compiled.offsets[b.key] + -(-b.size // ALIGNMENT) * ALIGNMENT for b in buffers]
    assert compiled.arena_bytes == max(aligned_ends) == 1280  # TFLM's arena head for this model: 2048


# ---------------------------------------------------------------------------------------------------------
# Requantization multipliers and shifts


def tflm_requantize(x: int, multiplier: int, shift: int) -> int:
    """TFLM's MultiplyByQuantizedMultiplier (two roundings) in Python integers: the rounded high half of
    2 * x * multiplier (C's division truncates), then a shift right rounding half away from zero."""
    ab = x * (1 << max(shift, 0)) * multiplier
    nudged = ab + (1 << 30 if ab >= 0 else 1 - (1 << 30))
    high = nudged // (1 << 31) if nudged >= 0 else -(-nudged // (1 << 31))
    right = max(-shift, 0)
    mask = (1 << right) - 1
    return (high >> right) + ((high & mask) > (mask >> 1) + (high < 0))


@pytest.mark.parametrize(
    "real, expected",
    [
        (0.0, (0, 0)),
        (1.0, (1 << 30, 1)),
        (0.5, (1 << 30, 0)),
        (2.0, (1 << 30, 2)),
        (0.25, (1 << 30, -1)),
        (2.0**-31, (1 << 30, -30)),
        (2.0**-32, (1 << 30, -31)),  # the smallest shift kept
        (2.0**-33, (0, 0)),  # below 2^-32: flushed to zero, as TFLM does
        (1e-12, (0, 0)),
        (1 - 2.0**-20, ((1 << 31) - (1 << 11), 0)),
        (1 - 2.0**-40, (1 << 30, 1)),  # q rounds up to 2^31: halved, the shift one more
        (0.75, (3 << 29, 0)),
        (0.1, (1717986918, -3)),
        (1000.0, (2097152000, 10)),
    ],
)
def test_quantize_multiplier_gives_tflms_pairs(real, expected):
    assert quantize_multiplier(real) == expected


def test_quantize_multiplier_reproduces_the_float_value_within_half_a_step():
    rng = np.random.default_rng(1)
    for real in np.exp(rng.uniform(math.log(2.0**-30), math.log(2.0**10), 2000)):
        multiplier, shift = quantize_multiplier(float(real))
        assert 1 << 30 <= multiplier < 1 << 31
        assert abs(multiplier * 2.0 ** (shift - 31) - real) <= 2.0 ** (shift - 32)


def test_requantizing_with_the_pair_is_the_rounded_product_within_one():
    rng = np.random.default_rng(2)
    for real in [0.0037, 0.25, 0.5, 0.9999, 1.5, 7.3]:
        multiplier, shift = quantize_multiplier(real)
        for x in rng.integers(-(1 << 20), 1 << 20, 200):
            assert abs(tflm_requantize(int(x), multiplier, shift) - round(int(x) * real)) <= 1
    # the doubling high multiply rounds ties up, the shift rounds them away from zero
    assert tflm_requantize(3, *quantize_multiplier(0.5)) == 2
    assert tflm_requantize(-3, *quantize_multiplier(0.5)) == -1
    assert tflm_requantize(6, *quantize_multiplier(0.25)) == 2
    assert tflm_requantize(-6, *quantize_multiplier(0.25)) == -2
    assert tflm_requantize(1000, *quantize_multiplier(1.0)) == 1000


def test_small_multiplier_refuses_factors_outside_zero_to_one():
    assert small_multiplier(0.5) == (1 << 30, 0)
    for real in (0.0, 1.0, 1.5, -0.25):
        with pytest.raises(Unsupported, match="TFLM needs it in"):
            small_multiplier(real)


def test_int16_multiplier_rounds_to_the_top_16_bits_and_saturates():
    assert int16_multiplier(1 << 30) == 1 << 14
    assert int16_multiplier((1 << 30) + (1 << 15)) == (1 << 14) + 1  # half rounds up
    assert int16_multiplier((1 << 31) - 1) == 32767


def test_round_half_away_from_zero():
    assert [round_half_away(v) for v in (2.5, -2.5, 0.5, -0.5, 1.49999, -1.5, 0.0)] == [3, -3, 1, -1, 1, -2, 0]


def test_input_radius_is_tflms_calculate_input_radius():
    assert input_radius(4, 0) == 15 << 27
    assert input_radius(4, 20) == 15 * 128
    assert input_radius(5, 23) == 31 * 8  # the int8 softmax's diff_min, negated
    assert input_radius(5, 30) == 1  # 31 / 16 rounded down


def tensor(type_name: str, scale: float, zero_point: int) -> Tensor:
    return Tensor(0, "t", (1, 4), type_name, np.array([scale], np.float32), np.array([zero_point]))


@pytest.mark.parametrize(
    "activation, out, expected",
    [
        (0, tensor("int8", 0.1, 3), (-128, 127)),  # NONE
        (1, tensor("int8", 0.1, -5), (-5, 127)),  # RELU: the zero point
        (3, tensor("int8", 1 / 32, -128), (-128, 64)),  # RELU6: 6 * 32 above the zero point
        (3, tensor("int8", 0.01, 0), (0, 127)),  # RELU6 beyond the int8 range
        (2, tensor("int8", 1 / 64, 10), (-54, 74)),  # RELU_N1_TO_1
        (1, tensor("int16", 0.001, 0), (0, 32767)),
        (3, tensor("int16", 1 / 4096, 0), (0, 24576)),
    ],
)
def test_activation_range_is_the_quantized_bounds_clamped_to_the_type(activation, out, expected):
    assert activation_range(activation, out) == expected


def test_activation_range_refuses_tanh_and_sign_bit():
    for activation, name in ((4, "TANH"), (5, "SIGN_BIT")):
        with pytest.raises(Unsupported, match=f"fused activation {name}"):
            activation_range(activation, tensor("int8", 0.1, 0))


# ---------------------------------------------------------------------------------------------------------
# Output size and padding


def tf_out_size_and_padding(padding: int, size: int, k: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's formulas (tf.nn.convolution): SAME gives ceil(size / stride) outputs and pads the total
    shortfall, the smaller half before; VALID gives ceil((size - effective + 1) / stride) and no padding."""
    effective = (k - 1) * dilation + 1
    if padding == SAME:
        out = math.ceil(size / stride)
        return out, max((out - 1) * stride + effective - size, 0) // 2
    return math.ceil((size - effective + 1) / stride), 0


@pytest.mark.parametrize(
    "padding, size, k, stride, dilation, expected",
    [
        (SAME, 9, 3, 1, 1, (9, 1)),
        (SAME, 9, 3, 2, 1, (5, 1)),
        (SAME, 10, 3, 2, 1, (5, 0)),  # the one padding element goes after
        (SAME, 8, 2, 2, 1, (4, 0)),
        (SAME, 7, 5, 1, 1, (7, 2)),
        (SAME, 7, 3, 1, 2, (7, 2)),  # dilation 2: a 5-wide window
        (SAME, 1, 7, 3, 1, (1, 3)),
        (VALID, 13, 5, 2, 1, (5, 0)),
        (VALID, 11, 5, 2, 1, (4, 0)),
        (VALID, 7, 3, 1, 2, (3, 0)),
        (VALID, 5, 5, 1, 1, (1, 0)),  # a global pool
    ],
)
def test_out_size_and_padding_known_cases(padding, size, k, stride, dilation, expected):
    assert out_size_and_padding(padding, size, k, stride, dilation) == expected


def test_out_size_and_padding_is_tensorflows_formula_over_a_sweep():
    for padding, size, k, stride, dilation in itertools.product((SAME, VALID), range(1, 20), range(1, 6),
                                                                range(1, 4), range(1, 4)):  # fmt: skip
        if padding == VALID and (k - 1) * dilation + 1 > size:
            continue  # no output: the converter never emits it
        expected = tf_out_size_and_padding(padding, size, k, stride, dilation)
        assert out_size_and_padding(padding, size, k, stride, dilation) == expected, (padding, size, k, stride)


def test_out_size_and_padding_refuses_other_padding_types():
    with pytest.raises(Unsupported, match="padding type 2"):
        out_size_and_padding(2, 8, 3, 1, 1)
