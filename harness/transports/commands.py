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
import re
from collections.abc import Iterator

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
