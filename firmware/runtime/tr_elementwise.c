#include "tr_kernels.h"
#include "tr_support.h"

/* Advance the output index by one, moving both input offsets along their strides. */
static inline void next(const tr_broadcast *b, int32_t *index, int32_t *off1, int32_t *off2)
{
    for (int d = b->ndims - 1; d >= 0; d--) {
        *off1 += b->stride1[d];
        *off2 += b->stride2[d];
        if (++index[d] < b->dims[d]) {
            return;
        }
        index[d] = 0;
        *off1 -= b->stride1[d] * b->dims[d];
        *off2 -= b->stride2[d] * b->dims[d];
    }
}

static int32_t count(const tr_broadcast *b)
{
    int32_t n = 1;
    for (int d = 0; d < b->ndims; d++) {
        n *= b->dims[d];
    }
    return n;
}

/* TFLM's MulElementwise; the product of two int16 values fits in 31 bits. */
static inline int32_t mul(const tr_mul_params *p, int32_t in1, int32_t in2)
{
    const int32_t product = (p->in1_offset + in1) * (p->in2_offset + in2);
    const int32_t y = p->out_offset + tr_requantize(product, p->out_multiplier, p->out_shift);
    return tr_clamp(y, p->act_min, p->act_max);
}

/* ADD (mul 0) or MUL (mul 1) of int8 (size 1) or int16 (size 2) elements, the inputs broadcast over the output.
 * TFLM's int16 ADD takes the general path (not TFLite's power-of-two-scale one). Inputs of the output's shape
 * (the compiler merged their dimensions into one of stride 1) take a plain loop. */
TR_TEMPLATE void binary(const void *params, const tr_broadcast *shape, const void *in1, const void *in2, void *out,
                        int mul_op, int size)
{
    tr_add_quant add_quant = {0}; /* ADD's, copied: as far as C knows the stores may alias it */
    if (!mul_op) {
        add_quant = ((const tr_add_params *)params)->quant;
    }
    const int32_t n = count(shape);
    if (shape->ndims == 1 && shape->stride1[0] == 1 && shape->stride2[0] == 1) {
        for (int32_t i = 0; i < n; i++) {
            const int32_t a = tr_load(in1, i, size), b = tr_load(in2, i, size);
            tr_store(out, i, mul_op ? mul(params, a, b) : tr_add(&add_quant, a, b), size);
        }
        return;
    }
    int32_t index[TR_MAX_DIMS] = {0};
    int32_t off1 = 0, off2 = 0;
    for (int32_t i = 0; i < n; i++) {
        const int32_t a = tr_load(in1, off1, size), b = tr_load(in2, off2, size);
        tr_store(out, i, mul_op ? mul(params, a, b) : tr_add(&add_quant, a, b), size);
        next(shape, index, &off1, &off2);
    }
}

void tr_add_s8(const tr_add_params *p, const int8_t *in1, const int8_t *in2, int8_t *out)
{
    binary(p, &p->shape, in1, in2, out, 0, sizeof *out);
}

void tr_add_s16(const tr_add_params *p, const int16_t *in1, const int16_t *in2, int16_t *out)
{
    binary(p, &p->shape, in1, in2, out, 0, sizeof *out);
}

void tr_mul_s8(const tr_mul_params *p, const int8_t *in1, const int8_t *in2, int8_t *out)
{
    binary(p, &p->shape, in1, in2, out, 1, sizeof *out);
}

void tr_mul_s16(const tr_mul_params *p, const int16_t *in1, const int16_t *in2, int16_t *out)
{
    binary(p, &p->shape, in1, in2, out, 1, sizeof *out);
}
