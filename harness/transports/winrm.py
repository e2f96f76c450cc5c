"""WinRM transport with pywinrm: one shell per connection, opened at once (fails early) and reused.

Commands arrive as ``powershell.exe ... -EncodedCommand <base64>`` lines
(harness.transports.commands), so nothing user-supplied is interpreted by
cmd.exe. Uploads go in chunks and are checked with Get-FileHash. Connection
loss is retried a bounded number of times; HTTP 401 is reported as rejected
credentials, never with the password.
"""

from __future__ import annotations

import base64
import logging
import time
from pathlib import Path
from typing import Any, Literal

from harness.secrets import Secret
from harness.transports.base import (
    AuthenticationError,
    CommandResult,
    CommandTimeout,
    ConnectFailed,
    Transport,
    TransportError,
    sha256_file,
)
from harness.transports.commands import file_hash, powershell, read_chunk, write_chunk

log = logging.getLogger(__name__)

CHUNK = 3 * 1024  # raw bytes per upload command: the encoded command line stays under cmd.exe's 8191 characters
READ_CHUNK = 48 * 1024  # bytes per download command (its output, not its command line, carries them)


def _winrm() -> Any:
    try:
        import winrm.exceptions
        import winrm.protocol
    except ImportError:
        raise TransportError("pywinrm is not installed: run `make setup` (pip install pywinrm)") from None
    return winrm


def _connection_errors() -> tuple[type[BaseException], ...]:
    """What pywinrm lets through when the connection fails: its own errors, requests' and the socket's."""
    import requests.exceptions

    errors = _winrm().exceptions
    return (errors.WinRMTransportError, errors.WinRMError, requests.exceptions.RequestException, OSError)


class WinRmTransport(Transport):
    """A WinRM connection to a guest."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: Secret,
        *,
        scheme: Literal["http", "https"] = "http",
        auth: Literal["ntlm", "basic", "credssp"] = "ntlm",
        message_encryption: Literal["auto", "always", "never"] = "auto",
        server_cert_validation: Literal["validate", "ignore"] = "validate",
        timeout: float = 60.0,
        attempts: int = 3,
    ) -> None:
        self._winrm = _winrm()
        self.where = f"{username}@{scheme}://{host}:{port}"
        self._password = password
        self._attempts = attempts
        self._timeout = timeout
        self._protocol = self._winrm.protocol.Protocol(
            endpoint=f"{scheme}://{host}:{port}/wsman",
            transport=auth,
            username=username,
            password=password.reveal(),
            server_cert_validation=server_cert_validation,
            message_encryption=message_encryption,
            operation_timeout_sec=20,
            read_timeout_sec=30,
        )
        self._shell: str | None = None
        self._shell = self._call(self._protocol.open_shell)

    def _call(self, function: Any, *args: Any) -> Any:
        """One protocol call, retried on connection loss (reopening the shell), errors mapped."""
        errors = self._winrm.exceptions
        last: BaseException | None = None
        for attempt in range(self._attempts):
            try:
                return function(*args)
            except errors.InvalidCredentialsError:
                raise AuthenticationError(f"winrm {self.where}: the credentials were rejected") from None
            except _connection_errors() as error:
                last = error
            time.sleep(min(2.0**attempt, 5.0))
        raise ConnectFailed(f"winrm {self.where}: {self._password.mask(str(last))}")

    def run(self, command: str, timeout: float) -> CommandResult:
        started = time.monotonic()
        if self._shell is None:
            raise TransportError(f"winrm {self.where}: not connected")
        command_id = self._call(self._protocol.run_command, self._shell, command)
        stdout, stderr = bytearray(), bytearray()
        code = -1
        try:
            while True:
                out, err, code, done = self._call(self._protocol.get_command_output_raw, self._shell, command_id)
                stdout += out
                stderr += err
                if done:
                    break
                if time.monotonic() - started > timeout:
                    raise CommandTimeout(f"winrm {self.where}: command did not finish within {timeout:g}s")
        finally:
            try:
                self._protocol.cleanup_command(self._shell, command_id)
            except Exception as error:  # cleanup is best effort
                log.debug("winrm cleanup failed: %s", type(error).__name__)
        return CommandResult(code, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"), time.monotonic() - started)

    def upload(self, local: Path, remote: str, timeout: float) -> str:
        expected = sha256_file(local)
        data = local.read_bytes()
        deadline = time.monotonic() + timeout
        for offset in range(0, max(len(data), 1), CHUNK):
            left = deadline - time.monotonic()
            if left <= 0:
                raise CommandTimeout(f"winrm {self.where}: upload of {local.name} did not finish within {timeout:g}s")
            result = self.run(powershell(write_chunk(remote, data[offset : offset + CHUNK], first=offset == 0)), left)
            if not result.ok:
                raise TransportError(f"winrm {self.where}: writing {remote} failed: {result.stderr.strip()[:300]}")
        result = self.run(powershell(file_hash(remote)), max(deadline - time.monotonic(), 5.0))
        actual = result.stdout.strip().lower()
        if actual != expected:
            raise TransportError(f"winrm {self.where}: {remote} arrived with SHA-256 {actual or '(none)'}, expected {expected}")
        return expected

    def download(self, remote: str, local: Path, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        data = bytearray()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CommandTimeout(f"winrm {self.where}: download of {remote} did not finish within {timeout:g}s")
            result = self.run(powershell(read_chunk(remote, len(data), READ_CHUNK)), left)
            if not result.ok:
                raise TransportError(f"winrm {self.where}: reading {remote} failed: {result.stderr.strip()[:300]}")
            chunk = base64.b64decode(result.stdout.strip() or "")
            data += chunk
            if len(chunk) < READ_CHUNK:
                break
        local.write_bytes(bytes(data))
        expected = self.run(powershell(file_hash(remote)), max(deadline - time.monotonic(), 5.0)).stdout.strip().lower()
        actual = sha256_file(local)
        if actual != expected:
            raise TransportError(f"winrm {self.where}: {remote} arrived with SHA-256 {actual}, the guest has {expected or '(none)'}")
        return actual

    def close(self) -> None:
        shell, self._shell = self._shell, None
        if shell is not None:
            try:
                self._protocol.close_shell(shell)
            except Exception as error:
                log.debug("winrm close failed: %s", type(error).__name__)
