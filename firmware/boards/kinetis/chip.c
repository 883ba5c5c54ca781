/* What a Kinetis K-series chip needs before anything else: its watchdog, enabled at reset, stopped within
 * the few hundred bus cycles it allows for reconfiguration; and the flash configuration field, which the
 * chip reads at reset (an erased or wrong security byte would lock the chip against the debugger). */
#include "tr_board.h"

#define WDOG_STCTRLH (*(volatile uint16_t *)0x40052000)
#define WDOG_UNLOCK (*(volatile uint16_t *)0x4005200E)
#define WDOG_UNLOCK_KEY1 0xC520u
#define WDOG_UNLOCK_KEY2 0xD928u
/* STCTRLH with WDOGEN clear, updates still allowed, the other bits at their reset values. */
#define WDOG_STCTRLH_DISABLED 0x01D2u

void tr_board_early_init(void)
{
    WDOG_UNLOCK = WDOG_UNLOCK_KEY1;
    WDOG_UNLOCK = WDOG_UNLOCK_KEY2;
    WDOG_STCTRLH = WDOG_STCTRLH_DISABLED;
}

/* Backdoor key (unused), program-flash protection (none), FSEC 0xFE: unsecured with mass erase allowed,
 * FOPT, data-flash and EEPROM protection at their erased values. Placed at 0x400 by the linker script. */
__attribute__((section(".flash_config"), used)) static const uint8_t flash_config[16] = {
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE, 0xFF, 0xFF, 0xFF,
};
