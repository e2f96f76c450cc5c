"""Guest command lines: exact strings, and quoting attacks that must stay data."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.scenario.model import MAX_ARGUMENT_CHARS
from harness.transports.commands import (
    CMD_MAX_CHARS,
    COMMAND_LINE_BUDGET,
    MAX_ENVELOPE_KB,
    MINIDUMP_DIR,
    SC_STATE_LINE,
    CommandLineTooLong,
    RunReport,
    check_command_line,
    create_service,
    file_hash,
    list_files,
    parse_run_output,
    plain_name,
    posix_quote,
    powershell,
    ps_literal,
    read_chunk,
    run_script,
    sc_error,
    sc_script,
    sc_state,
    set_parameters,
    stdin_chunk_bytes,
    stdin_lines,
    stop_driver,
    upload_script,
    verifier_script,
    windows_command_line,
)


def decode(command: str) -> str:
    prefix = "powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand "
    assert command.startswith(prefix)
    return base64.b64decode(command[len(prefix) :]).decode("utf-16-le")


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("plain", "'plain'"),
        ("it's", "'it''s'"),
        ('$(calc) `n ; & | "x"', "'$(calc) `n ; & | \"x\"'"),
        ("a\u2019b", "'a\u2019\u2019b'"),  # PowerShell treats typographic quotes as quotes too
        ("", "''"),
    ],
)
def test_ps_literal(value: str, literal: str) -> None:
    assert ps_literal(value) == literal


def test_powershell_command_line_carries_only_base64() -> None:
    command = powershell("Write-Output 'x'; & calc.exe")
    assert command.split()[-1].isascii() and set(command.split()[-1]) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
    )
    assert decode(command) == "Write-Output 'x'; & calc.exe"


def test_sc_script_exact() -> None:
    assert sc_script("start", "sysRecv1") == "& sc.exe 'start' 'sysRecv1'\nexit $LASTEXITCODE"


def test_create_service_exact() -> None:
    assert create_service("sysRecv1", "C:\\kcb\\sysRecv1.sys") == (
        "& sc.exe stop 'sysRecv1' | Out-Null\n"
        "& sc.exe delete 'sysRecv1' | Out-Null\n"
        "& sc.exe 'create' 'sysRecv1' 'type=' 'kernel' 'start=' 'demand' 'error=' 'normal' 'binPath=' 'C:\\kcb\\sysRecv1.sys'\n"
        "exit $LASTEXITCODE"
    )


def test_image_path_with_quotes_stays_one_argument() -> None:
    script = create_service("svc", "C:\\k'cb\\x'; Remove-Item C:\\ -Recurse; '.sys")
    assert "'binPath=' 'C:\\k''cb\\x''; Remove-Item C:\\ -Recurse; ''.sys'" in script


@pytest.mark.parametrize("bad", ["a b", "a;b", "x'y", "", "svc\n", "a$b"])
def test_service_and_value_names_must_be_plain(bad: str) -> None:
    with pytest.raises(ValueError, match="not a plain name"):
        plain_name(bad, "service")
    with pytest.raises(ValueError):
        create_service(bad, "C:\\x.sys")


def test_set_parameters_exact() -> None:
    assert set_parameters("sysTest", {"PeriodMs": 200, "Tag": "it's"}) == (
        "$key = 'HKLM:\\SYSTEM\\CurrentControlSet\\Services\\sysTest\\Parameters'\n"
        "Remove-Item -Path $key -Recurse -ErrorAction SilentlyContinue\n"
        "New-Item -Path $key -Force | Out-Null\n"
        "New-ItemProperty -Path $key -Name 'PeriodMs' -PropertyType DWord -Value 200 -Force | Out-Null\n"
        "New-ItemProperty -Path $key -Name 'Tag' -PropertyType String -Value 'it''s' -Force | Out-Null"
    )


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (0, "0"),
        (0x7FFFFFFF, "2147483647"),
        # 2^31 and more: an Int32 with the same 32 bits, which every PowerShell writes as that REG_DWORD
        # (Convert.ToInt32(string, 16) reads base 16 as two's complement).
        (0x80000000, "([Convert]::ToInt32('80000000', 16))"),
        (0xFFFFFFFF, "([Convert]::ToInt32('FFFFFFFF', 16))"),
    ],
)
def test_set_parameters_writes_every_dword_exactly(value: int, written: str) -> None:
    assert set_parameters("sysTest", {"Mask": value}).endswith(
        f"New-ItemProperty -Path $key -Name 'Mask' -PropertyType DWord -Value {written} -Force | Out-Null"
    )


@pytest.mark.parametrize("bad", [-1, 0x1_0000_0000, True])
def test_set_parameters_refuses_what_is_not_a_dword(bad: int) -> None:
    with pytest.raises(ValueError, match="REG_DWORD"):
        set_parameters("sysTest", {"Mask": bad})


def test_file_hash_and_posix_quote() -> None:
    assert file_hash("C:\\a'b.sys") == "(Get-FileHash -Algorithm SHA256 -LiteralPath 'C:\\a''b.sys').Hash.ToLower()"
    assert posix_quote("it's $(x)") == "'it'\"'\"'s $(x)'"


@pytest.mark.parametrize(
    ("output", "code", "error"),
    [
        ("[SC] StartService FAILED 577:\r\n\r\nWindows cannot verify the digital signature", 577, 577),
        ("[SC] StartService FAILED 2:\r\n\r\nThe system cannot find the file specified.", 2, 2),
        ("SERVICE_NAME: sysTest\r\n        STATE              : 4  RUNNING", 0, None),
        ("", 1060, 1060),
    ],
)
def test_sc_error(output: str, code: int, error: int | None) -> None:
    assert sc_error(output, code) == error


def test_verifier_script() -> None:
    assert verifier_script("standard", ("sysTest.sys", "sysRecv1.sys")) == (
        "& verifier.exe '/standard' '/driver' 'sysTest.sys' 'sysRecv1.sys'\nif ($LASTEXITCODE -eq 2) { exit 0 }\nexit $LASTEXITCODE"
    )
    assert verifier_script(0x209BB, ("a.sys",)).startswith("& verifier.exe '/flags' '0x209BB' '/driver' 'a.sys'")
    with pytest.raises(ValueError):
        verifier_script("standard", ("a.sys; calc",))


def test_stop_driver_waits_on_the_numeric_state() -> None:
    assert stop_driver("sysRecv1", 25) == (
        "$out = & sc.exe stop 'sysRecv1' | Out-String; Write-Output $out\n"
        "if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }\n"
        "$deadline = (Get-Date).AddSeconds(25)\n"
        "while ((Get-Date) -lt $deadline) {\n"
        f"  $states = @(& sc.exe query 'sysRecv1' | ForEach-Object {{ if ($_ -match '{SC_STATE_LINE}') {{ [int]$Matches[1] }} }})\n"
        "  if ($states.Count -ge 2 -and $states[1] -eq 1) { exit 0 }\n"
        "  Start-Sleep -Milliseconds 100\n"
        "}\n"
        "exit 1053"
    )
    assert "STOPPED" not in stop_driver("sysRecv1", 25)  # no English word: the state is read by its number
    with pytest.raises(ValueError):
        stop_driver("x'; calc; '", 5)


# sc.exe query output: the labels (and possibly the state words) are localized; the numbers are SERVICE_STATUS values.
ENGLISH_STOPPED = """
SERVICE_NAME: sysRecv1
        TYPE               : 1  KERNEL_DRIVER
        STATE              : 1  STOPPED
        WIN32_EXIT_CODE    : 0  (0x0)
        SERVICE_EXIT_CODE  : 0  (0x0)
        CHECKPOINT         : 0x0
        WAIT_HINT          : 0x0
