/* Convolutions and fully connected layers.
 *
 * The int8 kernels follow CMSIS-NN's design. The compiler folds the input offset into the bias (bias + in_offset *
 * the sum of each filter's weights: exact, as int32 sums are), so the inner loops are plain dot products of int8
 * values. A tap outside the input (padding) then adds weight * zero point, which cancels that tap's share of the
 * folded term: the result is TFLM's, whose reference kernel skips the tap. CONV_2D gathers each output pixel's
 * receptive field on the stack (im2col, the zero point for padding) and takes two pixels times two output channels
 * per pass (four pixels in assembly, from fields widened to halfwords once); DEPTHWISE_CONV_2D takes four channels
 * per load; FULLY_CONNECTED four outputs per input load (two on the plain path). Most layers take the _opt kernels,
 * whose requantization is a few instructions from twice the accumulator (requantize_doubled). Bounds are found once
 * per output pixel, never per product. On cores with the DSP extension the products go through SXTB16 and SMLAD
 * (SMLABB/SMLATT in depthwise); elsewhere (the Cortex-M3, the host build of the tests) the same loops run with
 * scalar products. Accumulating the same int32 products in another order gives the same sums, and the
 * requantization is TFLM's: outputs are bit-exact with it.
 */
#include <stddef.h>
#include <string.h>

#include "tr_kernels.h"
#include "tr_support.h"

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
#define TR_DSP 1
#else
#define TR_DSP 0
#endif

/* Helium (MVE's integer instructions, the Cortex-M55): the convolution's channel loop and the fully connected
 * layer's rows in vectors (channels_mve, rows_mve) rather than the DSP extension's assembly. */
#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
#include <arm_mve.h>
#define TR_MVE 1
#else
#define TR_MVE 0
#endif
#define TR_DSP_ASM (TR_DSP && !TR_MVE) /* the DSP extension's loops that Helium's replace */

/* Work done once per call, group of channels or patch of input, not per output value: compiled for size, to keep
 * the runtime's flash small. */
#define TR_SETUP __attribute__((noinline, optimize("Os")))

/* tr_conv_s8_opt's and tr_fully_connected_s8_opt's attributes: where their loops are in assembly and not inlined
 * (the DSP extension's path), their own work runs once a block of pixels or an output row, compiled for size (the
 * room MobileNet's flash needed; tr_conv_add_s8_opt, in models with flash to spare, stays compiled for speed).
 * Elsewhere their loops are inlined, and they are compiled for speed. */
#if TR_DSP_ASM
#define TR_OPT_ENTRY __attribute__((optimize("Os")))
#else
#define TR_OPT_ENTRY
#endif

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

/* The requantization of the _opt kernels, from the doubled accumulator a2 = 2 * acc: TFLM's first rounding,
 * floor((acc * m + 2^30) / 2^31), is SMMLAR's (a2 * m + 2^31) >> 32, exact while |a2| < 2^31. SMMLAR also adds the
 * nudge 2^(r - 1) of the second rounding, the shift right by r = -shift, and the output's zero point times 2^r,
 * which the shift turns into the zero point added (doubled_nudge). The shift rounds half away from zero: one less
 * before it for a negative value. Its sign is acc's, but for a value 0 from a negative acc, where one less changes
 * nothing (r >= 1: 2^(r - 1) is no multiple of 2^r). The compiler checks that a2 and the sum SMMLAR returns fit in
 * 32 bits, and r >= 1, for every channel (lower.doubled_requant_fits). Returns the output before the clamp. */
static inline __attribute__((always_inline)) int32_t requantize_doubled(int32_t a2, int32_t multiplier,
                                                                       int32_t nudge, int32_t right)
{
#if TR_DSP
    int32_t q;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(q) : "r"(a2), "r"(multiplier), "r"(nudge));
#else
    const int32_t q = (int32_t)(((int64_t)a2 * multiplier + (int64_t)nudge * ((int64_t)1 << 32) + (1u << 31)) >> 32);
#endif
    return (q + (a2 >> 31)) >> right;
}

/* requantize_doubled's nudge for a shift right by right: 2^(right - 1) plus the output's zero point times 2^right. */
static inline int32_t doubled_nudge(int32_t right, int32_t out_offset)
{
    return (int32_t)((1u << (right - 1)) + ((uint32_t)out_offset << right));
}

/* The outputs of the _opt convolution's channels oc and oc + 1 for n pixels, out_c apart from y: their
 * accumulators acc[2 * i] and acc[2 * i + 1] requantized from twice themselves and saturated to int8. */
static inline __attribute__((always_inline)) void pair_outputs_s8(const tr_conv_params *p, int oc,
                                                                   const int32_t *acc, int n, int8_t *y, int out_c)
{
    const int32_t m0 = p->requant.multiplier[oc], r0 = -p->requant.shift[oc];
    const int32_t m1 = p->requant.multiplier[oc + 1], r1 = -p->requant.shift[oc + 1];
    const int32_t n0 = doubled_nudge(r0, p->out_offset), n1 = doubled_nudge(r1, p->out_offset);
    for (int i = 0; i < n; i++) {
        int8_t *o = y + i * out_c + oc;
        o[0] = (int8_t)tr_saturate_s8(requantize_doubled(2 * acc[2 * i], m0, n0, r0));
        o[1] = (int8_t)tr_saturate_s8(requantize_doubled(2 * acc[2 * i + 1], m1, n1, r1));
    }
}

/* Four int8 values from any address (the core allows unaligned word loads). */
static inline int32_t load4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

#if TR_DSP
/* Bytes 1 and 3 of x sign-extended into two halfwords (__sxtb16 takes bytes 0 and 2); GCC's ACLE lacks __ror. */
static inline int32_t sxtb16_ror8(int32_t x)
{
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}

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

/* *acc0 += w0 . x and *acc1 += w1 . x over n int8 values: each input load serves two output channels (the plain
 * path of FULLY_CONNECTED; with the DSP extension it takes dot4_rows_s8). */
