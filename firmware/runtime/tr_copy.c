#include <string.h>
#include "tr_kernels.h"

/* The strided walk of p, one element at a time (the compiler merged every dimension it could). */
static void copy(const tr_copy_params *p, const int8_t *in, int8_t *out)
{
    int32_t index[TR_MAX_DIMS] = {0};
    int32_t n = 1;
    for (int d = 0; d < p->ndims; d++) {
        n *= p->dims[d];
    }
    int32_t from = p->in_start, to = p->out_start;
    for (int32_t i = 0; i < n; i++) {
        out[to] = in[from];
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
    copy(p, in, out);
}

void tr_strided_slice_s8(const tr_copy_params *p, const int8_t *in, int8_t *out)
{
    copy(p, in, out);
}

void tr_concatenation_s8(const tr_concatenation_params *p, const int8_t *const *in, int8_t *out)
{
    for (int32_t k = 0; k < p->outer; k++) {
        for (int32_t i = 0; i < p->n_inputs; i++) {
            const int32_t n = p->copy_sizes[i];
            memcpy(out, in[i] + k * n, (size_t)n);
            out += n;
        }
    }
}
