/* Kernels of the tinyrobust runtime: int8 (_s8) and int16x8 (_s16: int16 activations, int8 weights).
 *
 * Each kernel is the "eval" half of a TensorFlow Lite Micro reference kernel: the "prepare" half (shapes,
 * padding, requantization multipliers and shifts, activation ranges) runs in the host's compiler, which
 * fills these parameter structs as constants. The integer arithmetic follows TFLM's reference kernels
 * exactly, so outputs are bit-exact with TFLM (and CMSIS-NN). Tensors are NHWC with batch 1.
 *
 * One convention for every struct, CMSIS-NN's: in_offset (in1_offset, in2_offset, weights_offset) is the negated
 * zero point of an input, added to its values; out_offset is the output's zero point, added to the result.
 * Dimensions are in_h, in_w, in_c and out_h, out_w, out_c; a kernel window is k_h x k_w. act_min and act_max
 * bound the output values.
 */
#ifndef TR_KERNELS_H
#define TR_KERNELS_H

#include <stdint.h>

/* Per-output-channel requantization: out = round(acc * multiplier * 2^shift), TFLM's double rounding.
 * Shifts lie in [-31, 31]: one byte each. */
typedef struct {
    const int32_t *multiplier;
    const int8_t *shift;
} tr_requant;

/* ADD's arithmetic, TFLM's: both inputs to twice the larger scale with left_shift bits of headroom, summed, then to
 * the output scale. Every shift is at most 0. */
typedef struct {
    int32_t in1_offset, in2_offset; /* -input zero points */
    int32_t out_offset;
    int32_t left_shift;
    int32_t in1_multiplier, in1_shift;
    int32_t in2_multiplier, in2_shift;
    int32_t out_multiplier, out_shift;
    int32_t act_min, act_max;
} tr_add_quant;

/* The residual ADD fused after a convolution (tr_conv_add_s8): tr_add_quant's arithmetic with each input's share of
 * the sum, (x + in_offset) * 2^left_shift requantized, looked up for its 256 values. */
typedef struct {
    const int32_t *in1_shares, *in2_shares; /* [256], by int8 value + 128 */
    int32_t out_multiplier, out_shift, out_offset;
    int32_t act_min, act_max;
    int32_t nudge; /* the sum requantized from twice itself with this nudge where the compiler found it exact; 0: not */
} tr_residual;

typedef struct {
    int16_t in_h, in_w, in_c;
    int16_t out_h, out_w, out_c;
    int16_t k_h, k_w, k_c; /* k_c: input channels per filter (in_c / groups) */
    int16_t stride_h, stride_w;
    int16_t dilation_h, dilation_w;
    int16_t pad_h, pad_w;   /* padding before the first row / column */
    int16_t in_offset;      /* -input zero point */
    int16_t out_offset;     /* output zero point */
    int16_t act_min, act_max; /* int16 fields: the parameters of every step are in flash */
    int16_t pixel_groups;   /* conv _opt only: groups of four pixels a block with the DSP extension (conv_s8_widened) */
    const int8_t *weights;  /* conv: [out_c][k_h][k_w][in_c]; depthwise: [k_h][k_w][out_c]; conv _opt: pair_stream */
    const int32_t *bias;    /* [out_c] or NULL */
    const int64_t *bias64;  /* _s16 only: [out_c] or NULL; without an int32 bias, 64-bit sums (see tr_conv_s16) */
    tr_requant requant;
    const tr_residual *residual; /* tr_conv_add_s8 only: the ADD fused after the convolution */
} tr_conv_params;

typedef struct {
    int16_t rows;           /* input vectors (product of the leading dimensions) */
    int16_t in_n, out_n;
    int32_t in_offset, weights_offset, out_offset;
    int32_t act_min, act_max;
    const int8_t *weights;  /* [out_n][in_n] */
    const int32_t *bias;    /* [out_n] or NULL */
    const int64_t *bias64;  /* _s16 only: [out_n] or NULL; without an int32 bias, 64-bit sums (see tr_conv_s16) */
    tr_requant requant;
} tr_fc_params;

typedef struct {
    int16_t in_h, in_w, in_c; /* in_c: output channels too */
    int16_t out_h, out_w;
    int16_t k_h, k_w;
    int16_t stride_h, stride_w;
    int16_t pad_h, pad_w;
    int32_t act_min, act_max;
} tr_pool_params;

