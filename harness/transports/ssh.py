"""SSH/SFTP transport with paramiko (Windows OpenSSH server, or any sshd).

Host keys are verified against a known_hosts file; an unknown key is
rejected unless ``accept_new_host_key`` is set (then it is added to that
file). ``host_key_alias`` (as OpenSSH's HostKeyAlias) files the key under a
fixed name: the VM's forwarded port changes from run to run, and a key
filed under ``[127.0.0.1]:PORT`` would be unknown the next time. Passwords come from ``harness.secrets.Secret`` and never reach a log
line or an exception message.
"""

from __future__ import annotations

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
    HostKeyError,
    Transport,
    TransportError,
    sha256_file,
)
from harness.transports.commands import check_command_line, file_hash, posix_quote, powershell

log = logging.getLogger(__name__)


def _paramiko() -> Any:
    try:
        import paramiko
    except ImportError:
        raise TransportError("paramiko is not installed: run `make setup` (pip install paramiko)") from None
    return paramiko


class _UnknownHostKey(Exception):
    """Raised by our host-key policies (through paramiko's connect) for a key known_hosts does not have."""


def _reject_policy(paramiko: Any) -> Any:
    """paramiko's RejectPolicy, raising a type of our own (paramiko's own is a bare SSHException)."""

    class Reject(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]
        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            raise _UnknownHostKey(hostname)

    return Reject()


def _alias_policy(paramiko: Any, known_hosts: Path | None, alias: str, accept_new: bool) -> Any:
    """A paramiko host-key policy that checks the server's key against known_hosts' entry for ``alias``."""

    class AliasPolicy(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]
        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            keys = paramiko.HostKeys()
            if known_hosts is not None and known_hosts.is_file():
                keys.load(str(known_hosts))
            entry = keys.lookup(alias)
            if entry is not None and key.get_name() in entry:
                if entry[key.get_name()] != key:
                    raise paramiko.BadHostKeyException(alias, key, entry[key.get_name()])
                return
            if not accept_new or known_hosts is None:
                raise _UnknownHostKey(alias)
            keys.add(alias, key.get_name(), key)
            keys.save(str(known_hosts))

    return AliasPolicy()


_CHANNEL_LOG = "harness.transports.ssh.paramiko"


def _quiet_refusals(record: logging.LogRecord) -> bool:
    """Drop paramiko's "channel open FAILED" records (a refused port is an expected answer to open_tcp)."""
    return "open FAILED" not in record.getMessage()


