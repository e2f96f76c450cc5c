/*
 * kdtarget: a KDCOM target emulator that runs inside the Linux stand-in guest
 * and speaks the kernel-debugger protocol through the emulated 16550 UART
 * (/dev/ttyS0 = COM1), as Windows does with `bcdedit /debug on`.
 *
 * Written from the protocol facts in the project's notes (the same facts as
 * harness/kd/emulator.py): one data packet in flight, resent on RESEND or
 * after a timeout; RESET answered with RESET, ids back to INITIAL and the
 * pending packet resent; after a state change, a prompt or a file request it
 * waits for the host's reply. It prints the seed's log lines, reports a
 * module load, stops at a breakpoint, asks a prompt and ends with the
 * bugcheck sequence. Its own tally goes to the report port (argv[2]) as text.
 *
 * usage: kdtarget /dev/ttyS0 /dev/ttyS1 [notify-count]
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define DATA_LEADER 0x30303030u
#define CONTROL_LEADER 0x69696969u
#define INITIAL_ID 0x80800000u
#define SYNC_BIT 0x00000800u
#define T_MANIPULATE 2
#define T_DEBUG_IO 3
#define T_ACK 4
#define T_RESEND 5
#define T_RESET 6
#define T_STATE_CHANGE64 7
#define MAX_PAYLOAD 4000

static int port = -1;
static uint32_t current_id = INITIAL_ID | SYNC_BIT;
static uint32_t remote_id = INITIAL_ID;
static unsigned acks, resends, resets, continues, retries;
static char prompt_reply[64];

static void put32(uint8_t *p, uint32_t v) { p[0] = v; p[1] = v >> 8; p[2] = v >> 16; p[3] = v >> 24; }
static void put16(uint8_t *p, uint16_t v) { p[0] = v; p[1] = v >> 8; }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }
static uint32_t get32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint16_t get16(const uint8_t *p) { return p[0] | p[1] << 8; }

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void write_all(const uint8_t *data, size_t size)
{
    while (size > 0) {
        ssize_t n = write(port, data, size);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            exit(3);
        }
        data += n;
        size -= (size_t)n;
    }
}

static void send_control(uint16_t type, uint32_t id)
{
    uint8_t h[16];
    put32(h, CONTROL_LEADER); put16(h + 4, type); put16(h + 6, 0); put32(h + 8, id); put32(h + 12, 0);
    write_all(h, sizeof(h));
}

static void send_data(uint16_t type, uint32_t id, const uint8_t *payload, uint16_t size)
{
    uint8_t h[16], trailer = 0xAA;
    uint32_t sum = 0;
    for (uint16_t i = 0; i < size; i++)
        sum += payload[i];
    put32(h, DATA_LEADER); put16(h + 4, type); put16(h + 6, size); put32(h + 8, id); put32(h + 12, sum);
    write_all(h, sizeof(h));
    write_all(payload, size);
    write_all(&trailer, 1);
}

/* Reads one byte, waiting until `deadline`; -1 on timeout. */
static int read_byte(double deadline)
{
    uint8_t b;
    while (now() < deadline) {
        ssize_t n = read(port, &b, 1);
        if (n == 1)
            return b;
    }
    return -1;
}

struct packet {
    uint32_t leader, id;
    uint16_t type, size;
    uint8_t payload[MAX_PAYLOAD];
};

/* Reads one well-formed packet; 0 on timeout. Damaged data packets are answered with RESEND. */
static int read_packet(struct packet *p, double deadline)
{
    for (;;) {
        uint8_t h[16];
        int b, run = 0, lead = -1;
        while (run < 4) {
            if ((b = read_byte(deadline)) < 0)
                return 0;
            if ((b == 0x30 || b == 0x69) && (run == 0 || b == lead)) {
                lead = b;
                run++;
            } else {
                run = (b == 0x30 || b == 0x69) ? 1 : 0;
                lead = b;
            }
        }
        memset(h, lead, 4);
        for (int i = 4; i < 16; i++) {
            if ((b = read_byte(deadline)) < 0)
                return 0;
            h[i] = (uint8_t)b;
        }
        p->leader = get32(h); p->type = get16(h + 4); p->size = get16(h + 6); p->id = get32(h + 8);
        if (p->leader == CONTROL_LEADER)
            return 1;
        if (p->size > MAX_PAYLOAD)
            continue;
        uint32_t sum = 0;
        for (int i = 0; i < p->size; i++) {
            if ((b = read_byte(deadline)) < 0)
                return 0;
            p->payload[i] = (uint8_t)b;
            sum += (uint8_t)b;
        }
        b = read_byte(deadline);
        if (b != 0xAA || sum != get32(h + 12)) {
            send_control(T_RESEND, 0);
            continue;
        }
        return 1;
    }
}

/*
 * Sends a data packet until ACKed. With `wait_type`, then waits for the host's
 * data packet of that type (Continue, prompt reply) and returns it in *reply.
 */
