/*
 * kcbagent.exe: the Wine guest's agent. It is the first process of every Wine
 * session the harness starts (so the session's services and winedevice.exe
 * inherit its stderr, where DbgPrint goes), and it carries out service
 * commands read from stdin, one per line, fields separated by TAB:
 *
 *   install <service> <group> <image path>    create or reconfigure a kernel-driver service
 *   clearparams <service>                      delete <service>\Parameters
 *   param <service> <name> dword <value>       set a REG_DWORD in <service>\Parameters
 *   param <service> <name> sz <text>           set a REG_SZ in <service>\Parameters
 *   start <service> <timeout ms>               StartService and wait while START_PENDING
 *   stop <service> <timeout ms>                stop and wait while STOP_PENDING
 *   exit
 *
 * Every command answers one line on stdout: "ok <detail>" or
 * "err <win32 error> <detail>". Fields never contain TAB or newline (the
 * harness checks), so nothing is interpreted by a shell or by sc.exe.
 *
 * Run as "kcbagent.exe stacks <service> <timeout ms>" it is a one-shot tool
 * instead (the session's agent may be stuck in a StartService that never
 * returns): it asks the driver host whose first driver is <service> for its
 * threads' stacks (the shim's named events, see ntoskrnl/triage.c), waits
 * until they are printed, answers one line as above and exits (0 ok, 1 error).
 */
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#define MAX_LINE 4096
#define MAX_FIELDS 8

static SC_HANDLE g_manager;

static void reply_ok(const char *detail)
{
    printf("ok %s\n", detail);
    fflush(stdout);
}

static void reply_err(DWORD error, const char *detail)
{
    printf("err %lu %s\n", (unsigned long)error, detail);
    fflush(stdout);
}

static WCHAR *widen(const char *text)
{
    int chars = MultiByteToWideChar(CP_UTF8, 0, text, -1, NULL, 0);
    WCHAR *wide = malloc(sizeof(WCHAR) * (chars > 0 ? chars : 1));
    if (wide != NULL)
        MultiByteToWideChar(CP_UTF8, 0, text, -1, wide, chars > 0 ? chars : 1);
    return wide;
}

static int split(char *line, char **fields)
{
    int count = 0;
    char *cursor = line;

    while (count < MAX_FIELDS) {
        char *tab = strchr(cursor, '\t');
        fields[count++] = cursor;
        if (tab == NULL)
            break;
        *tab = 0;
        cursor = tab + 1;
    }
    return count;
}

static void do_install(const char *service, const char *group, const char *image)
{
    WCHAR *name = widen(service), *load_group = widen(group), *path = widen(image);
    SC_HANDLE handle = CreateServiceW(g_manager, name, name, SERVICE_ALL_ACCESS, SERVICE_KERNEL_DRIVER,
                                      SERVICE_DEMAND_START, SERVICE_ERROR_NORMAL, path, load_group, NULL, NULL,
                                      NULL, NULL);
    if (handle == NULL && GetLastError() == ERROR_SERVICE_EXISTS) {
        handle = OpenServiceW(g_manager, name, SERVICE_ALL_ACCESS);
        if (handle != NULL
            && !ChangeServiceConfigW(handle, SERVICE_KERNEL_DRIVER, SERVICE_DEMAND_START, SERVICE_ERROR_NORMAL, path,
                                     load_group, NULL, NULL, NULL, NULL, name)) {
            DWORD error = GetLastError();
            CloseServiceHandle(handle);
            handle = NULL;
            SetLastError(error);
        }
    }
    if (handle == NULL)
        reply_err(GetLastError(), "install failed");
    else {
        CloseServiceHandle(handle);
        reply_ok("installed");
    }
    free(name);
    free(load_group);
    free(path);
}

static LONG open_parameters(const char *service, BOOL create, HKEY *key)
{
    char path[512];
    WCHAR *wide;
    LONG result;

    snprintf(path, sizeof(path), "System\\CurrentControlSet\\Services\\%s\\Parameters", service);
    wide = widen(path);
    if (create)
        result = RegCreateKeyExW(HKEY_LOCAL_MACHINE, wide, 0, NULL, 0, KEY_ALL_ACCESS, NULL, key, NULL);
    else
        result = RegOpenKeyExW(HKEY_LOCAL_MACHINE, wide, 0, KEY_ALL_ACCESS, key);
    free(wide);
    return result;
}

static void do_clearparams(const char *service)
{
    char path[512];
    WCHAR *wide;
    LONG result;

    snprintf(path, sizeof(path), "System\\CurrentControlSet\\Services\\%s\\Parameters", service);
    wide = widen(path);
    result = RegDeleteTreeW(HKEY_LOCAL_MACHINE, wide);
    if (result == ERROR_SUCCESS || result == ERROR_FILE_NOT_FOUND)
        RegDeleteKeyW(HKEY_LOCAL_MACHINE, wide);
    free(wide);
    if (result == ERROR_SUCCESS || result == ERROR_FILE_NOT_FOUND)
        reply_ok("cleared");
    else
        reply_err((DWORD)result, "clearing parameters failed");
}