"""
ENGLISH_RUNNING = """
SERVICE_NAME: sysRecv1
        TYPE               : 1  KERNEL_DRIVER
        STATE              : 4  RUNNING
                                (STOPPABLE, NOT_PAUSABLE, IGNORES_SHUTDOWN)
        WIN32_EXIT_CODE    : 0  (0x0)
        SERVICE_EXIT_CODE  : 0  (0x0)
        CHECKPOINT         : 0x0
        WAIT_HINT          : 0x0
"""
GERMAN_STOPPED = """
SERVICE_NAME: sysRecv1
        TYP                : 1  KERNEL_DRIVER
        STATUS             : 1  BEENDET
        WIN32-EXITCODE     : 0  (0x0)
        DIENST-EXITCODE    : 0  (0x0)
        PRÜFPUNKT          : 0x0
        WARTEHINWEIS       : 0x0
"""
RUSSIAN_STOP_PENDING = """
Имя_службы: sysRecv1
        Тип                : 1  KERNEL_DRIVER
        Состояние          : 3  STOP_PENDING
                                (STOPPABLE, NOT_PAUSABLE, IGNORES_SHUTDOWN)
        Код_выхода_Win32   : 0  (0x0)
        Код_выхода_службы  : 0  (0x0)
        Контрольная_точка  : 0x1
        Ожидание           : 0x7d0
