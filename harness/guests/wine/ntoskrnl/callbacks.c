/*
 * Callback objects for the embedded (Wine) guest.
 *
 * Wine 8 stubs ExCreateCallback/ExRegisterCallback/ExNotifyCallback/
 * ExUnregisterCallback. This file is built into a native ntoskrnl.exe that is
 * installed into the harness's own Wine prefix; every other export is
 * forwarded to Wine's builtin ntoskrnl, copied into the prefix as
 * ntoskwine.dll (see ntoskrnl.py). The drivers under test are never patched.
 *
 * Semantics follow Microsoft's documentation of callback objects (each
 * behaviour, its source and its check: docs/windows-facts.md):
 *  - ExCreateCallback opens an existing named object (Create TRUE or FALSE);
 *    with Create=FALSE and no such name it fails with
 *    STATUS_OBJECT_NAME_NOT_FOUND; AllowMultipleCallbacks only counts when
 *    the object is created. Unnamed objects are not permitted:
 *    STATUS_UNSUCCESSFUL.
 *  - The system-defined objects \Callback\SetSystemTime, \Callback\PowerState
 *    and \Callback\ProcessorAdd exist from the start (permanent, case-
 *    insensitive, several registrations). Nothing here ever notifies them (no
 *    clock changes, power events or new processors reach a driver); a driver
 *    that notifies one itself, which the documentation forbids, gets a
 *    "kcb-shim: warning:" line and its routines called as Windows would.
 *  - The name is kept in the namespace only with OBJ_PERMANENT: without it the
 *    only handle is closed before ExCreateCallback returns, and on Windows a
 *    temporary object's name disappears with its last handle.
 *  - OBJ_CASE_INSENSITIVE selects the name comparison.
 *  - AllowMultipleCallbacks=FALSE limits the object to one registration.
 *  - ExNotifyCallback calls the registered routines in registration order, on
 *    the caller's thread; ExUnregisterCallback waits for a running routine.
 *  - Each registration holds a reference to its object; an object goes away
 *    with its last reference unless it is permanent (ObMakeTemporaryObject
 *    makes it temporary again).
 * Where it cannot be like Windows: there is no object directory tree (names
 * must be \Callback\<leaf>), no handles, no IRQL, and unregistering from
 * inside the routine being unregistered does not wait (it would deadlock).
 */
/* We are (part of) ntoskrnl: no dllimport on the exports defined here. */
#define _NTOSKRNL_ 1
#define _NTSYSTEM_ 1
#include <ntifs.h>

#include "triage.h"

#define SHIM_LOG(...) DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_ERROR_LEVEL, __VA_ARGS__)
#define CALLBACK_MAGIC 0x6b636243u /* 'Ccbk' */
#define SHIM_TAG 0x6d696853u       /* 'Shim' */

/* Implemented by Wine's builtin ntoskrnl (ntoskwine.dll); used for everything that is not ours. */
LONG_PTR FASTCALL wine_ObfReferenceObject(PVOID object);
LONG_PTR FASTCALL wine_ObfDereferenceObject(PVOID object);
NTSTATUS NTAPI wine_ObReferenceObjectByPointer(PVOID object, ACCESS_MASK access, POBJECT_TYPE type, KPROCESSOR_MODE mode);
VOID NTAPI wine_ObMakeTemporaryObject(PVOID object);
NTSTATUS NTAPI wine_ZwLoadDriver(PUNICODE_STRING service);
NTSTATUS NTAPI wine_ZwUnloadDriver(PUNICODE_STRING service);

typedef struct callback_object {
    ULONG magic;
    LONG references;
    BOOLEAN permanent;
    BOOLEAN named;
    BOOLEAN allow_multiple;
    const char *system_name;  /* set for the objects the system defines */
    UNICODE_STRING name;
    LIST_ENTRY link;          /* in g_objects */
    LIST_ENTRY registrations; /* of struct registration, in registration order */
    KSPIN_LOCK lock;          /* guards registrations and their busy counts */
    KEVENT idle;              /* set when a busy registration that is being unregistered goes idle */
} callback_object;

