/* SysTick as a 64-bit counter of core clock ticks: the 24-bit down-counter plus wraps counted in its
 * interrupt. Under QEMU's -icount shift=0 one tick is a fixed number of executed instructions, and in
 * Renode too (its virtual time is executed instructions over the CPU's PerformanceInMips); on hardware it
 * is one core cycle. */
#include "tr_board.h"

const uint8_t tr_counter_kind = TR_COUNTER_SYSTICK;

#define SYST_CSR (*(volatile uint32_t *)0xE000E010)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018)
#define SCB_ICSR (*(volatile uint32_t *)0xE000ED04)
#define ICSR_PENDSTSET (1u << 26)
#define ICSR_PENDSTCLR (1u << 25)
#define RELOAD 0xFFFFFFu

static volatile uint32_t wraps;

void SysTick_Handler(void)
{
    wraps++;
}

void tr_counter_init(void)
{
    SYST_RVR = RELOAD;
    SYST_CVR = 0;
    SYST_CSR = 7; /* processor clock, interrupt on wrap, enabled */
}

void tr_counter_restart(void)
{
    /* Writing CVR restarts the count from the reload value at this instruction, so that what is measured
     * from here does not depend on where in a SysTick period the measurement began. The read before it
     * changes nothing on hardware or in QEMU; Renode applies a SysTick write at the virtual time it last
     * synchronised to, and a CVR read synchronises it: without the read, the restart would land anywhere
     * in the current time quantum instead of at a fixed point of this code. */
    __asm volatile("cpsid i" ::: "memory");
    (void)SYST_CVR;
    SYST_CVR = 0;
    SCB_ICSR = ICSR_PENDSTCLR;
    wraps = 0;
    __asm volatile("cpsie i" ::: "memory");
}

uint64_t tr_counter_read(void)
{
    __asm volatile("cpsid i" ::: "memory");
    uint32_t hi = wraps;
    uint32_t lo = SYST_CVR;
    if (SCB_ICSR & ICSR_PENDSTSET) { /* wrapped, interrupt not yet taken: count that wrap here */
        hi++;
        lo = SYST_CVR;
    }
    __asm volatile("cpsie i" ::: "memory");
    /* The counter reads 0 for one tick before each reload (and after init), and that 0 already belongs to
     * the next period: tick t of a period reads RELOAD + 1 - t, modulo 2^24. */
    return ((uint64_t)hi << 24) + ((RELOAD + 1u - lo) & RELOAD);
}
