/* Arm CMSDK APB UART (MPS2 / MPS3 boards). TR_UART_BASE comes from the board file. */
#include "tr_board.h"

#define UART_DATA (*(volatile uint32_t *)(TR_UART_BASE + 0x0))
#define UART_STATE (*(volatile uint32_t *)(TR_UART_BASE + 0x4))
#define UART_CTRL (*(volatile uint32_t *)(TR_UART_BASE + 0x8))
#define UART_BAUDDIV (*(volatile uint32_t *)(TR_UART_BASE + 0x10))
#define STATE_TX_FULL 1u
#define STATE_RX_FULL 2u

void tr_uart_init(void)
{
    UART_BAUDDIV = TR_UART_BAUDDIV;
    UART_CTRL = 3; /* TX and RX enabled */
}

uint8_t tr_uart_get(void)
{
    while (!(UART_STATE & STATE_RX_FULL)) {
    }
    return (uint8_t)UART_DATA;
}

void tr_uart_put(uint8_t byte)
{
    while (UART_STATE & STATE_TX_FULL) {
    }
    UART_DATA = byte;
}
