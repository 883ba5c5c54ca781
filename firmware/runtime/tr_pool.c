#include "tr_kernels.h"
#include "tr_support.h"

/* The window of output (oy, ox) clipped to the input: [*y0, *y1) x [*x0, *x1). */
static void window(const tr_pool_params *p, int oy, int ox, int *y0, int *y1, int *x0, int *x1)
{
    const int iy = oy * p->stride_h - p->pad_h;
    const int ix = ox * p->stride_w - p->pad_w;
    *y0 = tr_max(iy, 0);
    *x0 = tr_max(ix, 0);
    *y1 = tr_min(iy + p->k_h, p->in_h);
    *x1 = tr_min(ix + p->k_w, p->in_w);
}

/* MAX_POOL_2D for int8 (size 1) and int16 (size 2) elements. */
TR_TEMPLATE void max_pool(const tr_pool_params *p, const void *in, void *out, int size)
{
    const int in_c = p->in_c;
    for (int oy = 0; oy < p->out_h; oy++) {
        for (int ox = 0; ox < p->out_w; ox++) {
            int y0, y1, x0, x1;
            window(p, oy, ox, &y0, &y1, &x0, &x1);
            for (int c = 0; c < in_c; c++) {
                int32_t m = tr_type_min(size);
                for (int y = y0; y < y1; y++) {
                    for (int x = x0; x < x1; x++) {
                        m = tr_max(m, tr_load(in, (y * p->in_w + x) * in_c + c, size));
                    }
                }
                tr_store(out, (oy * p->out_w + ox) * in_c + c, tr_clamp(m, p->act_min, p->act_max), size);
            }
        }
    }
}

/* AVERAGE_POOL_2D for int8 (size 1) and int16 (size 2) elements. */
TR_TEMPLATE void avg_pool(const tr_pool_params *p, const void *in, void *out, int size)
{
    const int in_c = p->in_c;
    for (int oy = 0; oy < p->out_h; oy++) {
        for (int ox = 0; ox < p->out_w; ox++) {
            int y0, y1, x0, x1;
            window(p, oy, ox, &y0, &y1, &x0, &x1);
            const int32_t count = (y1 - y0) * (x1 - x0);
            for (int c = 0; c < in_c; c++) {
                int32_t acc = 0;
                for (int y = y0; y < y1; y++) {
                    for (int x = x0; x < x1; x++) {
                        acc += tr_load(in, (y * p->in_w + x) * in_c + c, size);
                    }
                }
                /* Division rounded half away from zero, as TFLM does. */
                acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                tr_store(out, (oy * p->out_w + ox) * in_c + c, tr_clamp(acc, p->act_min, p->act_max), size);
            }
        }
    }
}

void tr_max_pool_s8(const tr_pool_params *p, const int8_t *in, int8_t *out)
{
    max_pool(p, in, out, sizeof *in);
}

void tr_avg_pool_s8(const tr_pool_params *p, const int8_t *in, int8_t *out)
{
    avg_pool(p, in, out, sizeof *in);
}

void tr_max_pool_s16(const tr_pool_params *p, const int16_t *in, int16_t *out)
{
    max_pool(p, in, out, sizeof *in);
}

void tr_avg_pool_s16(const tr_pool_params *p, const int16_t *in, int16_t *out)
{
    avg_pool(p, in, out, sizeof *in);
}
