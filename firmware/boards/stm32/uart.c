/* STM32 USART with the SR/DR/BRR/CR1 register layout (STM32F1, F2 and F4). TR_UART_BASE and TR_UART_BAUD
 * come from the board file. The peripheral clock enable (RCC) and the pin multiplexing are left at their
 * reset state: QEMU does not model them, and on hardware they depend on the board's wiring. */
#include "tr_board.h"

#define USART_SR (*(volatile uint32_t *)(TR_UART_BASE + 0x00))
#define USART_DR (*(volatile uint32_t *)(TR_UART_BASE + 0x04))
#define USART_BRR (*(volatile uint32_t *)(TR_UART_BASE + 0x08))
#define USART_CR1 (*(volatile uint32_t *)(TR_UART_BASE + 0x0C))
#define SR_RXNE (1u << 5)
#define SR_TXE (1u << 7)
#define CR1_RE (1u << 2)
#define CR1_TE (1u << 3)
#define CR1_UE (1u << 13)

void tr_uart_init(void)
{
    /* 16x oversampling: BRR holds clock / baud as a 12.4 fixed-point divider. */
    USART_BRR = (TR_CLOCK_HZ + TR_UART_BAUD / 2) / TR_UART_BAUD;
    USART_CR1 = CR1_UE | CR1_TE | CR1_RE; /* QEMU drops received bytes until UE and RE are set */
}

uint8_t tr_uart_get(void)
{
    while (!(USART_SR & SR_RXNE)) {
    }
    return (uint8_t)USART_DR;
}

void tr_uart_put(uint8_t byte)
{
    while (!(USART_SR & SR_TXE)) {
    }
    USART_DR = byte;
}
