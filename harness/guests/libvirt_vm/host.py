"""The machine libvirt runs the VM on: this one (``qemu:///system``) or another (``qemu+ssh://[user@]host[:port]/system``).

The VM's files (overlays, saved state, NVRAM copies, serial logs) live on
that machine, and the VM's ports (serial sockets, the port forward to the
guest's WinRM/SSH) listen on its loopback only. ``LocalHost`` works on
them directly. ``SshHost`` works over one SSH connection (paramiko, host
key verified against known_hosts): file operations are commands built from
argument lists (each argument single-quoted, nothing interpolated), and
``forward`` opens a local loopback port that reaches a loopback port of the
VM host through the SSH connection, as ``ssh -L`` would.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import secrets
import shutil
import socket
import subprocess
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from harness.errors import ConfigError, GuestError
from harness.kd.serial import Stream
from harness.transports.commands import posix_quote

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteUri:
    """The SSH part of a remote libvirt URI."""

    host: str
    port: int
    user: str | None
    keyfile: Path | None
    known_hosts: Path | None


def parse_remote_uri(uri: str) -> RemoteUri | None:
    """The SSH host of ``qemu+ssh://`` (or ``+libssh``/``+libssh2``) URIs; None for local ones.

    Raises:
        ConfigError: a remote URI without a host.
    """
    parts = urlsplit(uri)
    if parts.scheme not in ("qemu+ssh", "qemu+libssh", "qemu+libssh2"):
        return None
    if not parts.hostname:
        raise ConfigError(f"libvirt URI {uri!r} names no host")
    query = parse_qs(parts.query)

    def path(name: str) -> Path | None:
        values = query.get(name)
        return Path(unquote(values[0])) if values else None

    user = unquote(parts.username) if parts.username else None
    return RemoteUri(parts.hostname, parts.port or 22, user, path("keyfile"), path("known_hosts"))


_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def free_port() -> int:
    """A free port on this machine's loopback, never one this process handed out before (VMs of a pool start at once,
    and a port is only taken when QEMU binds it)."""
    with _ports_lock:
        while True:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = int(probe.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port


def remote_port() -> int:
    """A port for a remote VM host's loopback (not probed from here: a clash fails the VM's start, said plainly)."""
    return secrets.SystemRandom().randrange(20000, 60000)


def command_line(argv: Sequence[str]) -> str:
    """One POSIX shell command line with every argument single-quoted (no expansion, no injection)."""
    if not argv:
        raise ValueError("empty command")
    return " ".join(posix_quote(str(argument)) for argument in argv)


def overlay_command(base: PurePosixPath | Path, target: PurePosixPath | Path) -> list[str]:
    return ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(target)]


class VmHost(ABC):
    """File operations and loopback ports on the machine the VM runs on."""

    #: Where the harness reaches the VM host's loopback ports (the forwarded end).
    name: str = "localhost"

    @abstractmethod
    def run(self, argv: Sequence[str]) -> str:
        """Run a program there and return its output.

        Raises:
            GuestError: it failed.
        """

    def exists(self, path: Path) -> bool:
        return self._test("-e", path)

    def is_file(self, path: Path) -> bool:
        return self._test("-f", path)

    def _test(self, flag: str, path: Path) -> bool:
        try:
            self.run(["test", flag, str(path)])
        except GuestError:
            return False
        return True

    def make_dir(self, path: Path) -> None:
        self.run(["mkdir", "-p", "--", str(path)])

    def copy(self, source: Path, target: Path) -> None:
        self.run(["cp", "--", str(source), str(target)])

    def rename(self, source: Path, target: Path) -> None:
        self.run(["mv", "-f", "--", str(source), str(target)])

    def remove(self, path: Path) -> None:
        self.run(["rm", "-f", "--", str(path)])

    def remove_tree(self, path: Path) -> None:
        """Remove a folder with its content, or a file."""
        self.run(["rm", "-rf", "--", str(path)])

    def size(self, path: Path) -> int:
        """The file's size in bytes.

        Raises:
            GuestError: no such file.
        """
        return int(self.run(["stat", "-L", "-c", "%s", "--", str(path)]).strip())

    def read_text(self, path: Path) -> str:
        """The file's text, or "" when it cannot be read."""
        try:
            return self.run(["cat", "--", str(path)])
        except GuestError:
            return ""

    def overlay(self, base: Path, target: Path) -> None:
        """A qcow2 overlay ``target`` over the read-only ``base`` (qemu-img on the VM host).

        Raises:
            GuestError: qemu-img failed.
        """
        self.run(overlay_command(base, target))

    def forward(self, port: int) -> int:
        """A port on this machine's loopback that reaches ``port`` on the VM host's loopback."""
        return port

    def open_port(self, port: int, timeout: float) -> Stream:
        """A connection to ``port`` on the VM host's loopback.

        Raises:
            OSError: nobody listens there (yet).
        """
        return socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def close(self) -> None:  # noqa: B027 - nothing to release for a local host
        """Release the connection (and forwards); safe to call twice."""