typedef struct registration {
    LIST_ENTRY link;
    callback_object *object;
    PCALLBACK_FUNCTION routine;
    PVOID context;
    LONG busy;
    BOOLEAN unregistering;
    BOOLEAN free_after_call;  /* unregistered from inside its own routine */
    HANDLE running_thread;    /* id of the last thread that entered the routine */
} registration;

static LIST_ENTRY g_objects = {&g_objects, &g_objects};
static KSPIN_LOCK g_objects_lock = 0;

static const WCHAR g_directory[] = L"\\Callback\\";

static BOOLEAN in_callback_directory(PCUNICODE_STRING name)
{
    USHORT prefix = sizeof(g_directory) - sizeof(WCHAR);
    UNICODE_STRING head;
    UNICODE_STRING directory;
    USHORT i;

    if (name->Length <= prefix)
        return FALSE;
    head.Buffer = name->Buffer;
    head.Length = head.MaximumLength = prefix;
    RtlInitUnicodeString(&directory, g_directory);
    if (!RtlEqualUnicodeString(&head, &directory, TRUE))
        return FALSE;
    for (i = prefix / sizeof(WCHAR); i < name->Length / sizeof(WCHAR); i++) {
        if (name->Buffer[i] == L'\\')
            return FALSE;
    }
    return TRUE;
}

/* Caller holds g_objects_lock. */
static callback_object *find_named(PCUNICODE_STRING name, BOOLEAN case_insensitive)
{
    LIST_ENTRY *entry;

    for (entry = g_objects.Flink; entry != &g_objects; entry = entry->Flink) {
        callback_object *object = CONTAINING_RECORD(entry, callback_object, link);
        if (object->named && RtlEqualUnicodeString(&object->name, name, case_insensitive))
            return object;
    }
    return NULL;
}

/* Caller holds g_objects_lock. */
static BOOLEAN is_ours(PVOID pointer)
{
    LIST_ENTRY *entry;

    if (pointer == NULL)
        return FALSE;
    for (entry = g_objects.Flink; entry != &g_objects; entry = entry->Flink) {
        if (CONTAINING_RECORD(entry, callback_object, link) == pointer)
            return TRUE;
    }
    return FALSE;
}

static BOOLEAN lookup_ours(PVOID pointer)
{
    KIRQL irql;
    BOOLEAN ours;

    KeAcquireSpinLock(&g_objects_lock, &irql);
    ours = is_ours(pointer);
    KeReleaseSpinLock(&g_objects_lock, irql);
    return ours;
}

static void release_object(callback_object *object)
{
    KIRQL irql;
    BOOLEAN destroy;

    KeAcquireSpinLock(&g_objects_lock, &irql);
    destroy = (InterlockedDecrement(&object->references) == 0) && !object->permanent;
    if (destroy)
        RemoveEntryList(&object->link);
    KeReleaseSpinLock(&g_objects_lock, irql);
    if (destroy) {
        object->magic = 0;
        if (object->name.Buffer != NULL)
            ExFreePoolWithTag(object->name.Buffer, SHIM_TAG);
        ExFreePoolWithTag(object, SHIM_TAG);
    }
}

