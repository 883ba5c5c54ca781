/* Stellaris (LM3S) UART, an Arm PL011 with Luminary's additions. TR_UART_BASE and TR_UART_BAUD come from
 * the board file. The UART and GPIO clock gates (RCGC1/RCGC2) and the pin functions are left at their
 * reset state: QEMU does not gate them, and on hardware they depend on the board's wiring. */
#include "tr_board.h"

#define UART_DR (*(volatile uint32_t *)(TR_UART_BASE + 0x000))
#define UART_FR (*(volatile uint32_t *)(TR_UART_BASE + 0x018))
#define UART_IBRD (*(volatile uint32_t *)(TR_UART_BASE + 0x024))
#define UART_FBRD (*(volatile uint32_t *)(TR_UART_BASE + 0x028))
#define UART_LCRH (*(volatile uint32_t *)(TR_UART_BASE + 0x02C))
#define UART_CTL (*(volatile uint32_t *)(TR_UART_BASE + 0x030))
#define FR_RXFE (1u << 4)
#define FR_TXFF (1u << 5)
#define LCRH_WLEN_8 (3u << 5)
#define CTL_UARTEN (1u << 0)
#define CTL_TXE (1u << 8)
#define CTL_RXE (1u << 9)

/* Baud divisor clock / (16 * baud) in 16.6 fixed point: integer and 64ths. */
#define DIVISOR_64THS ((4u * TR_CLOCK_HZ + TR_UART_BAUD / 2) / TR_UART_BAUD)

void tr_uart_init(void)
{
    UART_CTL = 0; /* the divisors and line control change only while the UART is disabled */
    UART_IBRD = DIVISOR_64THS / 64;
    UART_FBRD = DIVISOR_64THS % 64;
    /* 8N1 without the FIFOs: turning them on flushes them, which would lose bytes the host sent before
     * this point (QEMU holds them back while the one-byte holding register is full). */
    UART_LCRH = LCRH_WLEN_8;
    UART_CTL = CTL_UARTEN | CTL_TXE | CTL_RXE;
}

uint8_t tr_uart_get(void)
{
    while (UART_FR & FR_RXFE) {
    }
    return (uint8_t)UART_DR;
}

void tr_uart_put(uint8_t byte)
{
    while (UART_FR & FR_TXFF) {
    }
    UART_DR = byte;
}
