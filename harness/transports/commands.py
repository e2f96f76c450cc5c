"""Guest command lines built from data, never by pasting text into a shell. Pure.

Windows guests get ``powershell -NoProfile -NonInteractive -EncodedCommand
<base64>``: the script travels as base64 of UTF-16LE (only ``A-Za-z0-9+/=``
on the command line), and every user value inside it is a PowerShell
single-quoted literal, in which only ``'`` is special (doubled). POSIX hosts
(the SSH test server) get single-quoted arguments.
"""

from __future__ import annotations

import base64
import re

_PLAIN = re.compile(r"[A-Za-z0-9_.-]+")


def ps_literal(value: str) -> str:
    """A PowerShell single-quoted string literal for ``value`` (typographic quotes count as quotes too)."""
    return "'" + re.sub("['\u2018\u2019\u201a\u201b]", lambda m: m.group(0) * 2, value) + "'"


def powershell(script: str) -> str:
    """The command line that runs ``script`` in PowerShell, with nothing for cmd.exe or a shell to interpret."""
    encoded = base64.b64encode(script.encode("utf-16-le")).decode("ascii")
    return f"powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand {encoded}"


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


def set_parameters(service: str, parameters: dict[str, int | str]) -> str:
    """Replace the service's Parameters key with these REG_DWORD / REG_SZ values."""
    key = ps_literal(f"{SERVICES}\\{plain_name(service, 'service')}\\Parameters")
    lines = [f"Remove-Item -Path {key} -Recurse -ErrorAction SilentlyContinue", f"New-Item -Path {key} -Force | Out-Null"]
    for name, value in parameters.items():
        kind, data = ("DWord", str(int(value))) if isinstance(value, int) else ("String", ps_literal(value))
        value_name = ps_literal(plain_name(name, "value name"))
        lines.append(f"New-ItemProperty -Path {key} -Name {value_name} -PropertyType {kind} -Value {data} -Force | Out-Null")
    return "\n".join(lines)


def file_hash(path: str) -> str:
    """Prints the file's SHA-256 (lower case)."""
    return f"(Get-FileHash -Algorithm SHA256 -LiteralPath {ps_literal(path)}).Hash.ToLower()"


def write_chunk(path: str, chunk: bytes, first: bool) -> str:
    """Writes (first chunk) or appends a base64-carried chunk of a file."""
    data = base64.b64encode(chunk).decode("ascii")
    mode = "Create" if first else "Append"
    return (
        f"$bytes = [Convert]::FromBase64String('{data}')\n"
        f"New-Item -ItemType Directory -Force -Path (Split-Path -Parent {ps_literal(path)}) | Out-Null\n"
        f"$stream = [IO.File]::Open({ps_literal(path)}, [IO.FileMode]::{mode}, [IO.FileAccess]::Write)\n"
        "$stream.Write($bytes, 0, $bytes.Length); $stream.Close()"
    )


def stop_driver(service: str, timeout_s: int) -> str:
    """sc.exe stop, then wait until the service reports STOPPED (sc stop returns while STOP_PENDING)."""
    name = ps_literal(plain_name(service, "service"))
    return (
        f"$out = & sc.exe stop {name} | Out-String; Write-Output $out\n"
        "if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }\n"
        f"$deadline = (Get-Date).AddSeconds({int(timeout_s)})\n"
        "while ((Get-Date) -lt $deadline) {\n"
        f"  if ((& sc.exe query {name} | Out-String) -match 'STOPPED') {{ exit 0 }}\n"
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
