/* int8 kernels of the tinyrobust runtime.
 *
 * Each kernel is the "eval" half of a TensorFlow Lite Micro reference kernel: the "prepare" half (shapes,
 * padding, requantization multipliers and shifts, activation ranges) runs in the host's compiler, which
 * fills these parameter structs as constants. The integer arithmetic follows TFLM's reference kernels
 * exactly, so outputs are bit-exact with TFLM (and CMSIS-NN). Tensors are NHWC with batch 1.
 */
#ifndef TR_KERNELS_H
#define TR_KERNELS_H

#include <stdint.h>

/* Per-output-channel requantization: out = round(acc * multiplier * 2^shift), TFLM's double rounding. */
typedef struct {
    const int32_t *multiplier;
    const int32_t *shift;
} tr_requant;

typedef struct {
    int16_t in_h, in_w, in_c;
    int16_t out_h, out_w, out_c;
    int16_t k_h, k_w, k_c; /* k_c: input channels per filter (in_c / groups) */
    int16_t stride_h, stride_w;
    int16_t dilation_h, dilation_w;
    int16_t pad_h, pad_w;   /* padding before the first row / column */
    int16_t depth_multiplier; /* depthwise only */
    int32_t in_offset;      /* -input zero point */
    int32_t out_offset;     /* output zero point */
    int32_t act_min, act_max;
    const int8_t *weights;  /* conv: [out_c][k_h][k_w][in_c]; depthwise: [k_h][k_w][out_c] */
    const int32_t *bias;    /* [out_c] or NULL */
    tr_requant requant;
} tr_conv_params;

typedef struct {
    int16_t rows;           /* input vectors (product of the leading dimensions) */
    int16_t in_n, out_n;
    int32_t in_offset, weights_offset, out_offset;
    int32_t act_min, act_max;
    const int8_t *weights;  /* [out_n][in_n] */
    const int32_t *bias;    /* [out_n] or NULL */
    tr_requant requant;
} tr_fc_params;

typedef struct {
    int16_t in_h, in_w, c;
    int16_t out_h, out_w;
    int16_t f_h, f_w;
    int16_t stride_h, stride_w;
    int16_t pad_h, pad_w;
    int32_t act_min, act_max;
} tr_pool_params;

int32_t tr_requantize(int32_t acc, int32_t multiplier, int32_t shift);

void tr_conv_s8(const tr_conv_params *p, const int8_t *in, int8_t *out);
void tr_depthwise_conv_s8(const tr_conv_params *p, const int8_t *in, int8_t *out);
void tr_fully_connected_s8(const tr_fc_params *p, const int8_t *in, int8_t *out);
void tr_max_pool_s8(const tr_pool_params *p, const int8_t *in, int8_t *out);
void tr_avg_pool_s8(const tr_pool_params *p, const int8_t *in, int8_t *out);

#endif
