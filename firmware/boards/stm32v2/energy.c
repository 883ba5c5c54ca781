/* The energy pin on STM32 GPIO ports with the MODER/BSRR layout (F4, F7, L4): set up as a push-pull output, driven
 * low, and set or reset in one atomic BSRR write, so that the pin's edges mark the inference within a few cycles. */
#include "tr_board.h"

#ifdef TR_ENERGY_PIN
#define GPIO_MODER(port) (*(volatile uint32_t *)((port) + 0x00))
#define GPIO_BSRR(port) (*(volatile uint32_t *)((port) + 0x18))
#define MODER_OUTPUT 1u

static const tr_pin pin = TR_ENERGY_PIN;
#ifdef TR_ENERGY_ENABLE
static const tr_enable_bit enable[] = {TR_ENERGY_ENABLE};
#endif

void tr_energy_pin_init(void)
{
#ifdef TR_ENERGY_ENABLE
    tr_set_enable_bits(enable, sizeof enable / sizeof enable[0]);
#endif
    GPIO_BSRR(pin.port) = 1u << (pin.pin + 16); /* low before it drives */
    GPIO_MODER(pin.port) = (GPIO_MODER(pin.port) & ~(3u << (2 * pin.pin))) | (MODER_OUTPUT << (2 * pin.pin));
}

void tr_energy_pin(uint32_t high)
{
    GPIO_BSRR(pin.port) = high ? 1u << pin.pin : 1u << (pin.pin + 16);
}
#endif
