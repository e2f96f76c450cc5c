/*
 * cbprobe.sys: checks the kernel's callback-object behaviour from DriverEntry
 * and logs one line per check, "[cbprobe] <check>: ok" or
 * "[cbprobe] <check>: FAIL <detail>", then "[cbprobe] done: <failures>".
 *
 * One check per behaviour of Microsoft's documentation of callback objects
 * that a driver can observe (docs/windows-facts.md lists them with their
 * sources). It runs unchanged on Windows (to compare a real kernel) and on the
 * embedded guest's callback shim. Uses its own object names, so it never
 * disturbs \Callback\driverStart; it never notifies a system-defined object.
 */
#include "../common/kcb_params.h"

DRIVER_INITIALIZE DriverEntry;
static DRIVER_UNLOAD ProbeUnload;

static ULONG g_failures;

static void report(const char *check, BOOLEAN ok, const char *detail, ULONG_PTR value)
{
    if (ok) {
        KCB_LOG("[cbprobe] %s: ok\n", check);
    } else {
        g_failures++;
        KCB_LOG("[cbprobe] %s: FAIL %s (0x%llx)\n", check, detail, (unsigned long long)value);
    }
}

static NTSTATUS open_named(PCWSTR text, ULONG attributes, BOOLEAN create, BOOLEAN multiple, PCALLBACK_OBJECT *object)
{
    UNICODE_STRING name;
    OBJECT_ATTRIBUTES oa;

    RtlInitUnicodeString(&name, text);
    InitializeObjectAttributes(&oa, &name, attributes, NULL, NULL);
    *object = NULL;
    return ExCreateCallback(object, &oa, create, multiple);
}

/* Registration order: each routine appends its letter (the context) to g_order. */
static char g_order[16];
static LONG g_order_length;

static VOID RecordOrder(PVOID context, PVOID argument1, PVOID argument2)
{
    LONG at = InterlockedIncrement(&g_order_length) - 1;
    UNREFERENCED_PARAMETER(argument1);
    UNREFERENCED_PARAMETER(argument2);
    if (at < (LONG)sizeof(g_order) - 1)
        g_order[at] = (char)(ULONG_PTR)context;
}

static PVOID g_seen[3];

static VOID RecordArguments(PVOID context, PVOID argument1, PVOID argument2)
{
    g_seen[0] = context;
    g_seen[1] = argument1;
    g_seen[2] = argument2;
}

/* Unregister while the routine runs on another thread: it must wait for the routine. */
static KEVENT g_entered;
static KEVENT g_never;
static volatile LONG g_finished;

static VOID SlowRoutine(PVOID context, PVOID argument1, PVOID argument2)
{
    LARGE_INTEGER delay;
    UNREFERENCED_PARAMETER(context);
    UNREFERENCED_PARAMETER(argument1);
    UNREFERENCED_PARAMETER(argument2);
    KeSetEvent(&g_entered, IO_NO_INCREMENT, FALSE);
    delay.QuadPart = -10000LL * 300;
    KeWaitForSingleObject(&g_never, Executive, KernelMode, FALSE, &delay);
    InterlockedExchange((LONG *)&g_finished, 1);
}

static VOID NotifyThread(PVOID object)
{
    ExNotifyCallback((PCALLBACK_OBJECT)object, NULL, NULL);
    PsTerminateSystemThread(STATUS_SUCCESS);
}

static NTSTATUS create_unnamed(BOOLEAN create, PCALLBACK_OBJECT *object)
{
    OBJECT_ATTRIBUTES oa;

    InitializeObjectAttributes(&oa, NULL, OBJ_CASE_INSENSITIVE, NULL, NULL);
    *object = NULL;
    return ExCreateCallback(object, &oa, create, TRUE);
}

static VOID Ignore(PVOID context, PVOID argument1, PVOID argument2)
{
    UNREFERENCED_PARAMETER(context);
    UNREFERENCED_PARAMETER(argument1);
    UNREFERENCED_PARAMETER(argument2);
}

static volatile LONG g_calls;

static VOID Count(PVOID context, PVOID argument1, PVOID argument2)
{
    UNREFERENCED_PARAMETER(context);
    UNREFERENCED_PARAMETER(argument1);
    UNREFERENCED_PARAMETER(argument2);
    InterlockedIncrement((LONG *)&g_calls);
}

