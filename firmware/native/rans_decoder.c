/* tr_rans_decode compiled for the host, which decodes every stream the device sent with it as well as with the
 * Python reference (host/tinyrobust/split/coder.py NativeDecoder). stdin, little-endian: uint32 table count, per
 * table int32 offset, uint32 size and size + 2 uint32 cdf entries; then until its end, one record per stream:
 * uint32 count, count uint8 table indexes, uint32 length and the stream's bytes. stdout, per record: int32 0 and
 * the count int16 symbols, or int32 1 and count zeros for a stream that is not exactly their encoding. */
#include <stdio.h>
#include <stdlib.h>
#include "tr_rans.h"

static void *read_exact(size_t bytes, int eof_ok)
{
    void *p = malloc(bytes ? bytes : 1);
    size_t got = fread(p, 1, bytes, stdin);
    if (!p || got != bytes) {
        if (eof_ok && got == 0 && feof(stdin)) {
            free(p);
            return NULL;
        }
        fprintf(stderr, "rans_decoder: short input\n");
        exit(2);
    }
    return p;
}

static uint32_t read_u32(void)
{
    uint32_t *p = read_exact(4, 0), v = *p;
    free(p);
    return v;
}

int main(void)
{
    const uint32_t table_count = read_u32();
    tr_cdf_table *tables = calloc(table_count ? table_count : 1, sizeof *tables);
    for (uint32_t k = 0; k < table_count; k++) {
        tables[k].offset = (int32_t)read_u32();
        tables[k].size = (uint16_t)read_u32();
        tables[k].cdf = read_exact(((size_t)tables[k].size + 2) * sizeof(uint32_t), 0);
    }
    uint32_t *count_field;
    while ((count_field = read_exact(4, 1)) != NULL) {
        const size_t count = *count_field;
        free(count_field);
        uint8_t *indexes = read_exact(count, 0);
        for (size_t i = 0; i < count; i++) {
            if (indexes[i] >= table_count) {
                fprintf(stderr, "rans_decoder: table index %u of %u tables\n", indexes[i], table_count);
                return 2;
            }
        }
        const size_t length = read_u32();
        uint8_t *data = read_exact(length, 0);
        int16_t *symbols = calloc(count ? count : 1, sizeof(int16_t));
        int32_t status = tr_rans_decode(data, length, indexes, count, tables, symbols) != 0;
        if (status) {
            for (size_t i = 0; i < count; i++) {
                symbols[i] = 0;
            }
        }
        if (fwrite(&status, 4, 1, stdout) != 1 || fwrite(symbols, sizeof(int16_t), count, stdout) != count) {
            return 1;
        }
        free(indexes);
        free(data);
        free(symbols);
    }
    return 0;
}
