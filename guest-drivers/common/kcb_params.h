/*
 * Reading a driver's configuration from <RegistryPath>\Parameters.
 *
 * Header-only so that each driver stays one translation unit. Works the
 * same on Windows and under Wine: only ZwOpenKey/ZwQueryValueKey are used.
 */
#ifndef KCB_PARAMS_H
#define KCB_PARAMS_H

#include <ntifs.h>

#define KCB_POOL_TAG 0x7062634bu /* 'Kcbp' */

/* DbgPrintEx at ERROR level is never dropped by Windows' print filter. */
#define KCB_LOG(...) DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_ERROR_LEVEL, __VA_ARGS__)

/* Opens <registry>\Parameters for reading; *key is NULL when it does not exist. */
static NTSTATUS kcb_open_parameters(PCUNICODE_STRING registry, HANDLE *key)
{
    static const WCHAR suffix[] = L"\\Parameters";
    UNICODE_STRING path;
    OBJECT_ATTRIBUTES attributes;
    NTSTATUS status;
    USHORT length = (USHORT)(registry->Length + sizeof(suffix));

    *key = NULL;
    path.Buffer = ExAllocatePoolWithTag(PagedPool, length, KCB_POOL_TAG);
    if (path.Buffer == NULL)
        return STATUS_INSUFFICIENT_RESOURCES;
    path.Length = 0;
    path.MaximumLength = length;
    RtlAppendUnicodeStringToString(&path, registry);
    RtlAppendUnicodeToString(&path, suffix);

    InitializeObjectAttributes(&attributes, &path, OBJ_CASE_INSENSITIVE | OBJ_KERNEL_HANDLE, NULL, NULL);
    status = ZwOpenKey(key, KEY_READ, &attributes);
    ExFreePoolWithTag(path.Buffer, KCB_POOL_TAG);
    if (!NT_SUCCESS(status))
        *key = NULL;
    return status;
}

/* Value data as KEY_VALUE_PARTIAL_INFORMATION, or NULL. Caller frees with ExFreePoolWithTag. */
static PKEY_VALUE_PARTIAL_INFORMATION kcb_query_value(HANDLE key, PCWSTR name)
{
    UNICODE_STRING value_name;
    PKEY_VALUE_PARTIAL_INFORMATION info;
    ULONG size = sizeof(KEY_VALUE_PARTIAL_INFORMATION) + 256 * sizeof(WCHAR);
    ULONG needed = 0;

    if (key == NULL)
        return NULL;
    RtlInitUnicodeString(&value_name, name);
    info = ExAllocatePoolWithTag(PagedPool, size, KCB_POOL_TAG);
    if (info == NULL)
        return NULL;
    if (!NT_SUCCESS(ZwQueryValueKey(key, &value_name, KeyValuePartialInformation, info, size, &needed))) {
        ExFreePoolWithTag(info, KCB_POOL_TAG);
        return NULL;
    }
    return info;
}

/* A REG_DWORD value, or fallback when missing or of another type. */
static ULONG kcb_query_dword(HANDLE key, PCWSTR name, ULONG fallback)
{
    PKEY_VALUE_PARTIAL_INFORMATION info = kcb_query_value(key, name);
    ULONG result = fallback;

    if (info != NULL) {
        if (info->Type == REG_DWORD && info->DataLength == sizeof(ULONG))
            result = *(ULONG *)info->Data;
        ExFreePoolWithTag(info, KCB_POOL_TAG);
    }
    return result;
}

/*
 * A REG_SZ value as 7-bit ASCII (other characters become '?'), because
 * DbgPrint's %wZ is not understood everywhere (Wine). Falls back when
 * missing, empty or of another type.
 */
static void kcb_query_ascii(HANDLE key, PCWSTR name, char *out, SIZE_T out_size, const char *fallback)
{
    PKEY_VALUE_PARTIAL_INFORMATION info = kcb_query_value(key, name);
    SIZE_T i = 0;

    if (info != NULL && info->Type == REG_SZ) {
        const WCHAR *text = (const WCHAR *)info->Data;
        SIZE_T chars = info->DataLength / sizeof(WCHAR);
        for (; i < chars && i + 1 < out_size && text[i] != 0; i++)
            out[i] = (text[i] >= 0x20 && text[i] < 0x7f) ? (char)text[i] : '?';
    }
    if (info != NULL)
        ExFreePoolWithTag(info, KCB_POOL_TAG);
    if (i == 0) {
        for (; fallback[i] != 0 && i + 1 < out_size; i++)
            out[i] = fallback[i];
    }
    out[i] = 0;
}

#endif /* KCB_PARAMS_H */
