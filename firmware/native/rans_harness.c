/* Host build of the rANS coder alone, for the tests. stdin, little-endian: uint32 table count, per table int32
 * offset, uint32 size and size + 2 uint32 cdf entries; uint32 count and count uint8 indexes; then for `encode
 * [CAPACITY]` count int16 symbols, written to stdout as the stream (exit 4 when it does not fit in CAPACITY bytes);
 * for `decode` the rest of stdin is the stream, its symbols written to stdout as int16 (exit 3 when malformed).
 * Every buffer is allocated at its exact size, so that the sanitizers catch any access beyond it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tr_rans.h"

static void *read_exact(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p || fread(p, 1, bytes, stdin) != bytes) {
        fprintf(stderr, "rans_harness: short input\n");
        exit(2);
    }
    return p;
}

static uint32_t read_u32(void)
{
    uint32_t *p = read_exact(4), v = *p;
    free(p);
    return v;
}

int main(int argc, char **argv)
{
    int encode = argc >= 2 && strcmp(argv[1], "encode") == 0;
    if (!encode && !(argc == 2 && strcmp(argv[1], "decode") == 0)) {
        fprintf(stderr, "usage: %s encode [CAPACITY] | decode < input\n", argv[0]);
        return 2;
    }
    const uint32_t table_count = read_u32();
    tr_cdf_table *tables = calloc(table_count ? table_count : 1, sizeof *tables);
    for (uint32_t k = 0; k < table_count; k++) {
        tables[k].offset = (int32_t)read_u32();
        tables[k].size = (uint16_t)read_u32();
        tables[k].cdf = read_exact(((size_t)tables[k].size + 2) * sizeof(uint32_t));
    }
    const size_t count = read_u32();
    uint8_t *indexes = read_exact(count);
    int status = 0;
    if (encode) {
        int16_t *symbols = read_exact(count * sizeof(int16_t));
        /* An escape takes at most 16 + 4 + 5 * 4 bits: 8 bytes a symbol and the state are always enough. */
        const size_t capacity = argc >= 3 ? (size_t)strtoul(argv[2], NULL, 10) : 8 * count + 4;
        uint8_t *out = malloc(capacity ? capacity : 1);
        const size_t length = tr_rans_encode(symbols, indexes, count, tables, out, capacity);
        if (length == 0) {
            status = 4;
        } else if (fwrite(out, 1, length, stdout) != length) {
            status = 1;
        }
        free(symbols);
        free(out);
    } else {
        size_t length = 0, allocated = 64;
        uint8_t *data = malloc(allocated);
        size_t got;
        while ((got = fread(data + length, 1, allocated - length, stdin)) > 0) {
            length += got;
            if (length == allocated) {
                data = realloc(data, allocated *= 2);
            }
        }
        uint8_t *exact = malloc(length ? length : 1);
        memcpy(exact, data, length);
        free(data);
        int16_t *symbols = malloc(count ? count * sizeof(int16_t) : 1);
        if (tr_rans_decode(exact, length, indexes, count, tables, symbols) != 0) {
            status = 3;
        } else if (fwrite(symbols, sizeof(int16_t), count, stdout) != count) {
            status = 1;
        }
        free(exact);
        free(symbols);
    }
    for (uint32_t k = 0; k < table_count; k++) {
        free((void *)tables[k].cdf);
    }
    free(tables);
    free(indexes);
    return status;
}
