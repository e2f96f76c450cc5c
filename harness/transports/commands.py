"""Guest command lines built from data, never by pasting text into a shell. Pure.

Windows guests get ``powershell -NoProfile -NonInteractive -EncodedCommand
<base64>``: the script travels as base64 of UTF-16LE (only ``A-Za-z0-9+/=``
on the command line), and every user value inside it is a PowerShell
single-quoted literal, in which only ``'`` is special (doubled). POSIX hosts
(the SSH test server) get single-quoted arguments.

Windows' limits live here too (docs/windows-facts.md has their sources):
WinRS, and Windows OpenSSH's default shell, run every command line through
cmd.exe, which refuses lines longer than 8191 characters; a WinRM request may
not exceed MaxEnvelopeSizekb. ``powershell()`` refuses a script whose command
line would not fit (with a margin), so no over-long line is ever sent; bulk
data (an upload) goes through stdin in chunks sized from the envelope limit.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

_PLAIN = re.compile(r"[A-Za-z0-9_.-]+")

# -- Windows' limits -------------------------------------------------------------------------------

#: cmd.exe's longest command line (Microsoft Learn: "Command prompt (Cmd.exe) command-line string limitation").
CMD_MAX_CHARS = 8191
#: What a harness command line may use: cmd.exe's limit less a margin (whatever WinRS or sshd adds around it).
COMMAND_LINE_BUDGET = CMD_MAX_CHARS - 191
#: MaxEnvelopeSizekb on current Windows (Server 2012 R2 and later, Windows 10/11); Server 2008 (R2) has 150.
MAX_ENVELOPE_KB = 500
#: The smallest MaxEnvelopeSizekb WinRM accepts.
MIN_ENVELOPE_KB = 32
#: Share of an envelope that stdin data may fill, and bytes kept for the SOAP around it (pywinrm's Send: ~1.6 KiB).
ENVELOPE_SHARE = 0.75
ENVELOPE_OVERHEAD = 4096

_ENCODED_PREFIX = "powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand "


class CommandLineTooLong(ValueError):
    """A command line that cmd.exe would refuse: it is never sent."""


def check_command_line(line: str) -> str:
    """``line`` when it fits in cmd.exe's limit with the harness's margin.

    Raises:
        CommandLineTooLong: it does not.
    """
    if len(line) > COMMAND_LINE_BUDGET:
        raise CommandLineTooLong(
            f"a command line of {len(line)} characters: cmd.exe accepts {CMD_MAX_CHARS}, the harness uses at most "
            f"{COMMAND_LINE_BUDGET} (a PowerShell script of about {script_capacity()} characters)"
        )
    return line


def script_capacity() -> int:
    """The longest script (in UTF-16 code units) whose encoded command line fits the budget."""
    return (COMMAND_LINE_BUDGET - len(_ENCODED_PREFIX)) // 4 * 3 // 2


def stdin_chunk_bytes(max_envelope_kb: int = MAX_ENVELOPE_KB) -> int:
    """File bytes per WinRM Send so that the request stays well inside ``max_envelope_kb`` (a multiple of 3).

    Each chunk travels as one stdin line, base64 plus CRLF, which pywinrm base64-encodes again into the SOAP body.

    Raises:
        ValueError: an envelope size WinRM does not accept.
    """
    if max_envelope_kb < MIN_ENVELOPE_KB:
        raise ValueError(f"MaxEnvelopeSizekb {max_envelope_kb}: WinRM accepts {MIN_ENVELOPE_KB} or more")
    body = int(max_envelope_kb * 1024 * ENVELOPE_SHARE) - ENVELOPE_OVERHEAD  # room for base64(line)
    line = body // 4 * 3  # characters of the stdin line
    return (line - 2) // 4 * 3


def stdin_lines(data: bytes, chunk: int) -> Iterator[bytes]:
    """``data`` as stdin lines of base64 (``chunk`` bytes each, a multiple of 3), each ending in CRLF."""
    for offset in range(0, len(data), chunk):
        yield base64.b64encode(data[offset : offset + chunk]) + b"\r\n"


def ps_literal(value: str) -> str:
    """A PowerShell single-quoted string literal for ``value`` (typographic quotes count as quotes too)."""
    return "'" + re.sub("['\u2018\u2019\u201a\u201b]", lambda m: m.group(0) * 2, value) + "'"


def powershell(script: str) -> str:
    """The command line that runs ``script`` in PowerShell, with nothing for cmd.exe or a shell to interpret.

    Raises:
        CommandLineTooLong: the line would break cmd.exe's limit (the script is longer than ``script_capacity()``).
    """
    encoded = base64.b64encode(script.encode("utf-16-le")).decode("ascii")
    return check_command_line(_ENCODED_PREFIX + encoded)


def posix_quote(value: str) -> str:
    """A POSIX shell single-quoted word."""
    return "'" + value.replace("'", "'\"'\"'") + "'"


def plain_name(value: str, what: str) -> str:
    """``value`` when it is a plain name (service, registry value).

    Raises:
        ValueError: anything else.
    """
    if not _PLAIN.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a plain name")
    return value


# -- Windows scripts -------------------------------------------------------------------------------

SERVICES = "HKLM:\\SYSTEM\\CurrentControlSet\\Services"


def sc_script(*arguments: str) -> str:
    """PowerShell that runs sc.exe with these arguments (each a literal) and exits with its exit code."""
    return "& sc.exe " + " ".join(ps_literal(argument) for argument in arguments) + "\nexit $LASTEXITCODE"


def create_service(service: str, image_path: str) -> str:
    """(Re)create a demand-start kernel-driver service for ``image_path``."""
    name = plain_name(service, "service")
    return f"& sc.exe stop {ps_literal(name)} | Out-Null\n& sc.exe delete {ps_literal(name)} | Out-Null\n" + sc_script(
        "create", name, "type=", "kernel", "start=", "demand", "error=", "normal", "binPath=", image_path
    )


def dword_value(value: int) -> str:
    """A PowerShell expression for REG_DWORD ``value`` (0..0xFFFFFFFF) that every PowerShell writes as those 32 bits.

    Values of 2^31 and more go as the Int32 with the same bits: .NET's RegistryKey.SetValue converts a DWord with
    Convert.ToInt32, and not every PowerShell's registry provider reinterprets a larger number first.

    Raises:
        ValueError: not a REG_DWORD.
    """
    if isinstance(value, bool) or not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{value!r} is not a REG_DWORD (0..4294967295)")
    return str(value) if value < 0x80000000 else f"([Convert]::ToInt32('{value:08X}', 16))"


def set_parameters(service: str, parameters: dict[str, int | str]) -> str:
    """Replace the service's Parameters key with these REG_DWORD / REG_SZ values.

    Raises:
        ValueError: a name that is not plain, a number that is not a REG_DWORD.
    """
    key = ps_literal(f"{SERVICES}\\{plain_name(service, 'service')}\\Parameters")
    lines = [f"$key = {key}", "Remove-Item -Path $key -Recurse -ErrorAction SilentlyContinue", "New-Item -Path $key -Force | Out-Null"]
    for name, value in parameters.items():
        kind, data = ("DWord", dword_value(value)) if isinstance(value, int) else ("String", ps_literal(value))
        value_name = ps_literal(plain_name(name, "value name"))
        lines.append(f"New-ItemProperty -Path $key -Name {value_name} -PropertyType {kind} -Value {data} -Force | Out-Null")
    return "\n".join(lines)


def file_hash(path: str) -> str:
    """Prints the file's SHA-256 (lower case)."""
    return f"(Get-FileHash -Algorithm SHA256 -LiteralPath {ps_literal(path)}).Hash.ToLower()"