class SshTransport(Transport):
    """One SSH connection to a guest, opened at construction (fails early)."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        *,
        password: Secret | None = None,
        private_key: Path | None = None,
        known_hosts: Path | None = None,
        accept_new_host_key: bool = False,
        host_key_alias: str | None = None,
        use_agent: bool = False,
        remote: Literal["windows", "posix"] = "windows",
        timeout: float = 30.0,
        attempts: int = 3,
    ) -> None:
        paramiko = _paramiko()
        self.remote = remote
        self.where = f"{username}@{host}:{port}"
        self._password = password
        client = paramiko.SSHClient()
        if host_key_alias is not None:
            # Nothing loaded under the real name: paramiko asks the policy, which checks the alias's entry.
            client.set_missing_host_key_policy(_alias_policy(paramiko, known_hosts, host_key_alias, accept_new_host_key))
        else:
            if known_hosts is not None and known_hosts.is_file():
                client.load_host_keys(str(known_hosts))
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy() if accept_new_host_key else _reject_policy(paramiko))
        last: Exception | None = None
        for attempt in range(attempts):
            try:
                client.connect(
                    host,
                    port=port,
                    username=username,
                    password=password.reveal() if password is not None else None,
                    key_filename=str(private_key) if private_key is not None else None,
                    look_for_keys=use_agent and private_key is None,  # the user's ~/.ssh keys and agent, when asked
                    allow_agent=use_agent and private_key is None,
                    timeout=timeout,
                    banner_timeout=timeout,
                    auth_timeout=timeout,
                )
                break
            except paramiko.BadHostKeyException:
                raise HostKeyError(f"ssh {self.where}: the host key does not match known_hosts (possible impersonation)") from None
            except _UnknownHostKey:
                raise HostKeyError(f"ssh {self.where}: unknown host key (add it to known_hosts, or set accept_new_host_key)") from None
            except paramiko.AuthenticationException:
                raise AuthenticationError(f"ssh {self.where}: the credentials were rejected") from None
            except (paramiko.SSHException, TimeoutError, OSError, EOFError) as error:
                last = error
            time.sleep(min(2.0**attempt, 5.0))
        else:
            raise ConnectFailed(f"ssh {self.where}: cannot connect: {self._mask(str(last))}")
        if accept_new_host_key and known_hosts is not None and host_key_alias is None:
            client.save_host_keys(str(known_hosts))
        self._client = client
        # paramiko logs every refused channel at ERROR; a serial reader retrying while QEMU restarts makes dozens.
        client.get_transport().set_log_channel(_CHANNEL_LOG)
        logging.getLogger(_CHANNEL_LOG).addFilter(_quiet_refusals)

    def _mask(self, text: str) -> str:
        return self._password.mask(text) if self._password is not None else text

    def run(self, command: str, timeout: float) -> CommandResult:
        if self.remote == "windows":
            check_command_line(command)  # Windows OpenSSH's default shell is cmd.exe, with its line limit
        started = time.monotonic()
        channel = None
        try:
            channel = self._client.get_transport().open_session(timeout=timeout)
            channel.settimeout(timeout)
            channel.exec_command(command)
            stdout = channel.makefile("rb").read()
            stderr = channel.makefile_stderr("rb").read()
            code = channel.recv_exit_status()
        except TimeoutError:
            raise CommandTimeout(f"ssh {self.where}: the command did not finish within {timeout:g}s") from None
        except (OSError, EOFError) as error:
            raise ConnectFailed(f"ssh {self.where}: command failed: {self._mask(str(error)) or type(error).__name__}") from None
        finally:
            if channel is not None:
                channel.close()
        return CommandResult(code, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"), time.monotonic() - started)

    def open_tcp(self, port: int, timeout: float) -> Any:
        """A channel to ``port`` on the server's loopback (as ``ssh -L`` uses): socket-like, with recv/sendall/close.

        Raises:
            ConnectionRefusedError: nothing listens there (yet), or the server refused.
        """
        paramiko = _paramiko()
        try:
            return self._client.get_transport().open_channel("direct-tcpip", ("127.0.0.1", port), ("127.0.0.1", 0), timeout=timeout)
        except (paramiko.SSHException, EOFError) as error:
            raise ConnectionRefusedError(f"ssh {self.where}: port {port}: {error}") from None

    def _remote_hash(self, remote: str, timeout: float) -> str:
        if self.remote == "windows":
            return self.run(powershell(file_hash(remote)), timeout).stdout.strip().lower()
        return self.run(f"sha256sum -- {posix_quote(remote)}", timeout).stdout.split(" ", 1)[0].strip().lower()

    def download(self, remote: str, local: Path, timeout: float) -> str:
        try:
            sftp = self._client.open_sftp()
            sftp.get_channel().settimeout(timeout)
            try:
                sftp.get(remote, str(local))
            finally:
                sftp.close()
        except TimeoutError:
            raise CommandTimeout(f"ssh {self.where}: the download of {remote} did not finish within {timeout:g}s") from None
        except (OSError, EOFError) as error:
            raise TransportError(f"ssh {self.where}: download of {remote} failed: {self._mask(str(error))}") from None
        expected, actual = self._remote_hash(remote, timeout), sha256_file(local)
        if actual != expected:
            raise TransportError(f"ssh {self.where}: {remote} arrived with SHA-256 {actual}, the guest has {expected or '(none)'}")
        return actual

    def upload(self, local: Path, remote: str, timeout: float) -> str:
        expected = sha256_file(local)
        try:
            sftp = self._client.open_sftp()
            sftp.get_channel().settimeout(timeout)
            try:
                sftp.put(str(local), remote)
            finally:
                sftp.close()
        except TimeoutError:
            raise CommandTimeout(f"ssh {self.where}: the upload of {local.name} did not finish within {timeout:g}s") from None
        except (OSError, EOFError) as error:
            raise TransportError(f"ssh {self.where}: upload of {local.name} failed: {self._mask(str(error))}") from None
        actual = self._remote_hash(remote, timeout)
        if actual != expected:
            raise TransportError(f"ssh {self.where}: {remote} arrived with SHA-256 {actual or '(none)'}, expected {expected}")
        return expected

    def close(self) -> None:
        client, self._client = getattr(self, "_client", None), None
        if client is not None:
            client.close()
