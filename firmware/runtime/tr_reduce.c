#include "tr_kernels.h"
#include "tr_support.h"

/* Offset of the walk's element at linear position k. */
static int32_t offset_of(const tr_walk *w, int32_t k)
{
    int32_t offset = 0;
    for (int d = w->ndims - 1; d >= 0; d--) {
        offset += (k % w->dims[d]) * w->stride[d];
        k /= w->dims[d];
    }
    return offset;
}

static int32_t count(const tr_walk *w)
{
    int32_t n = 1;
    for (int d = 0; d < w->ndims; d++) {
        n *= w->dims[d];
    }
    return n;
}

/* MEAN of int8 (size 1) or int16 (size 2) elements: the sum of each output's inputs, offset, requantized
 * (the multiplier already divided by count) and saturated to the element type. */
TR_TEMPLATE void mean(const tr_mean_params *p, const void *in, void *out, int size)
{
    const int32_t n_out = count(&p->kept);
    for (int32_t o = 0; o < n_out; o++) {
        const int32_t base = offset_of(&p->kept, o);
        int32_t sum = 0;
        for (int32_t k = 0; k < p->count; k++) {
            sum += tr_load(in, base + offset_of(&p->reduced, k), size);
        }
        const int32_t y = tr_requantize(sum + p->in_offset * p->count, p->multiplier, p->shift) + p->out_offset;
        tr_store(out, o, tr_clamp(y, tr_type_min(size), tr_type_max(size)), size);
    }
}

void tr_mean_s8(const tr_mean_params *p, const int8_t *in, int8_t *out)
{
    mean(p, in, out, sizeof *in);
}

void tr_mean_s16(const tr_mean_params *p, const int16_t *in, int16_t *out)
{
    mean(p, in, out, sizeof *in);
}
