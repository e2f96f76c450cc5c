/*
 * kdtarget: a KDCOM target emulator that runs inside the Linux stand-in guest
 * and speaks the kernel-debugger protocol through the emulated 16550 UART
 * (/dev/ttyS0 = COM1), as Windows does with `bcdedit /debug on`.
 *
 * Written from the protocol facts in the project's notes and docs/windows-facts.md
 * (the same facts as harness/kd/emulator.py; ReactOS's kddll and kd64 are the
 * public reference). The rules it enforces:
 *  - send: one data packet in flight; each wait for its ACK that ends in silence
 *    (BYTE_TIMEOUT without a byte) is one try; after RETRIES tries a print or a
 *    load-symbols report is given up and the debugger is marked absent: the ids
 *    start over (SYNC bit) and later prints and module loads are not sent at all.
 *    A stop or a prompt is sent again forever. The first packet after boot keeps
 *    its SYNC-bit id until it is ACKed.
 *  - receive: a leader is 4 equal leader bytes (and marks the debugger present);
 *    a 0x62 in the leader scan followed by silence resends the packet and leaves
 *    a break-in pending, followed by anything else it is forgotten; a data packet
 *    while waiting for an ACK is answered with RESEND and our packet counts as
 *    delivered; RESET is answered with RESET, ids back to INITIAL, packet resent.
 *  - running: the clock tick (every TICK) and the end of every print poll one
 *    byte: 0x62 (or a pending break-in) stops with a breakpoint state change
 *    that waits for a Continue; any other byte is thrown away.
 *
 *  - in a stop, state-manipulation requests are answered and the stop goes on waiting
 *    (KdpSendWaitContinue): DbgKdGetVersionApi (the version block), DbgKdGetContextApi
 *    (the asked processor's AMD64 CONTEXT; beyond the processor count STATUS_UNSUCCESSFUL),
 *    DbgKdReadVirtualMemoryApi (what is mapped, at most PACKET_MAX_SIZE - 56 bytes; short:
 *    STATUS_UNSUCCESSFUL with the bytes read), DbgKdCauseBugCheckApi (a bugcheck 0xE2);
 *    any other API: STATUS_UNSUCCESSFUL and no data. What is read comes from a synthetic
 *    kernel written by harness/kd/synthetic.py (/kdmachine.bin): the kernel image, the
 *    project's driver builds mapped at their bases, the module list and each processor
 *    stopped in a call chain.
 *
 * Modes (argv[3]):
 *   kd [N]   prints the seed's log lines (N notifications), reports the machine's module
 *            loads, stops at a breakpoint, asks a prompt and ends with the machine's bugcheck
 *            sequence; its tally goes to the report port (argv[2]) as text.
 *   kdticks  boots and prints "kdticks: line N" every TICKS_PER_LINE ticks forever,
 *            reporting on argv[2] when it gives up on the debugger, each line it
 *            then drops, and when a break-in brings it back.
 *
 * usage: kdtarget /dev/ttyS0 /dev/ttyS1 [kd [notify-count] | kdticks]
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
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
#define BREAKIN_BYTE 0x62
#define T_MANIPULATE 2
#define T_DEBUG_IO 3
#define T_ACK 4
#define T_RESEND 5
#define T_RESET 6
#define T_STATE_CHANGE64 7
#define MAX_PAYLOAD 4000
#define STATE_EXCEPTION 0x3030
#define API_READ_MEMORY 0x3130
#define API_GET_CONTEXT 0x3132
#define API_CONTINUE 0x3136
#define API_CONTINUE2 0x313C
#define API_GET_VERSION 0x3146
#define API_CAUSE_BUGCHECK 0x3149
#define MANIPULATE_SIZE 56
#define CONTEXT_SIZE 0x4D0
#define VERSION_SIZE 40
#define STATUS_UNSUCCESSFUL 0xC0000001u
#define MANUALLY_INITIATED_CRASH 0xE2
#define STATE_LOAD_SYMBOLS 0x3031
#define API_PRINT 0x3230
#define API_PROMPT 0x3231
#define BREAKPOINT 0x80000003u

/* KdpDefaultRetries. */
#define RETRIES 20
/*
 * How long one byte is waited for. kddll waits TIMEOUT_COUNT (1024 * 200) polls of the line status
 * register per byte; how long that takes depends on the machine (unverified). This value is the
 * stand-in's choice: 20 tries then take 10 s.
 */