/* tr_conv_s8 gathers each output pixel's receptive field (k_h * k_w * in_c bytes) on the stack, two or three at a time;
 * the compiler gives larger fields, and grouped convolutions, to tr_conv_s8_in_place. 3x3x128 fits. The DSP
 * extension's _opt path widens groups of four to halfwords instead, as many groups a block as the compiler gives
 * (pixel_groups): at least eight times a field's bytes of stack, with a field gathered and four pixels' outputs
 * (conv_s8_widened). */
#define TR_COLUMN_BYTES 1152

/* tr_conv_add_s8 keeps two pixels' values on the stack before the residual ADD: up to this many channels. */
#define TR_RESIDUAL_CHANNELS 256

/* tr_depthwise_conv_s8_opt keeps a group of four channels' widened weights on the stack (windows up to 7x7), and
 * copies there the input of the windows that cross the border, one word per input position. */
#define TR_DEPTHWISE_TAPS 49
#define TR_DEPTHWISE_PATCH 256

/* Up to this many dimensions in broadcasting, copies and reductions, after the compiler merged the
 * dimensions it could (TFLM supports broadcasting up to 6-D). */
#define TR_MAX_DIMS 6

/* A walk over an N-d index space in row-major order; stride[d] is how far the data moves (in elements) when
 * index d advances. */
typedef struct {
    int32_t ndims;
    int32_t dims[TR_MAX_DIMS];
    int32_t stride[TR_MAX_DIMS];
} tr_walk;

/* Binary elementwise ops with NumPy broadcasting: the output is written in order, each input follows its own
 * strides over the output's dimensions (stride 0 along a broadcast dimension). */
typedef struct {
    int32_t ndims;
    int32_t dims[TR_MAX_DIMS];
    int32_t stride1[TR_MAX_DIMS];
    int32_t stride2[TR_MAX_DIMS];
} tr_broadcast;

typedef struct {
    tr_broadcast shape;
    tr_add_quant quant;
} tr_add_params;

typedef struct {
    tr_broadcast shape;
    int32_t in1_offset, in2_offset; /* -input zero points */
    int32_t out_offset;
    int32_t out_multiplier, out_shift;
    int32_t act_min, act_max;
} tr_mul_params;

/* out = clamp(out_offset + requantize(in + in_offset)): RELU, and QUANTIZE within int8 or int16. */
typedef struct {
    int32_t size;
    int32_t in_offset, out_offset;
    int32_t multiplier, shift;
    int32_t act_min, act_max;
} tr_rescale_params;

/* RELU6, which TFLM applies as a clamp in the input's quantization. */
typedef struct {
    int32_t size;
    int32_t act_min, act_max;
} tr_clamp_params;

/* LOGISTIC and TANH: TFLM's fixed-point algorithms on the input rescaled to Q4.27. */
typedef struct {
    int32_t size;
    int32_t in_offset;
    int32_t range_radius; /* inputs at or beyond it saturate */
    int32_t multiplier, left_shift;
} tr_sigmoid_params;

/* int16 LOGISTIC and TANH: (x * multiplier) >> shift, rounded, is x in units of 1 / (3 * 4096); the 256-entry
 * sigmoid table (Q0.16, sigmoid(i / 24)) is interpolated at its absolute value. Output scale 2^-15. */
typedef struct {
    int32_t size;
    int32_t multiplier, shift;
    const uint16_t *table;
} tr_sigmoid_s16_params;

typedef struct {
    int32_t size;
    int32_t in_offset, out_offset;
    int16_t out_multiplier, reluish_multiplier; /* Q0.15 */
    int32_t out_exponent, reluish_exponent;
} tr_hard_swish_params;

typedef struct {
    int32_t outer, depth; /* softmax over the last dimension */
    int32_t input_multiplier, input_left_shift;
    int32_t diff_min;
} tr_softmax_params;

/* int16 softmax: the differences to the row maximum rescaled to [-65535, 0] for [-10, 0], exp and the
 * reciprocal of the sum from 513-entry interpolated tables. Output scale 1/32768, zero point 0. */
typedef struct {
    int32_t outer, depth; /* softmax over the last dimension */
    int32_t input_multiplier, input_shift;
    const int16_t *exp_lut;                 /* exp on [-10, 0] */
    const int16_t *one_over_one_plus_x_lut; /* 1 / (1 + x) on [0, 1] */
} tr_softmax_s16_params;

