/*
 * receiver.sys: opens \Callback\driverStart (Create=FALSE, so it fails with
 * STATUS_OBJECT_NAME_NOT_FOUND before the sender has created it) and
 * registers a routine that logs every notification as
 *   [<Tag>]:get notify ulType:(1)<TAB>ulValue:(hello)
 * Tag comes from Parameters\Tag (default sysRecv1) so that several receivers
 * can run side by side.
 *
 * Fixed against the seed: the callback object is dereferenced on unload and
 * on every error path. Building with -DKCB_SEEDED_BUG_NO_UNREGISTER brings
 * back a classic bug on purpose (no ExUnregisterCallback on unload), for the
 * harness's regression tests: the next notification calls unloaded code.
 * -DKCB_SEEDED_BUG_NULL_DEREF brings another one (a different crash, for
 * the harness's crash signatures): the routine counts notifications through
 * its registration context, which it registered as NULL.
 */
#include "../common/kcb_params.h"

#define CALLBACK_NAME L"\\Callback\\driverStart"

DRIVER_INITIALIZE DriverEntry;
static DRIVER_UNLOAD UnloadDriver;
static CALLBACK_FUNCTION OnNotify;

static PCALLBACK_OBJECT g_callback = NULL;
static PVOID g_registration = NULL;
static char g_tag[64] = "sysRecv1";

static NTSTATUS Finish(NTSTATUS status)
{
    KCB_LOG("[%s] DriverEntry status:(0x%08x).\n", g_tag, (unsigned int)status);
    return status;
}

NTSTATUS DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry)
{
    NTSTATUS status;
    OBJECT_ATTRIBUTES attributes;
    UNICODE_STRING name = RTL_CONSTANT_STRING(CALLBACK_NAME);
    HANDLE parameters = NULL;

    if (NT_SUCCESS(kcb_open_parameters(registry, &parameters))) {
        kcb_query_ascii(parameters, L"Tag", g_tag, sizeof(g_tag), "sysRecv1");
        ZwClose(parameters);
    }

    InitializeObjectAttributes(&attributes, &name, OBJ_CASE_INSENSITIVE, NULL, NULL);
    status = ExCreateCallback(&g_callback, &attributes, FALSE, TRUE);
    if (!NT_SUCCESS(status)) {
        KCB_LOG("[%s] ExCreateCallback error code:(0x%x).\n", g_tag, (unsigned int)status);
        g_callback = NULL;
        return Finish(status);
    }

    g_registration = ExRegisterCallback(g_callback, OnNotify, NULL);
    if (g_registration == NULL) {
        KCB_LOG("[%s] ExRegisterCallback error.\n", g_tag);
        ObDereferenceObject(g_callback);
        g_callback = NULL;
        return Finish(STATUS_UNSUCCESSFUL);
    }

    driver->DriverUnload = UnloadDriver;
    return Finish(STATUS_SUCCESS);
}

static VOID UnloadDriver(PDRIVER_OBJECT driver)
{
    UNREFERENCED_PARAMETER(driver);
#ifndef KCB_SEEDED_BUG_NO_UNREGISTER
    if (g_registration != NULL) {
        ExUnregisterCallback(g_registration);
        g_registration = NULL;
    }
    if (g_callback != NULL) {
        ObDereferenceObject(g_callback);
        g_callback = NULL;
    }
#endif
    KCB_LOG("[%s] Drvier unloaded.\n", g_tag);
}

#ifdef KCB_SEEDED_BUG_NULL_DEREF
static __declspec(noinline) VOID CountNotification(PULONG counter)
{
    *counter += 1;
}
#endif

static VOID OnNotify(PVOID context, PVOID argument1, PVOID argument2)
{
    UNREFERENCED_PARAMETER(context);
#ifdef KCB_SEEDED_BUG_NULL_DEREF
    CountNotification((PULONG)context);
#endif
    KCB_LOG("[%s]:get notify ulType:(%d)\tulValue:(%s)\n", g_tag, (int)*(ULONG *)argument1, (const char *)argument2);
}