#define BYTE_TIMEOUT 0.5
#define TICK 0.01 /* the clock tick that polls for a break-in */
#define TICKS_PER_LINE 20

enum rx { RX_OK, RX_TIMEOUT, RX_RESEND };

static int port = -1;
static FILE *report;
static uint32_t current_id = INITIAL_ID | SYNC_BIT;
static uint32_t remote_id = INITIAL_ID;
static int present = 1, breakin_pending = 0, in_breakin = 0;
static unsigned acks, resends, resets, continues, not_handled, retries, breakins, gave_up, dropped, skipped, discarded;
static unsigned manipulates, refused, crash_requested;
static uint64_t symbol_start = 0;
static unsigned line_no; /* kdticks: the last line printed (or dropped) */
static char prompt_reply[64];

struct packet {
    uint32_t leader, id;
    uint16_t type, size;
    uint8_t payload[MAX_PAYLOAD];
};

static void put32(uint8_t *p, uint32_t v) { p[0] = v; p[1] = v >> 8; p[2] = v >> 16; p[3] = v >> 24; }
static void put16(uint8_t *p, uint16_t v) { p[0] = v; p[1] = v >> 8; }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }
static uint32_t get32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint16_t get16(const uint8_t *p) { return p[0] | p[1] << 8; }
static uint64_t get64(const uint8_t *p) { return get32(p) | (uint64_t)get32(p + 4) << 32; }

/* The synthetic kernel (harness/kd/synthetic.py Machine.encode). */
struct range { uint64_t address; uint32_t size; const uint8_t *data; };
struct module { uint64_t base; uint32_t size; char path[256]; };
static struct {
    uint32_t processors, ranges, modules, stop, has_bugcheck, code;
    uint64_t params[4];
    const uint8_t *version, *contexts;
    struct range range[64];
    struct module module[16];
} machine;

static int load_machine(const char *path)
{
    static uint8_t file[4 << 20];
    FILE *f = fopen(path, "rb");
    size_t size, at = 8;
    if (f == NULL)
        return 0;
    size = fread(file, 1, sizeof(file), f);
    fclose(f);
    if (size < 8 + 52 + VERSION_SIZE || memcmp(file, "KCBMACH1", 8) != 0)
        return 0;
    machine.processors = get32(file + at); machine.ranges = get32(file + at + 4); machine.modules = get32(file + at + 8);
    machine.stop = get32(file + at + 12); machine.has_bugcheck = get32(file + at + 16);
    for (int i = 0; i < 4; i++)
        machine.params[i] = get64(file + at + 20 + 8 * i);
    machine.code = get32(file + at + 52);
    at += 56;
    machine.version = file + at;
    at += VERSION_SIZE;
    machine.contexts = file + at;
    at += (size_t)CONTEXT_SIZE * machine.processors;
    if (machine.modules > 16 || machine.ranges > 64)
        return 0;
    for (uint32_t i = 0; i < machine.modules; i++) {
        uint32_t length = get32(file + at + 12);
        machine.module[i].base = get64(file + at);
        machine.module[i].size = get32(file + at + 8);
        at += 16;
        if (length >= sizeof(machine.module[i].path))
            return 0;
        memcpy(machine.module[i].path, file + at, length);
        machine.module[i].path[length] = 0;
        at += length;
    }
    for (uint32_t i = 0; i < machine.ranges; i++) {
        machine.range[i].address = get64(file + at);
        machine.range[i].size = get32(file + at + 8);
        machine.range[i].data = file + at + 12;
        at += 12 + machine.range[i].size;
    }
    return at <= size;
}