static callback_object *new_object(PCUNICODE_STRING name, BOOLEAN permanent, BOOLEAN allow_multiple)
{
    callback_object *object = ExAllocatePoolWithTag(NonPagedPool, sizeof(*object), SHIM_TAG);

    if (object == NULL)
        return NULL;
    RtlZeroMemory(object, sizeof(*object));
    object->magic = CALLBACK_MAGIC;
    object->references = 1;
    object->allow_multiple = allow_multiple;
    InitializeListHead(&object->registrations);
    KeInitializeSpinLock(&object->lock);
    KeInitializeEvent(&object->idle, NotificationEvent, FALSE);
    if (name != NULL && permanent) {
        object->name.Buffer = ExAllocatePoolWithTag(NonPagedPool, name->Length, SHIM_TAG);
        if (object->name.Buffer == NULL) {
            ExFreePoolWithTag(object, SHIM_TAG);
            return NULL;
        }
        RtlCopyMemory(object->name.Buffer, name->Buffer, name->Length);
        object->name.Length = object->name.MaximumLength = name->Length;
        object->named = TRUE;
        object->permanent = TRUE;
    }
    return object;
}

NTSTATUS NTAPI ExCreateCallback(PCALLBACK_OBJECT *result, POBJECT_ATTRIBUTES attributes, BOOLEAN create,
                                BOOLEAN allow_multiple)
{
    PCUNICODE_STRING name = attributes != NULL ? attributes->ObjectName : NULL;
    BOOLEAN case_insensitive = attributes != NULL && (attributes->Attributes & OBJ_CASE_INSENSITIVE);
    BOOLEAN permanent = attributes != NULL && (attributes->Attributes & OBJ_PERMANENT);
    callback_object *object = NULL;
    callback_object *created = NULL;
    KIRQL irql;

    if (name != NULL && name->Length == 0)
        name = NULL;
    /* "Unnamed callback objects are not permitted ... the call fails with STATUS_UNSUCCESSFUL." */
    if (name == NULL)
        return STATUS_UNSUCCESSFUL;
    if (!in_callback_directory(name))
        return STATUS_OBJECT_PATH_NOT_FOUND;

    if (create) {
        created = new_object(name, permanent, allow_multiple);
        if (created == NULL)
            return STATUS_INSUFFICIENT_RESOURCES;
    }

    KeAcquireSpinLock(&g_objects_lock, &irql);
    if (name != NULL)
        object = find_named(name, case_insensitive);
    if (object != NULL) {
        InterlockedIncrement(&object->references);
    } else if (created != NULL) {
        InsertTailList(&g_objects, &created->link);
        object = created;
        created = NULL;
    }
    KeReleaseSpinLock(&g_objects_lock, irql);

    if (created != NULL) {
        if (created->name.Buffer != NULL)
            ExFreePoolWithTag(created->name.Buffer, SHIM_TAG);
        ExFreePoolWithTag(created, SHIM_TAG);
    }
    if (object == NULL)
        return STATUS_OBJECT_NAME_NOT_FOUND;
    *result = (PCALLBACK_OBJECT)object;
    return STATUS_SUCCESS;
}

PVOID NTAPI ExRegisterCallback(PCALLBACK_OBJECT handle, PCALLBACK_FUNCTION routine, PVOID context)
{
    callback_object *object = (callback_object *)handle;
    registration *entry;
    KIRQL irql;

    if (!lookup_ours(object) || routine == NULL)
        return NULL;
    entry = ExAllocatePoolWithTag(NonPagedPool, sizeof(*entry), SHIM_TAG);
    if (entry == NULL)
        return NULL;
    RtlZeroMemory(entry, sizeof(*entry));
    entry->object = object;
    entry->routine = routine;
    entry->context = context;

    KeAcquireSpinLock(&object->lock, &irql);
    if (!object->allow_multiple && !IsListEmpty(&object->registrations)) {
        KeReleaseSpinLock(&object->lock, irql);
        ExFreePoolWithTag(entry, SHIM_TAG);
        return NULL;
    }
    InterlockedIncrement(&object->references);
    InsertTailList(&object->registrations, &entry->link);
    KeReleaseSpinLock(&object->lock, irql);
    return entry;
}