"""
SERVICE_12_RUNNING = ENGLISH_RUNNING.replace("sysRecv1", "12").replace("1  KERNEL", "10  WIN32_OWN_PROCESS")


@pytest.mark.parametrize(
    ("output", "state"),
    [
        (ENGLISH_STOPPED, 1),
        (ENGLISH_RUNNING, 4),
        (GERMAN_STOPPED, 1),
        (RUSSIAN_STOP_PENDING, 3),
        (SERVICE_12_RUNNING, 4),
        ("[SC] EnumQueryServicesStatus:OpenService FAILED 1060:\n\nThe specified service does not exist.", None),
        ("[SC] EnumQueryServicesStatus:OpenService échec(s) 1060 :\n\nLe service spécifié n’existe pas.", None),
    ],
)
def test_sc_state_reads_the_number(output: str, state: int | None) -> None:
    assert sc_state(output) == state
    # The guest-side loop applies the same pattern (PowerShell -match: unanchored, case-insensitive) line by line.
    found = [int(m.group(1)) for line in output.splitlines() if (m := re.search(SC_STATE_LINE, line, re.IGNORECASE))]
    assert (found[1] if len(found) >= 2 else None) == state


def test_read_chunk_exact() -> None:
    assert read_chunk("C:\\a'b.dmp", 4096, 1024) == (
        "$stream = [IO.File]::OpenRead('C:\\a''b.dmp'); [void]$stream.Seek(4096, 'Begin')\n"
        "$buffer = New-Object byte[] 1024; $count = $stream.Read($buffer, 0, 1024); $stream.Close()\n"
        "[Convert]::ToBase64String($buffer, 0, $count)"
    )


# -- command lines within cmd.exe's limit ---------------------------------------------------------


def test_the_limits() -> None:
    assert CMD_MAX_CHARS == 8191 and COMMAND_LINE_BUDGET < CMD_MAX_CHARS and MAX_ENVELOPE_KB == 500


def test_powershell_refuses_a_script_whose_command_line_would_be_too_long() -> None:
    longest = "x" * 2900
    assert len(powershell(longest)) <= COMMAND_LINE_BUDGET
    with pytest.raises(CommandLineTooLong, match="8191"):
        powershell("x" * 3100)
    with pytest.raises(CommandLineTooLong):
        check_command_line("cmd /c " + "x" * CMD_MAX_CHARS)
    assert check_command_line("whoami") == "whoami"


LONG_DIR = "C:\\" + "\\".join(["very long folder name"] * 11)[:230]  # near MAX_PATH
QUOTED_DIR = "C:\\" + "it's " * 50  # every quote doubled in a literal
SERVICE = "s" * 256  # the longest service name Windows accepts
REALISTIC: list[tuple[str, Callable[[], str]]] = [
    ("create_service", lambda: create_service("sysRecv1", "C:\\kcb\\sysRecv1.sys")),
    ("set_parameters", lambda: set_parameters("sysTest", {"PeriodMs": 200, "Tag": "receiver", "Mask": 0xFFFFFFFF})),
    ("sc_script", lambda: sc_script("start", "sysRecv1")),
    ("stop_driver", lambda: stop_driver("sysRecv1", 25)),
    ("verifier_script", lambda: verifier_script("standard", ("sysTest.sys", "sysRecv1.sys"))),
    ("file_hash", lambda: file_hash("C:\\kcb\\sysRecv1.sys")),
    ("read_chunk", lambda: read_chunk("C:\\Windows\\Minidump\\112426-1.dmp", 1 << 30, 48 * 1024)),
    ("list_files", lambda: list_files(MINIDUMP_DIR, "*.dmp")),
    ("upload_script", lambda: upload_script("C:\\kcb\\sysRecv1.sys")),
    ("run_script", lambda: run_script("C:\\kcb\\ioctl-client.exe", ["hello", "42"], 30)),
]
WORST: list[tuple[str, Callable[[], str]]] = [
    ("create_service", lambda: create_service(SERVICE, QUOTED_DIR + "\\" + SERVICE + ".sys")),
    ("set_parameters", lambda: set_parameters(SERVICE, {f"Value{i}": 0xFFFFFFFF for i in range(20)})),
    ("set_parameters-strings", lambda: set_parameters(SERVICE, {f"Text{i}": "x'" * 128 for i in range(5)})),
    ("set_parameters-too-many", lambda: set_parameters(SERVICE, {f"Text{i}": "x'" * 128 for i in range(40)})),
    ("sc_script", lambda: sc_script("start", SERVICE)),
    ("stop_driver", lambda: stop_driver(SERVICE, 10**9)),
    ("verifier_script", lambda: verifier_script(0xFFFFFFFF, tuple(f"{SERVICE[:60]}{i}.sys" for i in range(30)))),
    ("verifier_script-too-many", lambda: verifier_script("standard", tuple(f"{SERVICE}{i}.sys" for i in range(40)))),
    ("file_hash", lambda: file_hash(QUOTED_DIR + LONG_DIR)),
    ("read_chunk", lambda: read_chunk(QUOTED_DIR + LONG_DIR, 2**63 - 1, 2**31 - 1)),
    ("list_files", lambda: list_files(QUOTED_DIR + LONG_DIR, "*'*.dmp")),
    ("upload_script", lambda: upload_script(QUOTED_DIR + LONG_DIR)),
    # The longest arguments a scenario may give, made of what quoting doubles, in a long guest folder.
    ("run_script-quotes", lambda: run_script(LONG_DIR + "\\" + "p" * 60 + ".exe", ['"' * MAX_ARGUMENT_CHARS], 10**6)),
    ("run_script-apostrophes", lambda: run_script(LONG_DIR + "\\" + "p" * 60 + ".exe", ["'" * MAX_ARGUMENT_CHARS], 10**6)),
    ("run_script-backslashes", lambda: run_script(LONG_DIR + "\\" + "p" * 60 + ".exe", ['\\"' * (MAX_ARGUMENT_CHARS // 2)], 10**6)),
    ("run_script-astral", lambda: run_script(LONG_DIR + "\\" + "p" * 60 + ".exe", ["\U0001f600 " * (MAX_ARGUMENT_CHARS // 2)], 10**6)),
]


@pytest.mark.parametrize(("builder", "script"), REALISTIC, ids=[name for name, _ in REALISTIC])
def test_every_builder_fits_with_realistic_inputs(builder: str, script: Callable[[], str]) -> None:
    assert len(powershell(script())) <= COMMAND_LINE_BUDGET


@pytest.mark.parametrize(("builder", "script"), WORST, ids=[name for name, _ in WORST])
def test_every_builder_fits_or_refuses_with_worst_case_inputs(builder: str, script: Callable[[], str]) -> None:
    try:
        line = powershell(script())
    except CommandLineTooLong:
        assert builder.endswith("-too-many")  # only inputs no scenario needs are refused, and refused before sending
        return
    assert not builder.endswith("-too-many") and len(line) <= COMMAND_LINE_BUDGET


# -- upload through stdin within MaxEnvelopeSizekb ------------------------------------------------


def send_envelope_bytes(raw: int) -> int:
    """Bytes of a pywinrm Send request carrying ``raw`` file bytes as one stdin line, measured on pywinrm's own XML."""
    import winrm.protocol

    class Measuring(winrm.protocol.Protocol):
        def send_message(self, message: str) -> bytes:
            self.sent = len(message.encode("utf-8"))
            return b""

    protocol = Measuring("http://127.0.0.1:5985/wsman", transport="basic", username="Administrator", password="x")
    line = next(stdin_lines(b"\xff" * raw, raw))
    protocol.send_command_input("0" * 36, "0" * 36, line, end=True)
    return int(protocol.sent)


