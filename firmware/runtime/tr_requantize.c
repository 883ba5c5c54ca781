#include "tr_fixedpoint.h"
#include "tr_kernels.h"

/* TFLM's MultiplyByQuantizedMultiplier without TFLITE_SINGLE_ROUNDING (two roundings). */
int32_t tr_requantize(int32_t acc, int32_t multiplier, int32_t shift)
{
    return tr_fp_requantize(acc, multiplier, shift);
}

/* TFLM's MultiplyByQuantizedMultiplier for the int64 accumulators of its 16x8 kernels: the multiplier rounded
 * to 16 bits, then one rounding shift. */
int32_t tr_requantize64(int64_t acc, int32_t multiplier, int32_t shift)
{
    const int32_t reduced = multiplier < 0x7FFF0000 ? (multiplier + (1 << 15)) >> 16 : 0x7FFF;
    const int32_t total_shift = 15 - shift;
    return (int32_t)((acc * reduced + ((int64_t)1 << (total_shift - 1))) >> total_shift);
}
