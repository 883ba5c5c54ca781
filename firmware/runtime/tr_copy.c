#include <string.h>
#include "tr_kernels.h"

/* The strided walk of p, one element of `size` bytes at a time (the compiler merged every dimension it could).
 * Inlined with a constant size, the memcpy is one load and one store. */
static inline void copy(const tr_copy_params *p, const void *in, void *out, size_t size)
{
    const uint8_t *src = in;
    uint8_t *dst = out;
    int32_t index[TR_MAX_DIMS] = {0};
    int32_t n = 1;
    for (int d = 0; d < p->ndims; d++) {
        n *= p->dims[d];
    }
    int32_t from = p->in_start, to = p->out_start;
    for (int32_t i = 0; i < n; i++) {
        memcpy(dst + (size_t)to * size, src + (size_t)from * size, size);
        for (int d = p->ndims - 1; d >= 0; d--) {
            from += p->in_stride[d];
            to += p->out_stride[d];
            if (++index[d] < p->dims[d]) {
                break;
            }
            index[d] = 0;
            from -= p->in_stride[d] * p->dims[d];
            to -= p->out_stride[d] * p->dims[d];
        }
    }
}

void tr_pad_s8(const tr_copy_params *p, const int8_t *in, int8_t *out)
{
    memset(out, p->fill_value, (size_t)p->fill_size);
    copy(p, in, out, sizeof *in);
}

void tr_strided_slice_s8(const tr_copy_params *p, const int8_t *in, int8_t *out)
{
    copy(p, in, out, sizeof *in);
}

void tr_concatenation(const tr_concatenation_params *p, const void *const *in, void *out)
{
    uint8_t *dst = out;
    for (int32_t k = 0; k < p->outer; k++) {
        for (int32_t i = 0; i < p->n_inputs; i++) {
            const int32_t n = p->copy_bytes[i];
            memcpy(dst, (const uint8_t *)in[i] + k * n, (size_t)n);
            dst += n;
        }
    }
}

void tr_resize_nearest_neighbor(const tr_resize_nearest_neighbor_params *p, const void *in, void *out)
{
    const uint8_t *src = in;
    uint8_t *dst = out;
    const size_t pixel = (size_t)p->pixel_bytes, out_row = (size_t)p->out_w * pixel;
    for (int32_t y = 0; y < p->out_h; y++) {
        if (y > 0 && p->rows[y] == p->rows[y - 1]) {
            /* Upsampling repeats rows: one copy of the row just written. */
            memcpy(dst, dst - out_row, out_row);
        } else {
            const uint8_t *row = src + (size_t)p->rows[y] * (size_t)p->in_w * pixel;
            for (int32_t x = 0; x < p->out_w; x++) {
                memcpy(dst + (size_t)x * pixel, row + (size_t)p->cols[x] * pixel, pixel);
            }
        }
        dst += out_row;
    }
}

void tr_pad_s16(const tr_copy_params *p, const int16_t *in, int16_t *out)
{
    for (int32_t i = 0; i < p->fill_size; i++) {
        out[i] = (int16_t)p->fill_value;
    }
    copy(p, in, out, sizeof *in);
}

void tr_strided_slice_s16(const tr_copy_params *p, const int16_t *in, int16_t *out)
{
    copy(p, in, out, sizeof *in);
}