@pytest.mark.parametrize("envelope_kb", [32, 150, 500, 8192])
def test_stdin_chunks_leave_a_margin_in_the_envelope(envelope_kb: int) -> None:
    raw = stdin_chunk_bytes(envelope_kb)
    assert raw > 0 and raw % 3 == 0  # whole base64 groups: no padding inside the stream
    assert send_envelope_bytes(raw) <= 0.8 * envelope_kb * 1024


def test_stdin_chunk_sizes() -> None:
    assert stdin_chunk_bytes(500) >= 200_000  # few round trips: a 20 MiB driver in about a hundred Sends
    with pytest.raises(ValueError, match="32"):
        stdin_chunk_bytes(31)  # below what WinRM accepts as MaxEnvelopeSizekb


def test_stdin_lines_are_whole_base64_lines() -> None:
    data = bytes(range(256)) * 40
    lines = list(stdin_lines(data, 3072))
    assert all(line.endswith(b"\r\n") for line in lines) and len(lines) == -(-len(data) // 3072)
    assert b"".join(base64.b64decode(line) for line in lines) == data
    assert list(stdin_lines(b"", 3072)) == []


def test_upload_script_exact() -> None:
    assert upload_script("C:\\kcb\\it's.sys") == (
        "begin {\n"
        "  $ErrorActionPreference = 'Stop'\n"
        "  $path = 'C:\\kcb\\it''s.sys'\n"
        "  New-Item -ItemType Directory -Force -Path (Split-Path -Parent $path) | Out-Null\n"
        "  $sha = [Security.Cryptography.SHA256]::Create()\n"
        "  $file = [IO.File]::Create($path)\n"
        "}\n"
        "process {\n"
        "  $bytes = [Convert]::FromBase64String($input)\n"
        "  [void]$sha.TransformBlock($bytes, 0, $bytes.Length, $bytes, 0)\n"
        "  $file.Write($bytes, 0, $bytes.Length)\n"
        "}\n"
        "end {\n"
        "  [void]$sha.TransformFinalBlock((New-Object byte[] 0), 0, 0)\n"
        "  $file.Close()\n"
        "  [BitConverter]::ToString($sha.Hash).Replace('-', '').ToLowerInvariant()\n"
        "}"
    )


# -- user-mode programs: the Windows command line and the VM's run script ----------------------------------------------


def parse_windows_command_line(line: str) -> list[str]:
    """A reference parser written from Microsoft's "Parsing C++ command-line arguments"
    (https://learn.microsoft.com/cpp/cpp/main-function-command-line-args#parsing-c-command-line-arguments), rule by rule,
    to check the builder against: it is not the harness's code."""
    args: list[str] = []
    index = 0
    # argv[0]: up to the next double quote when it starts with one (no escapes), else up to white space.
    if line.startswith('"'):
        end = line.index('"', 1)
        args.append(line[1:end])
        index = end + 1
    else:
        while index < len(line) and line[index] not in " \t":
            index += 1
        args.append(line[:index])
    while True:
        while index < len(line) and line[index] in " \t":  # arguments are delimited by white space
            index += 1
        if index >= len(line):
            return args
        current, quoted = "", False
        while index < len(line) and (quoted or line[index] not in " \t"):
            if line[index] == "\\":
                count = 0
                while index < len(line) and line[index] == "\\":
                    count += 1
                    index += 1
                if index < len(line) and line[index] == '"':
                    current += "\\" * (count // 2)  # one backslash for every pair
                    if count % 2:  # an odd number: the quote is a literal
                        current += '"'
                        index += 1
                else:  # backslashes not before a quote are literal
                    current += "\\" * count
            elif line[index] == '"':
                if quoted and line[index + 1 : index + 2] == '"':  # in a quoted block, "" is an escaped quote
                    current += '"'
                    index += 2
                else:
                    quoted = not quoted
                    index += 1
            else:
                current += line[index]
                index += 1
        args.append(current)


PROGRAM = "C:\\kcb\\programs\\ioctl-client.exe"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["hello", "42"], '"C:\\kcb\\programs\\ioctl-client.exe" hello 42'),
        ([""], '"C:\\kcb\\programs\\ioctl-client.exe" ""'),
        (["a b"], '"C:\\kcb\\programs\\ioctl-client.exe" "a b"'),
        (["tab\there"], '"C:\\kcb\\programs\\ioctl-client.exe" "tab\there"'),
        (['x"y'], '"C:\\kcb\\programs\\ioctl-client.exe" "x\\"y"'),
        (["c:\\dir\\"], '"C:\\kcb\\programs\\ioctl-client.exe" c:\\dir\\'),
        (["c:\\my dir\\"], '"C:\\kcb\\programs\\ioctl-client.exe" "c:\\my dir\\\\"'),
        (['a\\"b'], '"C:\\kcb\\programs\\ioctl-client.exe" "a\\\\\\"b"'),
        (["\\\\server\\share"], '"C:\\kcb\\programs\\ioctl-client.exe" \\\\server\\share'),
        (["%PATH%", "^&|<>", "$(x)", "'"], '"C:\\kcb\\programs\\ioctl-client.exe" %PATH% ^&|<> $(x) \''),
    ],
)
def test_windows_command_line_exact(args: list[str], line: str) -> None:
    assert windows_command_line([PROGRAM, *args]) == line
    assert parse_windows_command_line(line) == [PROGRAM, *args]


