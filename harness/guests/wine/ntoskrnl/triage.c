/*
 * Where did the driver host crash, where does it hang: triage inside
 * winedevice.exe, which this shim is loaded into.
 *
 * Crash: a last-chance exception filter (SetUnhandledExceptionFilter). Wine's
 * UnhandledExceptionFilter calls it for an exception nothing handled, before
 * it prints "wine: Unhandled ..." and ends the process (the prefix names no
 * debugger, so nothing waits); a driver's own __try/__except never gets here.
 * It prints the exception, the registers, the stack walked with the images'
 * x64 unwind data (RtlLookupFunctionEntry/RtlVirtualUnwind, at most
 * MAX_FRAMES frames), the stack memory it walked, and the module list, then
 * lets Wine go on as before.
 *
 * Hang: a watcher thread, started when the first driver loads, waits on the
 * named event "Global\kcb-triage-stacks-<service>", <service> being the first
 * driver service this process loaded (one driver host per service group: the
 * harness's anchor driver is always the first of its group). When it is set
 * (kcbagent.exe stacks <service>), the watcher suspends each other thread of the
 * process in turn, walks its stack, resumes it, prints it, and sets
 * "Global\kcb-triage-done-<service>".
 *
 * Unloaded drivers: around each ZwUnloadDriver the images that leave the
 * loader's list are recorded (base, size, path, service, sequence number), so
 * that an address in a driver that is gone is still named.
 *
 * What keeps this from turning a crash into a hang: while reporting nothing
 * takes a lock another thread may hold. The loader's module list is read
 * without the loader lock (as Wine's own exception dispatch does),
 * RtlLookupFunctionEntry is only asked about addresses inside a module
 * (elsewhere it would take the dynamic function table's lock),
 * RtlVirtualUnwind takes none, DbgPrintEx writes to stderr without one, and
 * buffers are static (no heap). Every loop is bounded, and a stack pointer
 * outside the thread's stack ends the walk. A fault inside the report (a
 * nested exception) finds the report busy and goes straight to Wine's
 * handling. The hang watcher holds one thread suspended at a time and prints
 * only after resuming it.
 *
 * Lines (parsed by harness/guests/wine/log.py), all via DbgPrintEx:
 *   kcb-triage: crash begin pid=P tid=T code=0xC address=0xA params=0xP0,0xP1
 *   kcb-triage: KIND regs tid=T rip=0x.. rsp=0x.. ...          (crash only)
 *   kcb-triage: KIND frame tid=T n=N pc=0x.. sp=0x.. how=context|leaf|unwind
 *   kcb-triage: KIND walk tid=T frames=N end=REASON
 *   kcb-triage: KIND stack tid=T at=0xA bytes=HEX                 (crash only)
 *   kcb-triage: KIND module base=0xB size=0xS state=loaded|unloaded unload=N service=S path=PATH
 *   kcb-triage: KIND end
 * where KIND is crash or hang; pids and tids are hex as Wine prints them.
 */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#include <winternl.h>
#include <tlhelp32.h>

#include "triage.h"

ULONG __cdecl DbgPrintEx(ULONG component, ULONG level, PCSTR format, ...);
NTSTATUS NTAPI LdrLockLoaderLock(ULONG flags, ULONG *disposition, ULONG_PTR *cookie);
NTSTATUS NTAPI LdrUnlockLoaderLock(ULONG flags, ULONG_PTR cookie);

/* DPFLTR_IHVDRIVER_ID, DPFLTR_ERROR_LEVEL: the same channel as the shim's other lines. */
#define LOG(...) DbgPrintEx(77, 0, __VA_ARGS__)

#define MAX_FRAMES 64
#define MAX_MODULES 512
#define MAX_UNLOADED 64
#define MAX_THREADS 256
#define PATH_CHARS 260
#define SERVICE_CHARS 64
#define STACK_DUMP_MAX 8192
#define STACK_LINE_BYTES 192

/* The loader's module entry (x64 layout) up to BaseDllName. */
typedef struct ldr_entry {
    LIST_ENTRY load_order;
    LIST_ENTRY memory_order;
    LIST_ENTRY init_order;
    void *base;
    void *entry_point;
    ULONG size;
    UNICODE_STRING full_name;
    UNICODE_STRING base_name;
} ldr_entry;

/* PEB_LDR_DATA (x64) up to the load-order list. */
typedef struct ldr_data {
    ULONG length;
    BOOLEAN initialized;
    void *ss_handle;
    LIST_ENTRY load_order;
} ldr_data;

