/* rANS coder of tr_rans.h. The decoder's state stays in [TR_RANS_L, 2^31) whatever the bytes: the first state is
 * checked, a step gives freq * (x >> 16) + (cf - start) < freq * 2^15 <= 2^31, and a renormalization shifts a
 * state below 2^23 by 8 bits. So a malformed stream can neither overflow the state nor make it read past its end. */
#include "tr_rans.h"

#include <string.h>

#define TR_RANS_ONE (1u << TR_RANS_PRECISION)
#define TR_RANS_MASK (TR_RANS_ONE - 1u)
#define TR_RANS_CHUNK_BITS 4
#define TR_RANS_CHUNK_FREQ (TR_RANS_ONE >> TR_RANS_CHUNK_BITS) /* the 16 chunk values are equally likely */
#define TR_RANS_CHUNK_MAX ((1u << TR_RANS_CHUNK_BITS) - 1u)
#define TR_RANS_MAX_CHUNKS 5                                    /* an int16 overflow is below 2^17 */

/* --- Encoder ---------------------------------------------------------------------------------------------- */

/* Writes downwards from the end of the buffer, so that the bytes come out in the order the decoder reads them. */
typedef struct {
    uint32_t x;
    uint8_t *begin;
    uint8_t *ptr;
} tr_rans_encoder;

/* Pushes the interval [start, start + freq); 0 when the buffer is full. */
static int tr_rans_put(tr_rans_encoder *e, uint32_t start, uint32_t freq)
{
    /* Shift bytes out until the coded state, about x * 2^16 / freq, stays below 2^31: x < freq * 2^15. */
    const uint32_t x_max = ((TR_RANS_L >> TR_RANS_PRECISION) << 8) * freq;
    uint32_t x = e->x;
    while (x >= x_max) {
        if (e->ptr == e->begin) {
            return 0;
        }
        *--e->ptr = (uint8_t)x;
        x >>= 8;
    }
    e->x = ((x / freq) << TR_RANS_PRECISION) + (x % freq) + start;
    return 1;
}

static int tr_rans_put_chunk(tr_rans_encoder *e, uint32_t chunk)
{
    return tr_rans_put(e, chunk * TR_RANS_CHUNK_FREQ, TR_RANS_CHUNK_FREQ);
}

/* Pushes one symbol; the escape's pieces go in reverse of the order the decoder pops them. */
static int tr_rans_put_symbol(tr_rans_encoder *e, int32_t symbol, const tr_cdf_table *t)
{
    const int32_t index = symbol - t->offset;
    const uint32_t *cdf = t->cdf;
    if (index >= 0 && index < t->size) {
        return tr_rans_put(e, cdf[index], cdf[index + 1] - cdf[index]);
    }
    const uint32_t overflow = index >= 0 ? (uint32_t)(index - t->size) << 1 : ((uint32_t)(-1 - index) << 1) | 1u;
    uint32_t chunks = 0;
    for (uint32_t rest = overflow; rest != 0; rest >>= TR_RANS_CHUNK_BITS) {
        chunks++;
    }
    for (uint32_t j = chunks; j-- > 0;) {
        if (!tr_rans_put_chunk(e, (overflow >> (TR_RANS_CHUNK_BITS * j)) & TR_RANS_CHUNK_MAX)) {
            return 0;
        }
    }
    return tr_rans_put_chunk(e, chunks) && tr_rans_put(e, cdf[t->size], TR_RANS_ONE - cdf[t->size]);
}

size_t tr_rans_encode(const int16_t *symbols, const uint8_t *indexes, size_t count, const tr_cdf_table *tables,
                      uint8_t *out, size_t capacity)
{
    tr_rans_encoder e = {TR_RANS_L, out, out + capacity};
    for (size_t i = count; i-- > 0;) {
        if (!tr_rans_put_symbol(&e, symbols[i], &tables[indexes[i]])) {
            return 0;
        }
    }
    if ((size_t)(e.ptr - out) < 4) {
        return 0;
    }
    e.ptr -= 4;
    for (int b = 0; b < 4; b++) {
        e.ptr[b] = (uint8_t)(e.x >> (8 * b));
    }
    const size_t length = (size_t)(out + capacity - e.ptr);
    memmove(out, e.ptr, length);
    return length;
}

