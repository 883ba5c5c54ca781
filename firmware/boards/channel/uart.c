/* The host channel over the board's UART, byte by byte: the faithful channel, on hardware and emulated. */
#include "tr_board.h"

void tr_channel_open(void)
{
    tr_uart_init();
}

uint32_t tr_channel_read(uint8_t *buffer, uint32_t size)
{
    (void)size; /* a polled UART has one byte to give at a time */
    buffer[0] = tr_uart_get();
    return 1;
}

void tr_channel_write(const uint8_t *data, uint32_t length)
{
    for (uint32_t i = 0; i < length; i++) {
        tr_uart_put(data[i]);
    }
}