/* A strided N-d copy: element i of the walk goes from in[in_start + sum(i_d * in_stride[d])] to
 * out[out_start + sum(i_d * out_stride[d])]. PAD first fills the whole output with fill_value. */
typedef struct {
    int32_t ndims;
    int32_t dims[TR_MAX_DIMS];
    int32_t in_stride[TR_MAX_DIMS];
    int32_t out_stride[TR_MAX_DIMS];
    int32_t in_start, out_start;
    int32_t fill_size, fill_value;
} tr_copy_params;

/* CONCATENATION copies bytes, whatever the element type. */
typedef struct {
    int32_t n_inputs;
    int32_t outer;              /* product of the dimensions before the axis */
    const int32_t *copy_bytes;  /* per input: bytes of its dimensions from the axis on */
} tr_concatenation_params;

/* RESIZE_NEAREST_NEIGHBOR copies bytes, whatever the element type: output pixel (y, x) is input pixel
 * (rows[y], cols[x]), the compiler having computed TFLM's nearest neighbours. */
typedef struct {
    int32_t in_w;
    int32_t out_h, out_w;
    int32_t pixel_bytes;  /* in_c times the element size */
    const int32_t *rows;  /* [out_h]: the source row of each output row */
    const int32_t *cols;  /* [out_w]: the source column of each output column */
} tr_resize_nearest_neighbor_params;

/* MEAN: each output element reduces the input elements of `reduced`, starting where `kept` points. */
typedef struct {
    tr_walk kept;    /* over the output elements, with input strides */
    tr_walk reduced; /* over the elements averaged into one output */
    int32_t count;   /* elements in `reduced` */
    int32_t in_offset, out_offset;
    int32_t multiplier, shift; /* already divided by count, as TFLM does */
} tr_mean_params;

/* Input pre-processing stages (defenses) that run before the network on the quantized int8 input. */
typedef struct {
    int32_t size;
    int32_t levels; /* 2^bits - 1 */
} tr_squeeze_bits_params;

/* Largest median window side; the window is kept sorted on the stack. */
#define TR_MEDIAN_MAX_K 7

typedef struct {
    int16_t in_h, in_w, in_c; /* the output's shape too */
    int16_t k; /* window side, 1..TR_MEDIAN_MAX_K */
} tr_median_params;

/* Randomized smoothing (Cohen et al. 2019): a noisy copy of the input, noise from a table the compiler makes. */
#define TR_SMOOTHING_TABLE_BITS 10 /* the table has 2^10 entries, indexed by the generator's top bits */

typedef struct {
    int32_t size;      /* input elements */
    const void *table; /* noise in input steps: int16_t for _s8, int32_t for _s16 */
} tr_smoothing_params;

/* Each kernel writes out from in (or in1 and in2); out never overlaps an input, but where the planner places it
 * over one that the kernel reads before writing over it: tr_conv_s8's 1x1, stride-1 convolutions (each group of
 * pixels is gathered before its outputs are written), the depthwise _opt kernels' maps of one patch (each group of
 * channels is copied to the patch, or widened into the band, first) and tr_conv_add_s8's skip (see each; the
 * compiler checks, see planner.py). */

/* CONV_2D, one group, k_h * k_w * in_c <= TR_COLUMN_BYTES: an im2col column of two pixels, two channels a pass
 * (four pixels on the _opt path with the DSP extension). */
void tr_conv_s8(const tr_conv_params *p, const int8_t *in, int8_t *out);
/* tr_conv_s8 followed by an ADD of its output (in1) and skip (in2), of the same shape, as p->residual gives it;
 * out_c <= TR_RESIDUAL_CHANNELS. out may be skip itself (each value of skip is read before its place is written). */
void tr_conv_add_s8(const tr_conv_params *p, const int8_t *in, const int8_t *skip, int8_t *out);
/* tr_conv_s8 and tr_conv_add_s8 where every shift <= -1, the sums are small enough for the shorter
 * requantization of the depthwise kernel, the activation range is all of int8 and out_c is even, with a bias and
 * the filters padded to whole words and interleaved in channel pairs (the compiler checks, pads and interleaves,
 * see lower.lower_conv_2d). */