static inline void dot2_s8(const int8_t *x, const int8_t *w0, const int8_t *w1, int n, int32_t *acc0, int32_t *acc1)
{
    int32_t a0 = *acc0, a1 = *acc1;
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

/* n bytes from src to dst, a word at a time, the last word ending at the last byte (over bytes already copied):
 * a receptive field's runs are short, where memcpy costs a call and its dispatch, and a loop over the last bytes
 * one by one costs more than they do. The empty asm keeps GCC from making the loops that call. */
static inline void copy_s8(int8_t *dst, const int8_t *src, int n)
{
    if (n < 4) {
        for (; n > 0; n--) {
            __asm__("" : "+r"(dst));
            *dst++ = *src++;
        }
        return;
    }
    for (int i = 0; i < n - 4; i += 4) {
        int32_t v = load4(src + i);
        __asm__("" : "+r"(v));
        memcpy(dst + i, &v, 4);
    }
    const int32_t last = load4(src + n - 4);
    memcpy(dst + n - 4, &last, 4);
}

/* copy_s8 in one place, not inlined: a 1x1 filter's receptive field, a border field's runs, a last group's outputs. */
static __attribute__((noinline)) void copy_run_s8(int8_t *dst, const int8_t *src, int n)
{
    copy_s8(dst, src, n);
}

/* value's byte four times, a word of it. */
static inline int32_t repeated4(int8_t value)
{
    return (int32_t)((uint32_t)(uint8_t)value * 0x01010101u);
}

/* n > 0 bytes of value at dst, a word at a time (for the same reason, and the last bytes too: a call to memset
 * would link newlib's, 162 bytes of flash): fill_s8's, not inlined, for padding. */
static TR_SETUP void fill_run_s8(int8_t *dst, int8_t value, int n)
{
    int32_t v = repeated4(value);
    for (; n >= 4; n -= 4, dst += 4) {
        __asm__("" : "+r"(v));
        memcpy(dst, &v, 4);
    }
    for (; n > 0; n--) {
        __asm__("" : "+r"(dst));
        *dst++ = value;
    }
}

/* n bytes of value at dst, where most calls fill none. */
static inline void fill_s8(int8_t *dst, int8_t value, int n)
{
    if (n > 0) {
        fill_run_s8(dst, value, n);
    }
}

/* Whether the receptive field that starts at input (iy0, ix0) lies inside the input, its taps in each row adjacent. */
static inline int inside_field(const tr_conv_params *p, int iy0, int ix0)
{
    return iy0 >= 0 && ix0 >= 0 && iy0 + (p->k_h - 1) * p->dilation_h < p->in_h && ix0 + p->k_w <= p->in_w &&
           p->dilation_w == 1;
}

/* receptive_field_s8 for a field that crosses the border of the input: taps outside it hold the zero point. Compiled
 * for size, as few pixels' fields cross it. */
static TR_SETUP void border_field_s8(const tr_conv_params *p, const int8_t *in, int iy0, int ix0, int8_t *column)
{
    const int in_c = p->in_c, row_size = p->k_w * in_c, zero_point = -p->in_offset;
    int ky_lo, ky_hi, kx_lo, kx_hi;
    inside_taps(iy0, p->k_h, p->dilation_h, p->in_h, &ky_lo, &ky_hi);
    inside_taps(ix0, p->k_w, p->dilation_w, p->in_w, &kx_lo, &kx_hi);
    int8_t *c = column;
    for (int ky = 0; ky < p->k_h; ky++) {
        if (ky < ky_lo || ky >= ky_hi) {
            fill_s8(c, zero_point, row_size);
            c += row_size;
            continue;
        }
        fill_s8(c, zero_point, kx_lo * in_c);
        c += kx_lo * in_c;
        const int8_t *x = in + ((iy0 + ky * p->dilation_h) * p->in_w + ix0 + kx_lo * p->dilation_w) * in_c;
        const int run = p->dilation_w == 1 ? (kx_hi - kx_lo) * in_c : in_c; /* adjacent taps: one run */
        for (int8_t *end = c + (kx_hi - kx_lo) * in_c; c < end; x += p->dilation_w * run, c += run) {
            copy_run_s8(c, x, run);
        }
        fill_s8(c, zero_point, (p->k_w - kx_hi) * in_c);
        c += (p->k_w - kx_hi) * in_c;
    }
}

/* The receptive field of the output pixel whose filter starts at input (iy0, ix0), gathered into column as one
 * run of bytes in the filters' order ([k_h][k_w][in_c]), taps outside the input holding the zero point (so the
 * folded bias stays exact). One group only: k_c == in_c. Copying the field is cheap next to its out_c products,
 * and gives the channel loops their fields in one run each; conv_s8 copies a 1x1 filter's field itself. */
static __attribute__((noinline)) void receptive_field_s8(const tr_conv_params *p, const int8_t *in, int iy0, int ix0,
                                                         int8_t *column)
{
    if (!inside_field(p, iy0, ix0)) {
        border_field_s8(p, in, iy0, ix0, column);
        return;
    }
    /* inside the input, as most are: a run of the input per row */
    const int in_c = p->in_c, row_size = p->k_w * in_c;
    const int8_t *x = in + (iy0 * p->in_w + ix0) * in_c;
    const int k_h = p->k_h, row_step = p->dilation_h * p->in_w * in_c; /* read once: the copies may alias p */
    for (int ky = 0; ky < k_h; ky++, x += row_step, column += row_size) {
        copy_s8(column, x, row_size);
    }
}

#if TR_DSP
/* Passes of two steps over %[passes], entering at the second step where %[t0] is not 0 (an odd four bytes first):
 * the loop of dot4_columns_s8 and dot4_rows_s8. */
#define TR_PASSES_OF_TWO(step)                                                                                     \
    "cmp %[t0], #0\n\t"                                                                                            \
    "bne 2f\n"                                                                                                     \
    "1:\n\t" step "2:\n\t" step "subs %[passes], %[passes], #1\n\t"                                                \
    "bne 1b"

/* Four bytes of both fields times four of each of the two filters: the second pixel's word first, at an immediate
 * offset, so that the first pixel's load can advance x (post-indexed). */
#define TR_DOT4_COLUMNS_STEP                                                                                       \
    "ldr %[t0], [%[w0]], #4\n\t"                                                                                   \
    "ldr %[t1], [%[w1]], #4\n\t"                                                                                   \
    "sxtb16 %[t2], %[t0]\n\t"                                                                                      \
    "sxtb16 %[t0], %[t0], ror #8\n\t"                                                                              \
    "sxtb16 %[t3], %[t1]\n\t"                                                                                      \
    "sxtb16 %[t1], %[t1], ror #8\n\t"                                                                              \
    "ldr %[t4], [%[x], %[column]]\n\t"                                                                             \
    "sxtb16 %[t5], %[t4]\n\t"                                                                                      \
    "sxtb16 %[t4], %[t4], ror #8\n\t"                                                                              \
    "smlad %[b0], %[t2], %[t5], %[b0]\n\t"                                                                         \
    "smlad %[b1], %[t3], %[t5], %[b1]\n\t"                                                                         \
    "smlad %[b0], %[t0], %[t4], %[b0]\n\t"                                                                         \
    "smlad %[b1], %[t1], %[t4], %[b1]\n\t"                                                                         \
    "ldr %[t4], [%[x]], #4\n\t"                                                                                    \
    "sxtb16 %[t5], %[t4]\n\t"                                                                                      \
    "sxtb16 %[t4], %[t4], ror #8\n\t"                                                                              \
    "smlad %[a0], %[t2], %[t5], %[a0]\n\t"                                                                         \
    "smlad %[a1], %[t3], %[t5], %[a1]\n\t"                                                                         \
    "smlad %[a0], %[t0], %[t4], %[a0]\n\t"                                                                         \
    "smlad %[a1], %[t1], %[t4], %[a1]\n\t"
#endif

/* A receptive field of rows rows of row_bytes bytes, step bytes apart from x, into column in the _opt filters' order
 * (lower.rows_first): each row's whole words, then the rows' last row_bytes % 4 bytes. */
static __attribute__((noinline)) void rows_first_s8(int8_t *column, const int8_t *x, int step, int rows,
                                                    int row_bytes)
{
    const int whole = row_bytes - row_bytes % 4, rem = row_bytes % 4;
    int8_t *tails = column + rows * whole;
    for (int r = 0; r < rows; r++, x += step, column += whole, tails += rem) {
        copy_s8(column, x, whole);
        copy_s8(tails, x + whole, rem);
    }
}

/* dot4_s8 for two receptive fields TR_COLUMN_BYTES apart: the second pixel's loads take an immediate offset from
 * the first's pointer. Not inlined: alone in its function the loop keeps its four accumulators, three pointers,
 * its count and six operands in registers (all fourteen there are). In assembly, eight bytes a pass (an odd four
 * enter the loop at its second step), because GCC's own allocation of this loop spilled a register every pass. */
static __attribute__((noinline)) void dot4_columns_s8(const int8_t *x, const int8_t *w0, const int8_t *w1, int n,
                                                      int32_t acc[4])
{
#if TR_DSP
    if (n >= 4) {
        int32_t a0 = acc[0], a1 = acc[1], b0 = acc[2], b1 = acc[3];
        int32_t t0 = n & 4, t1, t2, t3, t4, t5; /* t0: an odd step first */
        int passes = (n + 4) / 8;
        __asm__ volatile(TR_PASSES_OF_TWO(TR_DOT4_COLUMNS_STEP)
                         : [a0] "+r"(a0), [a1] "+r"(a1), [b0] "+r"(b0), [b1] "+r"(b1), [x] "+r"(x), [w0] "+r"(w0),
                           [w1] "+r"(w1), [passes] "+r"(passes), [t0] "+&r"(t0), [t1] "=&r"(t1), [t2] "=&r"(t2),
                           [t3] "=&r"(t3), [t4] "=&r"(t4), [t5] "=&r"(t5)
                         : [column] "i"(TR_COLUMN_BYTES)
                         : "cc", "memory");
        acc[0] = a0;
        acc[1] = a1;
        acc[2] = b0;
        acc[3] = b1;
        n %= 4;
    }
#endif
    dot4_s8(x, x + TR_COLUMN_BYTES, w0, w1, n, acc); /* what the DSP loop left, or everything */
}

/* The words of a receptive field in a block of tr_conv_s8_opt's filters (lower.PAIR_BLOCK), which channels_s8 takes
 * a pass. A pair of output channels' stream (lower.pair_stream) holds its two int32 biases, then its filters in
 * blocks, 8 bytes for each word of the field, the first block led by pair_lead zero words. */
#define TR_PAIR_BLOCK 8

static inline int pair_lead(int words)
{
    return -words & (TR_PAIR_BLOCK - 1);
}

/* A receptive field of words words with its lead: whole blocks. A pair's filters take 8 bytes for each, a group's
 * widened fields (channels_s8's) 8 words. */
static inline int block_words(int words)
{
    return words + pair_lead(words);
}

/* The bytes of a pair's stream for a receptive field of words words: its biases, then its filters. */
static inline int pair_bytes(int words)
{
    return 8 + 8 * block_words(words);
}

#if TR_DSP_ASM
/* What channels_s8 reads of the layer, and the pointers it advances a pair of channels at a time. */
typedef struct {
    const int8_t *stream;      /* the next pair's biases and filters (lower.pair_stream) */
    const int32_t *multiplier; /* and its requantization */
    const int8_t *shift;
    int8_t *out;               /* the first pixel's outputs of the next pair */
    int32_t out_c;             /* how far a pixel's outputs are from the one before's */
    int32_t pairs;             /* pairs left */
    int32_t k;                 /* 1 + 2 * the output zero point: doubled_nudge is k << (right - 1) */
    int32_t lead;              /* steps the first pass skips: the first block's leading words */
    int32_t one;               /* whether the block is one pixel: a step a turn for it alone */
    int32_t filters;           /* the bytes of a pair's filters: 64 a block */
    const int32_t *fields;     /* the groups' receptive fields, widened (widen_pixels_s8), less lead steps */
    const int32_t *end;        /* and where they end */
} channels_context;

/* Half a step of channels_s8, two bytes of a word of the four receptive fields: a word of the pair's weights of
 * those bytes at offset wo of the stream, split by SXTB16 into both filters' halfwords, times the four pixels'
 * widened bytes at offset xo of the fields (a word each, 8 bytes apart). The loads in twos: on the core a load
 * right after another takes a cycle less. */
#define TR_CHANNELS_HALF(wo, xo)                                                                                   \
    "ldr %[v], [%[w], #" wo "]\n\t"                                                                                \
    "ldr %[t], [%[x], #" xo "]\n\t"                                                                                \
    "ldr %[t2], [%[x], #" xo "+8]\n\t"                                                                             \
    "sxtb16 %[u], %[v]\n\t"                                                                                        \
    "sxtb16 %[v], %[v], ror #8\n\t"                                                                                \
    "smlad %[a0], %[u], %[t], %[a0]\n\t"                                                                           \
    "smlad %[b0], %[v], %[t], %[b0]\n\t"                                                                           \
    "smlad %[a1], %[u], %[t2], %[a1]\n\t"                                                                          \
    "smlad %[b1], %[v], %[t2], %[b1]\n\t"                                                                          \
    "ldr %[t], [%[x], #" xo "+16]\n\t"                                                                             \
    "ldr %[t2], [%[x], #" xo "+24]\n\t"                                                                            \
    "smlad %[a2], %[u], %[t], %[a2]\n\t"                                                                           \
    "smlad %[b2], %[v], %[t], %[b2]\n\t"                                                                           \
    "smlad %[a3], %[u], %[t2], %[a3]\n\t"                                                                          \
    "smlad %[b3], %[v], %[t2], %[b3]\n\t"

/* Step s of a pass, at label 1s: a word of the four fields (32 bytes widened), its bytes 0 and 2 meeting the
 * block's first half of weights, 1 and 3 its second. */
#define TR_CHANNELS_STEP(s)                                                                                        \
    "1" #s ":\n\t" TR_CHANNELS_HALF("4*" #s, "32*" #s) "2" #s ":\n\t" TR_CHANNELS_HALF("32+4*" #s, "32*" #s "+4")

/* One output of channels_s8: the accumulator acc, twice the sum from doubled fields and biases, requantized
 * (requantize_doubled) into u and saturated (TR_CHANNELS_REQUANTIZED), then stored at address. w holds its
 * channel's multiplier, t its nudge and t2 its shift right less one in the low byte, where register shifts read it:
 * the last step of the shift is SSAT's. ASRS, not ASR: its 16-bit encoding, the flags being free here. */
#define TR_CHANNELS_REQUANTIZED(acc)                                                                               \
    "smmlar %[u], %[" #acc "], %[w], %[t]\n\t"                                                                     \
    "add %[u], %[u], %[" #acc "], asr #31\n\t"                                                                     \
    "asrs %[u], %[u], %[t2]\n\t"                                                                                   \
    "ssat %[u], #8, %[u], asr #1\n\t"
#define TR_CHANNELS_OUTPUT(acc, address) TR_CHANNELS_REQUANTIZED(acc) "strb %[u], " address "\n\t"

/* A channel's second to fourth outputs, from the accumulators p1 to p3, v (out_c) bytes apart from base + v (the
 * first's place); spare, free once p1 is stored, holds the fourth's place less v. */
#define TR_CHANNELS_LAST_OUTPUTS(p1, p2, p3, base, spare)                                                          \
    TR_CHANNELS_OUTPUT(p1, "[%[" #base "], %[v]]") TR_CHANNELS_OUTPUT(p2, "[%[" #base "], %[v], lsl #1]")          \
    "add %[" #spare "], %[" #base "], %[v], lsl #1\n\t" TR_CHANNELS_OUTPUT(p3, "[%[" #spare "], %[v]]")

/* Half a step of channels_s8's one pixel: a word of the pair's weights at offset wo of the stream, split into both
 * filters' halfwords, times the pixel's widened bytes at offset xo of its field. */
#define TR_ONE_PIXEL_HALF(wo, xo)                                                                                  \
    "ldr %[v], [%[w], #" wo "]\n\t"                                                                                \
    "ldr %[t], [%[x], #" xo "]\n\t"                                                                                \
    "sxtb16 %[u], %[v]\n\t"                                                                                        \
    "sxtb16 %[v], %[v], ror #8\n\t"                                                                                \
    "smlad %[a0], %[u], %[t], %[a0]\n\t"                                                                           \
    "smlad %[b0], %[v], %[t], %[b0]\n\t"

/* channels_s8's frame on the stack, in bytes from sp: the context, the second half of the first pass's first step,
 * the pair's filters (their end, then their start), each channel's multiplier, nudge and shift right less one, the
 * next group's outputs, out_c, the fields' end, the steps the first pass skips and where a pair's groups start. */
#define TR_FRAME_BYTES 60

/* conv_s8's channel loop in assembly, over groups of four pixels: for each output channel pair, its biases,
 * requantization and filters set up once, then for each group the dot products over its four receptive fields (a
 * block of the pair's filters a pass), then its eight outputs. Per word of the fields: 2 loads and 4 SXTB16 for the
 * weights, 8 loads and 16 SMLAD, 32 products. The dot products take all fourteen registers; the rest waits in a
 * frame on the stack (TR_FRAME_BYTES). A group's sums start from the biases in the first half of the step the first
 * pass enters at (the first block's lead past), with register offsets; then one load of the PC goes on to that
 * step's second half, from a table of their places: the steps differ in size, those of offsets past 124 bytes
 * taking 32-bit loads. A group's fields are padded to whole blocks, so that its passes end where the next group's
 * begin. */
static __attribute__((noinline)) void channels_s8(channels_context *context)
{
    /* the loads' registers in r0-r7, where an immediate offset up to 124 fits a 16-bit encoding */
    register int32_t u __asm__("r0") = (int32_t)context;
    register int32_t v __asm__("r1"), t __asm__("r2"), t2 __asm__("r3");
    register const int8_t *x __asm__("r4"), *w __asm__("r5");
    register int32_t a0 __asm__("r6"), b0 __asm__("r7");
    int32_t a1, a2, a3, b1, b2, b3;
    __asm__ volatile("sub sp, sp, %[frame]\n\t"
                     "str %[u], [sp]\n\t"
                     "ldr %[t], [%[u], %[lead]]\n\t"
                     "str %[t], [sp, #52]\n\t"
                     "adr %[v], 8f\n\t"
                     "ldrh %[t], [%[v], %[t], lsl #1]\n\t"
                     "adr %[v], 10f\n\t"
                     "add %[v], %[v], %[t], lsl #1\n\t"
                     "orr %[v], %[v], #1\n\t" /* in Thumb state */
                     "str %[v], [sp, #4]\n\t"
                     "adr %[v], 2f\n\t"
                     "ldr %[t2], [%[u], %[one]]\n\t"
                     "cbz %[t2], 9f\n\t"
                     "adr %[v], 30f\n"
                     "9:\n\t"
                     "orr %[v], %[v], #1\n\t"
                     "str %[v], [sp, #56]\n\t"
                     "ldr %[t], [%[u], %[out_c]]\n\t"
                     "str %[t], [sp, #44]\n\t"
                     "ldr %[t], [%[u], %[end]]\n\t"
                     "str %[t], [sp, #48]\n\t"
                     "1:\n\t" /* a pair: its filters, requantization and first outputs into the frame */
                     "ldr %[u], [sp]\n\t"
                     "ldr %[w], [%[u], %[stream]]\n\t"
                     "add %[w], %[w], #8\n\t"
                     "str %[w], [sp, #12]\n\t"
                     "ldr %[t], [%[u], %[filters]]\n\t"
                     "add %[t], %[w], %[t]\n\t"
                     "str %[t], [sp, #8]\n\t"
                     "str %[t], [%[u], %[stream]]\n\t"
                     "ldr %[t], [%[u], %[multiplier]]\n\t"
                     "ldr %[v], [%[t]], #4\n\t"
                     "str %[v], [sp, #16]\n\t"
                     "ldr %[v], [%[t]], #4\n\t"
                     "str %[v], [sp, #28]\n\t"
                     "str %[t], [%[u], %[multiplier]]\n\t"
                     "ldr %[t], [%[u], %[shift]]\n\t"
                     "ldrsb %[v], [%[t]], #1\n\t" /* -right */
                     "ldrsb %[t2], [%[t]], #1\n\t"
                     "str %[t], [%[u], %[shift]]\n\t"
                     "mvn %[v], %[v]\n\t"
                     "str %[v], [sp, #24]\n\t"
                     "mvn %[t2], %[t2]\n\t"
                     "str %[t2], [sp, #36]\n\t"
                     "ldr %[t], [%[u], %[k]]\n\t"
                     "lsl %[x], %[t], %[v]\n\t" /* doubled_nudge: k << (right - 1) */
                     "str %[x], [sp, #20]\n\t"
                     "lsl %[x], %[t], %[t2]\n\t"
                     "str %[x], [sp, #32]\n\t"
                     "ldr %[t], [%[u], %[out]]\n\t"
                     "str %[t], [sp, #40]\n\t"
                     "add %[t], %[t], #2\n\t"
                     "str %[t], [%[u], %[out]]\n\t"
                     "ldr %[x], [%[u], %[fields]]\n\t"
                     "ldr pc, [sp, #56]\n"
                     "2:\n\t" /* a group: the biases, then the first half of its first step from them, b3 its place */
                     "ldr %[w], [sp, #12]\n\t"
                     "ldr %[a0], [%[w], #-8]\n\t"
                     "ldr %[b0], [%[w], #-4]\n\t"
                     "ldr %[t], [sp, #52]\n\t"
                     "ldr %[v], [%[w], %[t], lsl #2]\n\t"
                     "add %[b3], %[x], %[t], lsl #5\n\t"
                     "sxtb16 %[u], %[v]\n\t"
                     "sxtb16 %[v], %[v], ror #8\n\t"
                     "ldr %[t], [%[b3], #8]\n\t"
                     "ldr %[t2], [%[b3], #16]\n\t"
                     "smlad %[a1], %[u], %[t], %[a0]\n\t"
                     "smlad %[b1], %[v], %[t], %[b0]\n\t"
                     "smlad %[a2], %[u], %[t2], %[a0]\n\t"
                     "smlad %[b2], %[v], %[t2], %[b0]\n\t"
                     "ldr %[t], [%[b3], #24]\n\t"
                     "ldr %[t2], [%[b3]]\n\t"
                     "smlad %[a3], %[u], %[t], %[a0]\n\t"
                     "smlad %[b3], %[v], %[t], %[b0]\n\t"
                     "smlad %[a0], %[u], %[t2], %[a0]\n\t"
                     "smlad %[b0], %[v], %[t2], %[b0]\n\t"
                     "ldr pc, [sp, #4]\n\t"
                     TR_CHANNELS_STEP(0) TR_CHANNELS_STEP(1) TR_CHANNELS_STEP(2) TR_CHANNELS_STEP(3)
                     TR_CHANNELS_STEP(4) TR_CHANNELS_STEP(5) TR_CHANNELS_STEP(6) TR_CHANNELS_STEP(7)
                     "add %[x], %[x], #32 * 8\n\t"
                     "add %[w], %[w], #8 * 8\n\t"
                     "ldr %[t], [sp, #8]\n\t"
                     "cmp %[w], %[t]\n\t"
                     "bne 10b\n"
                     "3:\n\t" /* the group's outputs, from their place in a0 once its sum is out */
                     "ldr %[v], [sp, #44]\n\t"
                     "ldr %[w], [sp, #16]\n\t"
                     "ldr %[t], [sp, #20]\n\t"
                     "ldr %[t2], [sp, #24]\n\t"
                     TR_CHANNELS_REQUANTIZED(a0)
                     "ldr %[a0], [sp, #40]\n\t"
                     "strb %[u], [%[a0]]\n\t"
                     TR_CHANNELS_LAST_OUTPUTS(a1, a2, a3, a0, a1)
                     "ldr %[w], [sp, #28]\n\t"
                     "ldr %[t], [sp, #32]\n\t"
                     "ldr %[t2], [sp, #36]\n\t"
                     "add %[a1], %[a0], #1\n\t"
                     TR_CHANNELS_OUTPUT(b0, "[%[a1]]")
                     TR_CHANNELS_LAST_OUTPUTS(b1, b2, b3, a1, b0)
                     "add %[a0], %[a0], %[v], lsl #2\n\t"
                     "str %[a0], [sp, #40]\n\t"
                     "ldr %[t], [sp, #48]\n\t"
                     "cmp %[x], %[t]\n\t"
                     "bne 2b\n\t"
                     "ldr %[u], [sp]\n\t"
                     "ldr %[t], [%[u], %[pairs]]\n\t"
                     "subs %[t], %[t], #1\n\t"
                     "str %[t], [%[u], %[pairs]]\n\t"
                     "bne 1b\n\t"
                     "b 4f\n"
                     "8:\n\t" /* the places of the steps' second halves, in halfwords from the first step */
                     ".hword (20b-10b)/2, (21b-10b)/2, (22b-10b)/2, (23b-10b)/2, (24b-10b)/2, (25b-10b)/2, "
                     "(26b-10b)/2, (27b-10b)/2\n"
                     "30:\n\t" /* one pixel: two steps a turn, from the biases and the first block's start (the lead's
                                  * weights are zeros: whatever its places hold adds nothing) */
                     "ldr %[w], [sp, #12]\n\t"
                     "ldr %[a0], [%[w], #-8]\n\t"
                     "ldr %[b0], [%[w], #-4]\n\t"
                     "movs %[t2], #4\n"
                     "31:\n\t" TR_ONE_PIXEL_HALF("32", "4") TR_ONE_PIXEL_HALF("36", "36") TR_ONE_PIXEL_HALF("4", "32")
                     "ldr %[v], [%[w]], #8\n\t"
                     "ldr %[t], [%[x]], #64\n\t"
                     "sxtb16 %[u], %[v]\n\t"
                     "sxtb16 %[v], %[v], ror #8\n\t"
                     "smlad %[a0], %[u], %[t], %[a0]\n\t"
                     "smlad %[b0], %[v], %[t], %[b0]\n\t"
                     "subs %[t2], %[t2], #1\n\t"
                     "bne 31b\n\t"
                     "add %[w], %[w], #32\n\t" /* past the block's second half */
                     "movs %[t2], #4\n\t"
                     "ldr %[t], [sp, #8]\n\t"
                     "cmp %[w], %[t]\n\t"
                     "bne 31b\n\t"
                     "ldr %[x], [sp, #48]\n\t" /* the block's only group */
                     "b 3b\n"
                     "4:\n\t"
                     "add sp, sp, %[frame]"
                     : [a0] "=&r"(a0), [a1] "=&r"(a1), [a2] "=&r"(a2), [a3] "=&r"(a3), [b0] "=&r"(b0), [b1] "=&r"(b1),
                       [b2] "=&r"(b2), [b3] "=&r"(b3), [x] "=&r"(x), [w] "=&r"(w), [u] "+r"(u), [v] "=&r"(v),
                       [t] "=&r"(t), [t2] "=&r"(t2)
                     : [fields] "i"(offsetof(channels_context, fields)), [end] "i"(offsetof(channels_context, end)),
                       [stream] "i"(offsetof(channels_context, stream)), [lead] "i"(offsetof(channels_context, lead)),
                       [one] "i"(offsetof(channels_context, one)), [filters] "i"(offsetof(channels_context, filters)),
                       [out] "i"(offsetof(channels_context, out)), [out_c] "i"(offsetof(channels_context, out_c)),
                       [multiplier] "i"(offsetof(channels_context, multiplier)),
                       [shift] "i"(offsetof(channels_context, shift)), [k] "i"(offsetof(channels_context, k)),
                       [pairs] "i"(offsetof(channels_context, pairs)), [frame] "i"(TR_FRAME_BYTES)
                     : "cc", "memory");
}
#endif

#if TR_MVE
/* channels_s8 with Helium: per pair of output channels, a block of the stream (32 bytes of the field) a step: VLD2
 * splits each half of the block into both filters' weights of the field's even or odd bytes, and each pixel's 32
 * bytes into its even and odd bytes, for four 16-byte VMLADAVAs a pixel. The first block's leading zero weights
 * meet the bytes before the fields (columns has room for them). The first n pixels' outputs go to y, out_c apart. */
static __attribute__((noinline)) void channels_mve(const tr_conv_params *p, const int8_t *columns, int words,
                                                   int8_t *y, int n)
{
    const int out_c = p->out_c, bytes = 4 * block_words(words);
    const int8_t *x0 = columns - 4 * pair_lead(words), *x1 = x0 + TR_COLUMN_BYTES, *x2 = x1 + TR_COLUMN_BYTES;
    const int8_t *w = p->weights;
    for (int oc = 0; oc < out_c; oc += 2) {
        int32_t bias[2];
        memcpy(bias, w, sizeof bias); /* doubled in the stream */
        int32_t a0 = bias[0] / 2, a1 = bias[1] / 2, b0 = a0, b1 = a1, c0 = a0, c1 = a1;
        w += sizeof bias;
        for (int i = 0; i < bytes; i += 4 * TR_PAIR_BLOCK, w += 8 * TR_PAIR_BLOCK) {
            const int8x16x2_t even = vld2q_s8(w), odd = vld2q_s8(w + 4 * TR_PAIR_BLOCK);
            const int8x16x2_t xa = vld2q_s8(x0 + i);
            a0 = vmladavaq_s8(vmladavaq_s8(a0, xa.val[0], even.val[0]), xa.val[1], odd.val[0]);
            a1 = vmladavaq_s8(vmladavaq_s8(a1, xa.val[0], even.val[1]), xa.val[1], odd.val[1]);
            const int8x16x2_t xb = vld2q_s8(x1 + i);
            b0 = vmladavaq_s8(vmladavaq_s8(b0, xb.val[0], even.val[0]), xb.val[1], odd.val[0]);
            b1 = vmladavaq_s8(vmladavaq_s8(b1, xb.val[0], even.val[1]), xb.val[1], odd.val[1]);
            const int8x16x2_t xc = vld2q_s8(x2 + i);
            c0 = vmladavaq_s8(vmladavaq_s8(c0, xc.val[0], even.val[0]), xc.val[1], odd.val[0]);
            c1 = vmladavaq_s8(vmladavaq_s8(c1, xc.val[0], even.val[1]), xc.val[1], odd.val[1]);
        }
        const int32_t acc[6] = {a0, a1, b0, b1, c0, c1};
        pair_outputs_s8(p, oc, acc, n, y, out_c);
    }
}
#endif

/* out[i] = ADD(y[i], skip[i]) for n values, the residual ADD of tr_conv_add_s8: TFLM's arithmetic, each input's
 * share of the sum looked up (tr_residual), the sum requantized. */
static __attribute__((noinline)) void residual_s8(const tr_residual *r, const int8_t *y, const int8_t *skip,
                                                  int8_t *out, int n)
{
    const int32_t *in1 = r->in1_shares + 128, *in2 = r->in2_shares + 128;
    const int32_t multiplier = r->out_multiplier, right = -r->out_shift, offset = r->out_offset;
    const int32_t lo = r->act_min, hi = r->act_max, nudge = r->nudge;
    if (nudge && lo == INT8_MIN && hi == INT8_MAX) {
        for (int i = 0; i < n; i++) {
            const int32_t sum = in1[y[i]] + in2[skip[i]];
            out[i] = (int8_t)tr_saturate_s8(requantize_doubled(2 * sum, multiplier, nudge, right));
        }
        return;
    }
    if (nudge) {
        for (int i = 0; i < n; i++) {
            const int32_t sum = in1[y[i]] + in2[skip[i]];
            out[i] = (int8_t)tr_clamp(requantize_doubled(2 * sum, multiplier, nudge, right), lo, hi);
        }
        return;
    }
    for (int i = 0; i < n; i++) {
        const int32_t sum = in1[y[i]] + in2[skip[i]];
        out[i] = (int8_t)tr_clamp(tr_requantize_right(sum, multiplier, right) + offset, lo, hi);
    }
}

/* dot4_s8 over a receptive field of words words and a pair's filters in blocks (lower.pair_stream, past the
 * biases): for each word of the field, its bytes 0 and 2 meet a word of both filters in its block's first half,
 * its bytes 1 and 3 one in the second. */
static void dot4_pairs_s8(const int8_t *xa, const int8_t *xb, const int8_t *w, int words, int32_t acc[4])
{
    int32_t a0 = acc[0], a1 = acc[1], b0 = acc[2], b1 = acc[3];
    for (int j = pair_lead(words); j < block_words(words); j++, xa += 4, xb += 4) {
        const int8_t *e = w + 8 * j - 4 * (j % TR_PAIR_BLOCK), *o = e + 4 * TR_PAIR_BLOCK;
        a0 += e[0] * xa[0] + o[0] * xa[1] + e[2] * xa[2] + o[2] * xa[3];
        a1 += e[1] * xa[0] + o[1] * xa[1] + e[3] * xa[2] + o[3] * xa[3];
        b0 += e[0] * xb[0] + o[0] * xb[1] + e[2] * xb[2] + o[2] * xb[3];
        b1 += e[1] * xb[0] + o[1] * xb[1] + e[3] * xb[2] + o[3] * xb[3];
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = b0;
    acc[3] = b1;
}

#if TR_DSP_ASM
/* A word x of a receptive field as widen_pixels_s8 and widen_fields_s8 store it: its bytes 0 and 2 into lo, 1 and 3
 * into hi, sign-extended into halfwords and doubled. */
#define TR_WIDEN_DOUBLED(lo, hi, x)                                                                                    \
    "sxtb16 %[" #lo "], %[" #x "]\n\t"                                                                                 \
    "sxtb16 %[" #hi "], %[" #x "], ror #8\n\t"                                                                         \
    "sadd16 %[" #lo "], %[" #lo "], %[" #lo "]\n\t"                                                                    \
    "sadd16 %[" #hi "], %[" #hi "], %[" #hi "]\n\t"

/* The receptive fields of a 1x1 filter's pixels pixels, words words each from x on, into their places of the block's
 * widened fields (channels_s8's): a group of four pixels at a time, pixel i of a group at place + 8 i, each word's
 * bytes 0 and 2, then 1 and 3, sign-extended into halfwords and doubled, the next word 32 bytes on; the next group
 * group_words words on. A last group of fewer pixels widens its last pixel again in the places of those missing.
 * Widened once per pixel here, the fields' bytes are not widened again for every pair of output channels; doubled
 * here, the sums are twice the products for requantize_doubled, not doubled again for every output. In assembly,
 * one call a block, the four pixels' words in one turn. */
static __attribute__((noinline)) void widen_pixels_s8(int32_t *place, const int8_t *x, int words, int pixels,
                                                      int group_words)
{
    int32_t *slot, v, t, t0, n;
    const int8_t *x1, *x2, *x3;
    __asm__ volatile("1:\n\t" /* a group: its pixels' fields, the last one's again for those missing */
                     "lsl %[t], %[words], #2\n\t"
                     "add %[x1], %[x], %[t]\n\t"
                     "cmp %[pixels], #2\n\t"
                     "it lt\n\t"
                     "movlt %[x1], %[x]\n\t"
                     "add %[x2], %[x1], %[t]\n\t"
                     "cmp %[pixels], #3\n\t"
                     "it lt\n\t"
                     "movlt %[x2], %[x1]\n\t"
                     "add %[x3], %[x2], %[t]\n\t"
                     "cmp %[pixels], #4\n\t"
                     "it lt\n\t"
                     "movlt %[x3], %[x2]\n\t"
                     "mov %[slot], %[place]\n\t"
                     "mov %[n], %[words]\n"
                     "2:\n\t"
                     "ldr %[v], [%[x]], #4\n\t" TR_WIDEN_DOUBLED(t0, v, v)
                     "str %[v], [%[slot], #4]\n\t"
                     "ldr %[v], [%[x1]], #4\n\t" TR_WIDEN_DOUBLED(t, v, v)
                     "str %[t], [%[slot], #8]\n\t"
                     "str %[v], [%[slot], #12]\n\t"
                     "ldr %[v], [%[x2]], #4\n\t" TR_WIDEN_DOUBLED(t, v, v)
                     "str %[t], [%[slot], #16]\n\t"
                     "str %[v], [%[slot], #20]\n\t"
                     "ldr %[v], [%[x3]], #4\n\t" TR_WIDEN_DOUBLED(t, v, v)
                     "str %[t], [%[slot], #24]\n\t"
                     "str %[v], [%[slot], #28]\n\t"
                     "str %[t0], [%[slot]], #32\n\t"
                     "subs %[n], %[n], #1\n\t"
                     "bne 2b\n\t"
                     "mov %[x], %[x3]\n\t" /* past the group's fourth pixel: the next group's first */
                     "add %[place], %[place], %[group], lsl #2\n\t"
                     "subs %[pixels], %[pixels], #4\n\t"
                     "bgt 1b"
                     : [place] "+r"(place), [x] "+r"(x), [pixels] "+r"(pixels), [slot] "=&r"(slot), [v] "=&r"(v),
                       [t] "=&r"(t), [t0] "=&r"(t0), [n] "=&r"(n), [x1] "=&r"(x1), [x2] "=&r"(x2), [x3] "=&r"(x3)
                     : [words] "r"(words), [group] "r"(group_words)
                     : "cc", "memory");
}

/* The receptive fields of a layer whose filter is wider or taller than one pixel, as widen_fields_s8 reads them. */
typedef struct {
    int32_t rows, whole, rem; /* a field's rows, and their whole words and last bytes */
    int32_t next;             /* bytes from the end of a field's row to the next row: in the input, or gathered */
    int32_t tails;            /* bytes from a field's place to that of its tail words */
    int32_t pixel;            /* bytes from a field in the input to the next pixel's, along an output row */
    int32_t group;            /* bytes from after a group's fourth place to the next group's first */
} field_rows;

/* The receptive fields of pixels pixels along an output row, the first from x, into their places of the block's
 * widened fields as widen_pixels_s8 widens a 1x1 filter's, from place (that of the block's pixel first) on, in the
 * _opt filters' order (lower.rows_first): each row's whole words, then the rows' last bytes, packed into words that
 * end in zeros. The rows are read where they lie: in the input, not gathered first. In assembly, one call a run of
 * pixels: GCC's loops spent more on the rows and the pixels than on their words. */
static __attribute__((noinline)) void widen_fields_s8(int32_t *place, const int8_t *x, const field_rows *f,
                                                      int first, int pixels)
{
    register int32_t n __asm__("r0"), bits __asm__("r1"); /* low registers, for CBZ */
    int32_t *p, *tails, v, t, tail, rows;
    const int8_t *b;
    __asm__ volatile("1:\n\t" /* a pixel */
                     "mov %[p], %[place]\n\t"
                     "mov %[b], %[x]\n\t"
                     "ldr %[t], [%[f], %[tails_at]]\n\t"
                     "add %[tails], %[place], %[t]\n\t"
                     "ldr %[rows], [%[f], %[rows_at]]\n\t"
                     "movs %[tail], #0\n\t"
                     "movs %[bits], #0\n"
                     "2:\n\t" /* a row: its whole words */
                     "ldr %[n], [%[f], %[whole_at]]\n\t"
                     "cbz %[n], 4f\n"
                     "3:\n\t"
                     "ldr %[v], [%[b]], #4\n\t" TR_WIDEN_DOUBLED(t, v, v)
                     "str %[v], [%[p], #4]\n\t"
                     "str %[t], [%[p]], #32\n\t"
                     "subs %[n], %[n], #1\n\t"
                     "bne 3b\n"
                     "4:\n\t" /* its last bytes, into the tail word */
                     "ldr %[n], [%[f], %[rem_at]]\n\t"
                     "cbz %[n], 7f\n"
                     "5:\n\t"
                     "ldrb %[v], [%[b]], #1\n\t"
                     "lsl %[v], %[v], %[bits]\n\t"
                     "orr %[tail], %[tail], %[v]\n\t"
                     "adds %[bits], %[bits], #8\n\t"
                     "cmp %[bits], #32\n\t"
                     "bne 6f\n\t"
                     TR_WIDEN_DOUBLED(t, v, tail)
                     "str %[v], [%[tails], #4]\n\t"
                     "str %[t], [%[tails]], #32\n\t"
                     "movs %[tail], #0\n\t"
                     "movs %[bits], #0\n"
                     "6:\n\t"
                     "subs %[n], %[n], #1\n\t"
                     "bne 5b\n"
                     "7:\n\t"
                     "ldr %[t], [%[f], %[next_at]]\n\t"
                     "add %[b], %[b], %[t]\n\t"
                     "subs %[rows], %[rows], #1\n\t"
                     "bne 2b\n\t"
                     "cbz %[bits], 8f\n\t" /* a last tail word, ending in zeros */
                     TR_WIDEN_DOUBLED(t, v, tail)
                     "str %[v], [%[tails], #4]\n\t"
                     "str %[t], [%[tails]]\n"
                     "8:\n\t" /* the next pixel's place, the next group's after four, and its field */
                     "add %[place], %[place], #8\n\t"
                     "adds %[first], %[first], #1\n\t"
                     "tst %[first], #3\n\t"
                     "bne 9f\n\t"
                     "ldr %[t], [%[f], %[group_at]]\n\t"
                     "add %[place], %[place], %[t]\n"
                     "9:\n\t"
                     "ldr %[t], [%[f], %[pixel_at]]\n\t"
                     "add %[x], %[x], %[t]\n\t"
                     "subs %[pixels], %[pixels], #1\n\t"
                     "bne 1b"
                     : [place] "+r"(place), [x] "+r"(x), [first] "+r"(first), [pixels] "+r"(pixels),
                       [n] "=&l"(n), [bits] "=&l"(bits), [p] "=&r"(p), [b] "=&r"(b), [tails] "=&r"(tails),
                       [tail] "=&r"(tail), [rows] "=&r"(rows), [v] "=&r"(v), [t] "=&r"(t)
                     : [f] "r"(f), [rows_at] "i"(offsetof(field_rows, rows)),
                       [whole_at] "i"(offsetof(field_rows, whole)), [rem_at] "i"(offsetof(field_rows, rem)),
                       [next_at] "i"(offsetof(field_rows, next)), [tails_at] "i"(offsetof(field_rows, tails)),
                       [pixel_at] "i"(offsetof(field_rows, pixel)), [group_at] "i"(offsetof(field_rows, group))
                     : "cc", "memory");
}

/* conv_s8's _opt path with the DSP extension: blocks of up to groups groups of four pixels (the compiler's
 * pixel_groups, lower.plan_pixel_groups), their receptive fields widened on the stack, then channels_s8 over the
 * block for every output channel pair. A block's fields are widened before its outputs are written (see conv_s8).
 * A last group of fewer pixels, a block of its own, writes its outputs to last, then copies them out (the missing
 * pixels' places hold stale fields, or the last pixel's again: their outputs are never copied). The caller gives
 * the stack (a function with variable arrays is never inlined): fields for the groups, column for a field gathered
 * whole to widen, and last for a group's outputs, also tr_conv_add_s8's values before the residual ADD. */
static inline __attribute__((always_inline)) void conv_s8_widened(const tr_conv_params *p, const int8_t *in,
                                                                   const int8_t *skip, int8_t *out, int32_t *fields,
                                                                   int8_t *column, int8_t *last, int groups)
{
    const int field = p->k_h * p->k_w * p->k_c, words = (field + 3) / 4, out_c = p->out_c;
    const int pixels = p->out_h * p->out_w, lead = pair_lead(words);
    const int group_words = 8 * block_words(words); /* whole blocks: a group's passes end where the next's begin */
    /* a 1x1 filter, stride 1, no padding and whole words: output pixel q's field is input pixel q */
    const int pointwise = p->k_h == 1 && p->k_w == 1 && p->stride_h == 1 && p->stride_w == 1 && !p->pad_h &&
                          !p->pad_w && field % 4 == 0;
    const int row_bytes = p->k_w * p->in_c, row_step = p->dilation_h * p->in_w * p->in_c;
    field_rows rows = {p->k_h, row_bytes / 4, row_bytes % 4, 0, 32 * (row_bytes / 4) * p->k_h, p->stride_w * p->in_c,
                       4 * group_words - 32};
    /* past the last output column whose field lies inside the input's columns: inner_outputs' hi for adjacent taps
     * (inside_field's), written out here, where calling it took 24 B more flash for no fewer instructions */
    const int x1 = tr_min((p->in_w - p->k_w + p->pad_w) / p->stride_w + 1, p->out_w);
    channels_context context; /* set field by field: an initializer would zero the others with memset */
    context.out_c = out_c;
    context.k = 1 + 2 * p->out_offset;
    context.lead = lead;
    context.filters = pair_bytes(words) - 8; /* past the biases */
    context.fields = fields;
    for (int px = 0, n; px < pixels; px += n) {
        const int whole = tr_min(groups, (pixels - px) / 4);
        n = whole ? 4 * whole : pixels - px;
        if (pointwise) {
            widen_pixels_s8(fields + 8 * lead, in + px * field, words, n, group_words);
        }
        for (int i = 0, run; i < n && !pointwise; i += run) {
            const int q = px + i, ox = q % p->out_w;
            int32_t *place = fields + i / 4 * group_words + 8 * lead + 2 * (i % 4);
            const int iy0 = q / p->out_w * p->stride_h - p->pad_h, ix0 = ox * p->stride_w - p->pad_w;
            if (inside_field(p, iy0, ix0)) { /* adjacent taps: a run along the row widened from the input's rows */
                run = tr_min(n - i, x1 - ox);
                rows.next = row_step - row_bytes;
                widen_fields_s8(place, in + (iy0 * p->in_w + ix0) * p->in_c, &rows, i, run);
            } else { /* gathered first */
                run = 1;
                rows.next = 0;
                border_field_s8(p, in, iy0, ix0, column);
                widen_fields_s8(place, column, &rows, i, 1);
            }
        }
        context.stream = p->weights;
        context.multiplier = p->requant.multiplier;
        context.shift = p->requant.shift;
        context.out = whole && !skip ? out + px * out_c : last;
        context.end = fields + tr_max(whole, 1) * group_words;
        context.one = n == 1;
        context.pairs = out_c / 2;
        channels_s8(&context);
        if (skip) {
            residual_s8(p->residual, last, skip + px * out_c, out + px * out_c, n * out_c);
        } else if (!whole) {
            copy_run_s8(out + px * out_c, last, n * out_c);
        }
    }
}
#endif

/* Two output pixels at a time (three with Helium; the DSP extension's _opt path is conv_s8_widened), each one dot
 * product per pair of output channels over its whole receptive field: no bounds or padding in the inner loop, and each
 * weight load serves every pixel. One group, and a field of at most TR_COLUMN_BYTES (the compiler chooses
 * tr_conv_s8_in_place otherwise). The pixels' fields are gathered before their outputs are written: a 1x1, stride-1
 * convolution may write over its own input (see tr_kernels.h). With skip (tr_conv_add_s8), the pixels' values go to
 * the stack, then through the residual ADD with skip's values at their places, each read before its place is written.
 * With opt (the _opt entry points), the outputs are requantized from the doubled accumulator and saturated to int8,
 * from a pair of channels' stream (lower.pair_stream): the compiler checks that this is exact, that the activation
 * range is all of int8 and that out_c is even. A last group of fewer pixels computes its last pixel again, in place
 * of the missing ones. */
static inline __attribute__((always_inline)) void conv_s8(const tr_conv_params *p, const int8_t *in,
                                                          const int8_t *skip, int8_t *out, const int opt)
{
    const output_s8 stage = output_stage(&p->requant, p->out_offset, p->act_min, p->act_max);
    const int field = p->k_h * p->k_w * p->k_c, out_c = p->out_c, pixels = p->out_h * p->out_w;
    const int words = (field + 3) / 4, filter_size = opt ? 4 * words : field;
    enum { GROUP = TR_MVE ? 3 : 2, ROOM = TR_MVE ? 4 * TR_PAIR_BLOCK : 0 }; /* see channels_mve */
    const int group = opt ? GROUP : 2;
    int8_t room[ROOM + GROUP * TR_COLUMN_BYTES], *columns = room + ROOM;
    int8_t sums[GROUP * TR_RESIDUAL_CHANNELS]; /* tr_conv_add_s8's only: unused, GCC drops it from tr_conv_s8 */
    int8_t gathered[TR_COLUMN_BYTES];          /* the _opt kernels' only: a field across the border, gathered */
    const int row_bytes = p->k_w * p->in_c, row_step = p->dilation_h * p->in_w * p->in_c;
    /* the _opt filters' order (lower.rows_first) differs from theirs: rows of whole words and last bytes */
    const int reorder = opt && p->k_h > 1 && row_bytes > 4 && row_bytes % 4;
    fill_s8(room, 0, ROOM);
    for (int i = 0; i < group; i++) {
        fill_s8(columns + i * TR_COLUMN_BYTES + field, 0, filter_size - field); /* x 0 weights, past every field */
    }
    /* a 1x1 filter, stride 1, no padding: output pixel q's field is input pixel q */
    const int pointwise = p->k_h == 1 && p->k_w == 1 && p->stride_h == 1 && p->stride_w == 1 && !p->pad_h && !p->pad_w;
    for (int px = 0, n; px < pixels; px += n, out += n * out_c) {
        n = tr_min(group, pixels - px); /* pixels of this group */
        int8_t *y = skip ? sums : out;
        for (int i = 0; i < group; i++) {
            const int q = px + tr_min(i, n - 1), oy = q / p->out_w, ox = q % p->out_w;
            const int iy0 = oy * p->stride_h - p->pad_h, ix0 = ox * p->stride_w - p->pad_w;
            if (pointwise) {
                copy_run_s8(columns + i * TR_COLUMN_BYTES, in + q * field, field);
            } else if (!reorder) {
                receptive_field_s8(p, in, iy0, ix0, columns + i * TR_COLUMN_BYTES);
            } else if (inside_field(p, iy0, ix0)) { /* adjacent taps: read from the input's rows */
                rows_first_s8(columns + i * TR_COLUMN_BYTES, in + (iy0 * p->in_w + ix0) * p->in_c, row_step, p->k_h,
                              row_bytes);
            } else {
                border_field_s8(p, in, iy0, ix0, gathered);
                rows_first_s8(columns + i * TR_COLUMN_BYTES, gathered, row_bytes, p->k_h, row_bytes);
            }
        }
        if (opt) {
#if TR_MVE
            channels_mve(p, columns, words, y, n);
#else
            const int8_t *w = p->weights;
            for (int oc = 0; oc < out_c; oc += 2, w += pair_bytes(words)) {
                int32_t bias[2];
                memcpy(bias, w, sizeof bias); /* doubled in the stream */
                int32_t acc[4] = {bias[0] / 2, bias[1] / 2, bias[0] / 2, bias[1] / 2};
                dot4_pairs_s8(columns, columns + TR_COLUMN_BYTES, w + sizeof bias, words, acc);
                pair_outputs_s8(p, oc, acc, n, y, out_c);
            }
#endif
        } else {
            for (int oc = 0; oc < out_c; oc += 2) {
                const int pair = oc + 1 < out_c; /* an odd last channel is computed twice, once discarded */
                const int8_t *w0 = p->weights + oc * field, *w1 = pair ? w0 + field : w0;
                const int32_t bias0 = p->bias ? p->bias[oc] : 0, bias1 = p->bias && pair ? p->bias[oc + 1] : 0;
                int32_t acc[4] = {bias0, bias1, bias0, bias1};
                dot4_columns_s8(columns, w0, w1, field, acc);
                for (int i = 0; i < n; i++) {
                    int8_t *o = y + i * out_c + oc;
                    o[0] = requantize_s8(&stage, acc[2 * i], oc);
                    if (pair) {
                        o[1] = requantize_s8(&stage, acc[2 * i + 1], oc + 1);
                    }
                }
            }
        }
        if (skip) {
            residual_s8(p->residual, sums, skip + px * out_c, out, n * out_c);
        }
    }
}

void tr_conv_s8(const tr_conv_params *p, const int8_t *in, int8_t *out)
{
    conv_s8(p, in, NULL, out, 0);
}

void tr_conv_add_s8(const tr_conv_params *p, const int8_t *in, const int8_t *skip, int8_t *out)
{
    conv_s8(p, in, skip, out, 0);
}

#if TR_DSP_ASM
/* The _opt entry points' stack for conv_s8_widened, as large as the layer needs. */
#define TR_WIDENED(p, in, skip, out)                                                                               \
    const int words = ((p)->k_h * (p)->k_w * (p)->k_c + 3) / 4, groups = (p)->pixel_groups;                        \
    int32_t fields[groups * 8 * block_words(words)];                                                               \
    int8_t column[4 * words], last[4 * (p)->out_c * ((skip) ? groups : 1)];                                        \
    conv_s8_widened(p, in, skip, out, fields, column, last, groups)
#endif

TR_OPT_ENTRY void tr_conv_s8_opt(const tr_conv_params *p, const int8_t *in, int8_t *out)
{
#if TR_DSP_ASM
    TR_WIDENED(p, in, NULL, out);
#else
    conv_s8(p, in, NULL, out, 1);
#endif
}

void tr_conv_add_s8_opt(const tr_conv_params *p, const int8_t *in, const int8_t *skip, int8_t *out)
{
#if TR_DSP_ASM
    TR_WIDENED(p, in, skip, out);
#else
    conv_s8(p, in, skip, out, 1);
#endif
}

/* --- DEPTHWISE_CONV_2D ------------------------------------------------------------------------------------ */

/* Any depth multiplier, one value at a time: from the folded bias, taps outside the input adding weight * zero point
 * (see the top). The compiler takes the others to tr_depthwise_conv_s8_opt (see lower_depthwise_conv_2d), so this
 * is compiled for size. */
__attribute__((optimize("Os"))) void tr_depthwise_conv_s8(const tr_conv_params *p, const int8_t *in, int8_t *out)
{
    const output_s8 stage = output_stage(&p->requant, p->out_offset, p->act_min, p->act_max);
    const int m = p->out_c / p->in_c; /* the depth multiplier */
    for (int oy = 0; oy < p->out_h; oy++) {
        for (int ox = 0; ox < p->out_w; ox++, out += p->out_c) {
            for (int oc = 0; oc < p->out_c; oc++) {
                int32_t acc = p->bias ? p->bias[oc] : 0;
                for (int ky = 0; ky < p->k_h; ky++) {
                    const int iy = oy * p->stride_h - p->pad_h + ky * p->dilation_h;
                    for (int kx = 0; kx < p->k_w; kx++) {
                        const int ix = ox * p->stride_w - p->pad_w + kx * p->dilation_w;
                        const int inside = iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w;
                        const int32_t x = inside ? in[(iy * p->in_w + ix) * p->in_c + oc / m]
                                                 : -p->in_offset;
                        acc += p->weights[(ky * p->k_w + kx) * p->out_c + oc] * x;
                    }
                }
                out[oc] = requantize_s8(&stage, acc, oc);
            }
        }
    }
}

/* Depth multiplier 1, four channels a pass, the channel groups in the outer loop. Each group is prepared once per
 * call on the stack: its weights widened to 16 bits and doubled, in SXTB16's lane order (channels 0, 2, 1, 3), so
 * that a tap takes one SRAM word per SMLABB/SMLATT pair rather than a flash load and two SXTB16 per pixel; its
 * biases; and its requantization constants. A pixel then takes one 4-byte input load per tap.
 *
 * Every window is summed whole, from the folded bias, over raw inputs. Windows inside the input (found once per
 * call) read it in place, with no checks per tap; the others read a patch of the group's input copied to the
 * stack, the zero point where the input ends (see the top of the file). So does every window of a map whose input
 * fits one patch. Outputs are requantized from the doubled accumulator (requantize_doubled). */
typedef struct {
    int16_t w[TR_DEPTHWISE_TAPS][4];
    int32_t bias[4]; /* 2 * the folded bias */
    struct {
        int32_t multiplier, nudge, right;
    } requant[4];
    int32_t pixel_step, out_step; /* of the line line3x3_s8 walks, where its registers have no room for them */
} depthwise_group;

static TR_SETUP void prepare_group(const tr_conv_params *p, int c, depthwise_group *g)
{
    const int8_t *w = p->weights + c;
    for (int t = 0; t < p->k_h * p->k_w; t++, w += p->out_c) {
#if TR_DSP
        const int32_t v = load4(w), w02 = __sxtb16(v), w13 = sxtb16_ror8(v);
        const int32_t doubled[2] = {__sadd16(w02, w02), __sadd16(w13, w13)};
        memcpy(g->w[t], doubled, sizeof doubled);
#else
        const int16_t doubled[4] = {(int16_t)(2 * w[0]), (int16_t)(2 * w[2]), (int16_t)(2 * w[1]), (int16_t)(2 * w[3])};
        memcpy(g->w[t], doubled, sizeof doubled);
#endif
    }
    for (int i = 0; i < 4; i++) {
        const uint32_t right = (uint32_t)-p->requant.shift[c + i];
        g->bias[i] = 2 * (p->bias ? p->bias[c + i] : 0);
        g->requant[i].multiplier = p->requant.multiplier[c + i];
        g->requant[i].nudge = doubled_nudge((int32_t)right, p->out_offset);
        g->requant[i].right = (int32_t)right;
    }
}

/* The four accumulators += w * x over a window row of n >= 1 taps, tap_step bytes apart: x the four input bytes of
 * a tap, w its doubled weights. In assembly with the DSP extension: GCC kept this loop's accumulators on the stack. */
static inline __attribute__((always_inline)) void row_taps4(const int8_t *x, const int16_t (*w)[4], int n,
                                                            int tap_step, int32_t *a0, int32_t *a1, int32_t *a2,
                                                            int32_t *a3)
{
#if TR_DSP
    int32_t xv, x02, w02, w13;
    __asm__("1:\n\t"
            "ldr %[xv], [%[x]]\n\t"
            "add %[x], %[x], %[step]\n\t"
            "ldrd %[w02], %[w13], [%[w]], #8\n\t"
            "sxtb16 %[x02], %[xv]\n\t"
            "sxtb16 %[xv], %[xv], ror #8\n\t"
            "smlabb %[a0], %[x02], %[w02], %[a0]\n\t"
            "smlatt %[a2], %[x02], %[w02], %[a2]\n\t"
            "smlabb %[a1], %[xv], %[w13], %[a1]\n\t"
            "smlatt %[a3], %[xv], %[w13], %[a3]\n\t"
            "subs %[n], %[n], #1\n\t"
            "bne 1b"
            : [a0] "+r"(*a0), [a1] "+r"(*a1), [a2] "+r"(*a2), [a3] "+r"(*a3), [x] "+r"(x), [w] "+r"(w), [n] "+r"(n),
              [xv] "=&r"(xv), [x02] "=&r"(x02), [w02] "=&r"(w02), [w13] "=&r"(w13)
            : [step] "r"(tap_step)
            : "cc", "memory");
#else
    for (; n > 0; n--, x += tap_step, w++) {
        *a0 += (*w)[0] * x[0];
        *a2 += (*w)[1] * x[2];
        *a1 += (*w)[2] * x[1];
        *a3 += (*w)[3] * x[3];
    }
#endif
}

#if TR_DSP
/* One tap of line3x3_s8: the four input bytes at address, the weights at byte offset woff of w. */
#define TAP3X3(address, woff)                                                                                       \
    "ldr %[xv], " address "\n\t"                                                                                    \
    "ldrd %[w02], %[w13], [%[w], #" woff "]\n\t"                                                                    \
    "sxtb16 %[x02], %[xv]\n\t"                                                                                      \
    "sxtb16 %[xv], %[xv], ror #8\n\t"                                                                               \
    "smlabb %[a0], %[x02], %[w02], %[a0]\n\t"                                                                       \
    "smlatt %[a2], %[x02], %[w02], %[a2]\n\t"                                                                       \
    "smlabb %[a1], %[xv], %[w13], %[a1]\n\t"                                                                        \
    "smlatt %[a3], %[xv], %[w13], %[a3]\n\t"
#define ROW3X3(w0, w1, w2) TAP3X3("[%[x]]", w0) TAP3X3("[%[x], %[step]]", w1) TAP3X3("[%[x], %[step], lsl #1]", w2)
#endif

/* Output channel i of the group from its doubled accumulator a2, before the clamp. */
static inline __attribute__((always_inline)) int32_t group_output(const depthwise_group *g, int i, int32_t a2)
{
    return requantize_doubled(a2, g->requant[i].multiplier, g->requant[i].nudge, g->requant[i].right);
}

/* g, which GCC no longer knows to be the same for every pixel: it then loads the group's weights and constants
 * where each pixel uses them, rather than keeping them across the loop, with too few registers for them. */
static inline const depthwise_group *reloaded(const depthwise_group *g)
{
    __asm__ volatile("" : "+r"(g));
    return g;
}

/* The pixels pixels_s8 computes: lines of pixels, each pixel's window tap_step bytes between taps and row_step
 * between rows, the windows of a line pixel_step apart, the lines line_step; outputs likewise. */
typedef struct {
    const int8_t *x; /* the first window's first tap */
    int tap_step, row_step, pixel_step, line_step;
    int pixels, lines;
    int8_t *out;
    int out_pixel_step, out_line_step;
} depthwise_walk;

#if TR_DSP
/* One output channel of line3x3_s8's pixel: the accumulator acc requantized (see above), clamped to int8 and stored
 * at byte `byte` of out, with xv and x02 as scratch; w is the group. */
#define REQUANTIZE3X3(acc, i, byte)                                                                                 \
    "ldrd %[xv], %[x02], [%[w], %[m" #i "]]\n\t"                                                                   \
    "smmlar %[xv], %[" #acc "], %[xv], %[x02]\n\t"                                                                 \
    "add %[xv], %[xv], %[" #acc "], asr #31\n\t"                                                                   \
    "ldr %[x02], [%[w], %[s" #i "]]\n\t"                                                                           \
    "asr %[xv], %[xv], %[x02]\n\t"                                                                                 \
    "ssat %[xv], #8, %[xv]\n\t"                                                                                    \
    "strb %[xv], [%[out], #" #byte "]\n\t"

/* pixels_s8's loop over the n pixels of a line for a 3x3 window and the activation range all of int8, in assembly:
 * with the window's pointers and its own it takes all fourteen registers, where GCC kept the loop's state on the
 * stack. The group's steps g->pixel_step and g->out_step advance the pixels. */
static __attribute__((noinline)) void line3x3_s8(const depthwise_group *g, const int8_t *x, int tap_step,
                                                  int row_step, int n, int8_t *out)
{
    int32_t a0, a1, a2, a3, xv, x02, w02, w13;
    __asm__ volatile("1:\n\t"
                     "ldrd %[a0], %[a1], [%[w], %[bias]]\n\t"
                     "ldrd %[a2], %[a3], [%[w], %[bias2]]\n\t"
                     ROW3X3("0", "8", "16") "add %[x], %[x], %[rs]\n\t"
                     ROW3X3("24", "32", "40") "add %[x], %[x], %[rs]\n\t"
                     ROW3X3("48", "56", "64") "sub %[x], %[x], %[rs], lsl #1\n\t"
                     REQUANTIZE3X3(a0, 0, 0) REQUANTIZE3X3(a1, 1, 1) REQUANTIZE3X3(a2, 2, 2) REQUANTIZE3X3(a3, 3, 3)
                     "ldr %[xv], [%[w], %[ps]]\n\t"
                     "add %[x], %[x], %[xv]\n\t"
                     "ldr %[xv], [%[w], %[os]]\n\t"
                     "add %[out], %[out], %[xv]\n\t"
                     "subs %[n], %[n], #1\n\t"
                     "bne 1b"
                     : [a0] "=&r"(a0), [a1] "=&r"(a1), [a2] "=&r"(a2), [a3] "=&r"(a3), [xv] "=&r"(xv),
                       [x02] "=&r"(x02), [w02] "=&r"(w02), [w13] "=&r"(w13), [x] "+r"(x), [out] "+r"(out), [n] "+r"(n)
                     : [w] "r"(g), [step] "r"(tap_step), [rs] "r"(row_step),
                       [bias] "i"(offsetof(depthwise_group, bias)), [bias2] "i"(offsetof(depthwise_group, bias[2])),
                       [m0] "i"(offsetof(depthwise_group, requant[0].multiplier)),
                       [m1] "i"(offsetof(depthwise_group, requant[1].multiplier)),
                       [m2] "i"(offsetof(depthwise_group, requant[2].multiplier)),
                       [m3] "i"(offsetof(depthwise_group, requant[3].multiplier)),
                       [s0] "i"(offsetof(depthwise_group, requant[0].right)),
                       [s1] "i"(offsetof(depthwise_group, requant[1].right)),
                       [s2] "i"(offsetof(depthwise_group, requant[2].right)),
                       [s3] "i"(offsetof(depthwise_group, requant[3].right)),
                       [ps] "i"(offsetof(depthwise_group, pixel_step)), [os] "i"(offsetof(depthwise_group, out_step))
                     : "cc", "memory");
}
#endif

/* The group's four outputs of the pixels of walk. */
static __attribute__((noinline)) void pixels_s8(const tr_conv_params *p, depthwise_group *g,
                                                const depthwise_walk *walk)
{
    const int k_h = p->k_h, k_w = p->k_w, tap_step = walk->tap_step, row_step = walk->row_step;
    const int32_t lo = p->act_min, hi = p->act_max;
    for (int line = 0; line < walk->lines; line++) {
        const int8_t *x = walk->x + line * walk->line_step;
        int8_t *out = walk->out + line * walk->out_line_step;
#if TR_DSP
        if (k_h == 3 && k_w == 3 && lo == INT8_MIN && hi == INT8_MAX && walk->pixels > 0) {
            g->pixel_step = walk->pixel_step;
            g->out_step = walk->out_pixel_step;
            line3x3_s8(g, x, tap_step, row_step, walk->pixels, out);
            continue;
        }
#endif
        for (int n = walk->pixels; n > 0; n--, x += walk->pixel_step, out += walk->out_pixel_step) {
            const depthwise_group *h = reloaded(g);
            int32_t a0 = h->bias[0], a1 = h->bias[1], a2 = h->bias[2], a3 = h->bias[3];
            const int8_t *r = x;
            for (int ky = 0; ky < k_h; ky++, r += row_step) {
                row_taps4(r, h->w + ky * k_w, k_w, tap_step, &a0, &a1, &a2, &a3);
            }
            h = reloaded(g);
            out[0] = (int8_t)tr_clamp(group_output(h, 0, a0), lo, hi);
            out[1] = (int8_t)tr_clamp(group_output(h, 1, a1), lo, hi);
            out[2] = (int8_t)tr_clamp(group_output(h, 2, a2), lo, hi);
            out[3] = (int8_t)tr_clamp(group_output(h, 3, a3), lo, hi);
        }
    }
}

/* The group's outputs [oy, oy + lines) x [ox, ox + pixels) over a patch of the input their windows cover, copied
 * to patch one word per input position, the zero point outside the input (see the top of the file): for the
 * windows that cross the border of the input. */
static __attribute__((noinline)) void patched_s8(const tr_conv_params *p, depthwise_group *g, const int8_t *in,
                                                 int oy, int lines, int ox, int pixels, int8_t *out, int32_t *patch)
{
    const int32_t zero_points = repeated4((int8_t)-p->in_offset);
    const int rows = (lines - 1) * p->stride_h + (p->k_h - 1) * p->dilation_h + 1;
    const int columns = (pixels - 1) * p->stride_w + (p->k_w - 1) * p->dilation_w + 1;
    const int iy0 = oy * p->stride_h - p->pad_h, ix0 = ox * p->stride_w - p->pad_w;
    /* the rows [top, bottom) and columns [left, right) of the patch that lie inside the input */
    const int top = tr_min(tr_max(-iy0, 0), rows), bottom = tr_max(tr_min(p->in_h - iy0, rows), top);
    const int left = tr_min(tr_max(-ix0, 0), columns), right = tr_max(tr_min(p->in_w - ix0, columns), left);
    const int in_c = p->in_c, row_bytes = p->in_w * in_c;
    int32_t *word = patch, *end = patch + top * columns;
    while (word < end) {
        *word++ = zero_points;
    }
    if (right > left && bottom > top) {
        const int8_t *x = in + ((iy0 + top) * p->in_w + ix0 + left) * in_c;
        for (int r = top; r < bottom; r++, x += row_bytes) {
            const int8_t *v = x;
            for (end = word + left; word < end;) {
                *word++ = zero_points;
            }
            for (end = word + (right - left); word < end; v += in_c) {
                *word++ = load4(v);
            }
            for (end = word + (columns - right); word < end;) {
                *word++ = zero_points;
            }
        }
    }
    for (end = patch + rows * columns; word < end;) {
        *word++ = zero_points;
    }
    const depthwise_walk walk = {
        (const int8_t *)patch, 4 * p->dilation_w, 4 * columns * p->dilation_h, 4 * p->stride_w,
        4 * columns * p->stride_h, pixels, lines, out + (oy * p->out_w + ox) * p->out_c, p->out_c,
        p->out_w * p->out_c,
    };
    pixels_s8(p, g, &walk);
}

/* The group's outputs outside the interior [y0, y1) x [x0, x1): the rows above it, left and right of it and below
 * it, each area over as few patches as fit TR_DEPTHWISE_PATCH: blocks of whole columns or, for columns taller than
 * a patch, runs of pixels down one column (the compiler checks that one window fits). */
static TR_SETUP void border_s8(const tr_conv_params *p, depthwise_group *g, const int8_t *in, int8_t *out,
                               int32_t *patch, int y0, int y1, int x0, int x1)
{
    const int span_h = (p->k_h - 1) * p->dilation_h + 1, span_w = (p->k_w - 1) * p->dilation_w + 1;
    const int out_h = p->out_h, out_w = p->out_w;
    const int areas[4][4] = {{0, y0, 0, out_w}, {y0, y1, 0, x0}, {y0, y1, x1, out_w}, {y1, out_h, 0, out_w}};
    for (int a = 0; a < 4; a++) {
        const int oy = areas[a][0], oy_end = areas[a][1], ox_end = areas[a][3], lines = oy_end - oy;
        if (lines <= 0) {
            continue;
        }
        const int columns = TR_DEPTHWISE_PATCH / ((lines - 1) * p->stride_h + span_h); /* of the whole height */
        for (int ox = areas[a][2], n; ox < ox_end; ox += n) {
            if (columns >= span_w) {
                n = tr_min(ox_end - ox, (columns - span_w) / p->stride_w + 1);
                patched_s8(p, g, in, oy, lines, ox, n, out, patch);
                continue;
            }
            n = 1;
            for (int y = oy, run; y < oy_end; y += run) {
                run = tr_min(oy_end - y, (TR_DEPTHWISE_PATCH / span_w - span_h) / p->stride_h + 1);
                patched_s8(p, g, in, y, run, ox, 1, out, patch);
            }
        }
    }
}

/* The outputs [*lo, *hi) along one dimension whose window lies inside the input. */
static inline void inner_outputs(int in, int out, int k, int stride, int dilation, int pad, int *lo, int *hi)
{
    const int last = in - 1 - (k - 1) * dilation + pad; /* the last window start inside, times stride */
    *hi = last < 0 ? 0 : tr_min(last / stride + 1, out);
    *lo = tr_min((pad + stride - 1) / stride, *hi);
}

TR_SETUP void tr_depthwise_conv_s8_opt(const tr_conv_params *p, const int8_t *in, int8_t *out)
{
    const int in_c = p->in_c, out_c = p->out_c, out_w = p->out_w, out_h = p->out_h;
    int y0 = 0, y1 = 0, x0 = 0, x1 = 0; /* the interior: none where the whole input fits one patch */
    const int rows = (out_h - 1) * p->stride_h + (p->k_h - 1) * p->dilation_h + 1;
    if (rows * ((out_w - 1) * p->stride_w + (p->k_w - 1) * p->dilation_w + 1) > TR_DEPTHWISE_PATCH) {
        inner_outputs(p->in_h, out_h, p->k_h, p->stride_h, p->dilation_h, p->pad_h, &y0, &y1);
        inner_outputs(p->in_w, out_w, p->k_w, p->stride_w, p->dilation_w, p->pad_w, &x0, &x1);
    }
    depthwise_group g;
    int32_t patch[TR_DEPTHWISE_PATCH];
    for (int group = 0; group < out_c; group += 4) {
        /* the last group, of fewer than four new channels, ends at out_c: it recomputes (and rewrites the same
         * values of) some of the one before */
        const int c = tr_min(group, out_c - 4);
        prepare_group(p, c, &g);
        if (x1 > x0 && y1 > y0) { /* the interior, read in place */
            const int8_t *x = in + ((y0 * p->stride_h - p->pad_h) * p->in_w + x0 * p->stride_w - p->pad_w) * in_c;
            const depthwise_walk walk = {
                x + c, p->dilation_w * in_c, p->dilation_h * p->in_w * in_c, p->stride_w * in_c,
                p->stride_h * p->in_w * in_c, x1 - x0, y1 - y0, out + (y0 * out_w + x0) * out_c + c, out_c,
                out_w * out_c,
            };
            pixels_s8(p, &g, &walk);
        }
        border_s8(p, &g, in + c, out + c, patch, y0, y1, x0, x1);
    }
}

#if TR_DSP
/* DEPTHWISE_CONV_2D with a 3x3 window, stride 1 or 2 and depth multiplier 1, for the activation range all of int8:
 * four channels a group, one channel at a time over a band of the group's input rows, widened to halfwords and split
 * by channel so that a channel's values in two adjacent columns are one word. A word of the band is then two taps
 * of a window row for SMLAD, and two pixels a step share each load. For a window row (w0, w1, w2) over the columns
 * (x0, x1) (x2, x3) of two words, at stride 1:
 *
 *     pixel 0 = w0 x0 + w1 x1 (SMLAD with (w0, w1)) + w2 x2 (SMLABT with (w1, w2)),
 *     pixel 1 = w0 x1 (SMLATB with (w0, w1)) + w1 x2 + w2 x3 (SMLAD with (w1, w2)):
 *
 * two loads and four multiplies for six products, where tr_depthwise_conv_s8_opt takes an input word, two SXTB16,
 * a word pair of weights and four multiplies for four. At stride 2 pixel 1 is pixel 0 a word further, and its last
 * tap is in a third word.
 *
 * The band is a strip of TR_BAND_ROWS input rows laid out [column pair][row][channel] (TR_BAND_PAIR bytes a column
 * pair): a pixel's words lie at fixed offsets from one pointer, and the next output row's one or two rows (the
 * stride) further. A strip gives the outputs of all the rows its windows cover; the rows the next strip's windows
 * also cover are moved to its top. Band column b is input column b - pad_w, the zero point outside the input (see
 * the top of the file), up to the last pixel pair's window; an odd last pixel of a row is computed beside one more,
 * into the stack. The map is walked along its longer side: rows of more pixels, fewer of them. Each input row is
 * widened once per group, before the group's outputs in its place are written: a map may be written over its input
 * (see tr_kernels.h). */
#define TR_BAND_ROWS 16
#define TR_BAND_PAIR (TR_BAND_ROWS * 16)

typedef struct {
    int32_t w[3][2];           /* the doubled window's rows: (w0, w1) and (w1, w2) in halfwords */
    int32_t multiplier, nudge; /* requantize_doubled's */
    int32_t bias, right;       /* 2 * the folded bias; the shift right */
} band_channel;

/* A strip's walk for band_strip_s8, the same for the group's channels. */
typedef struct {
    int32_t out_c;
    int32_t span;     /* the band's bytes under a row's pixel pairs */
    int32_t rows;     /* output rows, >= 1 */
    int32_t out_step; /* bytes from after a row's last pixel pair's outputs to the next row's first */
    int32_t row_step; /* the band's bytes from one output row's window to the next's: 16 times the stride */
} band_walk;

/* The map as the band walks it: along the input's rows, or, where the map is taller than wide, along its columns
 * (the band's rows then hold input columns, and a pixel pair lies one pixel above the other): rows of more pixels,
 * fewer of them, and less of the band spent beside an odd last pixel. */
typedef struct {
    int in_rows, in_cols, pad_top, pad_left; /* the input as walked */
    int in_row, in_col;                      /* bytes from one walked row, column, to the next */
    int out_rows, out_cols, out_row, out_col; /* likewise for the output */
    int tap_row, tap_col;                    /* the same for the window's weights */
    int columns;                             /* the band's column pairs */
    int pairs, last;                         /* a row's pairs of two input columns; whether its last column follows */
    int32_t zero_points;                     /* the input's zero point, four times */
} band_map;

static TR_SETUP band_map walked_map(const tr_conv_params *p)
{
    const int in_c = p->in_c, out_c = p->out_c;
    band_map m = {p->in_h, p->in_w, p->pad_h, p->pad_w, p->in_w * in_c, in_c,
                  p->out_h, p->out_w, p->out_w * out_c, out_c, 3 * out_c, out_c};
    if (p->out_h > p->out_w) {
        const band_map t = {p->in_w, p->in_h, p->pad_w, p->pad_h, in_c, p->in_w * in_c,
                            p->out_w, p->out_h, out_c, p->out_w * out_c, out_c, 3 * out_c};
        m = t;
    }
    const int pad = m.pad_left;
    m.columns = p->stride_w * ((m.out_cols + 1) / 2) + 1; /* up to the last pixel pair's window */
    m.pairs = tr_min((m.in_cols - pad) / 2, m.columns - pad);
    m.last = (m.in_cols - pad) % 2 && pad + m.pairs < m.columns;
    m.zero_points = repeated4((int8_t)-p->in_offset);
    return m;
}

/* The band's four channels from channel c on: the window's rows, doubled, as (w0, w1) and (w1, w2), each row's taps
 * of the four channels a word split into halfwords; the requantization. */
static __attribute__((noinline)) void prepare_band(const tr_conv_params *p, const band_map *m, int c,
                                                   band_channel ch[4])
{
    const int8_t *w = p->weights + c;
    const int tap_col = m->tap_col;
    for (int ky = 0; ky < 3; ky++, w += m->tap_row) {
        const int32_t v0 = load4(w), v1 = load4(w + tap_col), v2 = load4(w + 2 * tap_col);
        /* each tap's channels 0 and 2 (e), 1 and 3 (o) */
        const int32_t e0 = __sxtb16(v0), e1 = __sxtb16(v1), e2 = __sxtb16(v2);
        const int32_t o0 = sxtb16_ror8(v0), o1 = sxtb16_ror8(v1), o2 = sxtb16_ror8(v2);
        const int32_t even[3] = {__sadd16(e0, e0), __sadd16(e1, e1), __sadd16(e2, e2)};
        const int32_t odd[3] = {__sadd16(o0, o0), __sadd16(o1, o1), __sadd16(o2, o2)};
        for (int i = 0; i < 2; i++) {
            ch[0].w[ky][i] = pack_lo(even[i], even[i + 1]);
            ch[1].w[ky][i] = pack_lo(odd[i], odd[i + 1]);
            ch[2].w[ky][i] = pack_hi(even[i], even[i + 1]);
            ch[3].w[ky][i] = pack_hi(odd[i], odd[i + 1]);
        }
    }
    for (int k = 0; k < 4; k++, ch++) {
        const int32_t right = -p->requant.shift[c + k];
        ch->multiplier = p->requant.multiplier[c + k];
        ch->nudge = doubled_nudge(right, p->out_offset);
        ch->bias = 2 * (p->bias ? p->bias[c + k] : 0);
        ch->right = right;
    }
}

/* A column pair of the band from the words of four channels in its two columns (v0, v1): channel k's values of
 * both, widened, in word k from s (v0's in its low halfword); then s on to the next column pair. */
#define TR_BAND_PAIR_WIDEN                                                                                         \
    "sxtb16 %[a], %[v0]\n\t"                                                                                       \
    "sxtb16 %[b], %[v1]\n\t"                                                                                       \
    "sxtb16 %[v0], %[v0], ror #8\n\t"                                                                              \
    "sxtb16 %[v1], %[v1], ror #8\n\t"                                                                              \
    "pkhbt %[t], %[a], %[b], lsl #16\n\t"                                                                          \
    "pkhtb %[a], %[b], %[a], asr #16\n\t"                                                                          \
    "str %[t], [%[s]]\n\t"                                                                                         \
    "str %[a], [%[s], #8]\n\t"                                                                                     \
    "pkhbt %[t], %[v0], %[v1], lsl #16\n\t"                                                                        \
    "pkhtb %[v0], %[v1], %[v0], asr #16\n\t"                                                                       \
    "str %[t], [%[s], #4]\n\t"                                                                                     \
    "str %[v0], [%[s], #12]\n\t"                                                                                   \
    "add %[s], %[s], %[pair]\n\t"

/* rows >= 1 walked input rows inside the input, from x, into the band's rows from row (its first column pair's
 * words), four channels: the column pairs that hold input columns, with no bounds checks but at the ends (a pad of
 * the zero point and column 0; the last column and the zero point). In assembly: GCC's loop spent more on each row
 * than on its column pairs. */
static __attribute__((noinline)) void band_inside_s8(const band_map *m, int32_t *row, const int8_t *x, int rows)
{
    register int32_t t __asm__("r0"), n __asm__("r1"); /* low registers, for CBZ */
    int32_t *s, v0, v1, a, b, in_col;
    const int8_t *p;
    __asm__ volatile("ldr %[in_col], [%[m], %[in_col_at]]\n"
                     "1:\n\t" /* a row */
                     "mov %[s], %[row]\n\t"
                     "mov %[p], %[x]\n\t"
                     "ldr %[t], [%[m], %[pad_at]]\n\t"
                     "cbz %[t], 2f\n\t"
                     "ldr %[v0], [%[m], %[zero_at]]\n\t"
                     "ldr %[v1], [%[p]]\n\t"
                     "add %[p], %[p], %[in_col]\n\t" TR_BAND_PAIR_WIDEN
                     "2:\n\t"
                     "ldr %[n], [%[m], %[pairs_at]]\n\t"
                     "cbz %[n], 4f\n"
                     "3:\n\t"
                     "ldr %[v0], [%[p]]\n\t"
                     "ldr %[v1], [%[p], %[in_col]]\n\t"
                     "add %[p], %[p], %[in_col], lsl #1\n\t" TR_BAND_PAIR_WIDEN
                     "subs %[n], %[n], #1\n\t"
                     "bne 3b\n"
                     "4:\n\t"
                     "ldr %[t], [%[m], %[last_at]]\n\t"
                     "cbz %[t], 5f\n\t"
                     "ldr %[v0], [%[p]]\n\t"
                     "ldr %[v1], [%[m], %[zero_at]]\n\t" TR_BAND_PAIR_WIDEN
                     "5:\n\t"
                     "add %[row], %[row], #16\n\t"
                     "ldr %[t], [%[m], %[in_row_at]]\n\t"
                     "add %[x], %[x], %[t]\n\t"
                     "subs %[rows], %[rows], #1\n\t"
                     "bne 1b"
                     : [row] "+r"(row), [x] "+r"(x), [rows] "+r"(rows), [t] "=&l"(t), [n] "=&l"(n), [s] "=&r"(s),
                       [p] "=&r"(p), [v0] "=&r"(v0), [v1] "=&r"(v1), [a] "=&r"(a), [b] "=&r"(b),
                       [in_col] "=&r"(in_col)
                     : [m] "r"(m), [pair] "i"(TR_BAND_PAIR), [in_col_at] "i"(offsetof(band_map, in_col)),
                       [in_row_at] "i"(offsetof(band_map, in_row)), [pad_at] "i"(offsetof(band_map, pad_left)),
                       [pairs_at] "i"(offsetof(band_map, pairs)), [last_at] "i"(offsetof(band_map, last)),
                       [zero_at] "i"(offsetof(band_map, zero_points))
                     : "cc", "memory");
}

/* The zero point in the band's rows from row on, n rows of its column pairs: rows outside the input, or all of the
 * band once a call. */
static TR_SETUP void zero_rows_s8(const band_map *m, int32_t *row, int n)
{
    const int32_t zero = __sxtb16(m->zero_points); /* every word of such a column pair: two zero points */
    for (int32_t *end = row + 4 * n; row < end; row += 4) {
        for (int32_t *s = row, *stop = row + TR_BAND_PAIR / 4 * m->columns; s < stop; s += TR_BAND_PAIR / 4) {
            s[0] = s[1] = s[2] = s[3] = zero;
        }
    }
}

/* Walked input rows [iy, iy + rows) into the band's rows from row (its first column pair's words), four channels
 * of the input from in: band_inside_s8's for those inside the input; with zeros, the zero point throughout for the
 * others (without, the band holds it there already). */
static __attribute__((noinline)) void band_rows_s8(const band_map *m, const int8_t *in, int iy, int32_t *row, int rows,
                                                   int zeros)
{
    const int end = iy + rows, top = tr_min(tr_max(iy, 0), end), bottom = tr_max(tr_min(end, m->in_rows), top);
    if (bottom > top) {
        band_inside_s8(m, row + 4 * (top - iy), in + top * m->in_row, bottom - top);
    }
    if (zeros) {
        zero_rows_s8(m, row, top - iy);
        zero_rows_s8(m, row + 4 * (bottom - iy), end - bottom);
    }
}

/* A window row of band_strip_s8's two pixels: the row's words (row r of the pixels' two column pairs), weights
 * (w0, w1) in w01 and (w1, w2) in w12; pixel 1's sum from a1's (a0's in the first row, where both hold the bias:
 * one MOV fewer a pixel pair). */
#define TR_BAND_ROW(r, w01, w12, a1)                                                                               \
    "ldr %[xa], [%[x], #" #r " * 16]\n\t"                                                                          \
    "ldr %[xb], [%[x], %[pair] + " #r " * 16]\n\t"                                                                 \
    "smlatb %[a1], %[xa], %[" #w01 "], %[" #a1 "]\n\t"                                                             \
    "smlad %[a0], %[xa], %[" #w01 "], %[a0]\n\t"                                                                   \
    "smlabt %[a0], %[xb], %[" #w12 "], %[a0]\n\t"                                                                  \
    "smlad %[a1], %[xb], %[" #w12 "], %[a1]\n\t"

/* The same at stride 2: the pixels' three column pairs, (x0, x1) (x2, x3) (x4, x5), pixel 1 = w0 x2 + w1 x3 + w2 x4. */
#define TR_BAND_ROW2(r, w01, w12, a1)                                                                              \
    "ldr %[xa], [%[x], #" #r " * 16]\n\t"                                                                          \
    "ldr %[xb], [%[x], %[pair] + " #r " * 16]\n\t"                                                                 \
    "smlad %[a1], %[xb], %[" #w01 "], %[" #a1 "]\n\t"                                                              \
    "smlad %[a0], %[xa], %[" #w01 "], %[a0]\n\t"                                                                   \
    "smlabt %[a0], %[xb], %[" #w12 "], %[a0]\n\t"                                                                  \
    "ldr %[xa], [%[x], #2 * %c[pair] + " #r " * 16]\n\t"                                                          \
    "smlabt %[a1], %[xa], %[" #w12 "], %[a1]\n\t"

/* The two pixels' outputs, requantize_doubled's, at out and out_c further; then on to the next two, step bytes on
 * in the band, until the row's end; then to the next row. */
#define TR_BAND_OUTPUTS(step)                                                                                      \
    "smmlar %[xb], %[a0], %[m], %[nudge]\n\t"                                                                      \
    "add %[xb], %[xb], %[a0], asr #31\n\t"                                                                         \
    "smmlar %[a0], %[a1], %[m], %[nudge]\n\t"                                                                      \
    "add %[a0], %[a0], %[a1], asr #31\n\t"                                                                         \
    "ldr %[xa], [sp, #4]\n\t"                                                                                      \
    "asr %[xb], %[xb], %[xa]\n\t"                                                                                  \
    "asr %[a0], %[a0], %[xa]\n\t"                                                                                  \
    "ssat %[xb], #8, %[xb]\n\t"                                                                                    \
    "ssat %[a0], #8, %[a0]\n\t"                                                                                    \
    "ldr %[xa], [sp, #8]\n\t"                                                                                      \
    "strb %[xb], [%[out]]\n\t"                                                                                     \
    "strb %[a0], [%[out], %[xa]]\n\t"                                                                              \
    "add %[out], %[out], %[xa], lsl #1\n\t"                                                                        \
    "add %[x], %[x], " step "\n\t"                                                                                 \
    "ldr %[xa], [sp, #12]\n\t"                                                                                     \
    "cmp %[x], %[xa]\n\t"

/* The next output row, after the last pixel pair of one: its window row_step bytes further in the band, from its
 * first column pair; the loop at label again while rows are left. */
#define TR_BAND_NEXT_ROW(again)                                                                                    \
    "ldr %[xb], [sp, #28]\n\t"                                                                                     \
    "add %[xa], %[xa], %[xb]\n\t"                                                                                  \
    "str %[xa], [sp, #12]\n\t"                                                                                     \
    "ldr %[xa], [sp, #20]\n\t"                                                                                     \
    "sub %[x], %[x], %[xa]\n\t"                                                                                    \
    "ldr %[xa], [sp, #24]\n\t"                                                                                     \
    "add %[out], %[out], %[xa]\n\t"                                                                                \
    "ldr %[xa], [sp, #16]\n\t"                                                                                     \
    "subs %[xa], %[xa], #1\n\t"                                                                                    \
    "str %[xa], [sp, #16]\n\t"                                                                                     \
    "bne " again "\n\t"

/* The outputs of channel ch over a strip, as walk gives it, from the band at x (the channel's word of the first
 * output row's first column pair) to out. In assembly: the window, the requantization and the two pixels take all
 * fourteen registers; the stack holds the bias, the shift, out_c, the row's end in the band, the rows left, how far
 * back the next row starts in the band and on in the output, and the band's step between rows. */
static __attribute__((noinline)) void band_strip_s8(const band_channel *ch, const band_walk *walk, const int32_t *x,
                                                    int8_t *out)
{
    int32_t w0, w1, w2, w3, w4, w5, m, nudge, xb;
    int32_t a0 = (int32_t)ch, a1 = (int32_t)walk, xa;
    __asm__ volatile("sub sp, sp, #32\n\t"
                     "ldr %[xa], [%[a0], %[bias]]\n\t"
                     "str %[xa], [sp]\n\t"
                     "ldr %[xa], [%[a0], %[right]]\n\t"
                     "str %[xa], [sp, #4]\n\t"
                     "ldr %[xa], [%[a1], %[out_c]]\n\t"
                     "str %[xa], [sp, #8]\n\t"
                     "ldr %[xa], [%[a1], %[rows]]\n\t"
                     "str %[xa], [sp, #16]\n\t"
                     "ldr %[xa], [%[a1], %[out_step]]\n\t"
                     "str %[xa], [sp, #24]\n\t"
                     "ldr %[xb], [%[a1], %[row_step]]\n\t"
                     "str %[xb], [sp, #28]\n\t"
                     "ldr %[xa], [%[a1], %[span]]\n\t"
                     "sub %[a1], %[xa], %[xb]\n\t"
                     "str %[a1], [sp, #20]\n\t" /* back: span - row_step */
                     "add %[xa], %[x], %[xa]\n\t"
                     "str %[xa], [sp, #12]\n\t"
                     "ldr %[w0], [%[a0]]\n\t"
                     "ldr %[w1], [%[a0], #4]\n\t"
                     "ldr %[w2], [%[a0], #8]\n\t"
                     "ldr %[w3], [%[a0], #12]\n\t"
                     "ldr %[w4], [%[a0], #16]\n\t"
                     "ldr %[w5], [%[a0], #20]\n\t"
                     "ldr %[m], [%[a0], %[multiplier]]\n\t"
                     "ldr %[nudge], [%[a0], %[nudge_at]]\n\t"
                     "cmp %[xb], #16\n\t"
                     "bne 2f\n"
                     "1:\n\t"
                     "ldr %[a0], [sp]\n\t"
                     TR_BAND_ROW(0, w0, w1, a0) TR_BAND_ROW(1, w2, w3, a1) TR_BAND_ROW(2, w4, w5, a1)
                     TR_BAND_OUTPUTS("%[pair]")
                     "bne 1b\n\t"
                     TR_BAND_NEXT_ROW("1b")
                     "b 3f\n"
                     "2:\n\t"
                     "ldr %[a0], [sp]\n\t"
                     TR_BAND_ROW2(0, w0, w1, a0) TR_BAND_ROW2(1, w2, w3, a1) TR_BAND_ROW2(2, w4, w5, a1)
                     TR_BAND_OUTPUTS("#2 * %c[pair]")
                     "bne 2b\n\t"
                     TR_BAND_NEXT_ROW("2b")
                     "3:\n\t"
                     "add sp, sp, #32"
                     : [w0] "=&r"(w0), [w1] "=&r"(w1), [w2] "=&r"(w2), [w3] "=&r"(w3), [w4] "=&r"(w4),
                       [w5] "=&r"(w5), [m] "=&r"(m), [nudge] "=&r"(nudge), [xa] "=&r"(xa), [xb] "=&r"(xb),
                       [a0] "+r"(a0), [a1] "+r"(a1), [x] "+r"(x), [out] "+r"(out)
                     : [pair] "i"(TR_BAND_PAIR), [bias] "i"(offsetof(band_channel, bias)),
                       [right] "i"(offsetof(band_channel, right)),
                       [multiplier] "i"(offsetof(band_channel, multiplier)),
                       [nudge_at] "i"(offsetof(band_channel, nudge)), [out_c] "i"(offsetof(band_walk, out_c)),
                       [span] "i"(offsetof(band_walk, span)), [rows] "i"(offsetof(band_walk, rows)),
                       [out_step] "i"(offsetof(band_walk, out_step)), [row_step] "i"(offsetof(band_walk, row_step))
                     : "cc", "memory");
}

/* The group's outputs over rows walked rows of the band from row (its first column pair's words) to out. An odd
 * last pixel of each row is computed with the pixel beside it, into the stack. */
static TR_SETUP void band_outputs_s8(const tr_conv_params *p, const band_map *m, const band_channel ch[4],
                                     const int32_t *row, int rows, int8_t *out)
{
    const int out_cols = m->out_cols, out_col = m->out_col, whole = out_cols / 2; /* pixel pairs in the map */
    const int stride = p->stride_w, span = stride * TR_BAND_PAIR;                 /* band bytes a pixel pair */
    const band_walk walk = {out_col, whole * span, rows, m->out_row - 2 * whole * out_col, 16 * stride};
    const band_walk lone = {1, span, rows, 0, 16 * stride}; /* two bytes a row */
    for (int k = 0; k < 4; k++) {
        if (whole > 0) {
            band_strip_s8(&ch[k], &walk, row + k, out + k);
        }
        if (out_cols % 2) {
            int8_t two[2 * TR_BAND_ROWS];
            band_strip_s8(&ch[k], &lone, row + k + whole * span / 4, two);
            for (int r = 0; r < rows; r++) {
                out[k + r * m->out_row + (out_cols - 1) * out_col] = two[2 * r];
            }
        }
    }
}

TR_SETUP void tr_depthwise3x3_s8_opt(const tr_conv_params *p, const int8_t *in, int8_t *out)
{
    enum { STEP = TR_BAND_PAIR / 4 }; /* words a column pair */
    const band_map m = walked_map(p);
    const int stride = p->stride_w, kept = 3 - stride; /* rows of a strip that the next one reads again */
    const int strip_rows = (TR_BAND_ROWS - kept) / stride; /* output rows a strip gives */
    /* the band's rows outside the input, and its column pairs past the input's columns, keep the zero point written
     * here where the strips' rows never write them: rows where the map is one strip, column pairs always */
    const int strips = m.out_rows > strip_rows;
    int32_t band[STEP * m.columns];
    band_channel ch[4];
    zero_rows_s8(&m, band, TR_BAND_ROWS);
    for (int group = 0; group < p->out_c; group += 4) {
        /* the last group, of fewer than four new channels, ends at out_c: it recomputes (and rewrites the same
         * values of) some of the one before */
        const int c = tr_min(group, p->out_c - 4);
        prepare_band(p, &m, c, ch);
        band_rows_s8(&m, in + c, -m.pad_top, band, kept, strips);
        for (int oy = 0, rows; oy < m.out_rows; oy += rows) {
            rows = tr_min(strip_rows, m.out_rows - oy);
            band_rows_s8(&m, in + c, stride * oy + kept - m.pad_top, band + 4 * kept, stride * rows, strips);
            band_outputs_s8(p, &m, ch, band, rows, out + oy * m.out_row + c);
            if (oy + rows < m.out_rows) { /* the last rows on top, for the next strip */
                for (int32_t *s = band, *end = band + STEP * m.columns; s < end; s += STEP) {
                    const int32_t *from = s + 4 * stride * rows;
                    for (int32_t *to = s; to < s + 4 * kept; to += 4, from += 4) {
                        const int32_t v0 = from[0], v1 = from[1], v2 = from[2], v3 = from[3];
                        to[0] = v0;
                        to[1] = v1;
                        to[2] = v2;
                        to[3] = v3;
                    }
                }
            }
        }
    }
}
#else
/* Without the DSP extension (the Cortex-M3, the host build of the tests) the band saves no SXTB16 or SMLAD: the
 * general kernel takes the layer, which the compiler checked fits it too. */
void tr_depthwise3x3_s8_opt(const tr_conv_params *p, const int8_t *in, int8_t *out)
{
    tr_depthwise_conv_s8_opt(p, in, out);
}
#endif

#if TR_DSP_ASM
/* Four bytes of the input times four of each of the four rows. */
#define TR_DOT4_ROWS_STEP                                                                                          \
    "ldr %[t0], [%[x]], #4\n\t"                                                                                    \
    "sxtb16 %[t1], %[t0]\n\t"                                                                                      \
    "sxtb16 %[t0], %[t0], ror #8\n\t"                                                                              \
    "ldr %[t2], [%[w0]], #4\n\t"                                                                                   \
    "sxtb16 %[t3], %[t2]\n\t"                                                                                      \
    "sxtb16 %[t2], %[t2], ror #8\n\t"                                                                              \
    "smlad %[a0], %[t3], %[t1], %[a0]\n\t"                                                                         \
    "smlad %[a0], %[t2], %[t0], %[a0]\n\t"                                                                         \
    "ldr %[t2], [%[w1]], #4\n\t"                                                                                   \
    "sxtb16 %[t3], %[t2]\n\t"                                                                                      \
    "sxtb16 %[t2], %[t2], ror #8\n\t"                                                                              \
    "smlad %[a1], %[t3], %[t1], %[a1]\n\t"                                                                         \
    "smlad %[a1], %[t2], %[t0], %[a1]\n\t"                                                                         \
    "ldr %[t2], [%[w2]], #4\n\t"                                                                                   \
    "sxtb16 %[t3], %[t2]\n\t"                                                                                      \
    "sxtb16 %[t2], %[t2], ror #8\n\t"                                                                              \
    "smlad %[a2], %[t3], %[t1], %[a2]\n\t"                                                                         \
    "smlad %[a2], %[t2], %[t0], %[a2]\n\t"                                                                         \
    "ldr %[t2], [%[w3]], #4\n\t"                                                                                   \
    "sxtb16 %[t3], %[t2]\n\t"                                                                                      \
    "sxtb16 %[t2], %[t2], ror #8\n\t"                                                                              \
    "smlad %[a3], %[t3], %[t1], %[a3]\n\t"                                                                         \
    "smlad %[a3], %[t2], %[t0], %[a3]\n\t"

/* acc[k] += w[k] . x over n int8 values for four filter rows: each input word is loaded and widened once for four
 * output channels. The passes, of eight bytes (an odd four enter at the second step), are in assembly: they need
 * all fourteen free registers (four sums, five pointers, the count, four operands). Not inlined, for the same
 * reason. */
static __attribute__((noinline)) void dot4_rows_s8(const int8_t *x, const int8_t *const w[4], int n, int32_t acc[4])
{
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    const int8_t *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
    int passes = (n + 4) / 8;
    if (n >= 4) {
        int32_t t0 = n & 4, t1, t2, t3; /* t0: an odd step first */
        __asm__ volatile(TR_PASSES_OF_TWO(TR_DOT4_ROWS_STEP)
                         : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [x] "+r"(x), [w0] "+r"(w0),
                           [w1] "+r"(w1), [w2] "+r"(w2), [w3] "+r"(w3), [passes] "+r"(passes), [t0] "+&r"(t0),
                           [t1] "=&r"(t1), [t2] "=&r"(t2), [t3] "=&r"(t3)
                         :
                         : "cc", "memory");
    }
    for (n %= 4; n > 0; n--) {
        const int32_t xi = *x++;
        a0 += *w0++ * xi;
        a1 += *w1++ * xi;
        a2 += *w2++ * xi;
        a3 += *w3++ * xi;
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}
#endif

#if TR_MVE
/* dot4_rows_s8 with Helium: 16 bytes of the input and of each row a step, each dot product one VMLADAVA; the last
 * step's loads and sums predicated to the bytes left. */
static __attribute__((noinline)) void rows_mve(const int8_t *x, const int8_t *const w[4], int n, int32_t acc[4])
{
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    const int8_t *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
    for (int i = 0; i < n; i += 16) {
        const mve_pred16_t live = vctp8q((uint32_t)(n - i));
        const int8x16_t v = vldrbq_z_s8(x + i, live);
        a0 = vmladavaq_p_s8(a0, v, vldrbq_z_s8(w0 + i, live), live);
        a1 = vmladavaq_p_s8(a1, v, vldrbq_z_s8(w1 + i, live), live);
        a2 = vmladavaq_p_s8(a2, v, vldrbq_z_s8(w2 + i, live), live);
        a3 = vmladavaq_p_s8(a3, v, vldrbq_z_s8(w3 + i, live), live);
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}
#endif

/* TFLM's sum of (w + weights_offset) * (x + in_offset): the compiler folded in_offset * sum(w) and
 * in_n * weights_offset * in_offset into the bias; weights_offset * sum(x) is one sum per input row. Outputs in
 * blocks of TR_FC_BLOCK, each one pass over the input: four with the DSP extension (dot4_rows_s8, or rows_mve with
 * Helium), else two. */
#define TR_FC_BLOCK (TR_DSP ? 4 : 2)
static inline __attribute__((always_inline)) void fully_connected_s8(const tr_fc_params *p, const int8_t *in,
                                                                      int8_t *out, const int opt)
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
        for (int o = 0; o < out_n; o += TR_FC_BLOCK) {
            /* past the last row, the block repeats it; only the rows < out_n are written */
            const int8_t *w[TR_FC_BLOCK];
            int32_t acc[TR_FC_BLOCK];
            for (int k = 0; k < TR_FC_BLOCK; k++) {
                const int row = tr_min(o + k, out_n - 1);
                w[k] = p->weights + row * in_n;
                acc[k] = row_term + (p->bias ? p->bias[row] : 0);
            }
#if TR_MVE
            rows_mve(in, w, in_n, acc);
#elif TR_DSP
            dot4_rows_s8(in, w, in_n, acc);
#else
            dot2_s8(in, w[0], w[1], in_n, &acc[0], &acc[1]);
#endif
            for (int k = 0; k < tr_min(TR_FC_BLOCK, out_n - o); k++) {
                if (opt) {
                    const int32_t right = -p->requant.shift[o + k];
                    const int32_t nudge = doubled_nudge(right, p->out_offset);
                    out[o + k] = (int8_t)tr_saturate_s8(
                        requantize_doubled(2 * acc[k], p->requant.multiplier[o + k], nudge, right));
                } else {
                    out[o + k] = requantize_s8(&stage, acc[k], o + k);
                }
            }
        }
    }
}

void tr_fully_connected_s8(const tr_fc_params *p, const int8_t *in, int8_t *out)
{
    fully_connected_s8(p, in, out, 0);
}

TR_OPT_ENTRY void tr_fully_connected_s8_opt(const tr_fc_params *p, const int8_t *in, int8_t *out)
{
    fully_connected_s8(p, in, out, 1);
}

/* --- int16x8: int16 activations (zero point 0, so no offsets), int8 weights ------------------------------- */

/* TFLM's 16x8 kernels accumulate in the type of their bias: in 32 bits, with the 32-bit requantization, for an
 * int32 bias; else (acc64: an int64 bias, or none, as the compiler reads TFLM) in 64 bits, with the 64-bit one. The
 * accumulation starts from the bias (TFLM adds it last: the same sum, modulo 2^32 in 32 bits). */
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
    /* copied out: the int16 stores to out may alias p's int16 fields, as far as C knows */
    const int32_t acc64 = !p->bias, lo = p->act_min, hi = p->act_max;
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
                out[oc] = requantize_s16(acc, acc64, &p->requant, oc, lo, hi);
            }
        }
    }
}

