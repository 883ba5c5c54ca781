/* Convolutions and fully connected layers.
 *
 * The int8 kernels follow CMSIS-NN's design. The compiler folds the input offset into the bias (bias + in_offset
 * * the sum of each filter's weights: exact, as int32 sums are), so the inner loops are plain dot products of
 * int8 values. A tap outside the input (padding) then adds weight * zero point, which cancels that tap's share of
 * the folded term: the result is TFLM's, whose reference kernel skips the tap. CONV_2D gathers each output
 * pixel's receptive field on the stack (im2col, the zero point for padding) and takes two pixels times two
 * output channels per pass; DEPTHWISE_CONV_2D takes four channels per load; FULLY_CONNECTED two outputs per
 * input load. Bounds are found once per output pixel, never per product. On cores with the DSP extension the
 * products go through SXTB16 and SMLAD (SMLABB/SMLATT in depthwise); elsewhere (the Cortex-M3, the host build
 * of the tests) the same loops run with scalar products. Accumulating the same int32 products in another order
 * gives the same sums, and the requantization is TFLM's: outputs are bit-exact with it.
 */
#include <string.h>

#include "tr_kernels.h"
#include "tr_support.h"

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
#define TR_DSP 1
#else
#define TR_DSP 0
#endif

/* Paths that few output values take (depthwise borders, depth multipliers above 1): compiled for size, to keep
 * the runtime's flash small. */
#define TR_COLD __attribute__((noinline, cold, optimize("Os")))

/* An int8 kernel's output stage, copied out of its parameters: the int8 stores to the output may alias the
 * parameters as far as C knows, which made GCC reload them for every value. */
typedef struct {
    const int32_t *multiplier;
    const int8_t *shift;
    int32_t out_offset, lo, hi;
} output_s8;

static inline output_s8 output_stage(const tr_requant *r, int32_t out_offset, int32_t lo, int32_t hi)
{
    const output_s8 o = {r->multiplier, r->shift, out_offset, lo, hi};
    return o;
}

static inline int8_t requantize_s8(const output_s8 *o, int32_t acc, int c)
{
    return (int8_t)tr_clamp(tr_requantize(acc, o->multiplier[c], o->shift[c]) + o->out_offset, o->lo, o->hi);
}

