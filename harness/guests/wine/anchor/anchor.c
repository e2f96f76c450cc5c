/*
 * kcbanchor.sys: loaded first into the scenario's winedevice.exe and kept
 * loaded until the session ends, so that the process standing in for the
 * kernel (and kernel state such as permanent callback objects) lives as long
 * as the scenario, whatever the drivers under test do. Logs nothing.
 */
#include <ntddk.h>

DRIVER_INITIALIZE DriverEntry;
static DRIVER_UNLOAD AnchorUnload;

static VOID AnchorUnload(PDRIVER_OBJECT driver)
{
    UNREFERENCED_PARAMETER(driver);
}

NTSTATUS DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry)
{
    UNREFERENCED_PARAMETER(registry);
    driver->DriverUnload = AnchorUnload;
    return STATUS_SUCCESS;
}
