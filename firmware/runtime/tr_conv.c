#include "tr_kernels.h"

static inline int8_t clamp_s8(int32_t v, int32_t lo, int32_t hi)
{
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}

void tr_conv_s8(const tr_conv_params *p, const int8_t *in, int8_t *out)
{
    const int per_group = p->out_c / (p->in_c / p->k_c);
    for (int oy = 0; oy < p->out_h; oy++) {
        const int iy0 = oy * p->stride_h - p->pad_h;
        for (int ox = 0; ox < p->out_w; ox++) {
            const int ix0 = ox * p->stride_w - p->pad_w;
            for (int oc = 0; oc < p->out_c; oc++) {
                const int group_base = (oc / per_group) * p->k_c;
                const int8_t *filter = p->weights + oc * p->k_h * p->k_w * p->k_c;
                int32_t acc = 0;
                for (int ky = 0; ky < p->k_h; ky++) {
                    const int iy = iy0 + ky * p->dilation_h;
                    if (iy < 0 || iy >= p->in_h) {
                        continue;
                    }
                    for (int kx = 0; kx < p->k_w; kx++) {
                        const int ix = ix0 + kx * p->dilation_w;
                        if (ix < 0 || ix >= p->in_w) {
                            continue;
                        }
                        const int8_t *x = in + (iy * p->in_w + ix) * p->in_c + group_base;
                        const int8_t *w = filter + (ky * p->k_w + kx) * p->k_c;
                        for (int ic = 0; ic < p->k_c; ic++) {
                            acc += w[ic] * (x[ic] + p->in_offset);
                        }
                    }
                }
                if (p->bias) {
                    acc += p->bias[oc];
                }
                acc = tr_requantize(acc, p->requant.multiplier[oc], p->requant.shift[oc]) + p->out_offset;
                out[(oy * p->out_w + ox) * p->out_c + oc] = clamp_s8(acc, p->act_min, p->act_max);
            }
        }
    }
}

void tr_depthwise_conv_s8(const tr_conv_params *p, const int8_t *in, int8_t *out)
{
    for (int oy = 0; oy < p->out_h; oy++) {
        const int iy0 = oy * p->stride_h - p->pad_h;
        for (int ox = 0; ox < p->out_w; ox++) {
            const int ix0 = ox * p->stride_w - p->pad_w;
            for (int ic = 0; ic < p->in_c; ic++) {
                for (int m = 0; m < p->depth_multiplier; m++) {
                    const int oc = ic * p->depth_multiplier + m;
                    int32_t acc = 0;
                    for (int ky = 0; ky < p->k_h; ky++) {
                        const int iy = iy0 + ky * p->dilation_h;
                        if (iy < 0 || iy >= p->in_h) {
                            continue;
                        }
                        for (int kx = 0; kx < p->k_w; kx++) {
                            const int ix = ix0 + kx * p->dilation_w;
                            if (ix < 0 || ix >= p->in_w) {
                                continue;
                            }
                            const int32_t x = in[(iy * p->in_w + ix) * p->in_c + ic];
                            acc += p->weights[(ky * p->k_w + kx) * p->out_c + oc] * (x + p->in_offset);
                        }
                    }
                    if (p->bias) {
                        acc += p->bias[oc];
                    }
                    acc = tr_requantize(acc, p->requant.multiplier[oc], p->requant.shift[oc]) + p->out_offset;
                    out[(oy * p->out_w + ox) * p->out_c + oc] = clamp_s8(acc, p->act_min, p->act_max);
                }
            }
        }
    }
}

void tr_fully_connected_s8(const tr_fc_params *p, const int8_t *in, int8_t *out)
{
    for (int r = 0; r < p->rows; r++) {
        const int8_t *x = in + r * p->in_n;
        for (int o = 0; o < p->out_n; o++) {
            const int8_t *w = p->weights + o * p->in_n;
            int32_t acc = 0;
            for (int i = 0; i < p->in_n; i++) {
                acc += (w[i] + p->weights_offset) * (x[i] + p->in_offset);
            }
            if (p->bias) {
                acc += p->bias[o];
            }
            acc = tr_requantize(acc, p->requant.multiplier[o], p->requant.shift[o]) + p->out_offset;
            out[r * p->out_n + o] = clamp_s8(acc, p->act_min, p->act_max);
        }
    }
}

/* --- int16x8: int16 activations (zero point 0, so no offsets), int8 weights ------------------------------- */

static inline int16_t clamp_s16(int32_t v, int32_t lo, int32_t hi)
{
    return (int16_t)(v < lo ? lo : (v > hi ? hi : v));
}