typedef struct thread_basic_information {
    NTSTATUS exit_status;
    void *teb;
    CLIENT_ID client_id;
    ULONG_PTR affinity;
    LONG priority;
    LONG base_priority;
} thread_basic_information;

typedef struct frame {
    ULONG64 pc;
    ULONG64 sp;
    const char *how;
} frame;

typedef struct image_range {
    ULONG_PTR base;
    ULONG size;
    char path[PATH_CHARS];
} image_range;

typedef struct unloaded_image {
    image_range image;
    LONG sequence;
    char service[SERVICE_CHARS];
} unloaded_image;

/* Unloaded images: entries are filled before the count that publishes them grows. */
static unloaded_image g_unloaded[MAX_UNLOADED];
static volatile LONG g_unloaded_count;
static LONG g_unload_sequence;
static image_range g_before[MAX_MODULES];
static int g_before_count;
static SRWLOCK g_unload_lock = SRWLOCK_INIT;

static LPTOP_LEVEL_EXCEPTION_FILTER g_previous_filter;
static volatile LONG g_crash_busy;
static CONTEXT g_crash_context;
static frame g_crash_frames[MAX_FRAMES];

static volatile LONG g_watching;
static HANDLE g_request;
static HANDLE g_done;
static CONTEXT g_hang_context;
static frame g_hang_frames[MAX_FRAMES];
static DWORD g_threads[MAX_THREADS];

/* NT_TIB.Self (gs:[0x30] on x64); NtCurrentTeb() itself trips GCC 12's -Warray-bounds. */
static TEB *current_teb(void)
{
    TEB *teb;

    __asm__ volatile("movq %%gs:0x30, %0" : "=r"(teb));
    return teb;
}

static const ldr_data *loader_data(void)
{
    return (const ldr_data *)current_teb()->ProcessEnvironmentBlock->Ldr;
}

/* The loaded module holding address, read without the loader lock (bounded walk). */
static const ldr_entry *module_at(ULONG64 address)
{
    const LIST_ENTRY *head = &loader_data()->load_order;
    const LIST_ENTRY *link = head->Flink;
    int count;

    for (count = 0; link != head && link != NULL && count < MAX_MODULES; count++, link = link->Flink) {
        const ldr_entry *entry = CONTAINING_RECORD(link, ldr_entry, load_order);
        ULONG64 base = (ULONG64)(ULONG_PTR)entry->base;
        if (address >= base && address < base + entry->size)
            return entry;
    }
    return NULL;
}

static void to_ascii(const UNICODE_STRING *text, char *out, SIZE_T size)
{
    SIZE_T chars = text->Buffer != NULL ? text->Length / sizeof(WCHAR) : 0;
    SIZE_T i;

    for (i = 0; i < chars && i + 1 < size; i++)
        out[i] = (text->Buffer[i] >= 0x20 && text->Buffer[i] < 0x7f) ? (char)text->Buffer[i] : '?';
    out[i] = 0;
}

static void copy_text(const char *text, char *out, SIZE_T size)
{
    SIZE_T i;

    for (i = 0; text[i] != 0 && i + 1 < size; i++)
        out[i] = (text[i] > 0x20 && text[i] < 0x7f) ? text[i] : '?';
    out[i] = 0;
}

static char *append_hex(char *out, ULONG64 value)
{
    static const char digits[] = "0123456789abcdef";
    char reversed[16];
    int count = 0;

    *out++ = '0';
    *out++ = 'x';
    do {
        reversed[count++] = digits[value & 0xf];
        value >>= 4;
    } while (value != 0);
    while (count > 0)
        *out++ = reversed[--count];
    *out = 0;
    return out;
}

/*
 * Walks a stack from context (which it changes) while the stack pointer stays in [low, high).
 * Only the first frame may lack unwind data (a leaf function, or code that is no longer mapped):
 * its return address is at [RSP]. Returns the number of frames; *end says why the walk stopped.
 */
