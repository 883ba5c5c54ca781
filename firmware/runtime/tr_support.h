/* Support functions shared by the kernels, each defined once: clamp, min and max, requantization, ADD, element
 * access for the kernels written once for int8 and int16, and the gemmlowp fixed-point arithmetic of TFLM's
 * reference kernels (kernels/internal/fixedpoint.h), written for scalars. Internal header of the runtime. */
#ifndef TR_SUPPORT_H
#define TR_SUPPORT_H

#include <stdint.h>

#include "tr_kernels.h"

static inline int32_t tr_min(int32_t a, int32_t b)
{
    return a < b ? a : b;
}

static inline int32_t tr_max(int32_t a, int32_t b)
{
    return a > b ? a : b;
}

/* v limited to [lo, hi]. */
static inline int32_t tr_clamp(int32_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/* v limited to int8's range: one SSAT where the core has it (every Cortex-M3 and up). */
static inline int32_t tr_saturate_s8(int32_t v)
{
#if defined(__ARM_FEATURE_SAT) && __ARM_FEATURE_SAT
    return __builtin_arm_ssat(v, 8);
#else
    return tr_clamp(v, INT8_MIN, INT8_MAX);
#endif
}

/* --- Kernels written once for int8 and int16 ------------------------------------------------------------ */

/* Such a kernel is a TR_TEMPLATE function taking the element size in bytes (1 or 2) as its last argument; its
 * _s8 and _s16 entry points call it with a constant size, so each compiles to the code of its own type. */
#define TR_TEMPLATE static inline __attribute__((always_inline))

TR_TEMPLATE int32_t tr_load(const void *p, int32_t i, int size)
{
    return size == 1 ? ((const int8_t *)p)[i] : ((const int16_t *)p)[i];
}

TR_TEMPLATE void tr_store(void *p, int32_t i, int32_t v, int size)
{
    if (size == 1) {
        ((int8_t *)p)[i] = (int8_t)v;
    } else {
        ((int16_t *)p)[i] = (int16_t)v;
    }
}

/* The smallest and largest element value. */
TR_TEMPLATE int32_t tr_type_min(int size)
{
    return size == 1 ? INT8_MIN : INT16_MIN;
}

TR_TEMPLATE int32_t tr_type_max(int size)
{
    return size == 1 ? INT8_MAX : INT16_MAX;
}

/* --- Requantization ------------------------------------------------------------------------------------- */

/* Two requantizations, acc * multiplier * 2^(shift - 31) rounded to an integer, as TFLM's two overloads of
 * MultiplyByQuantizedMultiplier compute it; they round differently, so each kernel uses the one TFLM uses.
 *
 * tr_requantize: every int32 value TFLM requantizes (the int8 kernels, ADD, MUL, RELU, QUANTIZE, MEAN, the input
 * scaling of LOGISTIC, TANH and SOFTMAX, and the int16x8 kernels with an int32 bias). TFLM, without
 * TFLITE_SINGLE_ROUNDING, rounds twice: the high half of 2 * x * m (x = acc * 2^max(shift, 0)), (x * m + (x * m >= 0
 * ? 2^30 : 1 - 2^30)) / 2^31 truncated, then a shift right by max(-shift, 0) rounding half away from zero. That
 * first rounding equals floor((x * m + 2^30) / 2^31) for either sign, which is how CMSIS-NN's arm_nn_requantize
 * computes it, with no division. TFLM saturates only x = m = INT32_MIN, which never occurs: the compiler's
 * multipliers are nonnegative (LOGISTIC and TANH's can be TFLM's INT32_MIN cast of 2^31, but their x stays below
 * 2^31 in magnitude). So this is exact. */
static inline int32_t tr_requantize(int32_t acc, int32_t multiplier, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0, right = left - shift;
    const int32_t x = (int32_t)((uint32_t)acc << left); /* wraps as TFLM's int32 overflow does */
    const int32_t high = (int32_t)(((int64_t)x * multiplier + (1 << 30)) >> 31);
    const int32_t mask = (int32_t)((1u << right) - 1u);
    const int32_t threshold = (mask >> 1) + (high < 0);
    return (high >> right) + ((high & mask) > threshold);
}

/* tr_requantize64: the int64 accumulators of TFLM's int16x8 convolutions and fully connected layers with an int64
 * bias (acc64). TFLM's int64 overload rounds the multiplier to 16 bits, then shifts right once, rounding half up. */
static inline int32_t tr_requantize64(int64_t acc, int32_t multiplier, int32_t shift)
{
    const int32_t reduced = multiplier < 0x7FFF0000 ? (multiplier + (1 << 15)) >> 16 : 0x7FFF;
    const int32_t total_shift = 15 - shift;
    return (int32_t)((acc * reduced + ((int64_t)1 << (total_shift - 1))) >> total_shift);
}

/* tr_requantize for a shift of at most 0, right = -shift: the same two roundings, the second (half away from zero)
 * as one addition and shift. */
static inline int32_t tr_requantize_right(int32_t acc, int32_t multiplier, int32_t right)
{
    const int32_t high = (int32_t)(((int64_t)acc * multiplier + (1 << 30)) >> 31);
    const int32_t nudge = (1 << right) >> 1, away = right ? (int32_t)((uint32_t)high >> 31) : 0;
    return (high + nudge - away) >> right;
}

/* TFLM's AddFunc (tr_add_quant): both inputs to a common scale with some bits of headroom (20 for int8, 15 for
 * int16), summed, then to the output scale. Every multiplier is below 1 (TFLM's
 * MultiplyByQuantizedMultiplierSmallerThanOneExp, which is tr_requantize with a shift of at most 0). */
static inline int32_t tr_add(const tr_add_quant *q, int32_t in1, int32_t in2)
{
    const int32_t x1 = (q->in1_offset + in1) * (1 << q->left_shift);
    const int32_t x2 = (q->in2_offset + in2) * (1 << q->left_shift);
    const int32_t sum = tr_requantize_right(x1, q->in1_multiplier, -q->in1_shift) +
                        tr_requantize_right(x2, q->in2_multiplier, -q->in2_shift);
    const int32_t y = tr_requantize_right(sum, q->out_multiplier, -q->out_shift) + q->out_offset;
    return tr_clamp(y, q->act_min, q->act_max);
}

/* --- gemmlowp fixed point --------------------------------------------------------------------------------- */

/* A value "Qm" has m integer bits and 31 - m fractional bits in an int32; "Q0" values lie in [-1, 1). */

/* The high 32 bits of 2*a*b, rounded to nearest; saturates -1 * -1. */
static inline int32_t tr_fp_mul(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    const int64_t ab = (int64_t)a * (int64_t)b;
    const int64_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
    return (int32_t)((ab + nudge) / (1ll << 31));
}

/* x / 2^exponent, rounded half away from zero. */
static inline int32_t tr_fp_rdivpot(int32_t x, int32_t exponent)
{
    const int32_t mask = (int32_t)((1ll << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* x * 2^exponent, saturating for exponent > 0 and rounding for exponent < 0. */
static inline int32_t tr_fp_mulpot(int32_t x, int32_t exponent)
{
    if (exponent < 0) {
        return tr_fp_rdivpot(x, -exponent);
    }
    if (exponent == 0) {
        return x;
    }
    const int32_t threshold = (int32_t)((1ll << (31 - exponent)) - 1);
    if (x > threshold) {
        return INT32_MAX;
    }
    if (x < -threshold) {
        return INT32_MIN;
    }
    return (int32_t)((int64_t)x * (1ll << exponent));
}

/* exp(a) for a Q0 value a in [-1/4, 0), as a Q0 value. */
static inline int32_t tr_fp_exp_quarter(int32_t a)
{
    const int32_t constant_term = 1895147668;   /* exp(-1/8) */
    const int32_t constant_1_over_3 = 715827883;
    const int32_t x = a + (1 << 28);             /* a + 1/8 */
    const int32_t x2 = tr_fp_mul(x, x);
    const int32_t x3 = tr_fp_mul(x2, x);
    const int32_t x4 = tr_fp_mul(x2, x2);
    const int32_t x4_over_4 = tr_fp_rdivpot(x4, 2);
    const int32_t poly = tr_fp_rdivpot(tr_fp_mul(x4_over_4 + x3, constant_1_over_3) + x2, 1);
    return constant_term + tr_fp_mul(constant_term, x + poly);
}

/* exp(a) for a Qm value a <= 0 (m = integer_bits), as a Q0 value. */
static inline int32_t tr_fp_exp_negative(int32_t a, int32_t integer_bits)
{
    static const int32_t multipliers[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242};
    const int32_t fractional_bits = 31 - integer_bits;
    const int32_t one_quarter = 1 << (fractional_bits - 2);
    const int32_t a_mod_quarter_minus_one_quarter = (a & (one_quarter - 1)) - one_quarter;
    int32_t result = tr_fp_exp_quarter(tr_fp_mulpot(a_mod_quarter_minus_one_quarter, integer_bits));
    const int32_t remainder = a_mod_quarter_minus_one_quarter - a;
    for (int32_t exponent = -2; exponent <= 4; exponent++) { /* exp(-2^exponent) for each set bit */
        if (integer_bits > exponent && (remainder & (1 << (fractional_bits + exponent)))) {
            result = tr_fp_mul(result, multipliers[exponent + 2]);
        }
    }
    if (integer_bits > 5 && a < -(1 << (36 - integer_bits))) { /* below -32 */
        result = 0;
    }
    return a == 0 ? INT32_MAX : result;
}

/* (a + 1) / 2, rounded, without overflow. */
static inline int32_t tr_fp_half_sum(int32_t a, int32_t b)
{
    const int64_t sum = (int64_t)a + b;
    return (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
}

/* Newton-Raphson for 1 / ((1 + a) / 2) with a in [0, 1), as a Q2 value. */
static inline int32_t tr_fp_reciprocal_q2(int32_t a)
{
    const int32_t half_denominator = tr_fp_half_sum(a, INT32_MAX);
    int32_t x = 1515870810 + tr_fp_mul(half_denominator, -1010580540); /* 48/17 - 32/17 * d */
    for (int i = 0; i < 3; i++) {
        const int32_t one_minus_dx = (1 << 29) - tr_fp_mul(half_denominator, x);
        x = x + tr_fp_mulpot(tr_fp_mul(x, one_minus_dx), 2);
    }
    return x;
}

/* 1 / (1 + a) for a Q0 value a in [0, 1). */
static inline int32_t tr_fp_one_over_one_plus(int32_t a)
{
    return tr_fp_mulpot(tr_fp_reciprocal_q2(a), 1);
}

/* (1 - a) / (1 + a) for a Q0 value a in [0, 1). */
static inline int32_t tr_fp_one_minus_over_one_plus(int32_t a)
{
    return tr_fp_mulpot(tr_fp_reciprocal_q2(a) - (1 << 29), 2);
}

#endif
