/* Device side of the host-device protocol (docs/protocol.md): answer INFO and INFER requests forever, and in a
 * split build (TR_SPLIT, with the generated coding.h) ENCODE and FETCH: the model is a head whose output
 * integers are the latent's symbols, sent entropy-coded. A smoothing build (TR_SMOOTHING, with the generated
 * smoothing.h) answers INFER with the votes of noisy copies of the input instead of the network's output. */
#include <string.h>
#include "model.h"
#include "tr_board.h"
#include "tr_frame.h"
#ifdef TR_SPLIT
#include "coding.h"
#endif
#ifdef TR_SMOOTHING
#include "smoothing.h"
#define ANSWER_BYTES TR_SMOOTHING_VOTES_BYTES
#define ANSWER() ((const uint8_t *)tr_smoothing_votes)
#define INVOKE() tr_smoothing_vote()
#else
#define ANSWER_BYTES TR_OUTPUT_BYTES
#define ANSWER() tr_model_output()
#define INVOKE() tr_model_invoke()
#endif

/* The protocol's code runs between inferences, never inside the counted INFER: compiled for size. */
#pragma GCC optimize("Os")

/* n bytes from src to dst, a byte at a time: volatile keeps GCC from making the loop a call to newlib's memcpy,
 * about 300 B of flash for the protocol's few copies. */
static __attribute__((noinline)) void copy_bytes(void *dst, const void *src, uint32_t n)
{
    volatile uint8_t *to = dst;
    const uint8_t *from = src;
    while (n-- > 0) {
        *to++ = *from++;
    }
}

#define PROTOCOL_VERSION 1
#define MSG_INFO 0x01
#define MSG_INFER 0x02
#define MSG_SESSION 0x03
#define MSG_LOAD 0x04
#define MSG_ENCODE 0x05
#define MSG_FETCH 0x06
#define MSG_PROFILE 0x07
#define MSG_TENSOR 0x08
#define MSG_REPLY 0x80
#define MSG_ERROR 0x7F

enum { ERR_BAD_CRC = 1, ERR_TOO_LONG = 2, ERR_UNKNOWN_TYPE = 3, ERR_BAD_LENGTH = 4, ERR_STREAM_OVERFLOW = 5 };

#define INFO_BYTES (1 + 1 + 2 + 5 * 4 + 32)
#define INFER_REPLY_BYTES (8 + ANSWER_BYTES)
#define MAX(a, b) ((a) > (b) ? (a) : (b))
/* An input larger than one chunk arrives in LOAD requests of at most this many bytes, written straight into
 * the arena, so the receive buffer stays small whatever the model. */
#define LOAD_CHUNK_BYTES 1024
#define RX_BYTES (TR_INPUT_BYTES <= LOAD_CHUNK_BYTES ? MAX(TR_INPUT_BYTES, 4) : 4 + LOAD_CHUNK_BYTES)
#define TX_BYTES MAX(INFER_REPLY_BYTES, INFO_BYTES)
_Static_assert(INFER_REPLY_BYTES <= 0xFFFF, "the model's output does not fit one reply frame");

static uint8_t rx[RX_BYTES];
static uint8_t tx[TX_BYTES];

/* A board whose file names an energy pin has it held high while the model runs, outside the counted ticks, so that a
 * meter integrates the supply current over each inference alone; other builds have none of that code. */
#ifdef TR_ENERGY_PIN
#define ENERGY_PIN_INIT() tr_energy_pin_init()
#define ENERGY_PIN(high) tr_energy_pin(high)
#else
#define ENERGY_PIN_INIT() ((void)0)
#define ENERGY_PIN(high) ((void)0)
#endif

#ifdef TR_SPLIT
/* The stream goes to the host STREAM_CHUNK_BYTES at a time: the first part in the ENCODE reply, after its
 * header, the rest in FETCH replies. Both are sent straight from the stream buffer, the ENCODE reply's header
 * written just before the stream, so no copy of the stream is kept. */
#define STREAM_CHUNK_BYTES 1024
#define ENCODE_REPLY_BYTES (8 + 8 + 4)
static uint8_t stream[ENCODE_REPLY_BYTES + TR_CODING_STREAM_BYTES];
static uint32_t stream_length; /* 0 until the first ENCODE, and after a reset */
#endif

#ifdef TR_PROFILE
/* PROFILE's reply: the step count, the deepest stack use since reset, then each step's ticks of the last inference.
 * It is built from the record when asked for, so a repeated PROFILE is answered from it unchanged. */