def test_the_reference_parser_agrees_with_microsofts_examples() -> None:
    # The table in "Parsing C++ command-line arguments" (argv[1..3] for each input).
    examples = [
        ('"a b c" d e', ["a b c", "d", "e"]),
        ('"ab\\"c" "\\\\" d', ['ab"c', "\\", "d"]),
        ('a\\\\\\b d"e f"g h', ["a\\\\\\b", "de fg", "h"]),
        ('a\\\\\\"b c d', ['a\\"b', "c", "d"]),
        ('a\\\\\\\\"b c" d e', ["a\\\\b c", "d", "e"]),
        ('a"b"" c d', ['ab" c d']),
    ]
    for line, expected in examples:
        assert parse_windows_command_line("prog " + line)[1:] == expected


@settings(max_examples=500, deadline=None)
@given(args=st.lists(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00")), max_size=6))
def test_windows_command_line_round_trips_through_the_documented_rules(args: list[str]) -> None:
    assert parse_windows_command_line(windows_command_line([PROGRAM, *args])) == [PROGRAM, *args]


def test_windows_command_line_refuses_what_cannot_be_passed() -> None:
    with pytest.raises(ValueError, match="double quote"):
        windows_command_line(['C:\\a"b.exe'])
    with pytest.raises(ValueError, match="NUL"):
        windows_command_line([PROGRAM, "a\x00b"])
    with pytest.raises(CommandLineTooLong, match="32767"):
        windows_command_line([PROGRAM, "x" * 32767])


def test_run_script_exact() -> None:
    assert run_script("C:\\kcb\\ioctl-client.exe", ["hello", "a b", "it's"], 10.5) == (
        "$i = New-Object Diagnostics.ProcessStartInfo 'C:\\kcb\\ioctl-client.exe', 'hello \"a b\" it''s'\n"
        "$i.WorkingDirectory = Split-Path -Parent $i.FileName\n"
        "$i.UseShellExecute = $false; $i.CreateNoWindow = $true\n"
        "$i.RedirectStandardInput = $true; $i.RedirectStandardOutput = $true; $i.RedirectStandardError = $true\n"
        "try { $p = [Diagnostics.Process]::Start($i) } catch {\n"
        "  $e = $_.Exception; if ($e.InnerException) { $e = $e.InnerException }\n"
        "  'kcb-run error {0} {1}' -f $e.NativeErrorCode, [Convert]::ToBase64String([Text.Encoding]::UTF8.GetBytes($e.Message)); exit 0\n"
        "}\n"
        "$p.StandardInput.Close(); $o = $p.StandardOutput.ReadToEndAsync(); $r = $p.StandardError.ReadToEndAsync()\n"
        "$s = 'exit'\n"
        "if (-not $p.WaitForExit(10500)) { $s = 'timeout'; & taskkill.exe /PID $p.Id /T /F 2>&1 | Out-Null; [void]$p.WaitForExit(10000) }\n"
        "[void][Threading.Tasks.Task]::WaitAll(@($o, $r), 10000)\n"
        "function b($t) { if ($t.IsCompleted) { [Convert]::ToBase64String([Text.Encoding]::UTF8.GetBytes($t.Result)) } }\n"
        "'kcb-run {0} {1} {2} {3}' -f $s, [BitConverter]::ToUInt32([BitConverter]::GetBytes($p.ExitCode), 0), (b $o), (b $r)"
    )


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("output", "report"),
    [
        (
            "kcb-run exit 3 " + b64("client: sent 5 bytes\r\nclient: reply\r\n") + " \r\n",
            RunReport("exit", 3, ["client: sent 5 bytes", "client: reply"], []),
        ),
        (f"noise\r\nkcb-run exit 3221225477  {b64('boom')}\r\n", RunReport("exit", 0xC0000005, [], ["boom"])),
        (f"kcb-run timeout 1 {b64('hanging')} \r\n", RunReport("timeout", None, ["hanging"], [])),
        (
            f"kcb-run error 2 {b64('The system cannot find the file specified')}\r\n",
            RunReport("error", 2, [], ["The system cannot find the file specified"]),
        ),
        ("kcb-run exit 0  \n", RunReport("exit", 0, [], [])),
    ],
)
def test_parse_run_output(output: str, report: RunReport) -> None:
    assert parse_run_output(output) == report


@pytest.mark.parametrize(
    "output", ["", "kcb-run exit x  ", "kcb-run exit 1 !!! ", "kcb-run sleeping 1  ", "The command line is too long.\r\n"]
)
def test_parse_run_output_refuses_anything_else(output: str) -> None:
    assert parse_run_output(output) is None
