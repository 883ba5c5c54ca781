#include "tr_kernels.h"
#include "tr_support.h"

static int32_t leading_zeros(uint32_t x)
{
    return x ? __builtin_clz(x) : 32;
}

/* TFLM's reference int8 softmax: exp of the scaled differences to the row maximum in Q5.26, summed in
 * Q12.19, and a fixed-point reciprocal of the sum. Output scale 1/256, zero point -128. Compiled for size: a
 * model's last layer, over a few classes, where its fixed-point exp would otherwise take a kilobyte of flash. */
__attribute__((optimize("Os"))) void tr_softmax_s8(const tr_softmax_params *p, const int8_t *in, int8_t *out)
{
    for (int32_t r = 0; r < p->outer; r++) {
        const int8_t *x = in + r * p->depth;
        int8_t *y = out + r * p->depth;
        int32_t max = INT8_MIN;
        for (int32_t c = 0; c < p->depth; c++) {
            max = tr_max(max, x[c]);
        }
        int32_t sum = 0;
        for (int32_t c = 0; c < p->depth; c++) {
            const int32_t diff = x[c] - max;
            if (diff >= p->diff_min) {
                const int32_t scaled = tr_requantize(diff, p->input_multiplier, p->input_left_shift);
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
                const int32_t scaled = tr_requantize(diff, p->input_multiplier, p->input_left_shift);
                const int32_t e = tr_fp_exp_negative(scaled, 5);
                const int32_t v = tr_fp_rdivpot(tr_fp_mul(scale, e), bits_over_unit + 23) - 128;
                y[c] = (int8_t)tr_clamp(v, INT8_MIN, INT8_MAX);
            } else {
                y[c] = INT8_MIN;
            }
        }
    }
}

/* TFLM's LUTLookup: 512 intervals indexed by the top 9 bits of value, linear interpolation on the low 7. */
static int16_t lut_lookup(const int16_t *lut, int16_t value)
{
    const int32_t index = 256 + (value >> 7);
    const int32_t offset = value & 0x7f;
    const int16_t slope = (int16_t)(lut[index + 1] - lut[index]);
    return (int16_t)(lut[index] + ((slope * offset + 64) >> 7));
}

/* TFLM's reference SoftmaxInt16: exp of the rescaled differences to the row maximum (Q0.15) from a table,
 * their sum normalized to [1, 2) for the 1 / (1 + x) table, and each exp times that reciprocal. */
void tr_softmax_s16(const tr_softmax_s16_params *p, const int16_t *in, int16_t *out)
{
    for (int32_t r = 0; r < p->outer; r++) {
        const int16_t *x = in + r * p->depth;
        int16_t *y = out + r * p->depth; /* holds the exps until the last loop, as in TFLM */
        int32_t max = INT16_MIN;
        for (int32_t c = 0; c < p->depth; c++) {
            max = tr_max(max, x[c]);
        }
        int32_t sum = 0; /* Q16.15 */
        for (int32_t c = 0; c < p->depth; c++) {
            const int32_t scaled = tr_requantize(x[c] - max, p->input_multiplier, p->input_shift);
            /* [-65535, 0] to [-32768, 32767] */
            y[c] = lut_lookup(p->exp_lut, (int16_t)tr_clamp(scaled + 32767, INT16_MIN, INT16_MAX));
            sum += y[c];
        }
        const int32_t headroom_plus_one = leading_zeros((uint32_t)sum);
        const int32_t shifted_sum = (int32_t)((((int64_t)sum << (headroom_plus_one - 1)) + (1 << 13)) >> 14);
        /* x = sum - 1 on [0, 65535], recentred to [-32768, 32767] for the table. */
        const int32_t sum_minus_one = shifted_sum - ((1 << 15) + (1 << 16));
        const int16_t reciprocal = lut_lookup(p->one_over_one_plus_x_lut,
                                              (int16_t)tr_clamp(sum_minus_one, INT16_MIN, INT16_MAX));
        const int32_t right_shift = 31 - headroom_plus_one;
        const int64_t round = (int64_t)1 << (right_shift - 1);
        for (int32_t c = 0; c < p->depth; c++) {
            const int32_t v = (int32_t)(((int64_t)y[c] * reciprocal + round) >> right_shift);
            y[c] = (int16_t)tr_clamp(v, 0, INT16_MAX);
        }
    }
}
