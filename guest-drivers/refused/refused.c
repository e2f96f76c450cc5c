/*
 * Driver images the embedded guest must refuse before it loads anything
 * (tests of the harness's import check). The source is one tiny driver; the
 * Makefile builds it several ways, each needing something the embedded guest
 * (Wine 8 with the harness's ntoskrnl) does not have:
 *
 *   KCB_NEEDS_UNIMPLEMENTED  imports ExAcquireRundownProtection, which Wine 8's
 *                            x64 ntoskrnl.exe exports only as a stub, and
 *                            ExAllocatePool2 (Windows 10 2004+), which it lacks;
 *   KCB_NEEDS_WDFLDR         imports WdfVersionBind from WDFLDR.SYS (the KMDF
 *                            loader every KMDF driver binds through);
 *   (none)                   plain DbgPrintEx: built as a Win32 GUI DLL or for
 *                            32-bit x86, the image itself is what is wrong.
 *
 * On Windows each would load (the x86 one on 32-bit Windows only).
 */
#include <ntifs.h>

#ifdef KCB_NEEDS_UNIMPLEMENTED
/* Not declared by mingw-w64 10's headers; the import library comes from refused/ntoskrnl-extra.def. */
PVOID NTAPI ExAllocatePool2(ULONG64 flags, SIZE_T size, ULONG tag);
#define POOL_FLAG_NON_PAGED 0x40ULL
#endif

#ifdef KCB_NEEDS_WDFLDR
/* The KMDF loader's bind call (import library from refused/wdfldr.def); never reached here. */
NTSTATUS NTAPI WdfVersionBind(PDRIVER_OBJECT driver, PUNICODE_STRING registry, PVOID bind_info, PVOID *globals);
#endif

DRIVER_INITIALIZE DriverEntry;

NTSTATUS NTAPI DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry)
{
    NTSTATUS status = STATUS_SUCCESS;

    UNREFERENCED_PARAMETER(driver);
    UNREFERENCED_PARAMETER(registry);
#ifdef KCB_NEEDS_UNIMPLEMENTED
    {
        static EX_RUNDOWN_REF rundown;
        PVOID buffer = ExAllocatePool2(POOL_FLAG_NON_PAGED, 16, 0x6652634bu);

        if (buffer == NULL || !ExAcquireRundownProtection(&rundown))
            status = STATUS_INSUFFICIENT_RESOURCES;
    }
#endif
#ifdef KCB_NEEDS_WDFLDR
    {
        PVOID globals = NULL;

        status = WdfVersionBind(driver, registry, NULL, &globals);
    }
#endif
    DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_ERROR_LEVEL, "[refused] DriverEntry status:(0x%08x)\n", (unsigned int)status);
    return status;
}
