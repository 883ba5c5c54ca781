#include "tr_frame.h"

/* Framing runs between inferences, never inside the counted INFER: compiled for size. */
#pragma GCC optimize("Os")

enum { HUNT0, HUNT1, HEADER, PAYLOAD, CRC };

/* CRC-32 (IEEE 802.3, reflected 0xEDB88320), as zlib.crc32 on the host; a nibble table keeps it small. */
uint32_t tr_crc32_update(uint32_t crc, const uint8_t *data, uint32_t n)
{
    static const uint32_t table[16] = {
        0x00000000, 0x1DB71064, 0x3B6E20C8, 0x26D930AC, 0x76DC4190, 0x6B6B51F4, 0x4DB26158, 0x5005713C,
        0xEDB88320, 0xF00F9344, 0xD6D6A3E8, 0xCB61B38C, 0x9B64C2B0, 0x86D3D2D4, 0xA00AE278, 0xBDBDF21C,
    };
    for (uint32_t i = 0; i < n; i++) {
        crc ^= data[i];
        crc = (crc >> 4) ^ table[crc & 15];
        crc = (crc >> 4) ^ table[crc & 15];
    }
    return crc;
}

void tr_parser_init(tr_parser *p, uint8_t *buffer, uint16_t capacity)
{
    p->buffer = buffer;
    p->capacity = capacity;
    p->state = HUNT0;
    p->count = 0;
}

int tr_parser_feed(tr_parser *p, uint8_t byte)
{
    switch (p->state) {
    case HUNT0:
        if (byte == TR_SYNC0) {
            p->state = HUNT1;
        }
        return TR_FEED_MORE;
    case HUNT1:
        p->state = byte == TR_SYNC1 ? HEADER : (byte == TR_SYNC0 ? HUNT1 : HUNT0);
        p->count = 0;
        return TR_FEED_MORE;
    case HEADER:
        p->header[p->count++] = byte;
        if (p->count < sizeof p->header) {
            return TR_FEED_MORE;
        }
        p->type = p->header[0];
        p->seq = (uint16_t)(p->header[1] | (p->header[2] << 8));
        p->length = (uint16_t)(p->header[3] | (p->header[4] << 8));
        p->count = 0;
        if (p->length > p->capacity) {
            p->state = HUNT0;
            return TR_FEED_TOO_LONG;
        }
        p->state = p->length ? PAYLOAD : CRC;
        return TR_FEED_MORE;
    case PAYLOAD:
        p->buffer[p->count++] = byte;
        if (p->count == p->length) {
            p->state = CRC;
            p->count = 0;
        }
        return TR_FEED_MORE;
    default: /* CRC */
        p->crc_bytes[p->count++] = byte;
        if (p->count < TR_CRC_BYTES) {
            return TR_FEED_MORE;
        }
        p->state = HUNT0;
        p->count = 0;
        uint32_t crc = tr_crc32_update(TR_CRC32_INIT, p->header, sizeof p->header);
        crc = TR_CRC32_FINAL(tr_crc32_update(crc, p->buffer, p->length));
        uint32_t got = (uint32_t)p->crc_bytes[0] | ((uint32_t)p->crc_bytes[1] << 8) |
                       ((uint32_t)p->crc_bytes[2] << 16) | ((uint32_t)p->crc_bytes[3] << 24);
        return crc == got ? TR_FEED_FRAME : TR_FEED_BAD_CRC;
    }
}
