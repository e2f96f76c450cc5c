/*
 * sender.sys: creates the permanent callback object \Callback\driverStart
 * and notifies it from a system thread every PeriodMs milliseconds
 * (Parameters\PeriodMs, default 2000) with Argument1 = &(ULONG)1 and
 * Argument2 = "hello".
 *
 * Behaviour and log lines follow the seed article; fixed against it: the
 * callback object is released when DriverEntry fails half-way, and the stop
 * event is set without Wait=TRUE (which would require an immediate KeWait).
 */
#include "../common/kcb_params.h"

#define CALLBACK_NAME L"\\Callback\\driverStart"
#define DEFAULT_PERIOD_MS 2000

DRIVER_INITIALIZE DriverEntry;
static DRIVER_UNLOAD UnloadDriver;
static KSTART_ROUTINE NotifyThread;

static PCALLBACK_OBJECT g_callback = NULL;
static HANDLE g_thread = NULL;
static KEVENT g_stop;
static ULONG g_period_ms = DEFAULT_PERIOD_MS;

static NTSTATUS Finish(NTSTATUS status)
{
    KCB_LOG("[sysTest] DriverEntry status:(0x%08x).\n", (unsigned int)status);
    return status;
}

NTSTATUS DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry)
{
    NTSTATUS status;
    OBJECT_ATTRIBUTES attributes;
    UNICODE_STRING name = RTL_CONSTANT_STRING(CALLBACK_NAME);
    HANDLE parameters = NULL;

    if (NT_SUCCESS(kcb_open_parameters(registry, &parameters))) {
        g_period_ms = kcb_query_dword(parameters, L"PeriodMs", DEFAULT_PERIOD_MS);
        ZwClose(parameters);
    }
    if (g_period_ms == 0)
        g_period_ms = DEFAULT_PERIOD_MS;

    KeInitializeEvent(&g_stop, SynchronizationEvent, FALSE);

    /* OBJ_PERMANENT keeps the name in the namespace once our handle is gone. */
    InitializeObjectAttributes(&attributes, &name, OBJ_CASE_INSENSITIVE | OBJ_PERMANENT, NULL, NULL);
    status = ExCreateCallback(&g_callback, &attributes, TRUE, TRUE);
    if (!NT_SUCCESS(status)) {
        KCB_LOG("[sysTest] ExCreateCallback error code:(0x%x).\n", (unsigned int)status);
        g_callback = NULL;
        return Finish(status);
    }

    status = PsCreateSystemThread(&g_thread, THREAD_ALL_ACCESS, NULL, NULL, NULL, NotifyThread, NULL);
    if (!NT_SUCCESS(status)) {
        KCB_LOG("[sysTest] PsCreateSystemThread error code:(0x%x).\n", (unsigned int)status);
        g_thread = NULL;
        ObDereferenceObject(g_callback);
        g_callback = NULL;
        return Finish(status);
    }

    driver->DriverUnload = UnloadDriver;
    return Finish(STATUS_SUCCESS);
}

static VOID NotifyThread(PVOID context)
{
    static char value[] = "hello";
    ULONG type = 1;
    LARGE_INTEGER period;

    UNREFERENCED_PARAMETER(context);
    period.QuadPart = -10000LL * (LONGLONG)g_period_ms;
    for (;;) {
        NTSTATUS status = KeWaitForSingleObject(&g_stop, Executive, KernelMode, FALSE, &period);
        if (status != STATUS_TIMEOUT)
            break;
        ExNotifyCallback(g_callback, &type, value);
        KCB_LOG("[sysTest] send.\n");
    }
    KCB_LOG("[sysTest] thread ended.\n");
    PsTerminateSystemThread(STATUS_SUCCESS);
}

static VOID UnloadDriver(PDRIVER_OBJECT driver)
{
    UNREFERENCED_PARAMETER(driver);
    KeSetEvent(&g_stop, IO_NO_INCREMENT, FALSE);
    if (g_thread != NULL) {
        ZwWaitForSingleObject(g_thread, FALSE, NULL);
        ZwClose(g_thread);
        g_thread = NULL;
    }
    if (g_callback != NULL) {
        ObDereferenceObject(g_callback);
        g_callback = NULL;
    }
    KCB_LOG("[sysTest] driver stoped.\n");
}
