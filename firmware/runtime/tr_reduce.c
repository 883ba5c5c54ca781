#include "tr_kernels.h"

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

void tr_mean_s8(const tr_mean_params *p, const int8_t *in, int8_t *out)
{
    const int32_t n_out = count(&p->kept);
    for (int32_t o = 0; o < n_out; o++) {
        const int8_t *base = in + offset_of(&p->kept, o);
        int32_t sum = 0;
        for (int32_t k = 0; k < p->count; k++) {
            sum += base[offset_of(&p->reduced, k)];
        }
        int32_t y = tr_requantize(sum - p->in_zero_point * p->count, p->multiplier, p->shift) + p->out_zero_point;
        out[o] = (int8_t)(y < INT8_MIN ? INT8_MIN : (y > INT8_MAX ? INT8_MAX : y));
    }
}

void tr_mean_s16(const tr_mean_params *p, const int16_t *in, int16_t *out)
{
    const int32_t n_out = count(&p->kept);
    for (int32_t o = 0; o < n_out; o++) {
        const int16_t *base = in + offset_of(&p->kept, o);
        int32_t sum = 0;
        for (int32_t k = 0; k < p->count; k++) {
            sum += base[offset_of(&p->reduced, k)];
        }
        int32_t y = tr_requantize(sum - p->in_zero_point * p->count, p->multiplier, p->shift) + p->out_zero_point;
        out[o] = (int16_t)(y < INT16_MIN ? INT16_MIN : (y > INT16_MAX ? INT16_MAX : y));
    }
}
