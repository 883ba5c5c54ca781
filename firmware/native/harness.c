/* Host build of a generated model: reads inputs from stdin, writes outputs to stdout, one tensor each.
 * Used by the tests to check the kernels natively (fast, with sanitizers) before the emulator does. */
#include <stdio.h>
#include <string.h>
#include "model.h"

int main(void)
{
    static uint8_t input[TR_INPUT_BYTES];
    while (fread(input, 1, TR_INPUT_BYTES, stdin) == TR_INPUT_BYTES) {
        memcpy(tr_model_input(), input, TR_INPUT_BYTES);
        tr_model_invoke();
        if (fwrite(tr_model_output(), 1, TR_OUTPUT_BYTES, stdout) != TR_OUTPUT_BYTES) {
            return 1;
        }
    }
    return 0;
}