def upload_script(path: str) -> str:
    """Writes what arrives on stdin (lines of base64) to ``path`` and prints its SHA-256 (lower case).

    powershell.exe -EncodedCommand hands each stdin line to the process block as ``$input`` (the way ansible's WinRM
    connection plugin copies files); the hash covers the bytes written, so a mangled transfer shows.
    """
    return "\n".join(
        [
            "begin {",
            "  $ErrorActionPreference = 'Stop'",
            f"  $path = {ps_literal(path)}",
            "  New-Item -ItemType Directory -Force -Path (Split-Path -Parent $path) | Out-Null",
            "  $sha = [Security.Cryptography.SHA256]::Create()",
            "  $file = [IO.File]::Create($path)",
            "}",
            "process {",
            "  $bytes = [Convert]::FromBase64String($input)",
            "  [void]$sha.TransformBlock($bytes, 0, $bytes.Length, $bytes, 0)",
            "  $file.Write($bytes, 0, $bytes.Length)",
            "}",
            "end {",
            "  [void]$sha.TransformFinalBlock((New-Object byte[] 0), 0, 0)",
            "  $file.Close()",
            "  [BitConverter]::ToString($sha.Hash).Replace('-', '').ToLowerInvariant()",
            "}",
        ]
    )


#: An sc.exe query line "<label> : <number>  <word>": TYPE, then STATE. Labels and words may be localized, the
#: numbers (dwServiceType, dwCurrentState) are not; exit-code lines end in "(0x0)", CHECKPOINT is hex.
SC_STATE_LINE = r"^\s*[^:]+:\s*(\d+)\s+[^\s(]"
SERVICE_STOPPED = 1  # SERVICE_STATUS.dwCurrentState


