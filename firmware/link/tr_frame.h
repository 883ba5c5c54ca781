/* Framing of the host-device protocol (docs/protocol.md):
 *   0xA5 0x5A | type u8 | seq u16 LE | length u16 LE | payload | CRC-32 LE over type..payload
 * The parser takes one byte at a time, resynchronizes on the sync bytes after garbage, and never writes
 * more than its buffer's capacity. */
#ifndef TR_FRAME_H
#define TR_FRAME_H

#include <stdint.h>

#define TR_SYNC0 0xA5
#define TR_SYNC1 0x5A
#define TR_HEADER_BYTES 7
#define TR_CRC_BYTES 4

enum tr_feed_result {
    TR_FEED_MORE = 0,      /* frame not complete yet */
    TR_FEED_FRAME = 1,     /* a valid frame is in the parser */
    TR_FEED_BAD_CRC = -1,  /* a frame arrived but its CRC did not match */
    TR_FEED_TOO_LONG = -2, /* the header announced more payload than the buffer holds */
};

typedef struct {
    uint8_t *buffer;
    uint16_t capacity;
    uint8_t state;
    uint8_t header[5]; /* type, seq, length */
    uint16_t count;    /* bytes received in the current state */
    uint8_t crc_bytes[4];
    /* The last frame: valid after TR_FEED_FRAME; type and seq also after an error. */
    uint8_t type;
    uint16_t seq;
    uint16_t length;
} tr_parser;

void tr_parser_init(tr_parser *p, uint8_t *buffer, uint16_t capacity);
int tr_parser_feed(tr_parser *p, uint8_t byte);

uint32_t tr_crc32_update(uint32_t crc, const uint8_t *data, uint32_t n);
#define TR_CRC32_INIT 0xFFFFFFFFu
#define TR_CRC32_FINAL(crc) ((crc) ^ 0xFFFFFFFFu)

#endif
