/* A rANS entropy coder for the split network's integer latent: the device codes each int16 symbol with a
 * quantized probability table and sends the variable-length stream; host/tinyrobust/split/coder.py is its
 * reference, byte for byte.
 *
 * Stream format (ryg_rans' byte-wise rANS): a 32-bit state kept in [TR_RANS_L, 2^31), renormalized one byte at a
 * time, probabilities in units of 2^-TR_RANS_PRECISION. The encoder starts from state TR_RANS_L and codes the
 * symbols last to first (rANS is last in, first out), so the decoder reads them first to last. The stream is
 * the final state, 4 bytes little-endian, then the renormalization bytes in the order the decoder reads them.
 * A valid stream decodes to state TR_RANS_L with every byte read; the decoder checks both.
 *
 * Escape: a symbol outside its table's support is coded as the escape index (n), then its overflow v >= 0,
 * zig-zag (v = 2 * (s - offset - n) above the support, v = 2 * (offset - 1 - s) + 1 below), as k uniform 4-bit
 * chunks: first k (one chunk), then the chunks from the lowest. k is the fewest chunks that hold v (0 for v = 0),
 * so its top chunk is nonzero; with every support inside the int16 range, v < 2^17 and k <= 5. Every int16
 * symbol round-trips: nothing is clipped.
 *
 * Only 32-bit arithmetic (the encoder divides once per symbol or chunk, 32-bit unsigned; the decoder never), no
 * floating point, no allocation. */
#ifndef TR_RANS_H
#define TR_RANS_H

#include <stddef.h>
#include <stdint.h>

#define TR_RANS_PRECISION 16
#define TR_RANS_L (1u << 23) /* lower bound of the normalized state */

/* A quantized distribution over the symbols offset .. offset + size - 1 and an escape. cdf has size + 2 entries,
 * 0 = cdf[0] < cdf[1] < ... < cdf[size + 1] = 2^TR_RANS_PRECISION: symbol s takes [cdf[s - offset],
 * cdf[s - offset + 1]), the escape [cdf[size], cdf[size + 1]). The support lies inside the int16 range:
 * -32768 <= offset and offset + size <= 32768. uint32 entries, since the last one is 2^16. */
typedef struct {
    int32_t offset;
    uint16_t size;
    const uint32_t *cdf;
} tr_cdf_table;

/* Codes symbols[i] with tables[indexes[i]] for i < count into out; returns the number of bytes written from out[0]
 * (at least 4), or 0 when they do not fit in capacity. indexes are not checked against the number of tables. */
size_t tr_rans_encode(const int16_t *symbols, const uint8_t *indexes, size_t count, const tr_cdf_table *tables,
                      uint8_t *out, size_t capacity);

/* Decodes count symbols of the stream data[0 .. length) coded with the same indexes and tables; returns 0, or
 * nonzero for a stream that is not exactly the encoding of count symbols (never reading past data[length - 1]). */
int tr_rans_decode(const uint8_t *data, size_t length, const uint8_t *indexes, size_t count,
                   const tr_cdf_table *tables, int16_t *symbols);

#endif