def sc_state(output: str) -> int | None:
    """The service state (SERVICE_STATUS.dwCurrentState) in ``sc.exe query`` output, in any display language."""
    found = [int(m.group(1)) for line in output.splitlines() if (m := re.search(SC_STATE_LINE, line, re.IGNORECASE))]
    return found[1] if len(found) >= 2 else None


def stop_driver(service: str, timeout_s: int) -> str:
    """sc.exe stop, then wait until sc.exe query reports state 1, SERVICE_STOPPED (sc stop returns while STOP_PENDING).

    The state is read by its number (as ``sc_state``), never by the word, which a localized Windows may translate.
    """
    name = ps_literal(plain_name(service, "service"))
    return (
        f"$out = & sc.exe stop {name} | Out-String; Write-Output $out\n"
        "if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }\n"
        f"$deadline = (Get-Date).AddSeconds({int(timeout_s)})\n"
        "while ((Get-Date) -lt $deadline) {\n"
        f"  $states = @(& sc.exe query {name} | ForEach-Object {{ if ($_ -match '{SC_STATE_LINE}') {{ [int]$Matches[1] }} }})\n"
        f"  if ($states.Count -ge 2 -and $states[1] -eq {SERVICE_STOPPED}) {{ exit 0 }}\n"
        "  Start-Sleep -Milliseconds 100\n"
        "}\n"
        "exit 1053"
    )


def verifier_script(setting: str | int, images: tuple[str, ...]) -> str:
    """Turn on Driver Verifier for ``images`` (takes effect after a reboot; verifier.exe exits 2 for "reboot needed")."""
    names = " ".join(ps_literal(plain_name(image, "driver image")) for image in images)
    mode = "'/standard'" if setting == "standard" else f"'/flags' '0x{int(setting):X}'"
    return f"& verifier.exe {mode} '/driver' {names}\nif ($LASTEXITCODE -eq 2) {{ exit 0 }}\nexit $LASTEXITCODE"


def read_chunk(path: str, offset: int, size: int) -> str:
    """Prints up to ``size`` bytes of the file from ``offset``, as base64 (an empty line at the end of the file)."""
    return (
        f"$stream = [IO.File]::OpenRead({ps_literal(path)}); [void]$stream.Seek({int(offset)}, 'Begin')\n"
        f"$buffer = New-Object byte[] {int(size)}; $count = $stream.Read($buffer, 0, {int(size)}); $stream.Close()\n"
        "[Convert]::ToBase64String($buffer, 0, $count)"
    )


