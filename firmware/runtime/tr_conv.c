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