VOID NTAPI ExUnregisterCallback(PVOID handle)
{
    registration *entry = handle;
    callback_object *object = entry->object;
    KIRQL irql;

    KeAcquireSpinLock(&object->lock, &irql);
    entry->unregistering = TRUE;
    if (entry->busy == 1 && entry->running_thread == PsGetCurrentThreadId()) {
        /* Called from inside its own routine: ExNotifyCallback finishes the job. */
        entry->free_after_call = TRUE;
        KeReleaseSpinLock(&object->lock, irql);
        return;
    }
    while (entry->busy > 0) {
        KeClearEvent(&object->idle);
        KeReleaseSpinLock(&object->lock, irql);
        KeWaitForSingleObject(&object->idle, Executive, KernelMode, FALSE, NULL);
        KeAcquireSpinLock(&object->lock, &irql);
    }
    RemoveEntryList(&entry->link);
    KeReleaseSpinLock(&object->lock, irql);
    ExFreePoolWithTag(entry, SHIM_TAG);
    release_object(object);
}

VOID NTAPI ExNotifyCallback(PCALLBACK_OBJECT handle, PVOID argument1, PVOID argument2)
{
    callback_object *object = (callback_object *)handle;
    LIST_ENTRY *link;
    KIRQL irql;

    if (!lookup_ours(object)) {
        SHIM_LOG("kcb-shim: ExNotifyCallback(%p): not a callback object\n", handle);
        return;
    }
    if (object->system_name != NULL)
        SHIM_LOG("kcb-shim: warning: ExNotifyCallback on the system-defined callback object %s: "
                 "drivers must not notify it (ExNotifyCallback documentation)\n", object->system_name);
    KeAcquireSpinLock(&object->lock, &irql);
    link = object->registrations.Flink;
    while (link != &object->registrations) {
        registration *entry = CONTAINING_RECORD(link, registration, link);

        if (entry->unregistering) {
            link = link->Flink;
            continue;
        }
        /* busy keeps the entry, and so its Flink, valid while the lock is dropped. */
        entry->busy++;
        entry->running_thread = PsGetCurrentThreadId();
        KeReleaseSpinLock(&object->lock, irql);
        entry->routine(entry->context, argument1, argument2);
        KeAcquireSpinLock(&object->lock, &irql);
        entry->busy--;
        link = link->Flink;
        if (entry->free_after_call && entry->busy == 0) {
            RemoveEntryList(&entry->link);
            ExFreePoolWithTag(entry, SHIM_TAG);
            /* The caller holds a reference, so this never drops the last one. */
            InterlockedDecrement(&object->references);
        } else if (entry->unregistering && entry->busy == 0) {
            KeSetEvent(&object->idle, IO_NO_INCREMENT, FALSE);
        }
    }
    KeReleaseSpinLock(&object->lock, irql);
}

LONG_PTR FASTCALL ObfReferenceObject(PVOID pointer)
{
    if (lookup_ours(pointer))
        return InterlockedIncrement(&((callback_object *)pointer)->references);
    return wine_ObfReferenceObject(pointer);
}

LONG_PTR FASTCALL ObfDereferenceObject(PVOID pointer)
{
    if (lookup_ours(pointer)) {
        release_object(pointer);
        return 0;
    }
    return wine_ObfDereferenceObject(pointer);
}

NTSTATUS NTAPI ObReferenceObjectByPointer(PVOID pointer, ACCESS_MASK access, POBJECT_TYPE type, KPROCESSOR_MODE mode)
{
    if (lookup_ours(pointer)) {
        InterlockedIncrement(&((callback_object *)pointer)->references);
        return STATUS_SUCCESS;
    }
    return wine_ObReferenceObjectByPointer(pointer, access, type, mode);
}

