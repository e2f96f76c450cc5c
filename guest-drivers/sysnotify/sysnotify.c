/*
 * sysnotify.sys: does what ExNotifyCallback's documentation forbids, calling
 * ExNotifyCallback on a system-defined callback object (\Callback\PowerState),
 * so that the embedded guest's warning about it can be tested. Windows does
 * not refuse the call; the registered routines run. Never load it on a real
 * Windows machine you care about: PowerState's routines get a made-up event.
 */
#include "../common/kcb_params.h"

DRIVER_INITIALIZE DriverEntry;
static DRIVER_UNLOAD SysNotifyUnload;

static volatile LONG g_called;

static VOID Heard(PVOID context, PVOID argument1, PVOID argument2)
{
    UNREFERENCED_PARAMETER(context);
    UNREFERENCED_PARAMETER(argument1);
    UNREFERENCED_PARAMETER(argument2);
    InterlockedIncrement((LONG *)&g_called);
}

NTSTATUS DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry)
{
    UNICODE_STRING name;
    OBJECT_ATTRIBUTES attributes;
    PCALLBACK_OBJECT object;
    PVOID registration;
    NTSTATUS status;

    UNREFERENCED_PARAMETER(registry);
    RtlInitUnicodeString(&name, L"\\Callback\\PowerState");
    InitializeObjectAttributes(&attributes, &name, OBJ_CASE_INSENSITIVE, NULL, NULL);
    status = ExCreateCallback(&object, &attributes, FALSE, TRUE);
    if (!NT_SUCCESS(status)) {
        KCB_LOG("[sysnotify] ExCreateCallback error code:(0x%08x).\n", (unsigned int)status);
        return status;
    }
    registration = ExRegisterCallback(object, Heard, NULL);
    /* PO_CB_AC_STATUS (Argument1), TRUE: "on AC power" (Argument2). */
    ExNotifyCallback(object, (PVOID)PO_CB_AC_STATUS, (PVOID)TRUE);
    KCB_LOG("[sysnotify] routine called %ld time(s).\n", (long)g_called);
    if (registration != NULL)
        ExUnregisterCallback(registration);
    ObDereferenceObject(object);
    driver->DriverUnload = SysNotifyUnload;
    return STATUS_SUCCESS;
}

static VOID SysNotifyUnload(PDRIVER_OBJECT driver)
{
    UNREFERENCED_PARAMETER(driver);
    KCB_LOG("[sysnotify] unloaded.\n");
}
