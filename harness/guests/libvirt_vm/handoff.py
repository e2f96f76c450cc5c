"""``--keep-failed``: a failed VM held for a developer's kernel debugger instead of being reverted.

The VM is paused (its vCPUs stop where they are) and its COM1, where Windows speaks KDCOM, is served on a loopback
TCP port: a small relay copies bytes both ways between one debugger connection and the VM's serial socket. When a
debugger connects the VM resumes, so the kernel can answer it (a debugger breaks in as it attaches). WinDbg and kd
attach to a serial port carried over TCP with ``-k com:ipport=PORT,port=ADDRESS`` (Microsoft Learn, "Live
Kernel-Mode Debugging Using WinDbg (Classic)"). The port listens on 127.0.0.1 only: from another machine, forward
it over SSH. The hold ends when the user presses Enter (or Ctrl-C, or the run is cancelled); the VM is then torn
down or reverted as usual.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

from harness.kd.serial import Endpoint, Stream

log = logging.getLogger(__name__)

CHUNK = 65536


def attach_commands(port: int, host: str = "127.0.0.1") -> list[str]:
    """The command lines that attach Microsoft's kernel debuggers to the served port."""
    return [f"windbg -k com:ipport={port},port={host}", f"kd -k com:ipport={port},port={host}"]


class KdHandoff:
    """Serve a paused VM's COM1 on ``127.0.0.1:port`` (0: any free port) for as long as the block runs.

    Args:
        pause, resume: stop and restart the VM's vCPUs (resume is called when a debugger connects).
        com1: the VM's COM1 endpoint (nobody else may be attached to it: a serial socket takes one client).
    """

    def __init__(self, pause: Callable[[], None], resume: Callable[[], None], com1: Endpoint, port: int = 0) -> None:
        self._pause = pause
        self._resume = resume
        self.com1 = com1
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self.port: int = self._listener.getsockname()[1]
        self.connections = 0
        self.bytes_to_guest = 0
        self.bytes_from_guest = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="kd-handoff")

    def __enter__(self) -> KdHandoff:
        self._pause()
        self._listener.listen(1)
        self._listener.settimeout(0.2)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(10)
        self._listener.close()

    def commands(self) -> list[str]:
        return attach_commands(self.port)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with client:
                try:
                    guest = self.com1.connect(timeout=10.0)
                except OSError as error:
                    log.warning("a debugger connected but the VM's COM1 (%s) could not be reached: %s", self.com1.address, error)
                    continue
                self.connections += 1
                self._resume()
                try:
                    self._relay(client, guest)
                finally:
                    guest.close()

    def _relay(self, client: socket.socket, guest: Stream) -> None:
        """Copy bytes both ways until either side closes or the hold ends."""
        if not isinstance(guest, socket.socket):
            raise TypeError("the relay needs a socket to the VM's serial port")
        client.setblocking(True)
        guest.setblocking(True)
        while not self._stop.is_set():
            ready, _, _ = select.select([client, guest], [], [], 0.2)
            for source in ready:
                try:
                    data = source.recv(CHUNK)
                except OSError:
                    return
                if not data:
                    return
                target = guest if source is client else client
                try:
                    target.sendall(data)
                except OSError:
                    return
                if source is client:
                    self.bytes_to_guest += len(data)
                else:
                    self.bytes_from_guest += len(data)


def wait_released(out: TextIO, stdin: TextIO, cancelled: Callable[[], bool], poll: float = 0.2) -> str:
    """Wait until the user presses Enter (or stdin ends), or ``cancelled()`` (Ctrl-C, SIGTERM); returns which."""
    out.flush()
    while not cancelled():
        try:
            ready, _, _ = select.select([stdin], [], [], poll)
        except (OSError, ValueError):  # no real stdin (a test runner's): nothing to wait for
            return "no input"
        if ready:
            with contextlib.suppress(OSError):
                stdin.readline()
            return "released"
    return "cancelled"
