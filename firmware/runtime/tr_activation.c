#include "tr_kernels.h"
#include "tr_support.h"

/* RELU and QUANTIZE for int8 (size 1) and int16 (size 2) elements. */
TR_TEMPLATE void rescale(const tr_rescale_params *p, const void *in, void *out, int size)
{
    for (int32_t i = 0; i < p->size; i++) {
        const int32_t y = p->out_offset + tr_requantize(tr_load(in, i, size) + p->in_offset, p->multiplier, p->shift);
        tr_store(out, i, tr_clamp(y, p->act_min, p->act_max), size);
    }
}

/* RELU6 for int8 (size 1) and int16 (size 2) elements. */
TR_TEMPLATE void clamp(const tr_clamp_params *p, const void *in, void *out, int size)
{
    for (int32_t i = 0; i < p->size; i++) {
        tr_store(out, i, tr_clamp(tr_load(in, i, size), p->act_min, p->act_max), size);
    }
}

void tr_rescale_s8(const tr_rescale_params *p, const int8_t *in, int8_t *out)
{
    rescale(p, in, out, sizeof *in);
}

void tr_rescale_s16(const tr_rescale_params *p, const int16_t *in, int16_t *out)
{
    rescale(p, in, out, sizeof *in);
}

void tr_clamp_s8(const tr_clamp_params *p, const int8_t *in, int8_t *out)
{
    clamp(p, in, out, sizeof *in);
}

void tr_clamp_s16(const tr_clamp_params *p, const int16_t *in, int16_t *out)
{
    clamp(p, in, out, sizeof *in);
}

/* logistic(a) of a Q4 value as a Q0 value, from exp(-|a|) and 1 / (1 + x). */
static int32_t logistic_q0(int32_t a)
{
    if (a == 0) {
        return 1 << 30;
    }
    const int32_t abs_a = a > 0 ? a : -a;
    const int32_t positive = tr_fp_one_over_one_plus(tr_fp_exp_negative(-abs_a, 4));
    return a > 0 ? positive : INT32_MAX - positive;
}

/* tanh(a) of a Q4 value as a Q0 value, from exp(-2|a|) and (1 - x) / (1 + x). */
static int32_t tanh_q0(int32_t a)
{
    if (a == 0) {
        return 0;
    }
    const int32_t negative_abs = a < 0 ? a : -a;
    const int32_t t = tr_fp_one_minus_over_one_plus(tr_fp_exp_negative(negative_abs, 5));
    return a < 0 ? -t : t;
}

void tr_logistic_s8(const tr_sigmoid_params *p, const int8_t *in, int8_t *out)
{
    for (int32_t i = 0; i < p->size; i++) {
        const int32_t x = in[i] + p->in_offset;
        if (x <= -p->range_radius) {
            out[i] = INT8_MIN;
        } else if (x >= p->range_radius) {
            out[i] = INT8_MAX;
        } else {
            const int32_t q4 = tr_requantize(x, p->multiplier, p->left_shift);
            const int32_t y = tr_fp_rdivpot(logistic_q0(q4), 23) - 128; /* output scale 1/256, zero point -128 */
            out[i] = (int8_t)tr_clamp(y, INT8_MIN, INT8_MAX);
        }
    }
}

void tr_tanh_s8(const tr_sigmoid_params *p, const int8_t *in, int8_t *out)
{
    for (int32_t i = 0; i < p->size; i++) {
        const int32_t x = in[i] + p->in_offset;
        if (x <= -p->range_radius) {
            out[i] = INT8_MIN;
        } else if (x >= p->range_radius) {
            out[i] = INT8_MAX;
        } else {
            const int32_t q4 = tr_requantize(x, p->multiplier, p->left_shift);
            const int32_t y = tr_fp_rdivpot(tanh_q0(q4), 24); /* output scale 1/128, zero point 0 */
            out[i] = (int8_t)tr_clamp(y, INT8_MIN, INT8_MAX);
        }
    }
}

/* The input of TFLM's int16 LOGISTIC and TANH in units of 1 / (3 * 4096). |x * multiplier| < 2^30, so adding
 * the rounding term (at most 2^30) cannot overflow. */
static inline int32_t sigmoid_input_s16(const tr_sigmoid_s16_params *p, int16_t x)
{
    const int32_t round = p->shift > 0 ? 1 << (p->shift - 1) : 0;
    return (x * p->multiplier + round) >> p->shift;
}

