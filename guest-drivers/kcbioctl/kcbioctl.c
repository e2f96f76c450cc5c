/*
 * kcbioctl.sys: a driver exercised by a user-mode program (the harness's
 * `run:` step). DriverEntry creates \Device\KcbIoctl and the symbolic link
 * \DosDevices\KcbIoctl; IRP_MJ_CREATE, IRP_MJ_CLOSE and IRP_MJ_DEVICE_CONTROL
 * are handled, each logged with DbgPrintEx. IOCTL_KCB_ECHO (METHOD_BUFFERED)
 * logs the text it received and answers "kcbioctl heard N bytes".
 */
#include "../common/kcb_params.h"
#include "../common/kcb_ioctl.h"

DRIVER_INITIALIZE DriverEntry;
static DRIVER_UNLOAD KcbUnload;
static DRIVER_DISPATCH KcbCreateClose;
static DRIVER_DISPATCH KcbDeviceControl;

static PDEVICE_OBJECT g_device;

static NTSTATUS complete(PIRP irp, NTSTATUS status, ULONG_PTR information)
{
    irp->IoStatus.Status = status;
    irp->IoStatus.Information = information;
    IoCompleteRequest(irp, IO_NO_INCREMENT);
    return status;
}

static NTSTATUS KcbCreateClose(PDEVICE_OBJECT device, PIRP irp)
{
    PIO_STACK_LOCATION stack = IoGetCurrentIrpStackLocation(irp);

    UNREFERENCED_PARAMETER(device);
    KCB_LOG("kcbioctl: %s\n", stack->MajorFunction == IRP_MJ_CREATE ? "open" : "close");
    return complete(irp, STATUS_SUCCESS, 0);
}

/* The input as printable ASCII (anything else as '?'), at most KCB_IOCTL_MAX_TEXT characters. */
static void printable(const UCHAR *input, ULONG length, char *text)
{
    ULONG index;

    if (length > KCB_IOCTL_MAX_TEXT)
        length = KCB_IOCTL_MAX_TEXT;
    for (index = 0; index < length; index++)
        text[index] = (input[index] >= 0x20 && input[index] < 0x7f && input[index] != '"') ? (char)input[index] : '?';
    text[length] = 0;
}

/* "kcbioctl heard N bytes" into reply (64 bytes are enough), without a NUL; returns its length. No CRT: only
 * what every kernel exports. */
static ULONG format_reply(ULONG count, char *reply)
{
    static const char head[] = "kcbioctl heard ", tail[] = " bytes";
    char digits[10];
    ULONG length = 0, used = 0, index;

    for (index = 0; index < sizeof(head) - 1; index++)
        reply[length++] = head[index];
    do {
        digits[used++] = (char)('0' + count % 10);
        count /= 10;
    } while (count != 0);
    while (used > 0)
        reply[length++] = digits[--used];
    for (index = 0; index < sizeof(tail) - 1; index++)
        reply[length++] = tail[index];
    return length;
}

static NTSTATUS KcbDeviceControl(PDEVICE_OBJECT device, PIRP irp)
{
    PIO_STACK_LOCATION stack = IoGetCurrentIrpStackLocation(irp);
    ULONG code = stack->Parameters.DeviceIoControl.IoControlCode;
    ULONG in_length = stack->Parameters.DeviceIoControl.InputBufferLength;
    ULONG out_length = stack->Parameters.DeviceIoControl.OutputBufferLength;
    UCHAR *buffer = irp->AssociatedIrp.SystemBuffer;
    char text[KCB_IOCTL_MAX_TEXT + 1];
    char reply[64];
    ULONG reply_length;

    UNREFERENCED_PARAMETER(device);
    if (code != IOCTL_KCB_ECHO) {
        KCB_LOG("kcbioctl: unknown IOCTL 0x%08lx\n", (unsigned long)code);
        return complete(irp, STATUS_INVALID_DEVICE_REQUEST, 0);
    }
    printable(buffer != NULL ? buffer : (const UCHAR *)"", buffer != NULL ? in_length : 0, text);
    KCB_LOG("kcbioctl: got IOCTL 0x%08lx with %lu bytes: \"%s\"\n", (unsigned long)code, (unsigned long)in_length, text);
    reply_length = format_reply(in_length, reply);
    if (buffer == NULL || out_length < reply_length) {
        KCB_LOG("kcbioctl: output buffer of %lu bytes is too small\n", (unsigned long)out_length);
        return complete(irp, STATUS_BUFFER_TOO_SMALL, 0);
    }
    RtlCopyMemory(buffer, reply, reply_length); /* METHOD_BUFFERED: the same system buffer carries the reply */
    return complete(irp, STATUS_SUCCESS, reply_length);
}

static VOID KcbUnload(PDRIVER_OBJECT driver)
{
    UNICODE_STRING link;

    UNREFERENCED_PARAMETER(driver);
    RtlInitUnicodeString(&link, KCB_IOCTL_LINK);
    IoDeleteSymbolicLink(&link);
    if (g_device != NULL)
        IoDeleteDevice(g_device);
    KCB_LOG("kcbioctl: unloaded\n");
}

NTSTATUS DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry)
{
    UNICODE_STRING name, link;
    NTSTATUS status;

    UNREFERENCED_PARAMETER(registry);
    RtlInitUnicodeString(&name, KCB_IOCTL_DEVICE);
    RtlInitUnicodeString(&link, KCB_IOCTL_LINK);
    status = IoCreateDevice(driver, 0, &name, FILE_DEVICE_UNKNOWN, FILE_DEVICE_SECURE_OPEN, FALSE, &g_device);
    if (NT_SUCCESS(status)) {
        status = IoCreateSymbolicLink(&link, &name);
        if (!NT_SUCCESS(status)) {
            IoDeleteDevice(g_device);
            g_device = NULL;
        }
    }
    if (NT_SUCCESS(status)) {
        driver->MajorFunction[IRP_MJ_CREATE] = KcbCreateClose;
        driver->MajorFunction[IRP_MJ_CLOSE] = KcbCreateClose;
        driver->MajorFunction[IRP_MJ_DEVICE_CONTROL] = KcbDeviceControl;
        driver->DriverUnload = KcbUnload;
    }
    KCB_LOG("[kcbioctl] DriverEntry status:(0x%08x).\n", (unsigned int)status);
    return status;
}
