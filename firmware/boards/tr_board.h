/* What main.c needs from a board: a byte channel to the host and a free-running counter. */
#ifndef TR_BOARD_H
#define TR_BOARD_H

#include <stdint.h>

/* The byte channel to the host, chosen at build time (channel/<name>.c): the board's UART, or in the
 * emulator semihosting file I/O on two host FIFOs. Both carry the same framed protocol. */
void tr_channel_open(void);
uint32_t tr_channel_read(uint8_t *buffer, uint32_t size); /* blocks until >= 1 byte arrived; returns how many */
void tr_channel_write(const uint8_t *data, uint32_t length);

/* The UART driver of the board's chip family (<family>/uart.c), used by channel/uart.c. */
void tr_uart_init(void);
uint8_t tr_uart_get(void); /* blocks until a byte arrives */
void tr_uart_put(uint8_t byte);

/* Board data for the UART drivers of real chips, from the board file (build.py passes them as macros):
 * TR_UART_ENABLE, clock-gate and power-switch bits to set first ({register, bit}, ...), and TR_UART_TX /
 * TR_UART_RX, the pins ({port base, pin, alternate function}). */
typedef struct {
    uint32_t reg, bit;
} tr_enable_bit;
typedef struct {
    uint32_t port, pin, function;
} tr_pin;

static inline void tr_set_enable_bits(const tr_enable_bit *bits, uint32_t count)
{
    for (uint32_t i = 0; i < count; i++) {
        *(volatile uint32_t *)bits[i].reg |= 1u << bits[i].bit;
        (void)*(volatile uint32_t *)bits[i].reg; /* read back: the clock is on before the peripheral is used */
    }
}

/* Early chip setup run first at reset, before RAM is initialized (a watchdog to stop, ...); weak, empty by
 * default. */
void tr_board_early_init(void);

/* The counter (cortex-m/<counter>.c): SysTick or DWT CYCCNT. tr_counter_kind is what INFO reports. */
enum { TR_COUNTER_SYSTICK = 0, TR_COUNTER_DWT = 1 };
extern const uint8_t tr_counter_kind;
void tr_counter_init(void);
void tr_counter_restart(void);  /* start counting from zero */
uint64_t tr_counter_read(void); /* ticks of the core clock since the last restart */

#ifdef TR_ENERGY_PIN
/* The pin a meter watches (<family>/energy.c), from the board file's [energy] pin: TR_ENERGY_PIN {port base, pin, 0}
 * and TR_ENERGY_ENABLE, the clock bits to set first. main.c holds it high while the model runs. */
void tr_energy_pin_init(void); /* an output, low */
void tr_energy_pin(uint32_t high);
#endif

#ifdef TR_PROFILE
/* A profile build paints the stack at reset (cortex-m/startup.c): the deepest stack use since, in bytes. */
uint32_t tr_stack_high_water(void);
#endif

#endif