MINIDUMP_DIR = "C:\\Windows\\Minidump"


def list_files(folder: str, pattern: str) -> str:
    """Prints the full path of each file in ``folder`` matching ``pattern``, oldest first (nothing when the folder is missing)."""
    return (
        f"Get-ChildItem -LiteralPath {ps_literal(folder)} -Filter {ps_literal(pattern)} -File -ErrorAction SilentlyContinue"
        " | Sort-Object LastWriteTime | ForEach-Object { $_.FullName }"
    )


def posix_list_files(folder: str, suffix: str) -> str:
    """The POSIX shell counterpart of ``list_files`` (the Linux stand-in guest)."""
    return f'for f in {posix_quote(folder.rstrip("/"))}/*{posix_quote(suffix)}; do [ -f "$f" ] && echo "$f"; done; true'


_SC_FAILED = re.compile(r"FAILED (\d+)")


def sc_error(output: str, exit_code: int) -> int | None:
    """The Win32 error sc.exe reported (``[SC] StartService FAILED 577:``), or None on success."""
    match = _SC_FAILED.search(output)
    if match:
        return int(match.group(1))
    return exit_code or None


# -- user-mode programs ----------------------------------------------------------------------------

#: CreateProcess's longest command line: 32767 characters, the terminating NUL included.
CREATE_PROCESS_MAX_CHARS = 32767
_NEEDS_QUOTES = re.compile(r'[ \t\n\v"]')


def _quote_argument(argument: str) -> str:
    if argument and not _NEEDS_QUOTES.search(argument):
        return argument  # backslashes are literal unless a double quote follows
    quoted, backslashes = '"', 0
    for char in argument:
        if char == "\\":
            backslashes += 1
            continue
        # Backslashes before a double quote are doubled and the quote escaped; before anything else they are literal.
        quoted += "\\" * (backslashes * 2 + 1) + '"' if char == '"' else "\\" * backslashes + char
        backslashes = 0
    return quoted + "\\" * (backslashes * 2) + '"'  # doubled before the closing quote


def windows_arguments(arguments: Sequence[str]) -> str:
    """The arguments part of a Windows command line (what ``ProcessStartInfo.Arguments`` takes).

    Each argument comes back as itself from ``CommandLineToArgvW`` and the Microsoft C runtime's parser (Microsoft
    Learn, "Parsing C++ command-line arguments"): one with no white space or double quote is written as it is (its
    backslashes are literal there); any other is put in double quotes, a double quote inside escaped with a
    backslash, and backslashes doubled where a double quote follows them. ``""`` inside a quoted block, where the
    two parsers differ, is never written.

    Raises:
        ValueError: an argument contains NUL (it cannot be passed in a command line).
    """
    for argument in arguments:
        if "\x00" in argument:
            raise ValueError("an argument cannot contain NUL")
    return " ".join(_quote_argument(argument) for argument in arguments)


def windows_command_line(argv: Sequence[str]) -> str:
    """The command line that gives a Windows program ``argv``: ``argv[0]`` (its path) always in double quotes, which
    the parsers take up to the next quote with no escapes, then ``windows_arguments(argv[1:])``.

    Raises:
        ValueError: ``argv[0]`` contains a double quote (no path does), or an argument contains NUL.
        CommandLineTooLong: longer than CreateProcess accepts (32767 characters with its NUL).
    """
    program, *arguments = argv
    if '"' in program:
        raise ValueError(f"a program path cannot contain a double quote: {program!r}")
    line = f'"{program}"' + (" " + windows_arguments(arguments) if arguments else "")
    if len(line.encode("utf-16-le")) // 2 >= CREATE_PROCESS_MAX_CHARS:
        raise CommandLineTooLong(
            f"a command line of {len(line)} characters: "
            f"CreateProcess accepts at most {CREATE_PROCESS_MAX_CHARS}, its terminating NUL included"
        )
    return line