/* What a debugger's read gets: the bytes up to the end of the range holding the address. */
static uint32_t machine_read(uint64_t address, uint32_t size, uint8_t *out)
{
    for (uint32_t i = 0; i < machine.ranges; i++) {
        const struct range *r = &machine.range[i];
        if (address >= r->address && address < r->address + r->size) {
            uint64_t left = r->address + r->size - address;
            uint32_t n = size < left ? size : (uint32_t)left;
            memcpy(out, r->data + (address - r->address), n);
            return n;
        }
    }
    return 0;
}

static uint64_t machine_pc(uint32_t processor)
{
    return processor < machine.processors ? get64(machine.contexts + (size_t)CONTEXT_SIZE * processor + 0xF8) : 0;
}

static void say(const char *format, unsigned number)
{
    fprintf(report, format, number);
    fflush(report);
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

/* One byte, waiting up to `timeout` seconds (0: only what is there already); -1 if none came. */
static int get_byte(double timeout)
{
    struct pollfd fd = {.fd = port, .events = POLLIN};
    uint8_t b;
    if (poll(&fd, 1, (int)(timeout * 1000)) <= 0)
        return -1;
    return read(port, &b, 1) == 1 ? b : -1;
}

static int get_bytes(uint8_t *out, int count)
{
    for (int i = 0; i < count; i++) {
        int b = get_byte(BYTE_TIMEOUT);
        if (b < 0)
            return 0;
        out[i] = (uint8_t)b;
    }
    return 1;
}

/* KdpReceivePacketLeader: 4 equal leader bytes; a lone break-in byte before silence is a resend. */
static enum rx read_leader(uint8_t *leader)
{
    int index = 0, first = 0;
    while (index < 4) {
        int b = get_byte(BYTE_TIMEOUT);
        if (b < 0) {
            if (first == BREAKIN_BYTE) {
                breakin_pending = 1;
                return RX_RESEND;
            }
            return RX_TIMEOUT;
        }
        if (b == 0x30 || b == 0x69) {
            if (b != first)
                index = 0;
            first = b;
            index++;
        } else if (b == BREAKIN_BYTE) {
            index = 0;
            first = b;
        } else {
            index = 0;
            first = 0;
        }
    }
    present = 1;
    *leader = (uint8_t)first;
    return RX_OK;
}

/* KdReceivePacket: `expected` is T_ACK while a packet of ours waits for its ACK. */
static enum rx receive_packet(uint16_t expected, struct packet *p)
{
    uint16_t header_size = expected == T_MANIPULATE ? 56 : expected == T_DEBUG_IO ? 16 : 0;
    for (;;) {
        uint8_t h[12], lead, trailer;
        enum rx status = read_leader(&lead);
        if (status != RX_OK)
            return status;
        if (!get_bytes(h, 2))
            return RX_TIMEOUT;
        if (lead == 0x69 && get16(h) == T_RESEND) {
            resends++;
            return RX_RESEND;
        }
        if (!get_bytes(h + 2, 10))
            return RX_TIMEOUT;
        p->type = get16(h); p->size = get16(h + 2); p->id = get32(h + 4);
        if (lead == 0x69) {
            if (p->type == T_ACK) {
                if (expected == T_ACK && p->id == (current_id & ~SYNC_BIT)) {
                    acks++;
                    current_id ^= 1;
                    return RX_OK;
                }
            } else if (p->type == T_RESET) {
                resets++;
                current_id = remote_id = INITIAL_ID;
                send_control(T_RESET, 0);
                return RX_RESEND;
            }
            continue;
        }
        if (expected == T_ACK) { /* a data packet instead of our ACK: RESEND, and ours counts as delivered */
            send_control(T_RESEND, 0);
            current_id ^= 1;
            return RX_OK;
        }
        if (p->size < header_size || p->size > MAX_PAYLOAD || !get_bytes(p->payload, p->size) || !get_bytes(&trailer, 1) ||
            trailer != 0xAA) {
            send_control(T_RESEND, 0);
            continue;
        }
        uint32_t sum = 0;
        for (int i = 0; i < p->size; i++)
            sum += p->payload[i];
        if (sum != get32(h + 8)) {
            send_control(T_RESEND, 0);
            continue;
        }
        send_control(T_ACK, p->id);
        if (p->id != remote_id || p->type != expected)
            continue; /* a resend of something already taken, or not what we wait for */
        remote_id ^= 1;
        return RX_OK;
    }
}

/* KdSendPacket: 1 if delivered, 0 if given up (only prints and load-symbols reports are). */
static int send_packet(uint16_t type, const uint8_t *payload, uint16_t size)
{
    int tries = RETRIES;
    int may_give_up = (type == T_DEBUG_IO && get32(payload) == API_PRINT) || (type == T_STATE_CHANGE64 && get32(payload) == STATE_LOAD_SYMBOLS);
    for (;;) {
        struct packet ack;
        send_data(type, current_id, payload, size);
        enum rx status = receive_packet(T_ACK, &ack);
        if (status == RX_OK) {
            current_id &= ~SYNC_BIT;
            return 1;
        }
        if (status == RX_TIMEOUT) {
            retries++;
            if (tries > 0)
                tries--;
            if (tries == 0 && may_give_up) {
                present = 0;
                gave_up++;
                current_id = INITIAL_ID | SYNC_BIT;
                remote_id = INITIAL_ID;
                return 0;
            }
        }
    }
}

/* KdpSendWaitContinue, and the prompt's wait for its answer: 1 with the reply in *reply. */
static int send_wait(uint16_t type, const uint8_t *payload, uint16_t size, uint16_t reply_type, struct packet *reply)
{
    for (;;) {
        if (!send_packet(type, payload, size) || !present)
            return 0;
        enum rx status;
        while ((status = receive_packet(reply_type, reply)) == RX_TIMEOUT)
            ;
        if (status == RX_OK)
            return 1;
    }
}

/* KdPollBreakIn: a pending break-in, or one byte: 0x62 breaks in, anything else is thrown away. */
static int poll_breakin(void)
{
    int b;
    if (breakin_pending) {
        breakin_pending = 0;
        return 1;
    }
    if ((b = get_byte(0)) < 0)
        return 0;
    if (b == BREAKIN_BYTE)
        return 1;
    discarded++;
    return 0;
}

/* A request in a stop: the answer (header copied from the request, status and data filled in). */
static uint16_t answer(const struct packet *request, uint8_t *out)
{
    uint32_t api = get32(request->payload);
    uint16_t size = MANIPULATE_SIZE;
    memcpy(out, request->payload, MANIPULATE_SIZE);
    put32(out + 8, 0);
    manipulates++;
    if (api == API_GET_VERSION && machine.version != NULL) {
        memcpy(out + 16, machine.version, VERSION_SIZE);
    } else if (api == API_GET_CONTEXT && get16(request->payload + 6) < machine.processors) {
        memcpy(out + MANIPULATE_SIZE, machine.contexts + (size_t)CONTEXT_SIZE * get16(request->payload + 6), CONTEXT_SIZE);
        size += CONTEXT_SIZE;
    } else if (api == API_READ_MEMORY) {
        uint32_t count = get32(request->payload + 24), limit = MAX_PAYLOAD - MANIPULATE_SIZE;
        uint32_t wanted = count < limit ? count : limit;
        uint32_t n = machine_read(get64(request->payload + 16), wanted, out + MANIPULATE_SIZE);
        put32(out + 28, n);
        size += (uint16_t)n;
        if (n != wanted) {
            put32(out + 8, STATUS_UNSUCCESSFUL);
            refused++;
        }
    } else {
        put32(out + 8, STATUS_UNSUCCESSFUL);
        refused++;
    }
    return size;
}

static void wait_continue(uint8_t *payload, uint16_t size)
{
    static uint8_t out[MAX_PAYLOAD];
    struct packet reply;
    if (!send_wait(T_STATE_CHANGE64, payload, size, T_MANIPULATE, &reply))
        return;
    for (;;) { /* KdpSendWaitContinue: answer requests until a continue (or the crash the debugger asks for) */
        uint32_t request = get32(reply.payload);
        enum rx status;
        if (request == API_CONTINUE || request == API_CONTINUE2)
            break;
        if (request == API_CAUSE_BUGCHECK) {
            manipulates++;
            crash_requested++;
            return;
        }
        if (!send_packet(T_MANIPULATE, out, answer(&reply, out)))
            return;
        while ((status = receive_packet(T_MANIPULATE, &reply)) == RX_TIMEOUT)
            ;
        if (status == RX_RESEND && !send_wait(T_STATE_CHANGE64, payload, size, T_MANIPULATE, &reply))
            return;
    }
    uint32_t api = get32(reply.payload), status = get32(reply.payload + 16);
    if (api != 0x313C && api != 0x3136)
        return;
    if (status & 0x80000000u)
        not_handled++;
    else if (!in_breakin)
        continues++;
    if (api == 0x313C)
        symbol_start = get64(reply.payload + 32); /* AMD64_DBGKD_CONTROL_SET.CurrentSymbolStart */
}

static void kd_exception(uint32_t code, uint64_t address)
{
    uint8_t payload[240];
    memset(payload, 0, sizeof(payload));
    put32(payload, STATE_EXCEPTION);
    put16(payload + 6, (uint16_t)machine.stop);
    put32(payload + 8, machine.processors ? machine.processors : 1);
    put64(payload + 16, 0xFFFFE00000001000ull + 0x1000ull * machine.stop);
    put64(payload + 24, address);
    put32(payload + 32, code);
    put64(payload + 48, address);
    put32(payload + 184, 1);
    wait_continue(payload, sizeof(payload));
}

/* DbgBreakPointWithStatus(DBG_STATUS_CONTROL_C): the stop of a break-in. */
static void breakin(void)
{
    breakins++;
    say("kdtarget: break-in after line %u\n", line_no);
    in_breakin = 1;
    kd_exception(BREAKPOINT, machine.processors ? machine_pc(machine.stop) : 0xFFFFF80000001B1Dull);
    in_breakin = 0;
    say("kdtarget: break-in continued after line %u\n", line_no);
}

/* KdpPrint: nothing is sent while the debugger is absent; after a print the kernel polls once. */
static void kd_print(const char *text)
{
    uint8_t payload[16 + 512];
    size_t n = strlen(text);
    if (!present) {
        dropped++;
        return;
    }
    memset(payload, 0, 16);
    put32(payload, API_PRINT);
    put32(payload + 8, (uint32_t)n);
    memcpy(payload + 16, text, n);
    if (send_packet(T_DEBUG_IO, payload, (uint16_t)(16 + n)) && poll_breakin())
        breakin();
}

static void kd_prompt(const char *text)
{
    uint8_t payload[16 + 512];
    struct packet reply;
    size_t n = strlen(text);
    memset(payload, 0, 16);
    put32(payload, API_PROMPT);
    put32(payload + 8, (uint32_t)n);
    put32(payload + 12, sizeof(prompt_reply) - 1);
    memcpy(payload + 16, text, n);
    if (!send_wait(T_DEBUG_IO, payload, (uint16_t)(16 + n), T_DEBUG_IO, &reply))
        return;
    n = get32(reply.payload + 12);
    if (n > sizeof(prompt_reply) - 1)
        n = sizeof(prompt_reply) - 1;
    memcpy(prompt_reply, reply.payload + 16, n);
    prompt_reply[n] = 0;
}

static void kd_module_load(const char *path, uint64_t base, uint32_t size)
{
    uint8_t payload[240 + 256];
    size_t n = strlen(path) + 1;
    if (!present) {
        skipped++;
        return;
    }
    memset(payload, 0, sizeof(payload));
    put32(payload, STATE_LOAD_SYMBOLS);
    put32(payload + 8, 1);
    put64(payload + 24, base);
    put32(payload + 32, (uint32_t)n);
    put64(payload + 40, base);
    put32(payload + 60, size);
    memcpy(payload + 240, path, n);
    wait_continue(payload, (uint16_t)(240 + n));
}

static void sleep_seconds(double seconds)
{
    struct timespec ts = {.tv_sec = (time_t)seconds, .tv_nsec = (long)((seconds - (time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* KeBugCheck2 with a debugger: the Fatal System Error print, then the first break (on the machine's stopped processor). */
static void kd_bugcheck(uint32_t code, const uint64_t *params)
{
    char text[256];
    snprintf(text, sizeof(text),
             "\n*** Fatal System Error: 0x%08x\n                       (0x%016llX,0x%016llX,0x%016llX,0x%016llX)\n\n", code,
             (unsigned long long)params[0], (unsigned long long)params[1], (unsigned long long)params[2],
             (unsigned long long)params[3]);
    kd_print(text);
    kd_exception(BREAKPOINT, machine.processors ? machine_pc(machine.stop) : 0xFFFFF80000402000ull);
}

static void script(int notifies)
{
    static const uint64_t d1[4] = {0x10, 0x2, 0x0, 0xFFFFF80000401020ull}, none[4] = {0, 0, 0, 0};
    kd_print("[sysTest] DriverEntry status:(0x00000000).\n");
    for (uint32_t i = 0; i < machine.modules; i++)
        kd_module_load(machine.module[i].path, machine.module[i].base, machine.module[i].size);
    kd_print("[sysRecv1] DriverEntry status:(0x00000000).\n");
    for (int i = 0; i < notifies; i++) {
        kd_print("[sysRecv1]:get notify ulType:(1)\tulValue:(hello)\n");
        kd_print("[sysTest] send.\n");
    }
    kd_print("[sysRecv1] split ");
    kd_print("line\n");
    kd_exception(BREAKPOINT, 0xFFFFF80000401000ull);
    kd_prompt("Break, Ignore, Terminate Process or Terminate Thread (bipt)? ");
    if (machine.has_bugcheck)
        kd_bugcheck(machine.code, machine.params);
    else
        kd_bugcheck(0xD1, d1);
    if (crash_requested) /* DbgKdCauseBugCheckApi: KeBugCheck(MANUALLY_INITIATED_CRASH) */
        kd_bugcheck(MANUALLY_INITIATED_CRASH, none);
    kd_print("[kdtarget] done.\n");
}

static void ticks(void)
{
    char line[64];
    for (line_no = 1;; line_no++) {
        int was_present = present;
        snprintf(line, sizeof(line), "kdticks: line %u\n", line_no);
        kd_print(line);
        if (was_present && !present)
            say("kdtarget: debugger not present: gave up at line %u\n", line_no);
        else if (!was_present)
            say("kdtarget: dropped line %u\n", line_no);
        for (int tick = 0; tick < TICKS_PER_LINE; tick++) {
            sleep_seconds(TICK);
            if (poll_breakin())
                breakin();
        }
    }
}

int main(int argc, char **argv)
{
    struct termios tio;
    const char *mode = argc > 3 ? argv[3] : "kd";
    struct timespec started, ended;

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
    tio.c_cc[VTIME] = 0;
    tcsetattr(port, TCSANOW, &tio);
    tcflush(port, TCIOFLUSH);
    fprintf(report, "kdtarget: started on %s (%s), machine %s\n", argv[1], mode,
            load_machine("/kdmachine.bin") ? "loaded" : "none");
    fflush(report);

    if (strcmp(mode, "kdticks") == 0)
        ticks();
    clock_gettime(CLOCK_MONOTONIC, &started);
    script(argc > 4 && atoi(argv[4]) > 0 ? atoi(argv[4]) : 5);
    clock_gettime(CLOCK_MONOTONIC, &ended);
    fprintf(report,
            "kdtarget: acks=%u continues=%u not_handled=%u breakins=%u resends=%u resets=%u retries=%u gave_up=%u dropped=%u "
            "skipped=%u discarded=%u manipulates=%u refused=%u symbol_start=0x%llx prompt_reply=%s seconds=%.3f\n",
            acks, continues, not_handled, breakins, resends, resets, retries, gave_up, dropped, skipped, discarded,
            manipulates, refused,
            (unsigned long long)symbol_start, prompt_reply,
            (double)(ended.tv_sec - started.tv_sec) + (ended.tv_nsec - started.tv_nsec) / 1e9);
    fclose(report);
    return 0;
}
