/* libFuzzer target for the firmware's frame parser: any byte stream, fed one byte at a time into a buffer
 * allocated at exactly its capacity, so AddressSanitizer catches any write past it. */
#include <stdint.h>
#include <stdlib.h>
#include "tr_frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    uint16_t capacity = data[0] % 80; /* the first byte chooses the buffer size, 0 included */
    uint8_t *buffer = malloc(capacity ? capacity : 1);
    tr_parser parser;
    tr_parser_init(&parser, buffer, capacity);
    for (size_t i = 1; i < size; i++) {
        int result = tr_parser_feed(&parser, data[i]);
        if (result == TR_FEED_FRAME && parser.length > capacity) {
            abort(); /* a frame longer than the buffer must never be delivered */
        }
    }
    free(buffer);
    return 0;
}