#define PROFILE_REPLY_BYTES (4 + 4 + 8 * TR_STEPS)
_Static_assert(PROFILE_REPLY_BYTES <= 0xFFFF, "the schedule's step ticks do not fit one reply frame");
static uint8_t profile_reply[PROFILE_REPLY_BYTES];

/* TENSOR walks the schedule one step per request, and the host reads each step's output before asking for the next
 * step: the planned arena reuses a buffer as soon as its tensor is dead, so a step's output is whole only until a later
 * step runs. Its replies are sent straight from the arena, so the walk needs no RAM beyond the normal build's: no
 * copy of a tensor, and no copy of the input to run the schedule again from (a prefix of the schedule run again per
 * step would need one, as the input's bytes are reused too). */
#define TENSOR_CHUNK_BYTES 1024
static uint32_t steps_walked; /* steps run since the walk began; 0 until a TENSOR of step 0, and after a reset */
#endif

/* The last reply sent, kept so that a repeated request (the host did not get the reply) is answered again
 * without running it twice. Zeroed at reset, like the session the host set: a reset device has neither. */
static struct {
    uint8_t valid, type;
    uint16_t seq, length;
    const uint8_t *payload;
} last;
static uint32_t session;

static void put_u16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    put_u16(p, v);
    put_u16(p + 2, v >> 16);
}

