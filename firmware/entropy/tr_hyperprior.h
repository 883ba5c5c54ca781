/* The stream of a mean-scale hyperprior head: its side latent z, then its latent y coded under the means and
 * scales the hyper-decoder predicted from z (host/tinyrobust/split/coder.py HyperpriorCoding is the reference,
 * byte for byte). Both are rANS streams (tr_rans.h), one after the other: a stream ends where its decoder's state
 * is back to TR_RANS_L, so none needs a length. */
#ifndef TR_HYPERPRIOR_H
#define TR_HYPERPRIOR_H

#include <stddef.h>
#include <stdint.h>
#include "tr_rans.h"

typedef struct {
    const tr_cdf_table *tables; /* z's factorized tables, then y's Gaussian ones */
    uint32_t z_count;           /* z's elements, z_indexes[i] picking element i's table */
    const uint8_t *z_indexes;
    uint32_t y_count;  /* y's elements, NHWC */
    uint32_t channels; /* y's channels: h has twice as many, the means then the scales */
    /* By h's int8 value + 128, computed at compile time: the rounded mean, and the table of the scale. */
    const int16_t *means;
    const uint8_t *scales;
} tr_hyperprior;

/* Codes z, then y as y[i] - mean with the scale's table, into out; returns the bytes written, or 0 when they do
 * not fit in capacity. symbols must hold max(z_count, y_count) entries and indexes y_count. */
size_t tr_hyperprior_encode(const tr_hyperprior *coding, const int8_t *y, const int8_t *z, const int8_t *h,
                            int16_t *symbols, uint8_t *indexes, uint8_t *out, size_t capacity);

#endif
