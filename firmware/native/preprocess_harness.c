/* Host build of the input pre-processing kernels alone, for the tests: `median H W C K` or `squeeze_bits N BITS`
 * reads images of H*W*C (or N) int8 values from stdin and writes each stage's output to stdout.
 * `smoothing_noise N COPIES STATE BYTES` reads randomized smoothing's noise table first (2^TR_SMOOTHING_TABLE_BITS
 * int16 values for BYTES 1, int32 for BYTES 2), then inputs of N int8 (BYTES 1) or int16 (BYTES 2) values, and writes
 * COPIES noisy copies of each, the generator starting from STATE at each input, as a smoothing build does. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tr_kernels.h"

static int smoothing_noise(int32_t size, long copies, uint32_t start, int bytes)
{
    const size_t entries = (size_t)1 << TR_SMOOTHING_TABLE_BITS, entry_bytes = bytes == 1 ? 2 : 4;
    void *table = malloc(entries * entry_bytes), *in = malloc((size_t)size * bytes), *out = malloc((size_t)size * bytes);
    if (fread(table, entry_bytes, entries, stdin) != entries) {
        return 1;
    }
    tr_smoothing_params p = {.size = size, .table = table};
    while (fread(in, (size_t)bytes, (size_t)size, stdin) == (size_t)size) {
        uint32_t state = start;
        for (long k = 0; k < copies; k++) {
            if (bytes == 1) {
                tr_smoothing_noise_s8(&p, &state, in, out);
            } else {
                tr_smoothing_noise_s16(&p, &state, in, out);
            }
            if (fwrite(out, (size_t)bytes, (size_t)size, stdout) != (size_t)size) {
                return 1;
            }
        }
    }
    free(table);
    free(in);
    free(out);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], "smoothing_noise") == 0) {
        return smoothing_noise(atoi(argv[2]), atol(argv[3]), (uint32_t)strtoul(argv[4], NULL, 10), atoi(argv[5]));
    }
    int median = argc == 6 && strcmp(argv[1], "median") == 0;
    int squeeze = argc == 4 && strcmp(argv[1], "squeeze_bits") == 0;
    if (!median && !squeeze) {
        fprintf(stderr, "usage: %s median H W C K | squeeze_bits N BITS | smoothing_noise N COPIES STATE BYTES\n",
                argv[0]);
        return 2;
    }
    tr_median_params mp = {0};
    tr_squeeze_bits_params sp = {0};
    size_t size;
    if (median) {
        mp.in_h = (int16_t)atoi(argv[2]), mp.in_w = (int16_t)atoi(argv[3]), mp.in_c = (int16_t)atoi(argv[4]);
        mp.k = (int16_t)atoi(argv[5]);
        size = (size_t)mp.in_h * mp.in_w * mp.in_c;
    } else {
        sp.size = atoi(argv[2]);
        sp.levels = (1 << atoi(argv[3])) - 1;
        size = (size_t)sp.size;
    }
    int8_t *in = malloc(size), *out = malloc(size);
    while (fread(in, 1, size, stdin) == size) {
        if (median) {
            tr_median_s8(&mp, in, out);
        } else {
            tr_squeeze_bits_s8(&sp, in, out);
        }
        if (fwrite(out, 1, size, stdout) != size) {
            return 1;
        }
    }
    free(in);
    free(out);
    return 0;
}
