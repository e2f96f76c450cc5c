"""The WinRM transport (pywinrm) against the protocol-level WS-Man server on loopback.

What this proves: the SOAP exchanges pywinrm makes for our shells, commands,
stdin, output streams and exit codes, our upload (one command fed through
stdin) and hash check, credential and connection-loss handling, and that no
request breaks the limits Windows enforces (cmd.exe's command-line length,
MaxEnvelopeSizekb; the server enforces both as Windows does). What it does
not: how Windows runs the PowerShell (the stand-in below understands only the
few script shapes the harness sends), NTLM message encryption, or HTTPS.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from harness.secrets import Secret
from harness.transports.base import AuthenticationError, CommandTimeout, TransportError
from harness.transports.commands import CommandLineTooLong, powershell
from harness.transports.winrm import RequestTooLarge, WinRmTransport
from tests.integration.script_guest import ENCODED, ScriptGuest
from tests.integration.wsman_server import CMD_MAX_CHARS, CMD_TOO_LONG, WsmanServer

pytestmark = pytest.mark.winrm

PASSWORD = Secret("Pa55-" + os.urandom(6).hex())
ECHO = "powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand "


def connect(server: WsmanServer, password: Secret = PASSWORD, **options: Any) -> WinRmTransport:
    return WinRmTransport(
        "127.0.0.1", server.port, "Administrator", password, scheme="http", auth="basic", message_encryption="never", timeout=20, **options
    )


def within_windows_limits(server: WsmanServer) -> None:
    state = server.state
    assert state.refused_requests == 0 and state.largest_request <= state.max_envelope_kb * 1024
    assert state.lines and max(len(line) for line in state.lines) <= CMD_MAX_CHARS


def test_command_output_and_exit_code() -> None:
    guest = ScriptGuest()
    with WsmanServer("Administrator", PASSWORD.reveal(), guest) as server, connect(server) as transport:
        result = transport.run(powershell("Write-Output 'it''s $(rm -rf /) & calc'; exit 3"), 20)
    assert (result.exit_code, result.stdout) == (3, "it's $(rm -rf /) & calc\r\n")
    assert server.state.requests[:3] == ["Create", "Command", "Receive"] and server.state.requests[-1] == "Delete"
    # On the wire: only base64 after -EncodedCommand, nothing for cmd.exe to interpret.
    assert all(ENCODED.match(line) for line in guest.lines)


# -- the server enforces Windows' limits ----------------------------------------------------------


def test_server_answers_an_over_long_command_line_as_cmd_exe_does() -> None:
    import winrm.protocol

    guest = ScriptGuest()
    with WsmanServer("Administrator", PASSWORD.reveal(), guest) as server:
        protocol = winrm.protocol.Protocol(
            f"http://127.0.0.1:{server.port}/wsman", transport="basic", username="Administrator", password=PASSWORD.reveal()
        )
        shell = protocol.open_shell()
        longest = "echo " + "x" * (CMD_MAX_CHARS - len("echo "))
        results = [protocol.get_command_output(shell, protocol.run_command(shell, line)) for line in (longest, longest + "A")]
        protocol.close_shell(shell)
    assert results[0] == (b"", b"not an encoded PowerShell command\r\n", 1)  # 8191 characters: run (and refused by the guest)
    assert results[1] == CMD_TOO_LONG  # 8192: cmd.exe refuses it, the guest never sees it
    assert guest.lines == [longest]


def test_server_refuses_an_over_size_envelope_with_413() -> None:
    import requests

    with WsmanServer("Administrator", PASSWORD.reveal(), ScriptGuest()) as server:
        url, auth = f"http://127.0.0.1:{server.port}/wsman", ("Administrator", PASSWORD.reveal())
        headers = {"Content-Type": "application/soap+xml;charset=UTF-8"}
        over = requests.post(url, data=b" " * (500 * 1024 + 1), auth=auth, headers=headers, timeout=10)
        within = requests.post(url, data=b"<x/>" + b" " * (500 * 1024 - 4), auth=auth, headers=headers, timeout=10)
    assert over.status_code == 413 and over.content == b""
    assert within.status_code == 500  # read and answered (it names no shell), not refused for its size


# -- commands -------------------------------------------------------------------------------------


def test_an_over_long_command_line_is_never_sent() -> None:
    guest = ScriptGuest()
    with (
        WsmanServer("Administrator", PASSWORD.reveal(), guest) as server,
        connect(server) as transport,
        pytest.raises(CommandLineTooLong),
    ):
        transport.run(ECHO + "A" * CMD_MAX_CHARS, 20)
    assert "Command" not in server.state.requests and guest.lines == []


def test_a_long_running_command_outlasts_operation_timeouts() -> None:
    answers: list[tuple[bytes, bytes, int] | None] = [None, None, (b"done\r\n", b"", 0)]
    with WsmanServer("Administrator", PASSWORD.reveal(), lambda line, stdin: answers.pop(0)) as server, connect(server) as transport:
        result = transport.run(powershell("Start-Sleep 60"), 20)
    assert (result.exit_code, result.stdout) == (0, "done\r\n")
    assert server.state.requests.count("Receive") == 3


def test_a_command_that_never_ends_is_a_command_timeout() -> None:
    with (
        WsmanServer("Administrator", PASSWORD.reveal(), lambda line, stdin: None) as server,
        connect(server) as transport,
        pytest.raises(CommandTimeout),
    ):
        transport.run(powershell("Start-Sleep 600"), 1)
    assert "Signal" in server.state.requests  # the command was terminated, not left running


# -- uploads --------------------------------------------------------------------------------------


def test_upload_is_one_command_fed_through_stdin(tmp_path: Path) -> None:
    guest = ScriptGuest()
    local = tmp_path / "receiver.sys"
    local.write_bytes(os.urandom(20_000))
    remote = "C:\\kcb\\it's here.sys"
    with WsmanServer("Administrator", PASSWORD.reveal(), guest) as server, connect(server) as transport:
        digest = transport.upload(local, remote, 60)
    assert guest.files[remote] == local.read_bytes() and digest == hashlib.sha256(local.read_bytes()).hexdigest()
    assert len(guest.lines) == 1 and server.state.requests.count("Send") == 1
    within_windows_limits(server)


@pytest.mark.parametrize("size", [1 << 20, 20 << 20], ids=["1MiB", "20MiB"])
def test_large_uploads_stay_within_windows_limits(tmp_path: Path, size: int) -> None:
    guest = ScriptGuest()
    local = tmp_path / "big.sys"
    local.write_bytes(os.urandom(size))
    with WsmanServer("Administrator", PASSWORD.reveal(), guest) as server, connect(server) as transport:
        digest = transport.upload(local, "C:\\kcb\\big.sys", 300)
    assert digest == hashlib.sha256(local.read_bytes()).hexdigest() == hashlib.sha256(guest.files["C:\\kcb\\big.sys"]).hexdigest()
    assert len(guest.lines) == 1
    within_windows_limits(server)


def test_an_empty_file_uploads(tmp_path: Path) -> None:
    guest = ScriptGuest()
    local = tmp_path / "empty.sys"
    local.write_bytes(b"")
    with WsmanServer("Administrator", PASSWORD.reveal(), guest) as server, connect(server) as transport:
        digest = transport.upload(local, "C:\\kcb\\empty.sys", 30)
    assert guest.files["C:\\kcb\\empty.sys"] == b"" and digest == hashlib.sha256(b"").hexdigest()


def test_a_server_with_a_smaller_envelope_refuses_without_retries(tmp_path: Path) -> None:
    # Windows Server 2008 (R2) defaults to MaxEnvelopeSizekb 150: a transport sized for 500 is refused (413) and says so.
    local = tmp_path / "big.sys"
    local.write_bytes(os.urandom(1 << 20))
    with WsmanServer("Administrator", PASSWORD.reveal(), ScriptGuest(), max_envelope_kb=150) as server:
        with connect(server) as transport, pytest.raises(RequestTooLarge, match="MaxEnvelopeSizekb"):
            transport.upload(local, "C:\\kcb\\big.sys", 60)
        assert server.state.refused_requests == 1  # refused once, not retried as a lost connection
        guest = ScriptGuest()
        server.state.guest = guest
        server.state.refused_requests = 0
        with connect(server, max_envelope_kb=150) as transport:
            digest = transport.upload(local, "C:\\kcb\\big.sys", 60)
    assert digest == hashlib.sha256(local.read_bytes()).hexdigest() == hashlib.sha256(guest.files["C:\\kcb\\big.sys"]).hexdigest()
    within_windows_limits(server)


def test_corrupted_upload_is_detected(tmp_path: Path) -> None:
    class Corrupting(ScriptGuest):
        def __call__(self, line: str, stdin: bytes = b"") -> tuple[bytes, bytes, int] | None:
            flipped = (b"B" if stdin[:1] == b"A" else b"A") + stdin[1:]  # one base64 character changed in transit
            return super().__call__(line, flipped)

    local = tmp_path / "x.sys"
    local.write_bytes(b"MZ" + os.urandom(100))
    with (
        WsmanServer("Administrator", PASSWORD.reveal(), Corrupting()) as server,
        connect(server) as transport,
        pytest.raises(TransportError, match="arrived with SHA-256"),
    ):
        transport.upload(local, "C:\\kcb\\x.sys", 30)


def test_a_failing_upload_script_is_a_transport_error(tmp_path: Path) -> None:
    def refusing(line: str, stdin: bytes) -> tuple[bytes, bytes, int]:
        return b"", b"Access to the path 'C:\\kcb\\x.sys' is denied.\r\n", 1

    local = tmp_path / "x.sys"
    local.write_bytes(os.urandom(1000))
    with (
        WsmanServer("Administrator", PASSWORD.reveal(), refusing) as server,
        connect(server) as transport,
        pytest.raises(TransportError, match="is denied") as caught,
    ):
        transport.upload(local, "C:\\kcb\\x.sys", 30)
    assert not isinstance(caught.value, CommandTimeout)


def test_a_hung_upload_is_a_command_timeout(tmp_path: Path) -> None:
    local = tmp_path / "x.sys"
    local.write_bytes(os.urandom(1000))
    with (
        WsmanServer("Administrator", PASSWORD.reveal(), lambda line, stdin: None) as server,
        connect(server) as transport,
        pytest.raises(CommandTimeout),
    ):
        transport.upload(local, "C:\\kcb\\x.sys", 1)


def test_a_connection_lost_during_upload_is_retried(tmp_path: Path) -> None:
    guest = ScriptGuest()
    local = tmp_path / "x.sys"
    local.write_bytes(os.urandom(300_000))
    with WsmanServer("Administrator", PASSWORD.reveal(), guest) as server, connect(server, max_envelope_kb=150) as transport:
        server.state.drop_next, server.state.drop_action = 1, "Send"
        digest = transport.upload(local, "C:\\kcb\\x.sys", 60)
    assert digest == hashlib.sha256(guest.files["C:\\kcb\\x.sys"]).hexdigest() and server.state.drop_next == 0


def test_wrong_password_is_rejected_without_showing_it() -> None:
    wrong = Secret("Wr0ng-" + os.urandom(6).hex())
    with WsmanServer("Administrator", PASSWORD.reveal(), ScriptGuest()) as server, pytest.raises(AuthenticationError) as caught:
        connect(server, wrong)
    assert "rejected" in str(caught.value) and wrong.reveal() not in str(caught.value)


def test_a_lost_connection_is_retried() -> None:
    with WsmanServer("Administrator", PASSWORD.reveal(), ScriptGuest()) as server, connect(server) as transport:
        server.state.drop_next = 1
        result = transport.run(powershell("Write-Output 'again'; exit 0"), 20)
    assert result.stdout == "again\r\n"


def test_an_unreachable_guest_is_a_transport_error() -> None:
    with WsmanServer("Administrator", PASSWORD.reveal(), ScriptGuest()) as server:
        port = server.port
    with pytest.raises(TransportError, match="winrm"):
        WinRmTransport("127.0.0.1", port, "Administrator", PASSWORD, auth="basic", message_encryption="never", attempts=2)


def test_download_is_verified(tmp_path: Path) -> None:
    guest = ScriptGuest()
    guest.files["C:\\Windows\\Minidump\\112426-1.dmp"] = os.urandom(100_000)
    local = tmp_path / "crash.dmp"
    with WsmanServer("Administrator", PASSWORD.reveal(), guest) as server, connect(server) as transport:
        digest = transport.download("C:\\Windows\\Minidump\\112426-1.dmp", local, 60)
    assert local.read_bytes() == guest.files["C:\\Windows\\Minidump\\112426-1.dmp"]
    assert digest == hashlib.sha256(local.read_bytes()).hexdigest()
    within_windows_limits(server)
