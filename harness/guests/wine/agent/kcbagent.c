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
 *
 * Run as "kcbagent.exe run" it is the one-shot runner of a user-mode program
 * (a scenario's `run:` step) in the session. It reads one request line from
 * stdin, fields separated by TAB:
 *
 *   <run id> <name> <timeout ms> <application path> <command line>
 *
 * and starts the program (CreateProcessW with that application and command
 * line, built by the harness; stdin NUL, stdout and stderr pipes, in a job
 * object so that every process it starts ends with it). Each line the program
 * writes is forwarded to the runner's stdout as one write:
 *
 *   kcb-run<TAB>stdout|stderr<TAB><name><TAB><text>
 *
 * (the harness gives the runner the session's kernel-log pipe as stdout, so
 * a program's lines and the drivers' DbgPrint lines arrive in one stream, in
 * the order they were written). When the program has exited, or was ended at
 * its timeout, the job's processes are ended and one last line says how it went:
 *
 *   kcb-run<TAB>end<TAB><run id><TAB>exit <code> | timeout | error <win32 error> <what>
 *
 * The runner is started by the harness, not by the session's agent: Wine gives
 * every process its parent's Unix stderr, and Wine's own messages about a
 * program (such as an unhandled exception) must not land in the kernel log,
 * where they would read as the driver host's crash.
 */
#include <windows.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#define MAX_LINE 4096
#define MAX_FIELDS 8
/* A run request: a command line of up to 32767 UTF-16 units (CreateProcessW's limit) as UTF-8, and the rest. */
#define MAX_RUN_REQUEST (32768 * 3 + 1024)
/* Program output bytes per forwarded line: with its prefix, one forwarded line stays within one atomic pipe write
 * (PIPE_BUF, 4096 bytes on Linux), so it never interleaves with a driver host's DbgPrint line. Longer lines are
 * forwarded in pieces. */
#define FORWARD_CHUNK 2048
#define MAX_NAME 64

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

/* -- kcbagent.exe run ---------------------------------------------------------------------------------------------- */

static HANDLE g_forward_to;
static CRITICAL_SECTION g_forward_lock;

struct forward {
    HANDLE pipe;
    const char *stream;
    const char *name;
};

/* One forwarded line, in one WriteFile (one write(2) on the pipe Wine maps the handle to). */
static void forward_line(const char *stream, const char *name, const char *text, size_t length)
{
    static char line[FORWARD_CHUNK + MAX_NAME + 32];
    int head;
    DWORD written;

    if (length > 0 && text[length - 1] == '\r')
        length--;
    EnterCriticalSection(&g_forward_lock);
    head = snprintf(line, sizeof(line), "kcb-run\t%s\t%s\t", stream, name);
    memcpy(line + head, text, length);
    line[head + length] = '\n';
    WriteFile(g_forward_to, line, (DWORD)(head + length + 1), &written, NULL);
    LeaveCriticalSection(&g_forward_lock);
}

static DWORD WINAPI forward_lines(void *argument)
{
    const struct forward *forward = argument;
    char buffer[FORWARD_CHUNK];
    size_t used = 0;
    DWORD got;

    /* A successful read of 0 bytes is a zero-length write, not the end: the end is a failed read (broken pipe). */
    while (ReadFile(forward->pipe, buffer + used, (DWORD)(sizeof(buffer) - used), &got, NULL)) {
        size_t start = 0, index;
        used += got;
        for (index = 0; index < used; index++) {
            if (buffer[index] == '\n') {
                forward_line(forward->stream, forward->name, buffer + start, index - start);
                start = index + 1;
            }
        }
        memmove(buffer, buffer + start, used - start);
        used -= start;
        if (used == sizeof(buffer)) { /* a line longer than a chunk: forwarded in pieces */
            forward_line(forward->stream, forward->name, buffer, used);
            used = 0;
        }
    }
    if (used > 0)
        forward_line(forward->stream, forward->name, buffer, used);
    return 0;
}

static void run_end(const char *id, const char *format, ...)
{
    char line[256];
    int head = snprintf(line, sizeof(line), "kcb-run\tend\t%s\t", id);
    va_list args;
    DWORD written;

    va_start(args, format);
    vsnprintf(line + head, sizeof(line) - head - 1, format, args);
    va_end(args);
    strcat(line, "\n");
    EnterCriticalSection(&g_forward_lock);
    WriteFile(g_forward_to, line, (DWORD)strlen(line), &written, NULL);
    LeaveCriticalSection(&g_forward_lock);
}

static BOOL inheritable_pipe(HANDLE *read_end, HANDLE *write_end)
{
    SECURITY_ATTRIBUTES inherit = {sizeof(inherit), NULL, TRUE};

    if (!CreatePipe(read_end, write_end, &inherit, 0))
        return FALSE;
    SetHandleInformation(*read_end, HANDLE_FLAG_INHERIT, 0); /* only the program's ends go to the program */
    return TRUE;
}

/* Starts the program suspended in the job, with only its three standard handles inherited. */
static BOOL start_in_job(const char *application, const char *command_line, HANDLE job, HANDLE handles[3],
                         PROCESS_INFORMATION *process)
{
    WCHAR *wide_application = widen(application), *wide_line = widen(command_line), *folder = widen(application);
    STARTUPINFOEXW startup;
    SIZE_T size = 0;
    BOOL ok = FALSE;
    WCHAR *slash;

    memset(&startup, 0, sizeof(startup));
    startup.StartupInfo.cb = sizeof(startup);
    startup.StartupInfo.dwFlags = STARTF_USESTDHANDLES;
    startup.StartupInfo.hStdInput = handles[0];
    startup.StartupInfo.hStdOutput = handles[1];
    startup.StartupInfo.hStdError = handles[2];
    slash = wcsrchr(folder, L'\\');
    if (slash != NULL)
        *slash = 0; /* the program runs in its own folder */
    InitializeProcThreadAttributeList(NULL, 1, 0, &size);
    startup.lpAttributeList = malloc(size);
    if (startup.lpAttributeList != NULL && InitializeProcThreadAttributeList(startup.lpAttributeList, 1, 0, &size)
        && UpdateProcThreadAttribute(startup.lpAttributeList, 0, PROC_THREAD_ATTRIBUTE_HANDLE_LIST, handles,
                                     3 * sizeof(HANDLE), NULL, NULL)) {
        ok = CreateProcessW(wide_application, wide_line, NULL, NULL, TRUE,
                            CREATE_SUSPENDED | CREATE_UNICODE_ENVIRONMENT | DETACHED_PROCESS | EXTENDED_STARTUPINFO_PRESENT,
                            NULL, slash != NULL ? folder : NULL, &startup.StartupInfo, process);
        DeleteProcThreadAttributeList(startup.lpAttributeList);
    }
    if (ok && !AssignProcessToJobObject(job, process->hProcess)) {
        DWORD error = GetLastError();
        TerminateProcess(process->hProcess, 1);
        CloseHandle(process->hThread);
        CloseHandle(process->hProcess);
        SetLastError(error);
        ok = FALSE;
    }
    free(startup.lpAttributeList);
    free(wide_application);
    free(wide_line);
    free(folder);
    return ok;
}

static int run_program(void)
{
    static char request[MAX_RUN_REQUEST];
    char *fields[MAX_FIELDS];
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION limits;
    SECURITY_ATTRIBUTES inherit = {sizeof(inherit), NULL, TRUE};
    HANDLE job, out_read, out_write, err_read, err_write, nul, threads[2], handles[3];
    struct forward forwards[2];
    PROCESS_INFORMATION process;
    DWORD waited, code = 0, timeout_ms;
    const char *id = "?";

    InitializeCriticalSection(&g_forward_lock);
    g_forward_to = GetStdHandle(STD_OUTPUT_HANDLE);
    if (fgets(request, sizeof(request), stdin) == NULL) {
        run_end(id, "error %lu no request on stdin", (unsigned long)ERROR_INVALID_PARAMETER);
        return 1;
    }
    request[strcspn(request, "\r\n")] = 0;
    if (split(request, fields) != 5 || strlen(fields[1]) > MAX_NAME) {
        run_end(id, "error %lu malformed request", (unsigned long)ERROR_INVALID_PARAMETER);
        return 1;
    }
    id = fields[0];
    timeout_ms = (DWORD)strtoul(fields[2], NULL, 10);
    job = CreateJobObjectW(NULL, NULL);
    memset(&limits, 0, sizeof(limits));
    limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE; /* the runner's end ends them too */
    if (job == NULL || !SetInformationJobObject(job, JobObjectExtendedLimitInformation, &limits, sizeof(limits))) {
        run_end(id, "error %lu cannot create a job object", (unsigned long)GetLastError());
        return 1;
    }
    nul = CreateFileW(L"NUL", GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE, &inherit, OPEN_EXISTING, 0, NULL);
    if (nul == INVALID_HANDLE_VALUE || !inheritable_pipe(&out_read, &out_write) || !inheritable_pipe(&err_read, &err_write)) {
        run_end(id, "error %lu cannot create the program's pipes", (unsigned long)GetLastError());
        return 1;
    }
    handles[0] = nul;
    handles[1] = out_write;
    handles[2] = err_write;
    if (!start_in_job(fields[3], fields[4], job, handles, &process)) {
        run_end(id, "error %lu CreateProcess failed", (unsigned long)GetLastError());
        return 1;
    }
    /* Only the program holds the write ends now: the readers see the end when it (and what it started) is gone. */
    CloseHandle(out_write);
    CloseHandle(err_write);
    CloseHandle(nul);
    forwards[0].pipe = out_read;
    forwards[0].stream = "stdout";
    forwards[0].name = fields[1];
    forwards[1].pipe = err_read;
    forwards[1].stream = "stderr";
    forwards[1].name = fields[1];
    threads[0] = CreateThread(NULL, 0, forward_lines, &forwards[0], 0, NULL);
    threads[1] = CreateThread(NULL, 0, forward_lines, &forwards[1], 0, NULL);
    ResumeThread(process.hThread);
    waited = WaitForSingleObject(process.hProcess, timeout_ms);
    if (waited == WAIT_OBJECT_0)
        GetExitCodeProcess(process.hProcess, &code);
    /* Whatever the program started and left running ends with it (and everything at a timeout). */
    TerminateJobObject(job, 1);
    WaitForSingleObject(process.hProcess, 10000);
    if (threads[0] != NULL && threads[1] != NULL)
        WaitForMultipleObjects(2, threads, TRUE, 10000);
    if (waited == WAIT_OBJECT_0)
        run_end(id, "exit %lu", (unsigned long)code);
    else
        run_end(id, "timeout");
    return 0;
}

int main(int argc, char **argv)
{
    char line[MAX_LINE];
    char *fields[MAX_FIELDS];

    if (argc == 4 && strcmp(argv[1], "stacks") == 0)
        return request_stacks(argv[2], (DWORD)strtoul(argv[3], NULL, 10));
    if (argc == 2 && strcmp(argv[1], "run") == 0)
        return run_program();
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
