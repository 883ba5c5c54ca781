/* Kinetis K-series UART (8-bit registers, 13-bit divisor plus 1/32 fine adjust). The board file gives the
 * instance, its clock, the SIM clock-gate bits and the pins; the driver gates the clocks on, muxes the pins
 * in their PORT control registers and sets the baud rate. */
#include "tr_board.h"

#define UART_BDH (*(volatile uint8_t *)(TR_UART_BASE + 0x0))
#define UART_BDL (*(volatile uint8_t *)(TR_UART_BASE + 0x1))
#define UART_C1 (*(volatile uint8_t *)(TR_UART_BASE + 0x2))
#define UART_C2 (*(volatile uint8_t *)(TR_UART_BASE + 0x3))
#define UART_S1 (*(volatile uint8_t *)(TR_UART_BASE + 0x4))
#define UART_D (*(volatile uint8_t *)(TR_UART_BASE + 0x7))
#define UART_C4 (*(volatile uint8_t *)(TR_UART_BASE + 0xA))
#define C2_RE (1u << 2)
#define C2_TE (1u << 3)
#define S1_RDRF (1u << 5)
#define S1_TDRE (1u << 7)
#define C4_BRFA_MASK 0x1Fu

#define PORT_PCR(port, pin) (*(volatile uint32_t *)((port) + 4 * (pin)))
#define PCR_MUX_SHIFT 8
#define PCR_MUX_MASK (7u << PCR_MUX_SHIFT)

/* baud = clock / (16 * (SBR + BRFA / 32)): the divisor in 32nds. */
#define DIVISOR_32NDS ((2u * TR_UART_CLOCK_HZ + TR_UART_BAUD / 2) / TR_UART_BAUD)

static const tr_enable_bit enable[] = {TR_UART_ENABLE};
static const tr_pin pins[] = {TR_UART_TX, TR_UART_RX};

void tr_uart_init(void)
{
    tr_set_enable_bits(enable, sizeof enable / sizeof enable[0]);
    for (uint32_t i = 0; i < 2; i++) {
        volatile uint32_t *pcr = &PORT_PCR(pins[i].port, pins[i].pin);
        *pcr = (*pcr & ~PCR_MUX_MASK) | (pins[i].function << PCR_MUX_SHIFT);
    }
    UART_C2 = 0; /* the divisor changes only while transmitter and receiver are off */
    uint32_t sbr = DIVISOR_32NDS / 32;
    UART_BDH = (uint8_t)((sbr >> 8) & 0x1Fu);
    UART_BDL = (uint8_t)sbr;
    UART_C4 = (uint8_t)((UART_C4 & ~C4_BRFA_MASK) | (DIVISOR_32NDS % 32));
    UART_C1 = 0; /* 8N1 */
    UART_C2 = C2_TE | C2_RE;
}

uint8_t tr_uart_get(void)
{
    while (!(UART_S1 & S1_RDRF)) {
    }
    return UART_D; /* reading S1 then D also clears an overrun */
}

void tr_uart_put(uint8_t byte)
{
    while (!(UART_S1 & S1_TDRE)) {
    }
    UART_D = byte;
}
