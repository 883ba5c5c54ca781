/* What main.c needs from a board: a byte channel to the host and a free-running counter. */
#ifndef TR_BOARD_H
#define TR_BOARD_H

#include <stdint.h>

void tr_uart_init(void);
uint8_t tr_uart_get(void); /* blocks until a byte arrives */
void tr_uart_put(uint8_t byte);

void tr_counter_init(void);
void tr_counter_restart(void);   /* start counting from zero */
uint64_t tr_counter_read(void); /* ticks of the core clock since the last restart */

#endif
