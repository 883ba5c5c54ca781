/* STM32 USART / LPUART with the ISR/RDR/TDR register layout (STM32F7, L4, L4+ and later families). The board
 * file gives the instance, its kernel clock, the RCC (and PWR) bits that feed it and its pins; the driver
 * enables those clocks, puts the pins on their alternate function and sets the baud rate. */
#include "tr_board.h"

#define USART_CR1 (*(volatile uint32_t *)(TR_UART_BASE + 0x00))
#define USART_CR3 (*(volatile uint32_t *)(TR_UART_BASE + 0x08))
#define USART_BRR (*(volatile uint32_t *)(TR_UART_BASE + 0x0C))
#define USART_ISR (*(volatile uint32_t *)(TR_UART_BASE + 0x1C))
#define USART_RDR (*(volatile uint32_t *)(TR_UART_BASE + 0x24))
#define USART_TDR (*(volatile uint32_t *)(TR_UART_BASE + 0x28))
#define CR1_UE (1u << 0)
#define CR1_RE (1u << 2)
#define CR1_TE (1u << 3)
#define CR3_OVRDIS (1u << 12) /* a byte arriving before the last was read replaces it instead of halting RX */
#define ISR_RXNE (1u << 5)
#define ISR_TXE (1u << 7)

#define GPIO_MODER(port) (*(volatile uint32_t *)((port) + 0x00))
#define GPIO_AFR(port, pin) (*(volatile uint32_t *)((port) + 0x20 + 4 * ((pin) / 8)))
#define MODER_ALTERNATE 2u

static const tr_enable_bit enable[] = {TR_UART_ENABLE};
static const tr_pin pins[] = {TR_UART_TX, TR_UART_RX};

static void use_alternate_function(const tr_pin *p)
{
    uint32_t shift = 4 * (p->pin % 8);
    GPIO_AFR(p->port, p->pin) = (GPIO_AFR(p->port, p->pin) & ~(0xFu << shift)) | (p->function << shift);
    GPIO_MODER(p->port) = (GPIO_MODER(p->port) & ~(3u << (2 * p->pin))) | (MODER_ALTERNATE << (2 * p->pin));
}

void tr_uart_init(void)
{
    tr_set_enable_bits(enable, sizeof enable / sizeof enable[0]);
    for (uint32_t i = 0; i < 2; i++) {
        use_alternate_function(&pins[i]);
    }
    USART_CR1 = 0; /* BRR and CR3 change only while the USART is disabled */
#if defined(TR_UART_LPUART)
    /* LPUART: BRR = 256 * kernel clock / baud. */
    USART_BRR = (uint32_t)((256ull * TR_UART_CLOCK_HZ + TR_UART_BAUD / 2) / TR_UART_BAUD);
#else
    /* 16x oversampling: BRR = kernel clock / baud. */
    USART_BRR = (TR_UART_CLOCK_HZ + TR_UART_BAUD / 2) / TR_UART_BAUD;
#endif
    USART_CR3 = CR3_OVRDIS;
    USART_CR1 = CR1_UE | CR1_TE | CR1_RE; /* 8N1 */
}

uint8_t tr_uart_get(void)
{
    while (!(USART_ISR & ISR_RXNE)) {
    }
    return (uint8_t)USART_RDR;
}

void tr_uart_put(uint8_t byte)
{
    while (!(USART_ISR & ISR_TXE)) {
    }
    USART_TDR = byte;
}
