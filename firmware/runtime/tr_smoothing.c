#include "tr_support.h"

/* Randomized smoothing's device half: the compiler (compile/smoothing.py) makes the noise table and the
 * generator's starting state; here the generator steps, each state's top bits pick a table entry, and the entry is
 * added to the input element with saturation. smoothing.noisy_copies is the same in numpy, bit for bit. */

uint32_t tr_xorshift32(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

TR_TEMPLATE void smoothing_noise(const tr_smoothing_params *p, uint32_t *state, const void *in, void *out, int size)
{
    const int32_t lo = tr_type_min(size), hi = tr_type_max(size);
    for (int32_t i = 0; i < p->size; i++) {
        const uint32_t entry = tr_xorshift32(state) >> (32 - TR_SMOOTHING_TABLE_BITS);
        /* the table is int16 for int8 inputs (the span of int8 fits), int32 for int16 ones */
        const int32_t noise = size == 1 ? ((const int16_t *)p->table)[entry] : ((const int32_t *)p->table)[entry];
        tr_store(out, i, tr_clamp(tr_load(in, i, size) + noise, lo, hi), size);
    }
}

void tr_smoothing_noise_s8(const tr_smoothing_params *p, uint32_t *state, const int8_t *in, int8_t *out)
{
    smoothing_noise(p, state, in, out, 1);
}

void tr_smoothing_noise_s16(const tr_smoothing_params *p, uint32_t *state, const int16_t *in, int16_t *out)
{
    smoothing_noise(p, state, in, out, 2);
}

TR_TEMPLATE int32_t argmax(const void *in, int32_t count, int size)
{
    int32_t best = 0;
    for (int32_t i = 1; i < count; i++) {
        if (tr_load(in, i, size) > tr_load(in, best, size)) {
            best = i;
        }
    }
    return best;
}

int32_t tr_argmax_s8(const int8_t *in, int32_t size)
{
    return argmax(in, size, 1);
}

int32_t tr_argmax_s16(const int16_t *in, int32_t size)
{
    return argmax(in, size, 2);
}
