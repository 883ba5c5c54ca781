/* nRF52 UARTE0 instance in its UART mode (ENABLE = 4): polled bytes through the RXD/TXD registers and the
 * 6-byte receive FIFO. The EasyDMA mode of the same instance cannot say how many bytes arrived before its
 * buffer fills, so byte-wise polling would lose bytes between transfers. The board file gives the pins;
 * the high-frequency crystal is started first for an accurate baud rate. */
#include "tr_board.h"

#define REG(offset) (*(volatile uint32_t *)(TR_UART_BASE + (offset)))
#define TASKS_STARTRX REG(0x000)
#define TASKS_STARTTX REG(0x008)
#define EVENTS_RXDRDY REG(0x108)
#define EVENTS_TXDRDY REG(0x11C)
#define ENABLE REG(0x500)
#define PSELTXD REG(0x50C)
#define PSELRXD REG(0x514)
#define RXD REG(0x518)
#define TXD REG(0x51C)
#define BAUDRATE REG(0x524)
#define CONFIG REG(0x56C)
#define ENABLE_UART 4u

#define CLOCK_TASKS_HFCLKSTART (*(volatile uint32_t *)0x40000000)
#define CLOCK_EVENTS_HFCLKSTARTED (*(volatile uint32_t *)0x40000100)
#define P0_OUTSET (*(volatile uint32_t *)0x50000508)
#define P0_DIRSET (*(volatile uint32_t *)0x50000518)

/* BAUDRATE holds baud * 2^32 / 16 MHz, rounded to a multiple of 0x1000 (0x01D7E000 for 115200). */
#define BAUDRATE_VALUE ((uint32_t)((((uint64_t)TR_UART_BAUD << 32) / 16000000u + 0x800u) & ~0xFFFull))

static const tr_pin tx = TR_UART_TX;
static const tr_pin rx = TR_UART_RX;

void tr_uart_init(void)
{
    CLOCK_EVENTS_HFCLKSTARTED = 0;
    CLOCK_TASKS_HFCLKSTART = 1;
    while (!CLOCK_EVENTS_HFCLKSTARTED) {
    }
    P0_OUTSET = 1u << tx.pin; /* TXD idles high: drive it before the UART takes the pin */
    P0_DIRSET = 1u << tx.pin;
    PSELTXD = tx.pin; /* bits 4:0 pin, bit 5 port (P0), bit 31 clear: connected */
    PSELRXD = rx.pin;
    BAUDRATE = BAUDRATE_VALUE;
    CONFIG = 0; /* no parity, no flow control, one stop bit */
    ENABLE = ENABLE_UART;
    EVENTS_RXDRDY = 0;
    TASKS_STARTRX = 1;
    TASKS_STARTTX = 1;
}

uint8_t tr_uart_get(void)
{
    while (!EVENTS_RXDRDY) {
    }
    EVENTS_RXDRDY = 0; /* clear before reading RXD, so that the next byte in the FIFO raises it again */
    return (uint8_t)RXD;
}

void tr_uart_put(uint8_t byte)
{
    EVENTS_TXDRDY = 0;
    TXD = byte;
    while (!EVENTS_TXDRDY) {
    }
}