void tr_conv_s8_opt(const tr_conv_params *p, const int8_t *in, int8_t *out);
void tr_conv_add_s8_opt(const tr_conv_params *p, const int8_t *in, const int8_t *skip, int8_t *out);
/* CONV_2D, any groups or receptive field: reads the input in place, one output pixel at a time. */
void tr_conv_s8_in_place(const tr_conv_params *p, const int8_t *in, int8_t *out);
/* DEPTHWISE_CONV_2D, any depth multiplier: one value at a time. */
void tr_depthwise_conv_s8(const tr_conv_params *p, const int8_t *in, int8_t *out);
/* DEPTHWISE_CONV_2D, depth multiplier 1, four channels or more, k_h * k_w <= TR_DEPTHWISE_TAPS, a window's input
 * within TR_DEPTHWISE_PATCH words, every shift <= -1 and sums small enough for its shorter requantization (the
 * compiler checks, see lower_depthwise_conv_2d): four channels per load, the interior without bounds checks. */
void tr_depthwise_conv_s8_opt(const tr_conv_params *p, const int8_t *in, int8_t *out);
/* tr_depthwise_conv_s8_opt's layers with a 3x3 window, stride 1 or 2 (the same both ways), no dilation, padding of
 * at most one and the activation range all of int8, whose band (a strip of eight input rows of four channels)
 * fits the stack (the compiler checks, see lower_depthwise_conv_2d): two pixels a step, each word of the band two
 * taps of one channel. Without the DSP extension it is tr_depthwise_conv_s8_opt. */
void tr_depthwise3x3_s8_opt(const tr_conv_params *p, const int8_t *in, int8_t *out);
/* FULLY_CONNECTED: out[rows][out_n] from in[rows][in_n] and weights[out_n][in_n]. */
void tr_fully_connected_s8(const tr_fc_params *p, const int8_t *in, int8_t *out);
/* tr_fully_connected_s8 with the _opt requantization (see tr_conv_s8_opt), for symmetric weights. */
void tr_fully_connected_s8_opt(const tr_fc_params *p, const int8_t *in, int8_t *out);
/* MAX_POOL_2D: the largest value of each window clipped to the input, clamped. */
void tr_max_pool_s8(const tr_pool_params *p, const int8_t *in, int8_t *out);
/* AVERAGE_POOL_2D: the mean of each window clipped to the input, rounded half away from zero, clamped. */
void tr_avg_pool_s8(const tr_pool_params *p, const int8_t *in, int8_t *out);
/* ADD with broadcasting: both inputs to twice the larger scale with left_shift bits of headroom, summed. */
void tr_add_s8(const tr_add_params *p, const int8_t *in1, const int8_t *in2, int8_t *out);
/* MUL with broadcasting: the product of the offset inputs, requantized. */
void tr_mul_s8(const tr_mul_params *p, const int8_t *in1, const int8_t *in2, int8_t *out);
/* RELU and QUANTIZE: each value requantized to the output's quantization, clamped. */
void tr_rescale_s8(const tr_rescale_params *p, const int8_t *in, int8_t *out);
/* RELU6: each value clamped to [act_min, act_max]. */
void tr_clamp_s8(const tr_clamp_params *p, const int8_t *in, int8_t *out);
/* LOGISTIC: output scale 1/256, zero point -128. */
void tr_logistic_s8(const tr_sigmoid_params *p, const int8_t *in, int8_t *out);
/* TANH: output scale 1/128, zero point 0. */
void tr_tanh_s8(const tr_sigmoid_params *p, const int8_t *in, int8_t *out);
/* HARD_SWISH: x * relu6(x + 3) / 6 in TFLM's int16 fixed point. */
void tr_hard_swish_s8(const tr_hard_swish_params *p, const int8_t *in, int8_t *out);
/* SOFTMAX over the last dimension: output scale 1/256, zero point -128. */
void tr_softmax_s8(const tr_softmax_params *p, const int8_t *in, int8_t *out);
/* PAD and PADV2: the output filled with fill_value, then the input copied into it. */
void tr_pad_s8(const tr_copy_params *p, const int8_t *in, int8_t *out);
/* STRIDED_SLICE: the strided walk of the input copied in order. */
void tr_strided_slice_s8(const tr_copy_params *p, const int8_t *in, int8_t *out);
/* MEAN over the reduced dimensions, requantized. */
void tr_mean_s8(const tr_mean_params *p, const int8_t *in, int8_t *out);
/* Bit-depth squeezing to levels + 1 evenly spaced values of the int8 range (ART's FeatureSqueezing). */
void tr_squeeze_bits_s8(const tr_squeeze_bits_params *p, const int8_t *in, int8_t *out);
/* k x k median of each channel, edges reflected (scipy.ndimage.median_filter, ART's SpatialSmoothing). */
void tr_median_s8(const tr_median_params *p, const int8_t *in, int8_t *out);
/* Marsaglia's xorshift32 (13, 17, 5): steps *state and returns the new state. *state must not be 0. */
uint32_t tr_xorshift32(uint32_t *state);
/* A noisy copy: out[i] = in[i] + table[the next state's top TR_SMOOTHING_TABLE_BITS bits], saturated, for each
 * element in order, one generator step each. */
