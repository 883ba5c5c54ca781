#include "tr_kernels.h"

/* gemmlowp's SaturatingRoundingDoublingHighMul: the high 32 bits of 2*a*b, rounded to nearest. */
static int32_t doubling_high_mul(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    int64_t ab = (int64_t)a * (int64_t)b;
    int64_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
    return (int32_t)((ab + nudge) / (1ll << 31));
}

/* gemmlowp's RoundingDivideByPOT: x / 2^exponent, rounded half away from zero. */
static int32_t rounding_divide_by_pot(int32_t x, int32_t exponent)
{
    int32_t mask = (int32_t)((1ll << exponent) - 1);
    int32_t remainder = x & mask;
    int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* TFLM's MultiplyByQuantizedMultiplier without TFLITE_SINGLE_ROUNDING (two roundings). */
int32_t tr_requantize(int32_t acc, int32_t multiplier, int32_t shift)
{
    int32_t left_shift = shift > 0 ? shift : 0;
    int32_t right_shift = shift > 0 ? 0 : -shift;
    /* Unsigned multiply: the wrap-around TFLM gets from int32 overflow, without undefined behaviour. */
    int32_t shifted = (int32_t)((uint32_t)acc * (1u << left_shift));
    return rounding_divide_by_pot(doubling_high_mul(shifted, multiplier), right_shift);
}