VOID NTAPI ObMakeTemporaryObject(PVOID pointer)
{
    callback_object *object = pointer;
    KIRQL irql;
    BOOLEAN destroy;

    if (!lookup_ours(pointer)) {
        wine_ObMakeTemporaryObject(pointer);
        return;
    }
    KeAcquireSpinLock(&g_objects_lock, &irql);
    object->permanent = FALSE;
    object->named = FALSE; /* the name goes with the permanent flag: nobody holds a handle */
    destroy = object->references == 0;
    if (destroy)
        RemoveEntryList(&object->link);
    KeReleaseSpinLock(&g_objects_lock, irql);
    if (destroy) {
        if (object->name.Buffer != NULL)
            ExFreePoolWithTag(object->name.Buffer, SHIM_TAG);
        ExFreePoolWithTag(object, SHIM_TAG);
    }
}

/*
 * winedevice.exe starts a driver through ZwLoadDriver, which returns what
 * DriverEntry returned. sc.exe only sees the Win32 error mapped from it, so
 * the NTSTATUS is announced here for the harness (a "kcb-shim:" line).
 */
static void service_leaf(PCUNICODE_STRING path, char *out, SIZE_T size)
{
    USHORT chars = path != NULL ? path->Length / sizeof(WCHAR) : 0;
    USHORT start = chars;
    SIZE_T i = 0;

    while (start > 0 && path->Buffer[start - 1] != L'\\')
        start--;
    for (; start < chars && i + 1 < size; start++, i++)
        out[i] = (path->Buffer[start] > 0x20 && path->Buffer[start] < 0x7f) ? (char)path->Buffer[start] : '?';
    out[i] = 0;
}

NTSTATUS NTAPI ZwLoadDriver(PUNICODE_STRING service)
{
    NTSTATUS status;
    char name[128];

    /* Wine's DbgPrint does not know %wZ. */
    service_leaf(service, name, sizeof(name));
    kcb_triage_driver_loading(name);
    status = wine_ZwLoadDriver(service);
    SHIM_LOG("kcb-shim: load %s status 0x%08x\n", name, (unsigned int)status);
    return status;
}

NTSTATUS NTAPI ZwUnloadDriver(PUNICODE_STRING service)
{
    NTSTATUS status;
    char name[128];

    kcb_triage_unload_begin();
    status = wine_ZwUnloadDriver(service);
    service_leaf(service, name, sizeof(name));
    kcb_triage_unload_end(name);
    SHIM_LOG("kcb-shim: unload %s status 0x%08x\n", name, (unsigned int)status);
    return status;
}

/* The callback objects Windows creates at boot for drivers to open (as ReactOS does: permanent, case-insensitive, multiple). */
static void create_system_objects(void)
{
    static const struct {
        PCWSTR name;
        const char *text;
    } system_objects[] = {
        {L"\\Callback\\SetSystemTime", "\\Callback\\SetSystemTime"},
        {L"\\Callback\\PowerState", "\\Callback\\PowerState"},
        {L"\\Callback\\ProcessorAdd", "\\Callback\\ProcessorAdd"},
    };
    ULONG i;

    for (i = 0; i < sizeof(system_objects) / sizeof(system_objects[0]); i++) {
        UNICODE_STRING name;
        OBJECT_ATTRIBUTES attributes;
        PCALLBACK_OBJECT object;

        RtlInitUnicodeString(&name, system_objects[i].name);
        InitializeObjectAttributes(&attributes, &name, OBJ_PERMANENT | OBJ_CASE_INSENSITIVE, NULL, NULL);
        if (NT_SUCCESS(ExCreateCallback(&object, &attributes, TRUE, TRUE))) {
            ((callback_object *)object)->system_name = system_objects[i].text;
            release_object((callback_object *)object); /* the name keeps it: it is permanent */
        }
    }
}

BOOL WINAPI ShimEntry(PVOID module, ULONG reason, PVOID reserved)
{
    UNREFERENCED_PARAMETER(module);
    UNREFERENCED_PARAMETER(reserved);
    if (reason == 1 /* DLL_PROCESS_ATTACH (winnt.h; not in the DDK headers) */) {
        create_system_objects();
        kcb_triage_init();
    }
    return TRUE;
}