static void put_u64(uint8_t *p, uint64_t v)
{
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void send(uint8_t type, uint16_t seq, const uint8_t *payload, uint16_t length)
{
    uint8_t header[TR_HEADER_BYTES] = {TR_SYNC0, TR_SYNC1, type};
    put_u16(header + 3, seq);
    put_u16(header + 5, length);
    uint32_t crc = tr_crc32_update(TR_CRC32_INIT, header + 2, TR_HEADER_BYTES - 2);
    crc = TR_CRC32_FINAL(tr_crc32_update(crc, payload, length));
    uint8_t trailer[TR_CRC_BYTES];
    put_u32(trailer, crc);
    tr_channel_write(header, TR_HEADER_BYTES);
    tr_channel_write(payload, length);
    tr_channel_write(trailer, TR_CRC_BYTES);
}

static void reply_from(const tr_parser *p, const uint8_t *payload, uint16_t length)
{
    last.valid = 1;
    last.type = p->type;
    last.seq = p->seq;
    last.length = length;
    last.payload = payload;
    send(p->type | MSG_REPLY, p->seq, payload, length);
}

static void reply(const tr_parser *p, uint16_t length)
{
    reply_from(p, tx, length);
}

static void send_error(uint16_t seq, uint8_t code)
{
    send(MSG_ERROR, seq, &code, 1);
}

/* Put the request's input in place (the whole input, or none: LOAD requests put it there) and run the model,
 * counting its ticks; an error reply and 0 when the length is neither. */
static int run(const tr_parser *p, uint64_t *ticks)
{
    if (p->length != TR_INPUT_BYTES && p->length != 0) {
        send_error(p->seq, ERR_BAD_LENGTH);
        return 0;
    }
    copy_bytes(tr_model_input(), rx, p->length);
    ENERGY_PIN(1);
    tr_counter_restart();
    INVOKE();
    *ticks = tr_counter_read();
    ENERGY_PIN(0);
    return 1;
}

static void handle(const tr_parser *p)
{
    if (last.valid && p->seq == last.seq && p->type == last.type) {
        send(last.type | MSG_REPLY, last.seq, last.payload, last.length);
        return;
    }
    switch (p->type) {
    case MSG_INFO:
        tx[0] = PROTOCOL_VERSION;
        tx[1] = tr_counter_kind;
        put_u16(tx + 2, RX_BYTES);
        put_u32(tx + 4, TR_INPUT_BYTES);
        put_u32(tx + 8, ANSWER_BYTES);
        put_u32(tx + 12, TR_ARENA_BYTES);
        put_u32(tx + 16, TR_CLOCK_HZ);
        put_u32(tx + 20, session);
        copy_bytes(tx + 24, tr_model_hash, 32);
        reply(p, INFO_BYTES);
        break;
    case MSG_SESSION:
        if (p->length != 4) {
            send_error(p->seq, ERR_BAD_LENGTH);
            break;
        }
        session = get_u32(rx);
        reply(p, 0);
        break;
    case MSG_LOAD: {
        uint32_t offset = p->length >= 4 ? get_u32(rx) : TR_INPUT_BYTES;
        if (p->length <= 4 || offset > TR_INPUT_BYTES || p->length - 4u > TR_INPUT_BYTES - offset) {
            send_error(p->seq, ERR_BAD_LENGTH);
            break;
        }
        copy_bytes((uint8_t *)tr_model_input() + offset, rx + 4, p->length - 4u);
        reply(p, 0);
        break;
    }
    case MSG_INFER: {
        uint64_t ticks;
        if (!run(p, &ticks)) {
            break;
        }
        put_u64(tx, ticks);
        copy_bytes(tx + 8, ANSWER(), ANSWER_BYTES);
        reply(p, INFER_REPLY_BYTES);
        break;
    }
#ifdef TR_SPLIT
    case MSG_ENCODE: {
        /* The input as for INFER; the head's ticks and the coder's (preparing its symbols included) apart. */
        uint64_t head_ticks;
        if (!run(p, &head_ticks)) {
            break;
        }
        tr_counter_restart();
        stream_length = tr_coding_encode(stream + ENCODE_REPLY_BYTES, TR_CODING_STREAM_BYTES);
        uint64_t coder_ticks = tr_counter_read();
        if (stream_length == 0) { /* cannot happen: the buffer holds the worst case */
            send_error(p->seq, ERR_STREAM_OVERFLOW);
            break;
        }
        put_u64(stream, head_ticks);
        put_u64(stream + 8, coder_ticks);
        put_u32(stream + 16, stream_length);
        uint32_t first = stream_length < STREAM_CHUNK_BYTES ? stream_length : STREAM_CHUNK_BYTES;
        reply_from(p, stream, (uint16_t)(ENCODE_REPLY_BYTES + first));
        break;
    }
    case MSG_FETCH: {
        /* The stream from an offset inside it; none before the first ENCODE (or since a reset). */
        uint32_t offset = p->length == 4 ? get_u32(rx) : stream_length;
        if (offset >= stream_length) {
            send_error(p->seq, ERR_BAD_LENGTH);
            break;
        }
        uint32_t rest = stream_length - offset;
        uint16_t length = (uint16_t)(rest < STREAM_CHUNK_BYTES ? rest : STREAM_CHUNK_BYTES);
        reply_from(p, stream + ENCODE_REPLY_BYTES + offset, length);
        break;
    }
#endif
#ifdef TR_PROFILE
    case MSG_PROFILE: {
        /* The record of the last INFER (or ENCODE); none before the first one since reset. */
        if (p->length != 0 || tr_profile_runs == 0) {
            send_error(p->seq, ERR_BAD_LENGTH);
            break;
        }
        put_u32(profile_reply, TR_STEPS);
        put_u32(profile_reply + 4, tr_stack_high_water());
        for (uint32_t i = 0; i < TR_STEPS; i++) {
            put_u64(profile_reply + 8 + 8 * i, tr_profile_ticks[i]);
        }
        reply_from(p, profile_reply, PROFILE_REPLY_BYTES);
        break;
    }
    case MSG_TENSOR: {
        /* Step k's output from a byte offset. Offset 0 of step 0 begins a walk on the input LOAD put in place, and
         * offset 0 of the step after the last one run runs it; any other step than the last one run is refused. */
        uint32_t step = p->length == 8 ? get_u32(rx) : TR_STEPS, offset = p->length == 8 ? get_u32(rx + 4) : 0;
        if (step < TR_STEPS && offset == 0 && (step == 0 || step == steps_walked)) {
            tr_model_step(step);
            steps_walked = step + 1;
        }
        uint32_t bytes = 0;
        const uint8_t *tensor = step < TR_STEPS ? tr_model_step_output(step, &bytes) : 0;
        if (step + 1 != steps_walked || offset >= bytes) {
            send_error(p->seq, ERR_BAD_LENGTH);
            break;
        }
        uint32_t rest = bytes - offset;
        reply_from(p, tensor + offset, (uint16_t)(rest < TENSOR_CHUNK_BYTES ? rest : TENSOR_CHUNK_BYTES));
        break;
    }
#endif
    default:
        send_error(p->seq, ERR_UNKNOWN_TYPE);
    }
}

int main(void)
{
    static tr_parser parser;
    static uint8_t incoming[512]; /* what one channel read may bring: a block on fast channels, a byte on a UART */
    tr_channel_open();
    tr_counter_init();
    ENERGY_PIN_INIT();
    tr_parser_init(&parser, rx, sizeof rx);
    for (;;) {
        uint32_t n = tr_channel_read(incoming, sizeof incoming);
        for (uint32_t i = 0; i < n; i++) {
            switch (tr_parser_feed(&parser, incoming[i])) {
            case TR_FEED_FRAME:
                handle(&parser);
                break;
            case TR_FEED_BAD_CRC:
                send_error(parser.seq, ERR_BAD_CRC);
                break;
            case TR_FEED_TOO_LONG:
                send_error(parser.seq, ERR_TOO_LONG);
                break;
            default:
                break;
            }
        }
    }
}
