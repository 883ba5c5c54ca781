/* Host build of the input pre-processing kernels alone, for the tests: `median H W C K` or `squeeze_bits N BITS`
 * reads images of H*W*C (or N) int8 values from stdin and writes each stage's output to stdout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tr_kernels.h"

int main(int argc, char **argv)
{
    int median = argc == 6 && strcmp(argv[1], "median") == 0;
    int squeeze = argc == 4 && strcmp(argv[1], "squeeze_bits") == 0;
    if (!median && !squeeze) {
        fprintf(stderr, "usage: %s median H W C K | squeeze_bits N BITS\n", argv[0]);
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
