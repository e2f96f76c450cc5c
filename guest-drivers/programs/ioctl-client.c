/*
 * ioctl-client.exe: the user-mode side of kcbioctl.sys, for the harness's
 * `run:` step (a console program, built with mingw-w64).
 *
 *   ioctl-client.exe TEXT [EXIT_CODE]  open \\.\KcbIoctl, send TEXT (UTF-8) with IOCTL_KCB_ECHO, print the
 *                                      driver's reply, exit with EXIT_CODE (default 0; 2 when the device or
 *                                      the IOCTL fails)
 *   ioctl-client.exe --echo ARG...     print each argument as "arg[N]=<ARG>" (checks of the command-line quoting)
 *   ioctl-client.exe --hang            start a copy of itself that hangs, wait until it runs, print a line,
 *                                      then hang too (checks of timeouts)
 *   ioctl-client.exe --crash           write through a NULL pointer (an unhandled access violation)
 *
 * Every line is flushed as it is printed: a program's output is a pipe in the
 * harness, and the C runtime would otherwise keep it until exit.
 */
#include <windows.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "../common/kcb_ioctl.h"

static void say(FILE *stream, const char *format, ...)
{
    va_list args;

    va_start(args, format);
    vfprintf(stream, format, args);
    va_end(args);
    fputc('\n', stream);
    fflush(stream);
}

/* UTF-8 copy of a wide string (malloc'ed; never NULL). */
static char *utf8(const wchar_t *text)
{
    int bytes = WideCharToMultiByte(CP_UTF8, 0, text, -1, NULL, 0, NULL, NULL);
    char *result = malloc(bytes > 0 ? (size_t)bytes : 1);

    if (result == NULL)
        exit(3);
    if (bytes <= 0 || WideCharToMultiByte(CP_UTF8, 0, text, -1, result, bytes, NULL, NULL) <= 0)
        result[0] = 0;
    return result;
}

static int echo(int argc, wchar_t **argv)
{
    int index;

    for (index = 2; index < argc; index++) {
        char *text = utf8(argv[index]);
        say(stdout, "arg[%d]=<%s>", index - 2, text);
        free(text);
    }
    say(stdout, "args=%d", argc - 2);
    return 0;
}

/* --hang: start a copy of itself (--hang-child HANDLE), wait until it is up (it sets the inherited event), say so, hang. */
static int hang(void)
{
    wchar_t path[MAX_PATH], line[MAX_PATH + 64];
    SECURITY_ATTRIBUTES inherit = {sizeof(inherit), NULL, TRUE};
    STARTUPINFOW startup;
    PROCESS_INFORMATION process;
    HANDLE up = CreateEventW(&inherit, TRUE, FALSE, NULL);

    if (up == NULL || GetModuleFileNameW(NULL, path, MAX_PATH) == 0)
        return 3;
    swprintf(line, MAX_PATH + 64, L"\"%ls\" --hang-child %llu", path, (unsigned long long)(ULONG_PTR)up);
    memset(&startup, 0, sizeof(startup));
    startup.cb = sizeof(startup);
    startup.dwFlags = STARTF_USESTDHANDLES; /* the child writes where this one does */
    startup.hStdInput = GetStdHandle(STD_INPUT_HANDLE);
    startup.hStdOutput = GetStdHandle(STD_OUTPUT_HANDLE);
    startup.hStdError = GetStdHandle(STD_ERROR_HANDLE);
    if (!CreateProcessW(path, line, NULL, NULL, TRUE, 0, NULL, NULL, &startup, &process)) {
        say(stderr, "client: cannot start the child: error %lu", (unsigned long)GetLastError());
        return 3;
    }
    WaitForSingleObject(up, INFINITE);
    say(stdout, "client: hanging, child pid %lu", (unsigned long)process.dwProcessId);
    Sleep(INFINITE);
    return 0;
}

static int hang_child(const wchar_t *event)
{
    say(stdout, "client: child hanging");
    SetEvent((HANDLE)(ULONG_PTR)_wcstoui64(event, NULL, 10));
    Sleep(INFINITE);
    return 0;
}

static int send_text(const wchar_t *wide, int exit_code)
{
    char *text = utf8(wide);
    DWORD length = (DWORD)strlen(text), returned = 0;
    char reply[KCB_IOCTL_MAX_TEXT + 1];
    HANDLE device;

    device = CreateFileW(KCB_IOCTL_USER_PATH, GENERIC_READ | GENERIC_WRITE, 0, NULL, OPEN_EXISTING, 0, NULL);
    if (device == INVALID_HANDLE_VALUE) {
        say(stderr, "client: cannot open \\\\.\\KcbIoctl: error %lu", (unsigned long)GetLastError());
        free(text);
        return 2;
    }
    say(stdout, "client: sending %lu bytes", (unsigned long)length);
    if (!DeviceIoControl(device, IOCTL_KCB_ECHO, text, length, reply, KCB_IOCTL_MAX_TEXT, &returned, NULL)) {
        say(stderr, "client: DeviceIoControl failed: error %lu", (unsigned long)GetLastError());
        CloseHandle(device);
        free(text);
        return 2;
    }
    reply[returned <= KCB_IOCTL_MAX_TEXT ? returned : KCB_IOCTL_MAX_TEXT] = 0;
    say(stdout, "client: sent %lu bytes", (unsigned long)length);
    say(stdout, "client: reply \"%s\"", reply);
    CloseHandle(device);
    free(text);
    return exit_code;
}

int wmain(int argc, wchar_t **argv)
{
    if (argc >= 2 && wcscmp(argv[1], L"--echo") == 0)
        return echo(argc, argv);
    if (argc == 2 && wcscmp(argv[1], L"--hang") == 0)
        return hang();
    if (argc == 3 && wcscmp(argv[1], L"--hang-child") == 0)
        return hang_child(argv[2]);
    if (argc == 2 && wcscmp(argv[1], L"--crash") == 0) {
        say(stdout, "client: about to crash");
        volatile int *volatile nowhere = NULL;
        *nowhere = 0;
        return 0;
    }
    if (argc == 2 || argc == 3)
        return send_text(argv[1], argc == 3 ? _wtoi(argv[2]) : 0);
    say(stderr, "usage: ioctl-client.exe TEXT [EXIT_CODE] | --echo ARG... | --hang | --crash");
    return 64;
}
