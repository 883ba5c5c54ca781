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
