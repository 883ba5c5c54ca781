/* The host channel in the emulator only: Arm semihosting file I/O (QEMU -semihosting-config
 * enable=on,target=native) on two FIFOs in QEMU's working directory, which the host holds open. Reads
 * take whatever the FIFO holds, up to the caller's buffer, in one call: a semihosting call is a trap into
 * QEMU, so a byte per call would be no faster than the UART. */
#include "tr_board.h"

#define SYS_OPEN 0x01
#define SYS_WRITE 0x05
#define SYS_READ 0x06
#define MODE_READ_BINARY 1
#define MODE_WRITE_BINARY 5

/* Paths relative to QEMU's working directory (emulator.py starts QEMU in the FIFOs' directory). */
static const char to_device_path[] = "to-device";
static const char from_device_path[] = "from-device";
static uint32_t to_device, from_device;

static uint32_t semihost(uint32_t operation, const uint32_t *args)
{
    register uint32_t r0 __asm("r0") = operation;
    register const uint32_t *r1 __asm("r1") = args;
    __asm volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static uint32_t open_file(const char *path, uint32_t length, uint32_t mode)
{
    uint32_t args[3] = {(uint32_t)path, mode, length};
    return semihost(SYS_OPEN, args);
}

void tr_channel_open(void)
{
    /* This order matches the host's: it holds from-device open for reading before QEMU starts, and
     * opens to-device for writing once this side waits on it. */
    to_device = open_file(to_device_path, sizeof to_device_path - 1, MODE_READ_BINARY);
    from_device = open_file(from_device_path, sizeof from_device_path - 1, MODE_WRITE_BINARY);
}

uint32_t tr_channel_read(uint8_t *buffer, uint32_t size)
{
    for (;;) {
        uint32_t args[3] = {to_device, (uint32_t)buffer, size};
        uint32_t not_read = semihost(SYS_READ, args);
        if (not_read < size) {
            return size - not_read;
        }
        /* End of file: the host closed its end (it is reconnecting); ask again until it is back. */
    }
}

void tr_channel_write(const uint8_t *data, uint32_t length)
{
    while (length > 0) {
        uint32_t args[3] = {from_device, (uint32_t)data, length};
        uint32_t not_written = semihost(SYS_WRITE, args);
        if (not_written >= length) {
            return; /* no reader (the host is reconnecting): the reply is lost and the host asks again */
        }
        data += length - not_written;
        length = not_written;
    }
}
