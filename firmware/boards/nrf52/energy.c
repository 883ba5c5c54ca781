/* The energy pin on the nRF52's GPIO port P0: an output, driven low, and set or cleared through OUTSET/OUTCLR, which
 * change only its bit, so that the pin's edges mark the inference within a few cycles. */
#include "tr_board.h"

#ifdef TR_ENERGY_PIN
#define P0_OUTSET (*(volatile uint32_t *)0x50000508)
#define P0_OUTCLR (*(volatile uint32_t *)0x5000050C)
#define P0_DIRSET (*(volatile uint32_t *)0x50000518)

static const tr_pin pin = TR_ENERGY_PIN;

void tr_energy_pin_init(void)
{
    P0_OUTCLR = 1u << pin.pin;
    P0_DIRSET = 1u << pin.pin;
}

void tr_energy_pin(uint32_t high)
{
    if (high) {
        P0_OUTSET = 1u << pin.pin;
    } else {
        P0_OUTCLR = 1u << pin.pin;
    }
}
#endif
