/* DWT CYCCNT as a 64-bit counter of core cycles, on hardware with the DWT cycle counter (Cortex-M3, M4,
 * M7, M33, M55). CYCCNT is 32 bits; SysTick interrupts every 2^24 cycles to notice its wraps, far more often
 * than CYCCNT can wrap twice. QEMU does not model CYCCNT (it reads 0): emulated boards use systick.c. */
#include "tr_board.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018)
#define DEMCR (*(volatile uint32_t *)0xE000EDFC)
#define DWT_CTRL (*(volatile uint32_t *)0xE0001000)
#define DWT_CYCCNT (*(volatile uint32_t *)0xE0001004)
#define DWT_LAR (*(volatile uint32_t *)0xE0001FB0)
#define DEMCR_TRCENA (1u << 24)
#define DWT_CTRL_CYCCNTENA 1u
#define LAR_UNLOCK 0xC5ACCE55u /* the Cortex-M7's DWT ignores writes until unlocked; elsewhere ignored */

const uint8_t tr_counter_kind = TR_COUNTER_DWT;
static volatile uint32_t wraps, last;

void SysTick_Handler(void)
{
    uint32_t now = DWT_CYCCNT;
    if (now < last) {
        wraps++;
    }
    last = now;
}

void tr_counter_init(void)
{
    DEMCR |= DEMCR_TRCENA;
    DWT_LAR = LAR_UNLOCK;
    DWT_CYCCNT = 0;
    DWT_CTRL |= DWT_CTRL_CYCCNTENA;
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 7; /* processor clock, interrupt on wrap, enabled */
}

void tr_counter_restart(void)
{
    __asm volatile("cpsid i" ::: "memory");
    DWT_CYCCNT = 0;
    wraps = 0;
    last = 0;
    __asm volatile("cpsie i" ::: "memory");
}

uint64_t tr_counter_read(void)
{
    __asm volatile("cpsid i" ::: "memory");
    uint32_t now = DWT_CYCCNT;
    uint32_t hi = wraps + (now < last); /* wrapped since the last interrupt */
    __asm volatile("cpsie i" ::: "memory");
    return ((uint64_t)hi << 32) | now;
}