class LocalHost(VmHost):
    """libvirt runs on this machine: files and ports are here."""

    def run(self, argv: Sequence[str]) -> str:
        try:
            result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
        except OSError as error:
            raise GuestError(f"{argv[0]}: {error.strerror}") from None
        if result.returncode != 0:
            raise GuestError(f"{argv[0]} failed: {result.stderr.strip()[:300]}")
        return result.stdout

    # Direct file operations: no process per call.
    def exists(self, path: Path) -> bool:
        return path.exists()

    def is_file(self, path: Path) -> bool:
        return path.is_file()

    def make_dir(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)

    def copy(self, source: Path, target: Path) -> None:
        shutil.copyfile(source, target)

    def rename(self, source: Path, target: Path) -> None:
        os.replace(source, target)

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def remove_tree(self, path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def size(self, path: Path) -> int:
        try:
            return path.stat().st_size
        except OSError as error:
            raise GuestError(f"{path}: {error.strerror}") from None

    def read_text(self, path: Path) -> str:
        try:
            return path.read_text(errors="replace")
        except OSError:
            return ""


class SshHost(VmHost):
    """libvirt runs on another machine, reached over SSH (the host of a ``qemu+ssh://`` URI)."""

    def __init__(self, remote: RemoteUri, timeout: float = 30.0) -> None:
        from harness.transports.ssh import SshTransport

        self.name = remote.host
        # Host keys are verified (the URI's known_hosts, else the user's), never accepted; key from the URI, else agent/~/.ssh.
        self._ssh = SshTransport(
            remote.host, remote.port, remote.user or getpass.getuser(), private_key=remote.keyfile,
            known_hosts=remote.known_hosts or Path.home() / ".ssh" / "known_hosts", use_agent=True, remote="posix",
            timeout=timeout, attempts=1,
        )  # fmt: skip
        self._forwards: list[_Forward] = []

    def run(self, argv: Sequence[str]) -> str:
        result = self._ssh.run(command_line(argv), 300)
        if not result.ok:
            raise GuestError(f"VM host {self.name}: {argv[0]} failed ({result.exit_code}): {result.stderr.strip()[:300]}")
        return result.stdout

    def open_port(self, port: int, timeout: float) -> Stream:
        channel: Stream = self._ssh.open_tcp(port, timeout)
        return channel

    def forward(self, port: int) -> int:
        forward = _Forward(self.open_port, port)
        self._forwards.append(forward)
        return forward.port

    def close(self) -> None:
        for forward in self._forwards:
            forward.close()
        self._forwards.clear()
        self._ssh.close()


class _Forward:
    """A listening socket on 127.0.0.1 whose connections are piped to ``remote_port`` on the VM host's loopback.

    A connection whose far end cannot be opened (nothing listening there yet) is closed at once.
    """

    def __init__(self, open_port: Callable[[int, float], Stream], remote_port: int) -> None:
        self._open_port = open_port
        self.remote_port = remote_port
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self.port = int(self._listener.getsockname()[1])
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name=f"forward-{self.port}").start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                local, _ = self._listener.accept()
            except OSError:
                return
            try:
                channel = self._open_port(self.remote_port, 10)
            except OSError as error:  # the client just sees the connection close
                log.debug("forward to VM host port %d: %s", self.remote_port, error)
                local.close()
                continue
            threading.Thread(target=self._pipe, args=(local, channel), daemon=True).start()
            threading.Thread(target=self._pipe, args=(channel, local), daemon=True).start()

    @staticmethod
    def _pipe(source: Any, target: Any) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
        except (OSError, EOFError):
            pass
        finally:
            for end in (source, target):
                with contextlib.suppress(Exception):
                    end.close()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()


def vm_host(uri: str) -> VmHost:
    """The VM host of a libvirt URI.

    Raises:
        GuestError: the SSH connection to a remote host failed.
    """
    remote = parse_remote_uri(uri)
    return LocalHost() if remote is None else SshHost(remote)
