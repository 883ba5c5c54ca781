#include "tr_kernels.h"

/* The window of output (oy, ox) clipped to the input: [*y0, *y1) x [*x0, *x1). */
static void window(const tr_pool_params *p, int oy, int ox, int *y0, int *y1, int *x0, int *x1)
{
    const int iy = oy * p->stride_h - p->pad_h;
    const int ix = ox * p->stride_w - p->pad_w;
    *y0 = iy < 0 ? 0 : iy;
    *x0 = ix < 0 ? 0 : ix;
    *y1 = iy + p->f_h < p->in_h ? iy + p->f_h : p->in_h;
    *x1 = ix + p->f_w < p->in_w ? ix + p->f_w : p->in_w;
}

void tr_max_pool_s8(const tr_pool_params *p, const int8_t *in, int8_t *out)
{
    for (int oy = 0; oy < p->out_h; oy++) {
        for (int ox = 0; ox < p->out_w; ox++) {
            int y0, y1, x0, x1;
            window(p, oy, ox, &y0, &y1, &x0, &x1);
            for (int c = 0; c < p->c; c++) {
                int32_t m = INT8_MIN;
                for (int y = y0; y < y1; y++) {
                    for (int x = x0; x < x1; x++) {
                        const int32_t v = in[(y * p->in_w + x) * p->c + c];
                        m = v > m ? v : m;
                    }
                }
                m = m < p->act_min ? p->act_min : (m > p->act_max ? p->act_max : m);
                out[(oy * p->out_w + ox) * p->c + c] = (int8_t)m;
            }
        }
    }
}

void tr_avg_pool_s8(const tr_pool_params *p, const int8_t *in, int8_t *out)
{
    for (int oy = 0; oy < p->out_h; oy++) {
        for (int ox = 0; ox < p->out_w; ox++) {
            int y0, y1, x0, x1;
            window(p, oy, ox, &y0, &y1, &x0, &x1);
            const int32_t count = (y1 - y0) * (x1 - x0);
            for (int c = 0; c < p->c; c++) {
                int32_t acc = 0;
                for (int y = y0; y < y1; y++) {
                    for (int x = x0; x < x1; x++) {
                        acc += in[(y * p->in_w + x) * p->c + c];
                    }
                }
                /* Division rounded half away from zero, as TFLM does. */
                acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                acc = acc < p->act_min ? p->act_min : (acc > p->act_max ? p->act_max : acc);
                out[(oy * p->out_w + ox) * p->c + c] = (int8_t)acc;
            }
        }
    }
}

void tr_max_pool_s16(const tr_pool_params *p, const int16_t *in, int16_t *out)
{
    for (int oy = 0; oy < p->out_h; oy++) {
        for (int ox = 0; ox < p->out_w; ox++) {
            int y0, y1, x0, x1;
            window(p, oy, ox, &y0, &y1, &x0, &x1);
            for (int c = 0; c < p->c; c++) {
                int32_t m = INT16_MIN;
                for (int y = y0; y < y1; y++) {
                    for (int x = x0; x < x1; x++) {
                        const int32_t v = in[(y * p->in_w + x) * p->c + c];
                        m = v > m ? v : m;
                    }
                }
                m = m < p->act_min ? p->act_min : (m > p->act_max ? p->act_max : m);
                out[(oy * p->out_w + ox) * p->c + c] = (int16_t)m;
            }
        }
    }
}

void tr_avg_pool_s16(const tr_pool_params *p, const int16_t *in, int16_t *out)
{
    for (int oy = 0; oy < p->out_h; oy++) {
        for (int ox = 0; ox < p->out_w; ox++) {
            int y0, y1, x0, x1;
            window(p, oy, ox, &y0, &y1, &x0, &x1);
            const int32_t count = (y1 - y0) * (x1 - x0);
            for (int c = 0; c < p->c; c++) {
                int32_t acc = 0;
                for (int y = y0; y < y1; y++) {
                    for (int x = x0; x < x1; x++) {
                        acc += in[(y * p->in_w + x) * p->c + c];
                    }
                }
                acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                acc = acc < p->act_min ? p->act_min : (acc > p->act_max ? p->act_max : acc);
                out[(oy * p->out_w + ox) * p->c + c] = (int16_t)acc;
            }
        }
    }
}
