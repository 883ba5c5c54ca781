#include "tr_fixedpoint.h"
#include "tr_kernels.h"

static int32_t leading_zeros(uint32_t x)
{
    int32_t n = 0;
    while (n < 32 && !(x & 0x80000000u)) {
        x <<= 1;
        n++;
    }
    return n;
}

/* TFLM's reference int8 softmax: exp of the scaled differences to the row maximum in Q5.26, summed in
 * Q12.19, and a fixed-point reciprocal of the sum. Output scale 1/256, zero point -128. */
void tr_softmax_s8(const tr_softmax_params *p, const int8_t *in, int8_t *out)
{
    for (int32_t r = 0; r < p->outer; r++) {
        const int8_t *x = in + r * p->depth;
        int8_t *y = out + r * p->depth;
        int32_t max = INT8_MIN;
        for (int32_t c = 0; c < p->depth; c++) {
            max = x[c] > max ? x[c] : max;
        }
        int32_t sum = 0;
        for (int32_t c = 0; c < p->depth; c++) {
            const int32_t diff = x[c] - max;
            if (diff >= p->diff_min) {
                const int32_t scaled = tr_fp_requantize_up(diff, p->input_multiplier, p->input_left_shift);
                sum += tr_fp_rdivpot(tr_fp_exp_negative(scaled, 5), 12);
            }
        }
        const int32_t headroom = leading_zeros((uint32_t)sum);
        const int32_t bits_over_unit = 12 - headroom;
        const int32_t sum_minus_one = (int32_t)(((uint32_t)sum << headroom) - (1u << 31));
        const int32_t scale = tr_fp_one_over_one_plus(sum_minus_one);
        for (int32_t c = 0; c < p->depth; c++) {
            const int32_t diff = x[c] - max;
            if (diff >= p->diff_min) {
                const int32_t scaled = tr_fp_requantize_up(diff, p->input_multiplier, p->input_left_shift);
                const int32_t e = tr_fp_exp_negative(scaled, 5);
                int32_t v = tr_fp_rdivpot(tr_fp_mul(scale, e), bits_over_unit + 23) - 128;
                y[c] = (int8_t)(v < INT8_MIN ? INT8_MIN : (v > INT8_MAX ? INT8_MAX : v));
            } else {
                y[c] = INT8_MIN;
            }
        }
    }
}
