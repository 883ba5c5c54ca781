#include "tr_fixedpoint.h"
#include "tr_kernels.h"

/* TFLM's MultiplyByQuantizedMultiplier without TFLITE_SINGLE_ROUNDING (two roundings). */
int32_t tr_requantize(int32_t acc, int32_t multiplier, int32_t shift)
{
    int32_t left_shift = shift > 0 ? shift : 0;
    int32_t right_shift = shift > 0 ? 0 : -shift;
    /* Unsigned multiply: the wrap-around TFLM gets from int32 overflow, without undefined behaviour. */
    int32_t shifted = (int32_t)((uint32_t)acc * (1u << left_shift));
    return tr_fp_rdivpot(tr_fp_mul(shifted, multiplier), right_shift);
}

/* TFLM's MultiplyByQuantizedMultiplier for the int64 accumulators of its 16x8 kernels: the multiplier rounded
 * to 16 bits, then one rounding shift. */
int32_t tr_requantize64(int64_t acc, int32_t multiplier, int32_t shift)
{
    const int32_t reduced = multiplier < 0x7FFF0000 ? (multiplier + (1 << 15)) >> 16 : 0x7FFF;
    const int32_t total_shift = 15 - shift;
    return (int32_t)((acc * reduced + ((int64_t)1 << (total_shift - 1))) >> total_shift);
}
