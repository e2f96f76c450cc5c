"""WinRM transport with pywinrm: one shell per connection, opened at once (fails early) and reused.

Commands arrive as ``powershell.exe ... -EncodedCommand <base64>`` lines
(harness.transports.commands), so nothing user-supplied is interpreted by
cmd.exe, and none is longer than cmd.exe accepts. An upload is one command
whose short script reads the file from stdin: the data goes in WinRM Send
requests sized to stay inside the guest's MaxEnvelopeSizekb, and the script
prints the SHA-256 of what it wrote, which must match. Connection loss is
retried a bounded number of times; HTTP 401 is reported as rejected
credentials, never with the password; HTTP 413 (a request larger than the
guest's MaxEnvelopeSizekb) is reported as such, not retried.
"""

from __future__ import annotations

import base64
import hashlib
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
from harness.transports.commands import (
    MAX_ENVELOPE_KB,
    check_command_line,
    file_hash,
    powershell,
    read_chunk,
    stdin_chunk_bytes,
    stdin_lines,
    upload_script,
)

log = logging.getLogger(__name__)

READ_CHUNK = 48 * 1024  # bytes per download command (its output, not its command line, carries them)
HTTP_REQUEST_TOO_LARGE = 413  # what WinRM answers a request larger than MaxEnvelopeSizekb


class RequestTooLarge(TransportError):
    """The guest refused a request as larger than its MaxEnvelopeSizekb (HTTP 413): resending will not help."""


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
        max_envelope_kb: int = MAX_ENVELOPE_KB,
    ) -> None:
        self._winrm = _winrm()
        self.where = f"{username}@{scheme}://{host}:{port}"
        self._password = password
        self._attempts = attempts
        self._timeout = timeout
        self._max_envelope_kb = max_envelope_kb
        self._stdin_chunk = stdin_chunk_bytes(max_envelope_kb)
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
            except errors.WinRMTransportError as error:
                if error.code == HTTP_REQUEST_TOO_LARGE:
                    raise RequestTooLarge(
                        f"winrm {self.where}: the guest refused a request as too large (HTTP 413): its MaxEnvelopeSizekb "
                        f"is below the {self._max_envelope_kb} this transport was given (max_envelope_kb)"
                    ) from None
                last = error
            except _connection_errors() as error:
                last = error
            time.sleep(min(2.0**attempt, 5.0))
        raise ConnectFailed(f"winrm {self.where}: {self._password.mask(str(last))}")

    def _start(self, command: str, stdin: bool = False) -> str:
        """Start ``command`` (a line cmd.exe accepts); its stdin is a pipe to feed when ``stdin``, else the console."""
        check_command_line(command)
        if self._shell is None:
            raise TransportError(f"winrm {self.where}: not connected")
        command_id: str = self._call(self._protocol.run_command, self._shell, command, (), not stdin)
        return command_id

    def _finish(self, command_id: str, started: float, deadline: float) -> CommandResult:
        """Receive the command's output until it ends.

        Raises:
            CommandTimeout: it did not end by ``deadline``.
        """
        stdout, stderr = bytearray(), bytearray()
        while True:
            try:
                out, err, code, done = self._call(self._protocol.get_command_output_raw, self._shell, command_id)
            except self._winrm.exceptions.WinRMOperationTimeoutError:
                out, err, code, done = b"", b"", -1, False  # nothing within the OperationTimeout: it is still running
            stdout += out
            stderr += err
            if done:
                return CommandResult(code, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"), time.monotonic() - started)
            if time.monotonic() > deadline:
                raise CommandTimeout(f"winrm {self.where}: command did not finish within {deadline - started:g}s")

    def _end(self, command_id: str) -> None:
        """Release the command (terminating it if it still runs): best effort."""
        try:
            self._protocol.cleanup_command(self._shell, command_id)
        except Exception as error:
            log.debug("winrm cleanup failed: %s", type(error).__name__)

    def run(self, command: str, timeout: float) -> CommandResult:
        started = time.monotonic()
        command_id = self._start(command)
        try:
            return self._finish(command_id, started, started + timeout)
        finally:
            self._end(command_id)

    def upload(self, local: Path, remote: str, timeout: float) -> str:
        data = local.read_bytes()
        expected = hashlib.sha256(data).hexdigest()
        started = time.monotonic()
        deadline = started + timeout
        command_id = self._start(powershell(upload_script(remote)), stdin=True)
        try:
            lines = stdin_lines(data, self._stdin_chunk)
            line: bytes | None = next(lines, b"")  # an empty file: one empty Send that closes stdin
            while line is not None:
                if time.monotonic() > deadline:
                    raise CommandTimeout(f"winrm {self.where}: upload of {local.name} did not finish within {timeout:g}s")
                following = next(lines, None)
                self._call(self._protocol.send_command_input, self._shell, command_id, line, following is None)
                line = following
            result = self._finish(command_id, started, deadline)
        finally:
            self._end(command_id)
        if not result.ok:
            raise TransportError(f"winrm {self.where}: writing {remote} failed: {result.stderr.strip()[:300]}")
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