static int walk(CONTEXT *context, ULONG64 low, ULONG64 high, frame *frames, const char **end)
{
    const char *how = "context";
    int count = 0;

    for (;;) {
        ULONG64 pc = context->Rip;
        ULONG64 sp = context->Rsp;
        ULONG64 lookup = pc;
        ULONG64 base = 0;
        PRUNTIME_FUNCTION function = NULL;

        if (count == MAX_FRAMES) {
            *end = "frame-limit";
            break;
        }
        frames[count].pc = pc;
        frames[count].sp = sp;
        frames[count].how = how;
        count++;
        if (sp < low || sp + 8 > high || (sp & 7) != 0) {
            *end = "stack-pointer-outside-stack";
            break;
        }
        /* A return address may be just past its function's last byte (a call that does not return). */
        if (count > 1 && pc != 0)
            lookup = pc - 1;
        if (module_at(lookup) != NULL)
            function = RtlLookupFunctionEntry(lookup, &base, NULL);
        if (function == NULL) {
            if (count > 1) {
                *end = "no-unwind-data";
                break;
            }
            context->Rip = *(const ULONG64 *)(ULONG_PTR)sp;
            context->Rsp = sp + 8;
            how = "leaf";
        } else {
            PVOID handler_data = NULL;
            ULONG64 establisher = 0;
            ULONG64 control = pc < base + function->EndAddress ? pc : lookup;
            RtlVirtualUnwind(UNW_FLAG_NHANDLER, base, control, function, context, &handler_data, &establisher, NULL);
            how = "unwind";
        }
        if (context->Rip == 0) {
            *end = "thread-start";
            break;
        }
        if (context->Rsp <= sp) {
            *end = "no-progress";
            break;
        }
    }
    return count;
}

static void log_frames(const char *kind, DWORD tid, const frame *frames, int count, const char *end)
{
    int i;

    for (i = 0; i < count; i++)
        LOG("kcb-triage: %s frame tid=%04lx n=%d pc=0x%I64x sp=0x%I64x how=%s\n", kind, (unsigned long)tid, i,
            frames[i].pc, frames[i].sp, frames[i].how);
    LOG("kcb-triage: %s walk tid=%04lx frames=%d end=%s\n", kind, (unsigned long)tid, count, end);
}

static void log_registers(const char *kind, DWORD tid, const CONTEXT *c)
{
    LOG("kcb-triage: %s regs tid=%04lx rip=0x%I64x rsp=0x%I64x rbp=0x%I64x rax=0x%I64x rbx=0x%I64x rcx=0x%I64x "
        "rdx=0x%I64x rsi=0x%I64x rdi=0x%I64x r8=0x%I64x r9=0x%I64x r10=0x%I64x r11=0x%I64x r12=0x%I64x "
        "r13=0x%I64x r14=0x%I64x r15=0x%I64x eflags=0x%lx\n",
        kind, (unsigned long)tid, c->Rip, c->Rsp, c->Rbp, c->Rax, c->Rbx, c->Rcx, c->Rdx, c->Rsi, c->Rdi, c->R8, c->R9,
        c->R10, c->R11, c->R12, c->R13, c->R14, c->R15, (unsigned long)c->EFlags);
}

/* The stack memory the walk went through, so the host can check or redo it. */
static void log_stack(const char *kind, DWORD tid, ULONG64 from, ULONG64 to)
{
    static const char digits[] = "0123456789abcdef";
    char hex[STACK_LINE_BYTES * 2 + 1];
    ULONG64 at;

    for (at = from; at < to; at += STACK_LINE_BYTES) {
        ULONG64 stop = at + STACK_LINE_BYTES < to ? at + STACK_LINE_BYTES : to;
        const unsigned char *bytes = (const unsigned char *)(ULONG_PTR)at;
        SIZE_T i;

        for (i = 0; i < stop - at; i++) {
            hex[2 * i] = digits[bytes[i] >> 4];
            hex[2 * i + 1] = digits[bytes[i] & 0xf];
        }
        hex[2 * i] = 0;
        LOG("kcb-triage: %s stack tid=%04lx at=0x%I64x bytes=%s\n", kind, (unsigned long)tid, at, hex);
    }
}

static void log_modules(const char *kind)
{
    const LIST_ENTRY *head = &loader_data()->load_order;
    const LIST_ENTRY *link = head->Flink;
    char path[PATH_CHARS];
    LONG unloaded = g_unloaded_count;
    int count;
    LONG i;

    for (count = 0; link != head && link != NULL && count < MAX_MODULES; count++, link = link->Flink) {
        const ldr_entry *entry = CONTAINING_RECORD(link, ldr_entry, load_order);
        to_ascii(&entry->full_name, path, sizeof(path));
        LOG("kcb-triage: %s module base=0x%I64x size=0x%lx state=loaded unload=0 service=- path=%s\n", kind,
            (ULONG64)(ULONG_PTR)entry->base, (unsigned long)entry->size, path);
    }
    for (i = 0; i < unloaded && i < MAX_UNLOADED; i++) {
        const unloaded_image *image = &g_unloaded[i];
        LOG("kcb-triage: %s module base=0x%I64x size=0x%lx state=unloaded unload=%ld service=%s path=%s\n", kind,
            (ULONG64)image->image.base, (unsigned long)image->image.size, (long)image->sequence, image->service,
            image->image.path);
    }
}