#if TR_DSP
/* Four int8 values from any address (the core allows unaligned word loads). */
static inline int32_t load4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Bytes 1 and 3 of x sign-extended into two halfwords (__sxtb16 takes bytes 0 and 2); GCC's ACLE lacks __ror. */
static inline int32_t sxtb16_ror8(int32_t x)
{
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
#endif

/* *acc0 += w0 . x and *acc1 += w1 . x over n int8 values: each input load serves two output channels. */
static inline void dot2_s8(const int8_t *x, const int8_t *w0, const int8_t *w1, int n, int32_t *acc0, int32_t *acc1)
{
    int32_t a0 = *acc0, a1 = *acc1;
#if TR_DSP
    for (; n >= 4; n -= 4) {
        const int32_t xv = load4(x), v0 = load4(w0), v1 = load4(w1);
        const int32_t x02 = __sxtb16(xv), x13 = sxtb16_ror8(xv);
        a0 = __smlad(__sxtb16(v0), x02, a0);
        a0 = __smlad(sxtb16_ror8(v0), x13, a0);
        a1 = __smlad(__sxtb16(v1), x02, a1);
        a1 = __smlad(sxtb16_ror8(v1), x13, a1);
        x += 4;
        w0 += 4;
        w1 += 4;
    }
#endif
    for (; n > 0; n--) {
        const int32_t xi = *x++;
        a0 += *w0++ * xi;
        a1 += *w1++ * xi;
    }
    *acc0 = a0;
    *acc1 = a1;
}

/* Two output pixels (input runs xa and xb) times two filters: acc[0] += w0 . xa, acc[1] += w1 . xa,
 * acc[2] += w0 . xb, acc[3] += w1 . xb, one product at a time (the plain path, and the DSP path's last few). */
static inline void dot4_s8(const int8_t *xa, const int8_t *xb, const int8_t *w0, const int8_t *w1, int n,
                           int32_t acc[4])
{
    int32_t a0 = acc[0], a1 = acc[1], b0 = acc[2], b1 = acc[3];
    for (; n > 0; n--) {
        const int32_t xai = *xa++, xbi = *xb++, w0i = *w0++, w1i = *w1++;
        a0 += w0i * xai;
        a1 += w1i * xai;
        b0 += w0i * xbi;
        b1 += w1i * xbi;
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = b0;
    acc[3] = b1;
}

/* The taps [*lo, *hi) of a k-tap filter whose input coordinate (start + tap * dilation) lies in [0, size). */
static inline void inside_taps(int start, int k, int dilation, int size, int *lo, int *hi)
{
    int l = 0, h = k;
    while (l < k && start + l * dilation < 0) {
        l++;
    }
    while (h > l && start + (h - 1) * dilation >= size) {
        h--;
    }
    *lo = l;
    *hi = h;
}

/* Grouped convolutions and filters larger than a column (the compiler's choice): the input read in place, one
 * output pixel at a time, the taps inside the input found once per pixel. Taps outside it add weight * zero
 * point (see the top). Rare, so compiled for size. */
__attribute__((optimize("Os"))) void tr_conv_s8_in_place(const tr_conv_params *p, const int8_t *in, int8_t *out)
{
    const output_s8 stage = output_stage(&p->requant, p->out_offset, p->act_min, p->act_max);
    const int k_h = p->k_h, k_w = p->k_w, k_c = p->k_c, in_c = p->in_c, out_c = p->out_c;
    const int groups = in_c / k_c, per_group = out_c / groups;
    const int row_size = k_w * k_c, filter_size = k_h * row_size;
    for (int oy = 0; oy < p->out_h; oy++) {
        const int iy0 = oy * p->stride_h - p->pad_h;
        int ky_lo, ky_hi;
        inside_taps(iy0, k_h, p->dilation_h, p->in_h, &ky_lo, &ky_hi);
        for (int ox = 0; ox < p->out_w; ox++, out += out_c) {
            const int ix0 = ox * p->stride_w - p->pad_w;
            int kx_lo, kx_hi;
            inside_taps(ix0, k_w, p->dilation_w, p->in_w, &kx_lo, &kx_hi);
            for (int oc = 0; oc < out_c; oc++) {
                const int8_t *w = p->weights + oc * filter_size;
                const int8_t *x_group = in + (oc / per_group) * k_c;
                int32_t acc = p->bias ? p->bias[oc] : 0, outside = 0;
                for (int ky = 0; ky < k_h; ky++, w += row_size) {
                    for (int kx = 0; kx < k_w; kx++) {
                        const int8_t *v = w + kx * k_c;
                        if (ky < ky_lo || ky >= ky_hi || kx < kx_lo || kx >= kx_hi) {
                            for (int i = 0; i < k_c; i++) {
                                outside += v[i];
                            }
                            continue;
                        }
                        const int iy = iy0 + ky * p->dilation_h, ix = ix0 + kx * p->dilation_w;
                        const int8_t *x = x_group + (iy * p->in_w + ix) * in_c;
                        for (int i = 0; i < k_c; i++) {
                            acc += v[i] * x[i];
                        }
                    }
                }
                acc -= outside * p->in_offset;
                out[oc] = requantize_s8(&stage, acc, oc);
            }
        }
    }
}

/* The receptive field of the output pixel whose filter starts at input (iy0, ix0), gathered into column as one
 * run of bytes in the filters' order ([k_h][k_w][in_c]), taps outside the input holding the zero point (so the
 * folded bias stays exact). One group only: k_c == in_c. Copying even a 1x1 filter's field is cheap next to its
 * out_c products, and keeps the two pixels' fields a constant distance apart (see dot4_columns_s8). */
static void receptive_field_s8(const tr_conv_params *p, const int8_t *in, int iy0, int ix0, int8_t *column)
{
    const int in_c = p->in_c, row_size = p->k_w * in_c, zero_point = -p->in_offset;
    int ky_lo, ky_hi, kx_lo, kx_hi;
    inside_taps(iy0, p->k_h, p->dilation_h, p->in_h, &ky_lo, &ky_hi);
    inside_taps(ix0, p->k_w, p->dilation_w, p->in_w, &kx_lo, &kx_hi);
    int8_t *c = column;
    for (int ky = 0; ky < p->k_h; ky++) {
        if (ky < ky_lo || ky >= ky_hi) {
            memset(c, zero_point, row_size);
            c += row_size;
            continue;
        }
        memset(c, zero_point, kx_lo * in_c);
        c += kx_lo * in_c;
        const int8_t *x = in + ((iy0 + ky * p->dilation_h) * p->in_w + ix0 + kx_lo * p->dilation_w) * in_c;
        if (p->dilation_w == 1) {
            memcpy(c, x, (kx_hi - kx_lo) * in_c);
            c += (kx_hi - kx_lo) * in_c;
        } else {
            for (int kx = kx_lo; kx < kx_hi; kx++, x += p->dilation_w * in_c, c += in_c) {
                memcpy(c, x, in_c);
            }
        }
        memset(c, zero_point, (p->k_w - kx_hi) * in_c);
        c += (p->k_w - kx_hi) * in_c;
    }
}

#if TR_DSP
/* Four bytes of each of the two receptive fields: one base register, the second load at an immediate offset
 * (GCC would otherwise keep a pointer per field and run short of registers in dot4_columns_s8). */
static inline void load_columns(const int8_t *x, int32_t *a, int32_t *b)
{
    __asm__("ldr %0, [%2]\n\tldr %1, [%2, %3]"
            : "=&r"(*a), "=r"(*b)
            : "r"(x), "i"(TR_COLUMN_BYTES), "m"(*(const int8_t(*)[2 * TR_COLUMN_BYTES])x));
}
#endif

/* dot4_s8 for two receptive fields TR_COLUMN_BYTES apart: the second pixel's loads take an immediate offset from
 * the first's pointer. Not inlined: alone in its function the loop keeps its four accumulators, three pointers
 * and six operands in registers, where inlined into the kernel GCC spilled some of them on every iteration. */
static __attribute__((noinline)) void dot4_columns_s8(const int8_t *x, const int8_t *w0, const int8_t *w1, int n,
                                                      int32_t acc[4])
{
#if TR_DSP
    int32_t a0 = acc[0], a1 = acc[1], b0 = acc[2], b1 = acc[3];
    for (; n >= 4; n -= 4) {
        const int32_t v0 = load4(w0), v1 = load4(w1);
        const int32_t v0_02 = __sxtb16(v0), v0_13 = sxtb16_ror8(v0), v1_02 = __sxtb16(v1), v1_13 = sxtb16_ror8(v1);
        int32_t xv, xw;
        load_columns(x, &xv, &xw);
        int32_t x02 = __sxtb16(xv), x13 = sxtb16_ror8(xv);
        a0 = __smlad(v0_02, x02, a0);
        a1 = __smlad(v1_02, x02, a1);
        a0 = __smlad(v0_13, x13, a0);
        a1 = __smlad(v1_13, x13, a1);
        x02 = __sxtb16(xw);
        x13 = sxtb16_ror8(xw);
        b0 = __smlad(v0_02, x02, b0);
        b1 = __smlad(v1_02, x02, b1);
        b0 = __smlad(v0_13, x13, b0);
        b1 = __smlad(v1_13, x13, b1);
        x += 4;
        w0 += 4;
        w1 += 4;
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = b0;
    acc[3] = b1;
#endif
    dot4_s8(x, x + TR_COLUMN_BYTES, w0, w1, n, acc); /* what the DSP loop left, or everything */
}

/* Two output pixels at a time, each one dot product per pair of output channels over its whole receptive field:
 * no bounds or padding in the inner loop, and each weight load serves both pixels. One group, and a field of at
 * most TR_COLUMN_BYTES (the compiler chooses tr_conv_s8_in_place otherwise). */
void tr_conv_s8(const tr_conv_params *p, const int8_t *in, int8_t *out)
{
    const output_s8 stage = output_stage(&p->requant, p->out_offset, p->act_min, p->act_max);
    const int filter_size = p->k_h * p->k_w * p->k_c, out_c = p->out_c, pixels = p->out_h * p->out_w;
    int8_t columns[2 * TR_COLUMN_BYTES];
    for (int px = 0; px < pixels; px += 2, out += 2 * out_c) {
        const int two = px + 1 < pixels; /* an odd last pixel is computed twice, once discarded */
        for (int i = 0; i < 2; i++) {
            const int oy = (px + i * two) / p->out_w, ox = (px + i * two) % p->out_w;
            receptive_field_s8(p, in, oy * p->stride_h - p->pad_h, ox * p->stride_w - p->pad_w,
                               columns + i * TR_COLUMN_BYTES);
        }
        for (int oc = 0; oc < out_c; oc += 2) {
            const int pair = oc + 1 < out_c; /* an odd last channel likewise */
            const int8_t *w0 = p->weights + oc * filter_size, *w1 = pair ? w0 + filter_size : w0;
            const int32_t bias0 = p->bias ? p->bias[oc] : 0, bias1 = p->bias && pair ? p->bias[oc + 1] : 0;
            int32_t acc[4] = {bias0, bias1, bias0, bias1};
            dot4_columns_s8(columns, w0, w1, filter_size, acc);
            for (int i = 0; i <= two; i++) {
                int8_t *o = out + i * out_c + oc;
                o[0] = requantize_s8(&stage, acc[2 * i], oc);
                if (pair) {
                    o[1] = requantize_s8(&stage, acc[2 * i + 1], oc + 1);
                }
            }
        }
    }
}

/* acc[i] += w[i] * x[i] for four consecutive channels of one tap (depthwise: every channel its own filter). */
static inline void mac4_s8(const int8_t *x, const int8_t *w, int32_t *a0, int32_t *a1, int32_t *a2, int32_t *a3)
{
#if TR_DSP
    const int32_t xv = load4(x), wv = load4(w);
    const int32_t x02 = __sxtb16(xv), w02 = __sxtb16(wv), x13 = sxtb16_ror8(xv), w13 = sxtb16_ror8(wv);
    *a0 = __smlabb(x02, w02, *a0);
    *a1 = __smlabb(x13, w13, *a1);
    *a2 = __smlatt(x02, w02, *a2);
    *a3 = __smlatt(x13, w13, *a3);
#else
    *a0 += w[0] * x[0];
    *a1 += w[1] * x[1];
    *a2 += w[2] * x[2];
    *a3 += w[3] * x[3];
#endif
}

/* depthwise4_s8 for a pixel whose filter reaches outside the input: taps outside add weight * zero point (see
 * the top of the file). */
static TR_COLD void depthwise4_border_s8(const tr_conv_params *p, const int8_t *in, int c, int iy0, int ix0,
                                         int ky_lo, int ky_hi, int kx_lo, int kx_hi, int32_t acc[4])
{
    const int32_t zero_point = -p->in_offset;
    const int8_t *w = p->weights + c;
    for (int ky = 0; ky < p->k_h; ky++) {
        const int inside_row = ky >= ky_lo && ky < ky_hi;
        const int8_t *x = in + ((iy0 + ky * p->dilation_h) * p->in_w + ix0 + kx_lo * p->dilation_w) * p->in_c + c;
        for (int kx = 0; kx < p->k_w; kx++, w += p->out_c) {
            if (inside_row && kx >= kx_lo && kx < kx_hi) {
                mac4_s8(x, w, &acc[0], &acc[1], &acc[2], &acc[3]);
                x += p->dilation_w * p->in_c;
            } else {
                for (int i = 0; i < 4; i++) {
                    acc[i] += w[i] * zero_point;
                }
            }
        }
    }
}

/* One depthwise output pixel whose taps all lie inside the input (all but the border pixels), channels
 * [c, c + 4) of a depth-multiplier-1 layer. The accumulators are locals, not acc[]: GCC then keeps them in
 * registers across the taps. */
static inline void depthwise4_s8(const tr_conv_params *p, const int8_t *in, int c, int iy0, int ix0, int32_t acc[4])
{
    const int tap_step = p->dilation_w * p->in_c, row_step = p->dilation_h * p->in_w * p->in_c;
    const int8_t *w = p->weights + c, *row = in + (iy0 * p->in_w + ix0) * p->in_c + c;
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    for (int ky = 0; ky < p->k_h; ky++, row += row_step) {
        const int8_t *x = row;
        for (int kx = 0; kx < p->k_w; kx++, x += tap_step, w += p->out_c) {
            mac4_s8(x, w, &a0, &a1, &a2, &a3);
        }
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

/* One depthwise output value, channel oc of input channel ic: any depth multiplier. */
static TR_COLD int32_t depthwise1_s8(const tr_conv_params *p, const int8_t *in, int oc, int ic, int iy0, int ix0,
                                    int ky_lo, int ky_hi, int kx_lo, int kx_hi, int32_t acc)
{
    const int32_t zero_point = -p->in_offset;
    const int tap_step = p->dilation_w * p->in_c;
    for (int ky = 0; ky < p->k_h; ky++) {
        const int8_t *w = p->weights + ky * p->k_w * p->out_c + oc;
        const int inside_row = ky >= ky_lo && ky < ky_hi;
        const int lo = inside_row ? kx_lo : p->k_w, hi = inside_row ? kx_hi : p->k_w;
        for (int kx = 0; kx < lo; kx++, w += p->out_c) {
            acc += *w * zero_point;
        }
        const int8_t *x = in + ((iy0 + ky * p->dilation_h) * p->in_w + ix0 + lo * p->dilation_w) * p->in_c + ic;
        for (int kx = lo; kx < hi; kx++, w += p->out_c, x += tap_step) {
            acc += *w * *x;
        }
        for (int kx = hi; kx < p->k_w; kx++, w += p->out_c) {
            acc += *w * zero_point;
        }
    }
    return acc;
}

void tr_depthwise_conv_s8(const tr_conv_params *p, const int8_t *in, int8_t *out)
{
    const output_s8 stage = output_stage(&p->requant, p->out_offset, p->act_min, p->act_max);
    const int out_c = p->out_c, m = p->depth_multiplier;
    /* Four channels at a time where input and output channels coincide; the rest one at a time. */
    const int blocked = m == 1 ? out_c & ~3 : 0;
    for (int oy = 0; oy < p->out_h; oy++) {
        const int iy0 = oy * p->stride_h - p->pad_h;
        int ky_lo, ky_hi;
        inside_taps(iy0, p->k_h, p->dilation_h, p->in_h, &ky_lo, &ky_hi);
        for (int ox = 0; ox < p->out_w; ox++) {
            const int ix0 = ox * p->stride_w - p->pad_w;
            int kx_lo, kx_hi;
            inside_taps(ix0, p->k_w, p->dilation_w, p->in_w, &kx_lo, &kx_hi);
            const int border = ky_lo > 0 || ky_hi < p->k_h || kx_lo > 0 || kx_hi < p->k_w;
            for (int c = 0; c < blocked; c += 4) {
                int32_t acc[4] = {0, 0, 0, 0};
                if (p->bias) {
                    for (int i = 0; i < 4; i++) {
                        acc[i] = p->bias[c + i];
                    }
                }
                if (border) {
                    depthwise4_border_s8(p, in, c, iy0, ix0, ky_lo, ky_hi, kx_lo, kx_hi, acc);
                } else {
                    depthwise4_s8(p, in, c, iy0, ix0, acc);
                }
                for (int i = 0; i < 4; i++) {
                    out[c + i] = requantize_s8(&stage, acc[i], c + i);
                }
            }
            for (int oc = blocked; oc < out_c; oc++) {
                const int32_t acc = depthwise1_s8(p, in, oc, oc / m, iy0, ix0, ky_lo, ky_hi, kx_lo, kx_hi,
                                                  p->bias ? p->bias[oc] : 0);
                out[oc] = requantize_s8(&stage, acc, oc);
            }
            out += out_c;
        }
    }
}

/* TFLM's sum of (w + weights_offset) * (x + in_offset): the compiler folded in_offset * sum(w) and
 * in_n * weights_offset * in_offset into the bias; weights_offset * sum(x) is one sum per input row. */
void tr_fully_connected_s8(const tr_fc_params *p, const int8_t *in, int8_t *out)
{
    const output_s8 stage = output_stage(&p->requant, p->out_offset, p->act_min, p->act_max);
    const int in_n = p->in_n, out_n = p->out_n;
    for (int r = 0; r < p->rows; r++, in += in_n, out += out_n) {
        int32_t x_sum = 0;
        if (p->weights_offset) {
            for (int i = 0; i < in_n; i++) {
                x_sum += in[i];
            }
        }
        const int32_t row_term = p->weights_offset * x_sum;
        for (int o = 0; o < out_n; o += 2) {
            const int pair = o + 1 < out_n;
            const int8_t *w0 = p->weights + o * in_n, *w1 = pair ? w0 + in_n : w0;
            int32_t acc0 = row_term + (p->bias ? p->bias[o] : 0);
            int32_t acc1 = row_term + (p->bias && pair ? p->bias[o + 1] : 0);
            dot2_s8(in, w0, w1, in_n, &acc0, &acc1);
            out[o] = requantize_s8(&stage, acc0, o);
            if (pair) {
                out[o + 1] = requantize_s8(&stage, acc1, o + 1);
            }
        }
    }
}

/* --- int16x8: int16 activations (zero point 0, so no offsets), int8 weights ------------------------------- */

/* TFLM's 16x8 kernels accumulate in the type of their bias: in 64 bits, with the 64-bit requantization, for an
 * int64 bias (acc64); in 32 bits, with the 32-bit one, for an int32 bias or none. The accumulation starts from the
 * bias (TFLM adds it last: the same sum, modulo 2^32 in 32 bits). */
static inline int64_t bias_s16(const int32_t *bias, const int64_t *bias64, int c)
{
    return bias64 ? bias64[c] : (bias ? bias[c] : 0);
}

static inline int16_t requantize_s16(int64_t acc, int32_t acc64, const tr_requant *r, int c, int32_t lo, int32_t hi)
{
    const int32_t y = acc64 ? tr_requantize64(acc, r->multiplier[c], r->shift[c])
                            : tr_requantize((int32_t)acc, r->multiplier[c], r->shift[c]);
    return (int16_t)tr_clamp(y, lo, hi);
}

#if TR_DSP
/* The low (pack_lo) or high (pack_hi) halfwords of a and b, as (a's, b's). */
static inline int32_t pack_lo(int32_t a, int32_t b)
{
    int32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

static inline int32_t pack_hi(int32_t a, int32_t b)
{
    int32_t r;
    __asm__("pkhtb %0, %2, %1, asr #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
#endif

/* acc + w . x over n int16 inputs and int8 weights, in 64 bits. With the DSP extension four products per two
 * SMLALDs: the weights' SXTB16 halves hold elements (0, 2) and (1, 3), the inputs are repacked to match. */
static inline int64_t dot_s16(const int16_t *x, const int8_t *w, int n, int64_t acc)
{
#if TR_DSP
    for (; n >= 4; n -= 4, x += 4, w += 4) {
        int32_t x01, x23;
        memcpy(&x01, x, 4);
        memcpy(&x23, x + 2, 4);
        const int32_t wv = load4(w);
        acc = __smlald(__sxtb16(wv), pack_lo(x01, x23), acc);
        acc = __smlald(sxtb16_ror8(wv), pack_hi(x01, x23), acc);
    }
#endif
    for (; n > 0; n--) {
        acc += *w++ * *x++;
    }
    return acc;
}

/* Taps outside the input contribute nothing (the input's zero point is 0), so only the taps inside are walked,
 * found once per output pixel; with one group and no dilation along x a filter row is one run of the input. */
void tr_conv_s16(const tr_conv_params *p, const int16_t *in, int16_t *out)
{
    const int k_w = p->k_w, k_c = p->k_c, in_c = p->in_c, out_c = p->out_c;
    const int per_group = out_c / (in_c / k_c), row_size = k_w * k_c, filter_size = p->k_h * row_size;
    const int whole_rows = k_c == in_c && p->dilation_w == 1;
    const int tap_step = p->dilation_w * in_c, row_step = p->dilation_h * p->in_w * in_c;
    for (int oy = 0; oy < p->out_h; oy++) {
        const int iy0 = oy * p->stride_h - p->pad_h;
        int ky_lo, ky_hi;
        inside_taps(iy0, p->k_h, p->dilation_h, p->in_h, &ky_lo, &ky_hi);
        for (int ox = 0; ox < p->out_w; ox++, out += out_c) {
            const int ix0 = ox * p->stride_w - p->pad_w;
            int kx_lo, kx_hi;
            inside_taps(ix0, k_w, p->dilation_w, p->in_w, &kx_lo, &kx_hi);
            const int runs = whole_rows ? 1 : kx_hi - kx_lo, run = whole_rows ? (kx_hi - kx_lo) * k_c : k_c;
            /* the first tap inside the input, of group 0 */
            const int iy = iy0 + ky_lo * p->dilation_h, ix = ix0 + kx_lo * p->dilation_w;
            const int16_t *window = in + (iy * p->in_w + ix) * in_c;
            for (int oc = 0; oc < out_c; oc++) {
                const int16_t *x_row = window + (oc / per_group) * k_c;
                const int8_t *w_row = p->weights + oc * filter_size + ky_lo * row_size + kx_lo * k_c;
                int64_t acc = bias_s16(p->bias, p->bias64, oc);
                for (int ky = ky_lo; ky < ky_hi; ky++, x_row += row_step, w_row += row_size) {
                    const int16_t *x = x_row;
                    const int8_t *w = w_row;
                    for (int r = 0; r < runs; r++, x += tap_step, w += k_c) {
                        acc = dot_s16(x, w, run, acc);
                    }
                }
                out[oc] = requantize_s16(acc, p->acc64, &p->requant, oc, p->act_min, p->act_max);
            }
        }
    }
}

void tr_depthwise_conv_s16(const tr_conv_params *p, const int16_t *in, int16_t *out)
{
    const int out_c = p->out_c, m = p->depth_multiplier, tap_step = p->dilation_w * p->in_c;
    const int row_step = p->dilation_h * p->in_w * p->in_c, filter_row = p->k_w * out_c;
    for (int oy = 0; oy < p->out_h; oy++) {
        const int iy0 = oy * p->stride_h - p->pad_h;
        int ky_lo, ky_hi;
        inside_taps(iy0, p->k_h, p->dilation_h, p->in_h, &ky_lo, &ky_hi);
        for (int ox = 0; ox < p->out_w; ox++, out += out_c) {
            const int ix0 = ox * p->stride_w - p->pad_w;
            int kx_lo, kx_hi;
            inside_taps(ix0, p->k_w, p->dilation_w, p->in_w, &kx_lo, &kx_hi);
            /* the first tap inside the input */
            const int iy = iy0 + ky_lo * p->dilation_h, ix = ix0 + kx_lo * p->dilation_w;
            const int16_t *window = in + (iy * p->in_w + ix) * p->in_c;
            for (int oc = 0; oc < out_c; oc++) {
                const int16_t *x_row = window + oc / m;
                const int8_t *w_row = p->weights + (ky_lo * p->k_w + kx_lo) * out_c + oc;
                int64_t acc = bias_s16(p->bias, p->bias64, oc);
                for (int ky = ky_lo; ky < ky_hi; ky++, x_row += row_step, w_row += filter_row) {
                    const int16_t *x = x_row;
                    const int8_t *w = w_row;
                    for (int kx = kx_lo; kx < kx_hi; kx++, x += tap_step, w += out_c) {
                        acc += *w * *x;
                    }
                }
                out[oc] = requantize_s16(acc, p->acc64, &p->requant, oc, p->act_min, p->act_max);
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
            int64_t acc = bias_s16(p->bias, p->bias64, o);
            for (int i = 0; i < p->in_n; i++) {
                acc += (w[i] + p->weights_offset) * x[i];
            }
            out[r * p->out_n + o] = requantize_s16(acc, p->acc64, &p->requant, o, p->act_min, p->act_max);
        }
    }
}
