#include "tr_kernels.h"

/* Bit-depth squeezing on the int8 range: u = q + 128 in [0, 255] is rounded to the nearest of `levels` + 1
 * evenly spaced levels and back, both roundings half up in integers. Since 255 and levels = 2^bits - 1 are
 * odd, neither division ever meets a tie, so this equals ART's FeatureSqueezing (np.rint) on [0, 1]. */
void tr_squeeze_bits_s8(const tr_squeeze_bits_params *p, const int8_t *in, int8_t *out)
{
    const int32_t levels = p->levels;
    for (int32_t i = 0; i < p->size; i++) {
        const int32_t u = (int32_t)in[i] + 128;
        const int32_t level = (2 * u * levels + 255) / 510;
        out[i] = (int8_t)((2 * level * 255 + levels) / (2 * levels) - 128);
    }
}

/* scipy.ndimage's "reflect" edge mode (d c b a | a b c d | d c b a): the edge element is repeated. */
static int32_t reflect(int32_t i, int32_t n)
{
    while (i < 0 || i >= n) {
        i = i < 0 ? -i - 1 : 2 * n - i - 1;
    }
    return i;
}

/* Median over a k x k window of each channel, windows starting k / 2 before the element (scipy.ndimage's
 * median_filter with origin 0); for an even k*k the upper median (rank k*k / 2), as scipy picks. */
void tr_median_s8(const tr_median_params *p, const int8_t *in, int8_t *out)
{
    const int32_t h = p->in_h, w = p->in_w, c = p->in_c, k = p->k, before = p->k / 2, rank = p->k * p->k / 2;
    int8_t window[TR_MEDIAN_MAX_K * TR_MEDIAN_MAX_K];
    for (int32_t y = 0; y < h; y++) {
        for (int32_t x = 0; x < w; x++) {
            for (int32_t ch = 0; ch < c; ch++) {
                int32_t n = 0;
                for (int32_t dy = 0; dy < k; dy++) {
                    const int32_t row = reflect(y + dy - before, h) * w;
                    for (int32_t dx = 0; dx < k; dx++) {
                        /* insertion into the sorted window */
                        const int8_t v = in[(row + reflect(x + dx - before, w)) * c + ch];
                        int32_t j = n++;
                        while (j > 0 && window[j - 1] > v) {
                            window[j] = window[j - 1];
                            j--;
                        }
                        window[j] = v;
                    }
                }
                out[(y * w + x) * c + ch] = window[rank];
            }
        }
    }
}