static void check_names(void)
{
    PCALLBACK_OBJECT first, second, again;
    NTSTATUS status;

    status = open_named(L"\\Callback\\kcbProbePermanent", OBJ_CASE_INSENSITIVE, FALSE, TRUE, &first);
    report("open missing name fails with STATUS_OBJECT_NAME_NOT_FOUND", status == STATUS_OBJECT_NAME_NOT_FOUND, "status", (ULONG)status);

    status = open_named(L"\\Callback\\kcbProbePermanent", OBJ_CASE_INSENSITIVE | OBJ_PERMANENT, TRUE, TRUE, &first);
    report("create permanent named object", NT_SUCCESS(status) && first != NULL, "status", (ULONG)status);
    if (!NT_SUCCESS(status))
        return;

    status = open_named(L"\\CALLBACK\\KCBPROBEPERMANENT", OBJ_CASE_INSENSITIVE, FALSE, TRUE, &second);
    report("open with OBJ_CASE_INSENSITIVE finds the same object", NT_SUCCESS(status) && second == first, "status", (ULONG)status);
    if (NT_SUCCESS(status))
        ObDereferenceObject(second);

    status = open_named(L"\\Callback\\kcbProbePermanent", OBJ_CASE_INSENSITIVE, TRUE, TRUE, &second);
    report("create of an existing name opens it", NT_SUCCESS(status) && second == first, "status", (ULONG)status);
    if (NT_SUCCESS(status))
        ObDereferenceObject(second);

    /* The last reference goes; the permanent name stays. */
    ObDereferenceObject(first);
    status = open_named(L"\\Callback\\kcbProbePermanent", OBJ_CASE_INSENSITIVE, FALSE, TRUE, &again);
    report("permanent object outlives its last reference", NT_SUCCESS(status), "status", (ULONG)status);
    if (NT_SUCCESS(status)) {
        ObMakeTemporaryObject(again);
        ObDereferenceObject(again);
        status = open_named(L"\\Callback\\kcbProbePermanent", OBJ_CASE_INSENSITIVE, FALSE, TRUE, &again);
        report("ObMakeTemporaryObject then last dereference removes it", status == STATUS_OBJECT_NAME_NOT_FOUND, "status", (ULONG)status);
        if (NT_SUCCESS(status))
            ObDereferenceObject(again);
    }

    status = open_named(L"\\Callback\\kcbProbeTemporary", OBJ_CASE_INSENSITIVE, TRUE, TRUE, &first);
    report("create temporary named object", NT_SUCCESS(status), "status", (ULONG)status);
    if (NT_SUCCESS(status)) {
        status = open_named(L"\\Callback\\kcbProbeTemporary", OBJ_CASE_INSENSITIVE, FALSE, TRUE, &second);
        report("temporary object's name is gone once created", status == STATUS_OBJECT_NAME_NOT_FOUND, "status", (ULONG)status);
        if (NT_SUCCESS(status))
            ObDereferenceObject(second);
        ObDereferenceObject(first);
    }

    /* ExCreateCallback's documentation: unnamed callback objects are not permitted (STATUS_UNSUCCESSFUL). */
    status = create_unnamed(FALSE, &first);
    report("unnamed object cannot be opened (STATUS_UNSUCCESSFUL)", status == STATUS_UNSUCCESSFUL, "status", (ULONG)status);
    if (NT_SUCCESS(status))
        ObDereferenceObject(first);
    status = create_unnamed(TRUE, &first);
    report("unnamed object cannot be created (STATUS_UNSUCCESSFUL)", status == STATUS_UNSUCCESSFUL, "status", (ULONG)status);
    if (NT_SUCCESS(status))
        ObDereferenceObject(first);
}

static void check_make_temporary_keeps_the_object(void)
{
    PCALLBACK_OBJECT first, second, again;
    PVOID registration;
    NTSTATUS status;
    BOOLEAN ok;

    status = open_named(L"\\Callback\\kcbProbeHeld", OBJ_CASE_INSENSITIVE | OBJ_PERMANENT, TRUE, TRUE, &first);
    if (!NT_SUCCESS(status)) {
        report("ObMakeTemporaryObject removes the name at once, the object lives on while referenced", FALSE, "create", (ULONG)status);
        return;
    }
    status = open_named(L"\\Callback\\kcbProbeHeld", OBJ_CASE_INSENSITIVE, FALSE, TRUE, &second);
    if (!NT_SUCCESS(status))
        second = NULL;
    ObMakeTemporaryObject(first);
    status = open_named(L"\\Callback\\kcbProbeHeld", OBJ_CASE_INSENSITIVE, FALSE, TRUE, &again);
    if (NT_SUCCESS(status))
        ObDereferenceObject(again);
    g_calls = 0;
    registration = ExRegisterCallback(first, Count, NULL);
    ExNotifyCallback(first, NULL, NULL);
    ok = second == first && status == STATUS_OBJECT_NAME_NOT_FOUND && registration != NULL && g_calls == 1;
    report("ObMakeTemporaryObject removes the name at once, the object lives on while referenced", ok, "status", (ULONG)status);
    if (registration != NULL)
        ExUnregisterCallback(registration);
    if (second != NULL)
        ObDereferenceObject(second);
    ObDereferenceObject(first);
}