void tr_smoothing_noise_s8(const tr_smoothing_params *p, uint32_t *state, const int8_t *in, int8_t *out);
void tr_smoothing_noise_s16(const tr_smoothing_params *p, uint32_t *state, const int16_t *in, int16_t *out);
/* The index of the largest of size values, the first of equal ones (numpy's argmax). */
int32_t tr_argmax_s8(const int8_t *in, int32_t size);
int32_t tr_argmax_s16(const int16_t *in, int32_t size);
/* CONCATENATION of any element type: per outer index, copy_bytes[i] bytes of each input in turn. */
void tr_concatenation(const tr_concatenation_params *p, const void *const *in, void *out);
/* RESIZE_NEAREST_NEIGHBOR of any element type: each output pixel copied from its source pixel. */
void tr_resize_nearest_neighbor(const tr_resize_nearest_neighbor_params *p, const void *in, void *out);

/* The int16x8 kernels: as their _s8 namesakes, with int16 activations of zero point 0 (so no offsets). */

/* CONV_2D, any groups; accumulates in 32 bits with an int32 bias, else in 64. */
void tr_conv_s16(const tr_conv_params *p, const int16_t *in, int16_t *out);
/* DEPTHWISE_CONV_2D, any depth multiplier; accumulates in 64 bits. */
void tr_depthwise_conv_s16(const tr_conv_params *p, const int16_t *in, int16_t *out);
/* FULLY_CONNECTED; accumulates in 32 bits with an int32 bias, else in 64. */
void tr_fully_connected_s16(const tr_fc_params *p, const int16_t *in, int16_t *out);
/* MAX_POOL_2D. */
void tr_max_pool_s16(const tr_pool_params *p, const int16_t *in, int16_t *out);
/* AVERAGE_POOL_2D. */
void tr_avg_pool_s16(const tr_pool_params *p, const int16_t *in, int16_t *out);
/* ADD with broadcasting, 15 bits of headroom. */
void tr_add_s16(const tr_add_params *p, const int16_t *in1, const int16_t *in2, int16_t *out);
/* MUL with broadcasting. */
void tr_mul_s16(const tr_mul_params *p, const int16_t *in1, const int16_t *in2, int16_t *out);
/* RELU and QUANTIZE. */
void tr_rescale_s16(const tr_rescale_params *p, const int16_t *in, int16_t *out);
/* RELU6. */
void tr_clamp_s16(const tr_clamp_params *p, const int16_t *in, int16_t *out);
/* LOGISTIC from the interpolated sigmoid table: output scale 2^-15. */
void tr_logistic_s16(const tr_sigmoid_s16_params *p, const int16_t *in, int16_t *out);
/* TANH from the same table: output scale 2^-15. */
void tr_tanh_s16(const tr_sigmoid_s16_params *p, const int16_t *in, int16_t *out);
/* SOFTMAX over the last dimension from the exp and reciprocal tables: output scale 1/32768. */
void tr_softmax_s16(const tr_softmax_s16_params *p, const int16_t *in, int16_t *out);
/* PAD and PADV2. */
void tr_pad_s16(const tr_copy_params *p, const int16_t *in, int16_t *out);
/* STRIDED_SLICE. */
void tr_strided_slice_s16(const tr_copy_params *p, const int16_t *in, int16_t *out);
/* MEAN. */
void tr_mean_s16(const tr_mean_params *p, const int16_t *in, int16_t *out);

#endif