def run_script(path: str, arguments: Sequence[str], timeout_s: float) -> str:
    """Runs the program at ``path`` with ``arguments`` in its folder, stdin closed, for at most ``timeout_s`` seconds,
    and prints one line: ``kcb-run STATE CODE STDOUT STDERR`` (``parse_run_output``).

    ``ProcessStartInfo.Arguments`` gets ``windows_arguments`` as one literal: Windows PowerShell 5.1 (``& prog @args``)
    drops empty arguments and does not escape embedded double quotes (PowerShell/PowerShell#1995). Output is read to
    its end as text and returned as base64 of UTF-8, so no code page or line ending is lost on the way. At the
    timeout the process and every process it started are ended (``taskkill /T /F``).

    Raises:
        ValueError: an argument contains NUL.
    """
    utf8_b64 = "[Convert]::ToBase64String([Text.Encoding]::UTF8.GetBytes({}))"
    return "\n".join(
        [
            f"$i = New-Object Diagnostics.ProcessStartInfo {ps_literal(path)}, {ps_literal(windows_arguments(arguments))}",
            "$i.WorkingDirectory = Split-Path -Parent $i.FileName",
            "$i.UseShellExecute = $false; $i.CreateNoWindow = $true",
            "$i.RedirectStandardInput = $true; $i.RedirectStandardOutput = $true; $i.RedirectStandardError = $true",
            "try { $p = [Diagnostics.Process]::Start($i) } catch {",
            "  $e = $_.Exception; if ($e.InnerException) { $e = $e.InnerException }",
            f"  'kcb-run error {{0}} {{1}}' -f $e.NativeErrorCode, {utf8_b64.format('$e.Message')}; exit 0",
            "}",
            "$p.StandardInput.Close(); $o = $p.StandardOutput.ReadToEndAsync(); $r = $p.StandardError.ReadToEndAsync()",
            "$s = 'exit'",
            f"if (-not $p.WaitForExit({int(timeout_s * 1000)})) "
            "{ $s = 'timeout'; & taskkill.exe /PID $p.Id /T /F 2>&1 | Out-Null; [void]$p.WaitForExit(10000) }",
            "[void][Threading.Tasks.Task]::WaitAll(@($o, $r), 10000)",
            f"function b($t) {{ if ($t.IsCompleted) {{ {utf8_b64.format('$t.Result')} }} }}",
            "'kcb-run {0} {1} {2} {3}' -f $s, [BitConverter]::ToUInt32([BitConverter]::GetBytes($p.ExitCode), 0), (b $o), (b $r)",
        ]
    )


@dataclass(frozen=True)
class RunReport:
    """What ``run_script`` printed: ``state`` exit (``code`` is the exit code), timeout (ended; no code) or error
    (not started; ``code`` is the Win32 error, ``stderr`` its message), and the program's output lines."""

    state: str
    code: int | None
    stdout: list[str]
    stderr: list[str]


def _text_lines(encoded: str) -> list[str]:
    return base64.b64decode(encoded, validate=True).decode("utf-8", "replace").splitlines()


def parse_run_output(output: str) -> RunReport | None:
    """The report line of ``run_script`` in a command's stdout (None when there is none, or it is malformed)."""
    for line in reversed(output.splitlines()):
        parts = line.rstrip("\r").split(" ")
        fields = 4 if parts[1:2] == ["error"] else 5
        if len(parts) != fields or parts[0] != "kcb-run" or parts[1] not in ("exit", "timeout", "error") or not parts[2].isdigit():
            continue
        try:
            texts = [_text_lines(part) for part in parts[3:]]
        except (binascii.Error, ValueError):
            return None
        if parts[1] == "error":
            return RunReport("error", int(parts[2]), [], texts[0])  # the message, as the program's stderr would be
        return RunReport(parts[1], int(parts[2]) if parts[1] == "exit" else None, texts[0], texts[1])
    return None
