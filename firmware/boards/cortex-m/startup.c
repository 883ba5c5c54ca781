/* Vector table and reset for Armv7-M / Armv8-M cores: copy .data, zero .bss, enable the FPU, run main. */
#include <stdint.h>
#include "tr_board.h"

extern uint32_t __stack_top, __data_load, __data_start, __data_end, __bss_start, __bss_end;
int main(void);
void SysTick_Handler(void);

__attribute__((weak)) void tr_board_early_init(void)
{
}

#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88)

#ifdef TR_PROFILE
/* The stack is filled with this word at reset; the deepest word that no longer holds it is the deepest the stack
 * has reached (a pushed value equal to it would hide one word). */
#define STACK_PAINT 0x5AA5C33Cu
extern uint32_t __stack_bottom;

/* Everything below the current stack pointer is free at reset; the loop calls nothing, so it writes no stack. */
static void paint_stack(void)
{
    uint32_t *sp;
    __asm volatile("mov %0, sp" : "=r"(sp));
    for (volatile uint32_t *p = &__stack_bottom; p < sp; p++) {
        *p = STACK_PAINT;
    }
}

uint32_t tr_stack_high_water(void)
{
    const uint32_t *p = &__stack_bottom;
    while (p < &__stack_top && *p == STACK_PAINT) {
        p++;
    }
    return (uint32_t)((const char *)&__stack_top - (const char *)p);
}
#endif

void Reset_Handler(void)
{
    tr_board_early_init();
    /* .data and .bss are whole words (link.ld.j2); volatile keeps GCC from making these loops calls to newlib's
     * memcpy and memset, about 470 B of flash */
    const uint32_t *from = &__data_load;
    for (volatile uint32_t *to = &__data_start; to < &__data_end;) {
        *to++ = *from++;
    }
    for (volatile uint32_t *to = &__bss_start; to < &__bss_end;) {
        *to++ = 0;
    }
#ifdef TR_PROFILE
    paint_stack();
#endif
#if defined(__ARM_FP)
    SCB_CPACR |= 0xFu << 20; /* CP10 and CP11 full access */
    __asm volatile("dsb\n isb");
#endif
    main();
    for (;;) {
    }
}

static void Fault_Handler(void)
{
    for (;;) {
    }
}

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))&__stack_top,
    Reset_Handler,
    Fault_Handler, /* NMI */
    Fault_Handler, /* HardFault */
    Fault_Handler, /* MemManage */
    Fault_Handler, /* BusFault */
    Fault_Handler, /* UsageFault */
    Fault_Handler, /* SecureFault (Armv8-M) */
    0, 0, 0,
    Fault_Handler, /* SVCall */
    Fault_Handler, /* DebugMonitor */
    0,
    Fault_Handler, /* PendSV */
    SysTick_Handler,
};
