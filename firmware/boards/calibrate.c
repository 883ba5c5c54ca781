/* Calibration of the board's counter: time two spin loops of known instruction counts and send the
 * results to the host, which derives the instructions per counter tick in the emulator (emulator.py).
 * Reply, little-endian: u32 short loop iterations, u32 long loop iterations, u64 ticks of each. */
#include "tr_board.h"

#define SHORT_LOOPS 1000000u
#define LONG_LOOPS 11000000u

/* Exactly two instructions per iteration (subs, bne), so the difference between the two loops is
 * 2 * (LONG_LOOPS - SHORT_LOOPS) instructions whatever the call and counter overheads are. Restarting
 * the counter puts both loops at the same phase of a tick. */
static uint64_t time_spin(uint32_t loops)
{
    tr_counter_restart();
    __asm volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(loops) : : "cc");
    return tr_counter_read();
}

static void put_le(uint64_t value, int bytes)
{
    for (int i = 0; i < bytes; i++) {
        tr_uart_put((uint8_t)(value >> (8 * i)));
    }
}

int main(void)
{
    tr_uart_init();
    tr_counter_init();
    (void)tr_uart_get(); /* start once the host listens; later bytes are ignored */
    uint64_t short_ticks = time_spin(SHORT_LOOPS);
    uint64_t long_ticks = time_spin(LONG_LOOPS);
    put_le(SHORT_LOOPS, 4);
    put_le(LONG_LOOPS, 4);
    put_le(short_ticks, 8);
    put_le(long_ticks, 8);
    for (;;) {
    }
}