/* TFLM's 16x8 kernels accumulate in the type of their bias: in 64 bits, with the 64-bit requantization, for an
 * int64 bias (acc64); in 32 bits, with the 32-bit one, for an int32 bias or none. */
static inline int32_t requantize_s16(int64_t acc, int32_t acc64, const int32_t *bias, const int64_t *bias64,
                                     const tr_requant *r, int c)
{
    if (acc64) {
        return tr_requantize64(acc + (bias64 ? bias64[c] : 0), r->multiplier[c], r->shift[c]);
    }
    return tr_requantize((int32_t)acc + (bias ? bias[c] : 0), r->multiplier[c], r->shift[c]);
}

void tr_conv_s16(const tr_conv_params *p, const int16_t *in, int16_t *out)
{
    const int per_group = p->out_c / (p->in_c / p->k_c);
    for (int oy = 0; oy < p->out_h; oy++) {
        const int iy0 = oy * p->stride_h - p->pad_h;
        for (int ox = 0; ox < p->out_w; ox++) {
            const int ix0 = ox * p->stride_w - p->pad_w;
            for (int oc = 0; oc < p->out_c; oc++) {
                const int group_base = (oc / per_group) * p->k_c;
                const int8_t *filter = p->weights + oc * p->k_h * p->k_w * p->k_c;
                int64_t acc = 0;
                for (int ky = 0; ky < p->k_h; ky++) {
                    const int iy = iy0 + ky * p->dilation_h;
                    if (iy < 0 || iy >= p->in_h) {
                        continue;
                    }
                    for (int kx = 0; kx < p->k_w; kx++) {
                        const int ix = ix0 + kx * p->dilation_w;
                        if (ix < 0 || ix >= p->in_w) {
                            continue;
                        }
                        const int16_t *x = in + (iy * p->in_w + ix) * p->in_c + group_base;
                        const int8_t *w = filter + (ky * p->k_w + kx) * p->k_c;
                        for (int ic = 0; ic < p->k_c; ic++) {
                            acc += w[ic] * x[ic];
                        }
                    }
                }
                const int32_t y = requantize_s16(acc, p->acc64, p->bias, p->bias64, &p->requant, oc);
                out[(oy * p->out_w + ox) * p->out_c + oc] = clamp_s16(y, p->act_min, p->act_max);
            }
        }
    }
}

void tr_depthwise_conv_s16(const tr_conv_params *p, const int16_t *in, int16_t *out)
{
    for (int oy = 0; oy < p->out_h; oy++) {
        const int iy0 = oy * p->stride_h - p->pad_h;
        for (int ox = 0; ox < p->out_w; ox++) {
            const int ix0 = ox * p->stride_w - p->pad_w;
            for (int ic = 0; ic < p->in_c; ic++) {
                for (int m = 0; m < p->depth_multiplier; m++) {
                    const int oc = ic * p->depth_multiplier + m;
                    int64_t acc = 0;
                    for (int ky = 0; ky < p->k_h; ky++) {
                        const int iy = iy0 + ky * p->dilation_h;
                        if (iy < 0 || iy >= p->in_h) {
                            continue;
                        }
                        for (int kx = 0; kx < p->k_w; kx++) {
                            const int ix = ix0 + kx * p->dilation_w;
                            if (ix < 0 || ix >= p->in_w) {
                                continue;
                            }
                            const int32_t x = in[(iy * p->in_w + ix) * p->in_c + ic];
                            acc += p->weights[(ky * p->k_w + kx) * p->out_c + oc] * x;
                        }
                    }
                    const int32_t y = requantize_s16(acc, p->acc64, p->bias, p->bias64, &p->requant, oc);
                    out[(oy * p->out_w + ox) * p->out_c + oc] = clamp_s16(y, p->act_min, p->act_max);
                }
            }
        }
    }
}

/* TFLM's per-tensor 16x8 kernel applies the weights' offset (zero for per-channel weights, which are
 * symmetric); neither has an input or output offset. */
void tr_fully_connected_s16(const tr_fc_params *p, const int16_t *in, int16_t *out)
{
    for (int r = 0; r < p->rows; r++) {
        const int16_t *x = in + r * p->in_n;
        for (int o = 0; o < p->out_n; o++) {
            const int8_t *w = p->weights + o * p->in_n;
            int64_t acc = 0;
            for (int i = 0; i < p->in_n; i++) {
                acc += (w[i] + p->weights_offset) * x[i];
            }
            const int32_t y = requantize_s16(acc, p->acc64, p->bias, p->bias64, &p->requant, o);
            out[r * p->out_n + o] = clamp_s16(y, p->act_min, p->act_max);
        }
    }
}