static void report_crash(EXCEPTION_POINTERS *pointers)
{
    const EXCEPTION_RECORD *record = pointers->ExceptionRecord;
    const NT_TIB *tib = (const NT_TIB *)current_teb();
    ULONG64 low = (ULONG64)(ULONG_PTR)tib->StackLimit;
    ULONG64 high = (ULONG64)(ULONG_PTR)tib->StackBase;
    DWORD tid = GetCurrentThreadId();
    char params[4 * 20 + 8] = "-";
    char *cursor = params;
    const char *end = "";
    ULONG64 first_sp;
    ULONG64 last_sp;
    DWORD i;
    int count;

    for (i = 0; i < record->NumberParameters && i < 4; i++) {
        if (i > 0)
            *cursor++ = ',';
        cursor = append_hex(cursor, record->ExceptionInformation[i]);
    }
    LOG("kcb-triage: crash begin pid=%04lx tid=%04lx code=0x%08lx address=0x%I64x params=%s\n",
        (unsigned long)GetCurrentProcessId(), (unsigned long)tid, (unsigned long)record->ExceptionCode,
        (ULONG64)(ULONG_PTR)record->ExceptionAddress, params);
    g_crash_context = *pointers->ContextRecord;
    log_registers("crash", tid, &g_crash_context);
    first_sp = g_crash_context.Rsp;
    count = walk(&g_crash_context, low, high, g_crash_frames, &end);
    log_frames("crash", tid, g_crash_frames, count, end);
    last_sp = g_crash_frames[count - 1].sp;
    if (first_sp >= low && first_sp < high) {
        ULONG64 to = last_sp + 512;
        if (to < first_sp || to > high)
            to = high;
        if (to - first_sp > STACK_DUMP_MAX)
            to = first_sp + STACK_DUMP_MAX;
        log_stack("crash", tid, first_sp & ~(ULONG64)7, to);
    }
    log_modules("crash");
    LOG("kcb-triage: crash end\n");
}

static LONG WINAPI last_chance(EXCEPTION_POINTERS *pointers)
{
    /* Once per process: a fault inside the report itself must not report (or recurse) again. */
    if (InterlockedCompareExchange(&g_crash_busy, 1, 0) == 0)
        report_crash(pointers);
    return g_previous_filter != NULL ? g_previous_filter(pointers) : EXCEPTION_CONTINUE_SEARCH;
}

void kcb_triage_init(void)
{
    g_previous_filter = SetUnhandledExceptionFilter(last_chance);
}

/* -- hangs ------------------------------------------------------------------------------ */

static void event_name(WCHAR *out, SIZE_T size, const char *prefix, const char *service)
{
    SIZE_T i = 0;

    for (; *prefix != 0 && i + 1 < size; prefix++)
        out[i++] = (WCHAR)*prefix;
    for (; *service != 0 && i + 1 < size; service++)
        out[i++] = (*service > 0x20 && *service < 0x7f && *service != '\\') ? (WCHAR)*service : L'_';
    out[i] = 0;
}

static int list_threads(DWORD self)
{
    THREADENTRY32 entry;
    HANDLE snapshot = CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0);
    DWORD pid = GetCurrentProcessId();
    int count = 0;

    if (snapshot == INVALID_HANDLE_VALUE)
        return 0;
    entry.dwSize = sizeof(entry);
    if (Thread32First(snapshot, &entry)) {
        do {
            if (entry.th32OwnerProcessID == pid && entry.th32ThreadID != self && count < MAX_THREADS)
                g_threads[count++] = entry.th32ThreadID;
            entry.dwSize = sizeof(entry);
        } while (Thread32Next(snapshot, &entry));
    }
    CloseHandle(snapshot);
    return count;
}