void tr_depthwise_conv_s16(const tr_conv_params *p, const int16_t *in, int16_t *out)
{
    const int32_t acc64 = !p->bias, lo = p->act_min, hi = p->act_max; /* see tr_conv_s16 */
    const int out_c = p->out_c, m = out_c / p->in_c, tap_step = p->dilation_w * p->in_c; /* m: the depth multiplier */
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
                out[oc] = requantize_s16(acc, acc64, &p->requant, oc, lo, hi);
            }
        }
    }
}

/* TFLM's per-tensor 16x8 kernel applies the weights' offset (zero for per-channel weights, which are
 * symmetric); neither has an input or output offset. The sum of (w + weights_offset) * x is dot_s16's w . x plus
 * weights_offset times the row's sum, computed once per row. */
void tr_fully_connected_s16(const tr_fc_params *p, const int16_t *in, int16_t *out)
{
    const int in_n = p->in_n, out_n = p->out_n;
    for (int r = 0; r < p->rows; r++, in += in_n, out += out_n) {
        int64_t x_sum = 0;
        if (p->weights_offset) {
            for (int i = 0; i < in_n; i++) {
                x_sum += in[i];
            }
        }
        const int64_t row_term = p->weights_offset * x_sum;
        for (int o = 0; o < out_n; o++) {
            const int64_t acc = dot_s16(in, p->weights + o * in_n, in_n, bias_s16(p->bias, p->bias64, o) + row_term);
            out[o] = requantize_s16(acc, !p->bias, &p->requant, o, p->act_min, p->act_max);
        }
    }
}
