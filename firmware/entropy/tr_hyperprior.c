#include "tr_hyperprior.h"

size_t tr_hyperprior_encode(const tr_hyperprior *coding, const int8_t *y, const int8_t *z, const int8_t *h,
                            int16_t *symbols, uint8_t *indexes, uint8_t *out, size_t capacity)
{
    for (uint32_t i = 0; i < coding->z_count; i++) {
        symbols[i] = z[i];
    }
    size_t z_bytes = tr_rans_encode(symbols, coding->z_indexes, coding->z_count, coding->tables, out, capacity);
    if (z_bytes == 0) {
        return 0;
    }
    const uint32_t channels = coding->channels;
    for (uint32_t i = 0, c = 0; i < coding->y_count; i++) {
        const int8_t *element = h + (i - c) * 2 + c; /* h's pixel is twice as wide as y's */
        symbols[i] = (int16_t)(y[i] - coding->means[element[0] + 128]);
        indexes[i] = coding->scales[element[channels] + 128];
        if (++c == channels) {
            c = 0;
        }
    }
    size_t y_bytes = tr_rans_encode(symbols, indexes, coding->y_count, coding->tables, out + z_bytes,
                                    capacity - z_bytes);
    return y_bytes == 0 ? 0 : z_bytes + y_bytes;
}