static void check_open_ignores_allow_multiple(void)
{
    PCALLBACK_OBJECT single, opened;
    PVOID one, two;
    NTSTATUS status;

    status = open_named(L"\\Callback\\kcbProbeSingle", OBJ_CASE_INSENSITIVE | OBJ_PERMANENT, TRUE, FALSE, &single);
    if (!NT_SUCCESS(status)) {
        report("AllowMultipleCallbacks is ignored when an existing object is opened", FALSE, "create", (ULONG)status);
        return;
    }
    status = open_named(L"\\Callback\\kcbProbeSingle", OBJ_CASE_INSENSITIVE, TRUE, TRUE, &opened);
    one = ExRegisterCallback(NT_SUCCESS(status) ? opened : single, Ignore, NULL);
    two = ExRegisterCallback(NT_SUCCESS(status) ? opened : single, Ignore, NULL);
    report("AllowMultipleCallbacks is ignored when an existing object is opened",
           NT_SUCCESS(status) && opened == single && one != NULL && two == NULL, "second", (ULONG_PTR)two);
    if (two != NULL)
        ExUnregisterCallback(two);
    if (one != NULL)
        ExUnregisterCallback(one);
    if (NT_SUCCESS(status))
        ObDereferenceObject(opened);
    ObMakeTemporaryObject(single);
    ObDereferenceObject(single);
}

/* Where and how a routine ran: its thread, its IRQL, and that it ran before ExNotifyCallback returned. */
static HANDLE g_routine_thread;
static KIRQL g_routine_irql;

static VOID RecordWhere(PVOID context, PVOID argument1, PVOID argument2)
{
    UNREFERENCED_PARAMETER(context);
    UNREFERENCED_PARAMETER(argument1);
    UNREFERENCED_PARAMETER(argument2);
    g_routine_thread = PsGetCurrentThreadId();
    g_routine_irql = KeGetCurrentIrql();
}

static void check_registrations(void)
{
    PCALLBACK_OBJECT object;
    PVOID a, b, c, one, two;
    static ULONG argument = 7;
    static char text[] = "hello";
    KIRQL irql;
    NTSTATUS status = open_named(L"\\Callback\\kcbProbeOne", OBJ_CASE_INSENSITIVE, TRUE, FALSE, &object);

    report("create single-callback object", NT_SUCCESS(status), "status", (ULONG)status);
    if (NT_SUCCESS(status)) {
        one = ExRegisterCallback(object, RecordOrder, (PVOID)'x');
        two = ExRegisterCallback(object, RecordOrder, (PVOID)'y');
        report("AllowMultipleCallbacks=FALSE refuses a second registration", one != NULL && two == NULL, "second", (ULONG_PTR)two);
        if (two != NULL)
            ExUnregisterCallback(two);
        if (one != NULL)
            ExUnregisterCallback(one);
        two = ExRegisterCallback(object, RecordOrder, (PVOID)'z');
        report("a single-callback object takes a registration again after unregister", two != NULL, "registration", (ULONG_PTR)two);
        if (two != NULL)
            ExUnregisterCallback(two);
        ObDereferenceObject(object);
    }

    status = open_named(L"\\Callback\\kcbProbeMany", OBJ_CASE_INSENSITIVE, TRUE, TRUE, &object);
    if (!NT_SUCCESS(status)) {
        report("create multi-callback object", FALSE, "status", (ULONG)status);
        return;
    }
    a = ExRegisterCallback(object, RecordOrder, (PVOID)'A');
    b = ExRegisterCallback(object, RecordOrder, (PVOID)'B');
    c = ExRegisterCallback(object, RecordOrder, (PVOID)'C');
    ExNotifyCallback(object, NULL, NULL);
    report("notify calls routines in registration order", g_order_length == 3 && g_order[0] == 'A' && g_order[1] == 'B' && g_order[2] == 'C', "count", (ULONG)g_order_length);
    ExUnregisterCallback(b);
    g_order_length = 0;
    ExNotifyCallback(object, NULL, NULL);
    report("an unregistered routine is not called", g_order_length == 2 && g_order[0] == 'A' && g_order[1] == 'C', "count", (ULONG)g_order_length);
    ExUnregisterCallback(a);
    ExUnregisterCallback(c);

    a = ExRegisterCallback(object, RecordArguments, (PVOID)0x1234);
    ExNotifyCallback(object, &argument, text);
    report("routine gets its context and both arguments", g_seen[0] == (PVOID)0x1234 && g_seen[1] == &argument && g_seen[2] == text, "context", (ULONG_PTR)g_seen[0]);
    ExUnregisterCallback(a);

    a = ExRegisterCallback(object, RecordWhere, NULL);
    g_routine_thread = NULL;
    g_routine_irql = 0xff;
    irql = KeGetCurrentIrql();
    ExNotifyCallback(object, NULL, NULL);
    report("routine runs on the notifying thread before ExNotifyCallback returns", g_routine_thread == PsGetCurrentThreadId(), "thread", (ULONG_PTR)g_routine_thread);
    report("routine runs at the notifier's IRQL", g_routine_irql == irql, "irql", (ULONG)g_routine_irql);
    ExUnregisterCallback(a);
    ObDereferenceObject(object);
}

