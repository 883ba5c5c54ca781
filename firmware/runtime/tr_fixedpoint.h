/* Fixed-point helpers shared by the kernels: the gemmlowp arithmetic TFLM's reference kernels use
 * (TFLM's kernels/internal/fixedpoint.h), written for scalars. A value "Qm" has m integer bits and 31 - m
 * fractional bits in an int32; "Q0" values lie in [-1, 1). Internal header of the runtime. */
#ifndef TR_FIXEDPOINT_H
#define TR_FIXEDPOINT_H

#include <stdint.h>

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

/* TFLM's MultiplyByQuantizedMultiplier without TFLITE_SINGLE_ROUNDING (two roundings); inline for the kernels
 * that requantize every output value. */
static inline int32_t tr_fp_requantize(int32_t acc, int32_t multiplier, int32_t shift)
{
    const int32_t left_shift = shift > 0 ? shift : 0;
    const int32_t right_shift = shift > 0 ? 0 : -shift;
    /* Unsigned multiply: the wrap-around TFLM gets from int32 overflow, without undefined behaviour. */
    const int32_t shifted = (int32_t)((uint32_t)acc * (1u << left_shift));
    return tr_fp_rdivpot(tr_fp_mul(shifted, multiplier), right_shift);
}

/* TFLM's MultiplyByQuantizedMultiplierGreaterThanOne (double rounding). */
static inline int32_t tr_fp_requantize_up(int32_t x, int32_t multiplier, int32_t left_shift)
{
    return tr_fp_mul(x * (1 << left_shift), multiplier);
}

#endif
