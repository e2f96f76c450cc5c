"""What every transport offers: run a command, upload a file (verified by SHA-256), close."""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from harness.errors import GuestError, GuestHung


class TransportError(GuestError):
    """The transport broke (connection, authentication, protocol): an infrastructure failure."""


class AuthenticationError(TransportError):
    """The guest rejected the credentials (the message never contains them)."""


class HostKeyError(TransportError):
    """The guest's SSH host key is unknown or does not match known_hosts."""


class ConnectFailed(TransportError):
    """Nothing answered (yet), or the connection dropped: worth trying again while a guest boots."""


class CommandTimeout(TransportError, GuestHung):
    """A command did not finish within its timeout: the guest is stuck in it (a hang, not a broken transport)."""


@dataclass(frozen=True)
class CommandResult:
    """The outcome of one command in the guest."""

    exit_code: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Transport(ABC):
    """A connection to a guest, usable as a context manager."""

    @abstractmethod
    def run(self, command: str, timeout: float) -> CommandResult:
        """Run one command line (built by harness.transports.commands) and wait for it.

        Raises:
            TransportError: the command could not be run or did not finish in time.
        """

    @abstractmethod
    def upload(self, local: Path, remote: str, timeout: float) -> str:
        """Copy a file in and check its SHA-256 on the guest side; returns the hash.

        Raises:
            TransportError: the copy failed or the guest's hash differs.
        """

    @abstractmethod
    def download(self, remote: str, local: Path, timeout: float) -> str:
        """Copy a file out of the guest and check it against the guest's SHA-256; returns the hash.

        Raises:
            TransportError: the copy failed or the hashes differ.
        """

    @abstractmethod
    def close(self) -> None:
        """Release the connection; safe to call twice."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()


def connect_with_retries(open_transport: Callable[[], Transport], timeout: float, what: str, pause: float = 5.0) -> Transport:
    """``open_transport()`` until it answers or ``timeout`` seconds pass (a guest may still be booting).

    Raises:
        GuestHung: nothing answered in time (the last error is in the message).
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            return open_transport()
        except ConnectFailed as error:  # anything else is an answer, and not one that waiting changes
            last = error
        if time.monotonic() + pause >= deadline:
            raise GuestHung(f"{what} did not answer within {timeout:g}s: {last}")
        time.sleep(pause)