/* The callback objects Windows creates at boot; drivers open them (Create=FALSE) and register, never notify. */
static void check_system_objects(void)
{
    static const PCWSTR names[] = {L"\\Callback\\SetSystemTime", L"\\Callback\\PowerState", L"\\Callback\\ProcessorAdd"};
    static const char *checks[] = {
        "system object \\Callback\\SetSystemTime opens with Create=FALSE and takes a registration",
        "system object \\Callback\\PowerState opens with Create=FALSE and takes a registration",
        "system object \\Callback\\ProcessorAdd opens with Create=FALSE and takes a registration",
    };
    ULONG i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        PCALLBACK_OBJECT object;
        PVOID registration = NULL;
        NTSTATUS status = open_named(names[i], OBJ_CASE_INSENSITIVE, FALSE, TRUE, &object);

        if (NT_SUCCESS(status)) {
            registration = ExRegisterCallback(object, Ignore, NULL);
            if (registration != NULL)
                ExUnregisterCallback(registration);
            ObDereferenceObject(object);
        }
        report(checks[i], NT_SUCCESS(status) && registration != NULL, "status", (ULONG)status);
    }
}

static void check_unregister_waits(void)
{
    PCALLBACK_OBJECT object;
    PVOID registration;
    HANDLE thread;
    LARGE_INTEGER limit;
    NTSTATUS status = open_named(L"\\Callback\\kcbProbeWait", OBJ_CASE_INSENSITIVE, TRUE, TRUE, &object);

    if (!NT_SUCCESS(status)) {
        report("unregister waits for a running routine", FALSE, "create", (ULONG)status);
        return;
    }
    KeInitializeEvent(&g_entered, NotificationEvent, FALSE);
    KeInitializeEvent(&g_never, NotificationEvent, FALSE);
    registration = ExRegisterCallback(object, SlowRoutine, NULL);
    status = PsCreateSystemThread(&thread, THREAD_ALL_ACCESS, NULL, NULL, NULL, NotifyThread, object);
    if (!NT_SUCCESS(status)) {
        report("unregister waits for a running routine", FALSE, "thread", (ULONG)status);
        ExUnregisterCallback(registration);
        ObDereferenceObject(object);
        return;
    }
    limit.QuadPart = -10000LL * 5000;
    status = KeWaitForSingleObject(&g_entered, Executive, KernelMode, FALSE, &limit);
    ExUnregisterCallback(registration);
    report("unregister waits for a running routine", status == STATUS_SUCCESS && g_finished == 1, "finished", (ULONG)g_finished);
    ZwWaitForSingleObject(thread, FALSE, NULL);
    ZwClose(thread);
    ObDereferenceObject(object);
}

NTSTATUS DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry)
{
    UNREFERENCED_PARAMETER(registry);
    check_names();
    check_make_temporary_keeps_the_object();
    check_open_ignores_allow_multiple();
    check_registrations();
    check_unregister_waits();
    check_system_objects();
    KCB_LOG("[cbprobe] done: %lu failures\n", (unsigned long)g_failures);
    driver->DriverUnload = ProbeUnload;
    return STATUS_SUCCESS;
}

static VOID ProbeUnload(PDRIVER_OBJECT driver)
{
    UNREFERENCED_PARAMETER(driver);
    KCB_LOG("[cbprobe] unloaded.\n");
}