static void do_param(const char *service, const char *value_name, const char *type, const char *value)
{
    HKEY key;
    WCHAR *name;
    LONG result = open_parameters(service, TRUE, &key);

    if (result != ERROR_SUCCESS) {
        reply_err((DWORD)result, "cannot create Parameters key");
        return;
    }
    name = widen(value_name);
    if (strcmp(type, "dword") == 0) {
        DWORD number = (DWORD)strtoul(value, NULL, 10);
        result = RegSetValueExW(key, name, 0, REG_DWORD, (const BYTE *)&number, sizeof(number));
    } else if (strcmp(type, "sz") == 0) {
        WCHAR *text = widen(value);
        result = RegSetValueExW(key, name, 0, REG_SZ, (const BYTE *)text, (DWORD)((wcslen(text) + 1) * sizeof(WCHAR)));
        free(text);
    } else {
        result = ERROR_INVALID_PARAMETER;
    }
    free(name);
    RegCloseKey(key);
    if (result == ERROR_SUCCESS)
        reply_ok("set");
    else
        reply_err((DWORD)result, "setting parameter failed");
}

static BOOL wait_state(SC_HANDLE handle, DWORD pending, DWORD timeout_ms, SERVICE_STATUS *status)
{
    ULONGLONG start = GetTickCount64();

    for (;;) {
        if (!QueryServiceStatus(handle, status))
            return FALSE;
        if (status->dwCurrentState != pending)
            return TRUE;
        if (GetTickCount64() - start > timeout_ms) {
            SetLastError(ERROR_TIMEOUT);
            return FALSE;
        }
        Sleep(5);
    }
}

static void do_control(const char *service, BOOL start, DWORD timeout_ms)
{
    WCHAR *name = widen(service);
    SC_HANDLE handle = OpenServiceW(g_manager, name, SERVICE_ALL_ACCESS);
    SERVICE_STATUS status;
    char detail[128];
    BOOL ok;

    free(name);
    if (handle == NULL) {
        reply_err(GetLastError(), "no such service");
        return;
    }
    memset(&status, 0, sizeof(status));
    if (start)
        ok = StartServiceW(handle, 0, NULL);
    else
        ok = ControlService(handle, SERVICE_CONTROL_STOP, &status);
    if (!ok) {
        DWORD error = GetLastError();
        CloseServiceHandle(handle);
        reply_err(error, start ? "StartService failed" : "ControlService(STOP) failed");
        return;
    }
    ok = wait_state(handle, start ? SERVICE_START_PENDING : SERVICE_STOP_PENDING, timeout_ms, &status);
    CloseServiceHandle(handle);
    if (!ok) {
        reply_err(GetLastError(), "waiting for the service failed");
        return;
    }
    snprintf(detail, sizeof(detail), "state=%lu win32=%lu", (unsigned long)status.dwCurrentState,
             (unsigned long)status.dwWin32ExitCode);
    if (start && status.dwCurrentState != SERVICE_RUNNING)
        reply_err(status.dwWin32ExitCode ? status.dwWin32ExitCode : ERROR_SERVICE_NOT_ACTIVE, detail);
    else if (!start && status.dwCurrentState != SERVICE_STOPPED)
        reply_err(ERROR_SERVICE_REQUEST_TIMEOUT, detail);
    else
        reply_ok(detail);
}

static int request_stacks(const char *service, DWORD timeout_ms)
{
    WCHAR name[128];
    HANDLE request, done;
    DWORD waited;

    swprintf(name, 128, L"Global\\kcb-triage-done-%hs", service);
    done = OpenEventW(SYNCHRONIZE, FALSE, name);
    swprintf(name, 128, L"Global\\kcb-triage-stacks-%hs", service);
    request = OpenEventW(EVENT_MODIFY_STATE, FALSE, name);
    if (request == NULL || done == NULL) {
        DWORD error = GetLastError();
        if (request != NULL)
            CloseHandle(request);
        if (done != NULL)
            CloseHandle(done);
        reply_err(error, "no driver host watches for stack requests under this service");
        return 1;
    }
    SetEvent(request);
    waited = WaitForSingleObject(done, timeout_ms);
    CloseHandle(request);
    CloseHandle(done);
    if (waited != WAIT_OBJECT_0) {
        reply_err(ERROR_TIMEOUT, "the driver host did not report its stacks in time");
        return 1;
    }
    reply_ok("stacks reported");
    return 0;
}

int main(int argc, char **argv)
{
    char line[MAX_LINE];
    char *fields[MAX_FIELDS];

    if (argc == 4 && strcmp(argv[1], "stacks") == 0)
        return request_stacks(argv[2], (DWORD)strtoul(argv[3], NULL, 10));
    g_manager = OpenSCManagerW(NULL, NULL, SC_MANAGER_ALL_ACCESS);
    if (g_manager == NULL) {
        reply_err(GetLastError(), "OpenSCManager failed");
        return 1;
    }
    reply_ok("ready");
    while (fgets(line, sizeof(line), stdin) != NULL) {
        int count;
        line[strcspn(line, "\r\n")] = 0;
        count = split(line, fields);
        if (strcmp(fields[0], "exit") == 0)
            break;
        else if (strcmp(fields[0], "install") == 0 && count == 4)
            do_install(fields[1], fields[2], fields[3]);
        else if (strcmp(fields[0], "clearparams") == 0 && count == 2)
            do_clearparams(fields[1]);
        else if (strcmp(fields[0], "param") == 0 && count == 5)
            do_param(fields[1], fields[2], fields[3], fields[4]);
        else if (strcmp(fields[0], "start") == 0 && count == 3)
            do_control(fields[1], TRUE, (DWORD)strtoul(fields[2], NULL, 10));
        else if (strcmp(fields[0], "stop") == 0 && count == 3)
            do_control(fields[1], FALSE, (DWORD)strtoul(fields[2], NULL, 10));
        else
            reply_err(ERROR_INVALID_PARAMETER, "unknown command");
    }
    CloseServiceHandle(g_manager);
    return 0;
}
