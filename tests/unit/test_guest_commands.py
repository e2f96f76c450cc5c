"""Guest command lines: exact strings, and quoting attacks that must stay data."""

from __future__ import annotations

import base64

import pytest

from harness.transports.commands import (
    create_service,
    file_hash,
    plain_name,
    posix_quote,
    powershell,
    ps_literal,
    sc_error,
    sc_script,
    set_parameters,
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
        "Remove-Item -Path 'HKLM:\\SYSTEM\\CurrentControlSet\\Services\\sysTest\\Parameters' -Recurse -ErrorAction SilentlyContinue\n"
        "New-Item -Path 'HKLM:\\SYSTEM\\CurrentControlSet\\Services\\sysTest\\Parameters' -Force | Out-Null\n"
        "New-ItemProperty -Path 'HKLM:\\SYSTEM\\CurrentControlSet\\Services\\sysTest\\Parameters' -Name 'PeriodMs' "
        "-PropertyType DWord -Value 200 -Force | Out-Null\n"
        "New-ItemProperty -Path 'HKLM:\\SYSTEM\\CurrentControlSet\\Services\\sysTest\\Parameters' -Name 'Tag' "
        "-PropertyType String -Value 'it''s' -Force | Out-Null"
    )


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
    from harness.transports.commands import verifier_script

    assert verifier_script("standard", ("sysTest.sys", "sysRecv1.sys")) == (
        "& verifier.exe '/standard' '/driver' 'sysTest.sys' 'sysRecv1.sys'\nif ($LASTEXITCODE -eq 2) { exit 0 }\nexit $LASTEXITCODE"
    )
    assert verifier_script(0x209BB, ("a.sys",)).startswith("& verifier.exe '/flags' '0x209BB' '/driver' 'a.sys'")
    with pytest.raises(ValueError):
        verifier_script("standard", ("a.sys; calc",))


def test_stop_driver_waits_for_stopped() -> None:
    from harness.transports.commands import stop_driver

    script = stop_driver("sysRecv1", 25)
    assert script.startswith("$out = & sc.exe stop 'sysRecv1' | Out-String")
    assert "AddSeconds(25)" in script and "& sc.exe query 'sysRecv1'" in script and script.endswith("exit 1053")
    with pytest.raises(ValueError):
        stop_driver("x'; calc; '", 5)


def test_read_chunk_exact() -> None:
    from harness.transports.commands import read_chunk

    assert read_chunk("C:\\a'b.dmp", 4096, 1024) == (
        "$stream = [IO.File]::OpenRead('C:\\a''b.dmp'); [void]$stream.Seek(4096, 'Begin')\n"
        "$buffer = New-Object byte[] 1024; $count = $stream.Read($buffer, 0, 1024); $stream.Close()\n"
        "[Convert]::ToBase64String($buffer, 0, $count)"
    )
