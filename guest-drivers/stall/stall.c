/*
 * stall.sys: a driver whose DriverEntry does not return for Parameters\StallMs
 * milliseconds (default 10 minutes). For the harness's own tests of hang
 * detection: a load step must end as "hung", and the guest must be torn down.
 */
#include "../common/kcb_params.h"

DRIVER_INITIALIZE DriverEntry;

NTSTATUS DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry)
{
    HANDLE parameters = NULL;
    ULONG stall_ms = 600000;
    KEVENT never;
    LARGE_INTEGER delay;

    UNREFERENCED_PARAMETER(driver);
    if (NT_SUCCESS(kcb_open_parameters(registry, &parameters))) {
        stall_ms = kcb_query_dword(parameters, L"StallMs", stall_ms);
        ZwClose(parameters);
    }
    KCB_LOG("[stall] DriverEntry stalls for %lu ms.\n", (unsigned long)stall_ms);
    KeInitializeEvent(&never, NotificationEvent, FALSE);
    delay.QuadPart = -10000LL * stall_ms;
    KeWaitForSingleObject(&never, Executive, KernelMode, FALSE, &delay);
    KCB_LOG("[stall] DriverEntry returns.\n");
    return STATUS_SUCCESS;
}