static void dump_thread(DWORD tid)
{
    thread_basic_information basic;
    const NT_TIB *tib;
    const char *end = "";
    int count = 0;
    HANDLE thread = OpenThread(THREAD_SUSPEND_RESUME | THREAD_GET_CONTEXT | THREAD_QUERY_INFORMATION, FALSE, tid);

    if (thread == NULL) {
        LOG("kcb-triage: hang walk tid=%04lx frames=0 end=cannot-open-thread\n", (unsigned long)tid);
        return;
    }
    if (NtQueryInformationThread(thread, ThreadBasicInformation, &basic, sizeof(basic), NULL) != 0 || basic.teb == NULL) {
        CloseHandle(thread);
        LOG("kcb-triage: hang walk tid=%04lx frames=0 end=no-thread-information\n", (unsigned long)tid);
        return;
    }
    tib = (const NT_TIB *)basic.teb;
    if (SuspendThread(thread) == (DWORD)-1) {
        CloseHandle(thread);
        LOG("kcb-triage: hang walk tid=%04lx frames=0 end=cannot-suspend\n", (unsigned long)tid);
        return;
    }
    g_hang_context.ContextFlags = CONTEXT_FULL;
    if (GetThreadContext(thread, &g_hang_context))
        count = walk(&g_hang_context, (ULONG64)(ULONG_PTR)tib->StackLimit, (ULONG64)(ULONG_PTR)tib->StackBase,
                     g_hang_frames, &end);
    else
        end = "no-context";
    ResumeThread(thread);
    CloseHandle(thread);
    log_frames("hang", tid, g_hang_frames, count, end);
}

static DWORD WINAPI watcher(void *unused)
{
    DWORD self = GetCurrentThreadId();

    (void)unused;
    while (WaitForSingleObject(g_request, INFINITE) == WAIT_OBJECT_0) {
        int count = list_threads(self);
        int i;

        LOG("kcb-triage: hang begin pid=%04lx threads=%d\n", (unsigned long)GetCurrentProcessId(), count);
        for (i = 0; i < count; i++)
            dump_thread(g_threads[i]);
        log_modules("hang");
        LOG("kcb-triage: hang end\n");
        SetEvent(g_done);
    }
    return 0;
}

void kcb_triage_driver_loading(const char *service)
{
    WCHAR name[128];
    HANDLE thread;

    if (InterlockedCompareExchange(&g_watching, 1, 0) != 0)
        return;
    event_name(name, 128, "Global\\kcb-triage-stacks-", service);
    g_request = CreateEventW(NULL, FALSE, FALSE, name);
    event_name(name, 128, "Global\\kcb-triage-done-", service);
    g_done = CreateEventW(NULL, FALSE, FALSE, name);
    if (g_request == NULL || g_done == NULL)
        return;
    thread = CreateThread(NULL, 0, watcher, NULL, 0, NULL);
    if (thread != NULL)
        CloseHandle(thread);
}

/* -- unloaded drivers ------------------------------------------------------------------ */

static int snapshot_modules(image_range *out, int max)
{
    const LIST_ENTRY *head = &loader_data()->load_order;
    const LIST_ENTRY *link = head->Flink;
    int count = 0;

    for (; link != head && link != NULL && count < max; link = link->Flink) {
        const ldr_entry *entry = CONTAINING_RECORD(link, ldr_entry, load_order);
        out[count].base = (ULONG_PTR)entry->base;
        out[count].size = entry->size;
        to_ascii(&entry->full_name, out[count].path, sizeof(out[count].path));
        count++;
    }
    return count;
}

void kcb_triage_unload_begin(void)
{
    ULONG_PTR cookie = 0;
    BOOL locked;

    AcquireSRWLockExclusive(&g_unload_lock);
    locked = LdrLockLoaderLock(0, NULL, &cookie) == 0;
    g_before_count = snapshot_modules(g_before, MAX_MODULES);
    if (locked)
        LdrUnlockLoaderLock(0, cookie);
}

void kcb_triage_unload_end(const char *service)
{
    ULONG_PTR cookie = 0;
    BOOL locked = LdrLockLoaderLock(0, NULL, &cookie) == 0;
    LONG sequence = ++g_unload_sequence;
    int i;

    for (i = 0; i < g_before_count; i++) {
        LONG slot = g_unloaded_count;
        unloaded_image *image;

        if (module_at(g_before[i].base) != NULL || slot >= MAX_UNLOADED)
            continue;
        image = &g_unloaded[slot];
        image->image = g_before[i];
        image->sequence = sequence;
        copy_text(service, image->service, sizeof(image->service));
        MemoryBarrier();
        g_unloaded_count = slot + 1;
    }
    if (locked)
        LdrUnlockLoaderLock(0, cookie);
    ReleaseSRWLockExclusive(&g_unload_lock);
}