static void exchange(uint16_t type, const uint8_t *payload, uint16_t size, uint16_t wait_type, struct packet *reply)
{
    struct packet p;
    int acked = 0;
send:
    send_data(type, current_id, payload, size);
    acked = 0;
    for (;;) {
        double deadline = now() + 1.0;
        if (!read_packet(&p, deadline)) {
            if (!acked) {
                retries++;
                goto send;
            }
            continue; /* waiting in the debugger loop: keep waiting */
        }
        if (p.leader == CONTROL_LEADER) {
            if (p.type == T_ACK && !acked && (p.id & ~SYNC_BIT) == (current_id & ~SYNC_BIT)) {
                acks++;
                acked = 1;
                current_id = (current_id & ~SYNC_BIT) ^ 1;
                if (!wait_type)
                    return;
            } else if (p.type == T_RESEND && !acked) {
                resends++;
                goto send;
            } else if (p.type == T_RESET) {
                resets++;
                send_control(T_RESET, 0);
                current_id = remote_id = INITIAL_ID;
                goto send;
            }
            continue;
        }
        send_control(T_ACK, p.id & ~SYNC_BIT);
        if ((p.id & ~SYNC_BIT) != remote_id)
            continue; /* a resend of something already taken */
        remote_id ^= 1;
        if (acked && p.type == wait_type) {
            memcpy(reply, &p, sizeof(p));
            return;
        }
    }
}

static void kd_print(const char *text)
{
    uint8_t payload[16 + 512];
    size_t n = strlen(text);
    memset(payload, 0, 16);
    put32(payload, 0x3230);
    put32(payload + 8, (uint32_t)n);
    memcpy(payload + 16, text, n);
    exchange(T_DEBUG_IO, payload, (uint16_t)(16 + n), 0, NULL);
}

static void kd_prompt(const char *text)
{
    uint8_t payload[16 + 512];
    struct packet reply;
    size_t n = strlen(text);
    memset(payload, 0, 16);
    put32(payload, 0x3231);
    put32(payload + 8, (uint32_t)n);
    put32(payload + 12, sizeof(prompt_reply) - 1);
    memcpy(payload + 16, text, n);
    exchange(T_DEBUG_IO, payload, (uint16_t)(16 + n), T_DEBUG_IO, &reply);
    n = get32(reply.payload + 12);
    if (n > sizeof(prompt_reply) - 1)
        n = sizeof(prompt_reply) - 1;
    memcpy(prompt_reply, reply.payload + 16, n);
    prompt_reply[n] = 0;
}

static void wait_continue(uint8_t *payload, uint16_t size)
{
    struct packet reply;
    exchange(T_STATE_CHANGE64, payload, size, T_MANIPULATE, &reply);
    if ((get32(reply.payload) == 0x313C || get32(reply.payload) == 0x3136) && get32(reply.payload + 16) < 0x80000000u)
        continues++;
}

static void kd_exception(uint32_t code, uint64_t address)
{
    uint8_t payload[240];
    memset(payload, 0, sizeof(payload));
    put32(payload, 0x3030);
    put32(payload + 8, 1);
    put64(payload + 16, 0xFFFFF80000AB0000ull);
    put64(payload + 24, address);
    put32(payload + 32, code);
    put64(payload + 48, address);
    put32(payload + 184, 1);
    wait_continue(payload, sizeof(payload));
}

static void kd_module_load(const char *path, uint64_t base, uint32_t size)
{
    uint8_t payload[240 + 256];
    size_t n = strlen(path) + 1;
    memset(payload, 0, sizeof(payload));
    put32(payload, 0x3031);
    put32(payload + 8, 1);
    put64(payload + 24, base);
    put32(payload + 32, (uint32_t)n);
    put64(payload + 40, base);
    put32(payload + 60, size);
    memcpy(payload + 240, path, n);
    wait_continue(payload, (uint16_t)(240 + n));
}

int main(int argc, char **argv)
{
    struct termios tio;
    int notifies = argc > 3 ? atoi(argv[3]) : 5;
    FILE *report;
    double started;

    if (argc < 3)
        return 2;
    port = open(argv[1], O_RDWR | O_NOCTTY);
    report = fopen(argv[2], "w");
    if (port < 0 || report == NULL)
        return 2;
    tcgetattr(port, &tio);
    cfmakeraw(&tio);
    cfsetispeed(&tio, B115200);
    cfsetospeed(&tio, B115200);
    tio.c_cc[VMIN] = 0;
    tio.c_cc[VTIME] = 1;
    tcsetattr(port, TCSANOW, &tio);
    tcflush(port, TCIOFLUSH);
    fprintf(report, "kdtarget: started on %s\n", argv[1]);
    fflush(report);

    started = now();
    kd_print("[sysTest] DriverEntry status:(0x00000000).\n");
    kd_module_load("\\SystemRoot\\system32\\drivers\\receiver.sys", 0xFFFFF80000400000ull, 0x6000);
    kd_print("[sysRecv1] DriverEntry status:(0x00000000).\n");
    for (int i = 0; i < notifies; i++) {
        kd_print("[sysRecv1]:get notify ulType:(1)\tulValue:(hello)\n");
        kd_print("[sysTest] send.\n");
    }
    kd_print("[sysRecv1] split ");
    kd_print("line\n");
    kd_exception(0x80000003, 0xFFFFF80000401000ull);
    kd_prompt("Break, Ignore, Terminate Process or Terminate Thread (bipt)? ");
    kd_print("\n*** Fatal System Error: 0x000000d1\n                       (0x0000000000000010,0x0000000000000002,0x0000000000000000,0xFFFFF80000401020)\n\n");
    kd_exception(0x80000003, 0xFFFFF80000402000ull);
    kd_print("[kdtarget] done.\n");

    fprintf(report, "kdtarget: acks=%u continues=%u resends=%u resets=%u retries=%u prompt_reply=%s seconds=%.3f\n", acks,
            continues, resends, resets, retries, prompt_reply, now() - started);
    fclose(report);
    return 0;
}
