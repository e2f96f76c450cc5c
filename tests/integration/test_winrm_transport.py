"""The WinRM transport (pywinrm) against the protocol-level WS-Man server on loopback.

What this proves: the SOAP exchanges pywinrm makes for our shells, commands,
output streams and exit codes, our chunked upload and hash check, credential
and connection-loss handling. What it does not: how Windows runs the
PowerShell (the stand-in below understands only the few script shapes the
harness sends), NTLM message encryption, or HTTPS.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path

import pytest

from harness.secrets import Secret
from harness.transports.base import AuthenticationError, TransportError
from harness.transports.commands import powershell
from harness.transports.winrm import WinRmTransport
from tests.integration.wsman_server import WsmanServer

pytestmark = pytest.mark.winrm

ENCODED = re.compile(r"^powershell\.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand ([A-Za-z0-9+/=]+)$")
LITERAL = r"'((?:[^']|'')*)'"


class ScriptGuest:
    """Runs the handful of PowerShell shapes the harness sends, on an in-memory disk."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.lines: list[str] = []

    def __call__(self, line: str) -> tuple[bytes, bytes, int]:
        self.lines.append(line)
        match = ENCODED.match(line)
        if not match:
            return b"", b"not an encoded PowerShell command\r\n", 1
        script = base64.b64decode(match.group(1)).decode("utf-16-le")
        if chunk := re.search(r"FromBase64String\('([A-Za-z0-9+/=]*)'\)", script):
            opened = re.search(rf"\[IO\.File\]::Open\({LITERAL}, \[IO\.FileMode\]::(Create|Append)", script)
            assert opened is not None
            path = opened.group(1).replace("''", "'")
            before = self.files.get(path, b"") if opened.group(2) == "Append" else b""
            self.files[path] = before + base64.b64decode(chunk.group(1))
            return b"", b"", 0
        if read := re.search(rf"\[IO\.File\]::OpenRead\({LITERAL}\); \[void\]\$stream\.Seek\((\d+), 'Begin'\)", script):
            path = read.group(1).replace("''", "'")
            size = int(re.search(r"New-Object byte\[\] (\d+)", script).group(1))  # type: ignore[union-attr]
            offset = int(read.group(2))
            return base64.b64encode(self.files[path][offset : offset + size]) + b"\r\n", b"", 0
        if hashed := re.search(rf"Get-FileHash -Algorithm SHA256 -LiteralPath {LITERAL}", script):
            path = hashed.group(1).replace("''", "'")
            if path not in self.files:
                return b"", b"file not found\r\n", 1
            return hashlib.sha256(self.files[path]).hexdigest().encode() + b"\r\n", b"", 0
        if written := re.fullmatch(rf"Write-Output {LITERAL}; exit (\d+)", script):
            return written.group(1).replace("''", "'").encode() + b"\r\n", b"", int(written.group(2))
        return b"", b"unsupported script\r\n", 1


PASSWORD = Secret("Pa55-" + os.urandom(6).hex())


def connect(server: WsmanServer, password: Secret = PASSWORD) -> WinRmTransport:
    return WinRmTransport(
        "127.0.0.1", server.port, "Administrator", password, scheme="http", auth="basic", message_encryption="never", timeout=20
    )


def test_command_output_and_exit_code() -> None:
    guest = ScriptGuest()
    with WsmanServer("Administrator", PASSWORD.reveal(), guest) as server, connect(server) as transport:
        result = transport.run(powershell("Write-Output 'it''s $(rm -rf /) & calc'; exit 3"), 20)
    assert (result.exit_code, result.stdout) == (3, "it's $(rm -rf /) & calc\r\n")
    assert server.state.requests[:3] == ["Create", "Command", "Receive"] and server.state.requests[-1] == "Delete"
    # On the wire: only base64 after -EncodedCommand, nothing for cmd.exe to interpret.
    assert all(ENCODED.match(line) for line in guest.lines)


def test_chunked_upload_is_verified(tmp_path: Path) -> None:
    guest = ScriptGuest()
    local = tmp_path / "receiver.sys"
    local.write_bytes(os.urandom(20_000))
    remote = "C:\\kcb\\it's here.sys"
    with WsmanServer("Administrator", PASSWORD.reveal(), guest) as server, connect(server) as transport:
        digest = transport.upload(local, remote, 60)
    assert guest.files[remote] == local.read_bytes() and digest == hashlib.sha256(local.read_bytes()).hexdigest()
    assert len(guest.lines) == 7 + 1  # ceil(20000 / 3072) chunks, then the hash


def test_corrupted_upload_is_detected(tmp_path: Path) -> None:
    class Corrupting(ScriptGuest):
        def __call__(self, line: str) -> tuple[bytes, bytes, int]:
            result = super().__call__(line)
            for path in self.files:
                self.files[path] = self.files[path][:-1] + b"\0"
            return result

    local = tmp_path / "x.sys"
    local.write_bytes(b"MZ" + os.urandom(100))
    with (
        WsmanServer("Administrator", PASSWORD.reveal(), Corrupting()) as server,
        connect(server) as transport,
        pytest.raises(TransportError, match="arrived with SHA-256"),
    ):
        transport.upload(local, "C:\\kcb\\x.sys", 30)


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