/* The sigmoid table at a = |x| with `bits` fractional bits per entry, interpolated linearly (Q0.16 << bits). */
static inline uint32_t sigmoid_lookup(const uint16_t *table, uint32_t a, int bits)
{
    const uint32_t i = a >> bits;
    return ((uint32_t)table[i] << bits) + (a & ((1u << bits) - 1)) * (uint32_t)(table[i + 1] - table[i]);
}

/* sigmoid(|x|) from the table at 512 input units per entry, 1 - sigmoid(|x|) for x < 0, rounded to Q0.15. */
void tr_logistic_s16(const tr_sigmoid_s16_params *p, const int16_t *in, int16_t *out)
{
    for (int32_t i = 0; i < p->size; i++) {
        const int32_t x = sigmoid_input_s16(p, in[i]);
        const uint32_t a = (uint32_t)(x < 0 ? -x : x);
        const uint32_t y = (a >> 9) >= 255 ? 0x7FFFu << 10 : sigmoid_lookup(p->table, a, 9);
        out[i] = (int16_t)((x >= 0 ? y + (1u << 9) : (1u << 25) - y + (1u << 9) - 1) >> 10);
    }
}

/* tanh(x) = 2 * sigmoid(2x) - 1: the table at 256 input units per entry, negated for x < 0, to Q0.15. */
void tr_tanh_s16(const tr_sigmoid_s16_params *p, const int16_t *in, int16_t *out)
{
    for (int32_t i = 0; i < p->size; i++) {
        const int32_t x = sigmoid_input_s16(p, in[i]);
        const uint32_t a = (uint32_t)(x < 0 ? -x : x);
        const int32_t y = (int32_t)((a >> 8) >= 255 ? 0xFFFFu << 8 : sigmoid_lookup(p->table, a, 8));
        out[i] = (int16_t)((x >= 0 ? y - (1 << 23) + (1 << 7) : -y + (1 << 23) + (1 << 7) - 1) >> 8);
    }
}

/* The int16 fixed-point helpers of TFLM's reference HardSwish, with its int16 wrap-arounds. */
static int16_t mul16_round(int16_t a, int16_t b)
{
    if (a == INT16_MIN && b == INT16_MIN) {
        return INT16_MAX;
    }
    const int32_t ab = (int32_t)a * b;
    const int32_t nudge = ab >= 0 ? (1 << 14) : (1 - (1 << 14));
    return (int16_t)((ab + nudge) / (1 << 15));
}

static int16_t mul16_truncate(int16_t a, int16_t b)
{
    if (a == INT16_MIN && b == INT16_MIN) {
        return INT16_MAX;
    }
    return (int16_t)(((int32_t)a * b) / (1 << 15));
}

static int16_t shift16_saturate(int16_t v, int32_t amount)
{
    const int64_t r = (int64_t)v * (1ll << amount);
    return (int16_t)(r > INT16_MAX ? INT16_MAX : (r < INT16_MIN ? INT16_MIN : r));
}

static int16_t rdivpot16(int16_t x, int32_t exponent)
{
    const int16_t mask = (int16_t)((1ll << exponent) - 1);
    const int16_t remainder = (int16_t)(x & mask);
    const int16_t threshold = (int16_t)((mask >> 1) + (x < 0 ? 1 : 0));
    return (int16_t)((x >> exponent) + (remainder > threshold ? 1 : 0));
}

void tr_hard_swish_s8(const tr_hard_swish_params *p, const int8_t *in, int8_t *out)
{
    for (int32_t i = 0; i < p->size; i++) {
        const int16_t x = (int16_t)(in[i] + p->in_offset);
        const int16_t x_hires = (int16_t)(x * (1 << 7));
        const int16_t x_preshift = mul16_round(x_hires, p->out_multiplier);
        int16_t reluish = x_hires;
        if (p->reluish_exponent > 0) {
            reluish = shift16_saturate(reluish, p->reluish_exponent - 1);
        }
        reluish = mul16_round(reluish, p->reluish_multiplier);
        if (p->reluish_exponent > 0) {
            reluish = shift16_saturate(reluish, 1);
        }
        if (p->reluish_exponent < 0) {
            reluish = rdivpot16(reluish, -p->reluish_exponent);
        }
        reluish = (int16_t)((reluish + (1 << 15)) >> 1); /* [-1, 1] to [0, 1] */
        int16_t y = rdivpot16(mul16_truncate(reluish, x_preshift), -p->out_exponent);
        y = (int16_t)(y + p->out_offset);
        out[i] = (int8_t)tr_clamp(y, INT8_MIN, INT8_MAX);
    }
}