/* --- Decoder ---------------------------------------------------------------------------------------------- */

typedef struct {
    uint32_t x;
    const uint8_t *data;
    size_t length;
    size_t pos;
} tr_rans_decoder;

/* Pops the interval [start, start + freq) that holds x's low 16 bits; 0 when the stream ends too early. */
static int tr_rans_pop(tr_rans_decoder *d, uint32_t start, uint32_t freq)
{
    uint32_t x = freq * (d->x >> TR_RANS_PRECISION) + (d->x & TR_RANS_MASK) - start;
    while (x < TR_RANS_L) {
        if (d->pos == d->length) {
            return 0;
        }
        x = (x << 8) | d->data[d->pos++];
    }
    d->x = x;
    return 1;
}

static int tr_rans_get_chunk(tr_rans_decoder *d, uint32_t *chunk)
{
    *chunk = (d->x & TR_RANS_MASK) / TR_RANS_CHUNK_FREQ; /* a power of two: a shift */
    return tr_rans_pop(d, *chunk * TR_RANS_CHUNK_FREQ, TR_RANS_CHUNK_FREQ);
}

/* Pops one symbol; 0 for a stream no encoder writes (too short, too many chunks, a zero top chunk, beyond int16). */
static int tr_rans_get_symbol(tr_rans_decoder *d, const tr_cdf_table *t, int16_t *symbol)
{
    const uint32_t cf = d->x & TR_RANS_MASK;
    const uint32_t *cdf = t->cdf;
    uint32_t lo = 0, hi = t->size + 1u; /* cdf[lo] <= cf < cdf[hi] */
    while (hi - lo > 1) {
        const uint32_t mid = (lo + hi) >> 1;
        if (cdf[mid] <= cf) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    if (!tr_rans_pop(d, cdf[lo], cdf[lo + 1] - cdf[lo])) {
        return 0;
    }
    if (lo < t->size) {
        *symbol = (int16_t)(t->offset + (int32_t)lo);
        return 1;
    }
    uint32_t chunks, chunk = 0, overflow = 0;
    if (!tr_rans_get_chunk(d, &chunks) || chunks > TR_RANS_MAX_CHUNKS) {
        return 0;
    }
    for (uint32_t j = 0; j < chunks; j++) {
        if (!tr_rans_get_chunk(d, &chunk)) {
            return 0;
        }
        overflow |= chunk << (TR_RANS_CHUNK_BITS * j);
    }
    if (chunks > 0 && chunk == 0) {
        return 0;
    }
    const int32_t half = (int32_t)(overflow >> 1);
    const int32_t value = (overflow & 1u) ? t->offset - 1 - half : t->offset + t->size + half;
    if (value < INT16_MIN || value > INT16_MAX) {
        return 0;
    }
    *symbol = (int16_t)value;
    return 1;
}

int tr_rans_decode(const uint8_t *data, size_t length, const uint8_t *indexes, size_t count,
                   const tr_cdf_table *tables, int16_t *symbols)
{
    if (length < 4) {
        return 1;
    }
    tr_rans_decoder d = {0, data, length, 4};
    for (int b = 0; b < 4; b++) {
        d.x |= (uint32_t)data[b] << (8 * b);
    }
    if (d.x < TR_RANS_L || d.x >= (1u << 31)) {
        return 1;
    }
    for (size_t i = 0; i < count; i++) {
        if (!tr_rans_get_symbol(&d, &tables[indexes[i]], &symbols[i])) {
            return 1;
        }
    }
    /* The encoder started from TR_RANS_L and wrote every byte: anything else is not a stream it wrote. */
    return d.x == TR_RANS_L && d.pos == length ? 0 : 1;
}
