"""Serial endpoints and the readers that turn them into kernel events (the I/O edge of harness.kd).

Endpoints: ``unix:/path/to.sock``, ``tcp:127.0.0.1:PORT`` (QEMU/libvirt chardev
sockets), ``file:/path`` (a capture, read once), and ``Endpoint.opened_by``
(a port reached some other way: a remote VM host's loopback over SSH). Every byte read is
appended to the raw capture file *before* it is parsed, so a parser fault
never loses evidence. A reader reconnects when the other side goes away (a
snapshot revert restarts QEMU) until it is stopped. On every connection the KD reader breaks in
(``KdHost.attached``), so a kernel that gave up on an absent debugger talks again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from harness.errors import ConfigError
from harness.kd.session import KdAttach, KdBugcheck, KdEvent, KdHost, KdLine, KdModule, KdNotice, KdStacks, KdStateChange
from harness.kernel.events import DebugEvent, Event, GuestCrash, LogLine, StackReport
from harness.timeline import Timeline
from harness.triage.pe import ImageError, PeImage

log = logging.getLogger(__name__)

IDLE = 0.2  # seconds of silence after which the KD host flushes and retransmits
DRAIN = 3.0  # at most this long, on stop, to read what had already arrived


class Stream(Protocol):
    """What a reader needs of a connection: a socket, or an SSH channel."""

    def recv(self, size: int) -> bytes: ...
    def sendall(self, data: bytes) -> None: ...
    def settimeout(self, timeout: float | None) -> None: ...
    def shutdown(self, how: int) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Endpoint:
    """Where a serial port's bytes come from."""

    kind: str  # "unix", "tcp", "file" or "opened"
    address: str
    port: int = 0
    opener: Callable[[float], Stream] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def opened_by(cls, opener: Callable[[float], Stream], label: str) -> Endpoint:
        """An endpoint whose connections ``opener(timeout)`` makes (raising OSError while nobody listens)."""
        return cls("opened", label, opener=opener)

    @classmethod
    def parse(cls, spec: str) -> Endpoint:
        """``unix:/run/kd.sock``, ``tcp:127.0.0.1:4555`` or ``file:/tmp/kd.raw``.

        Raises:
            ConfigError: anything else, or a TCP host that is not on loopback.
        """
        kind, _, rest = spec.partition(":")
        if kind in ("unix", "file") and rest:
            return cls(kind, rest)
        if kind == "tcp":
            host, _, port = rest.rpartition(":")
            if host not in ("127.0.0.1", "localhost", "::1", "[::1]") or not port.isdigit():
                raise ConfigError(f"serial endpoint {spec!r}: expected tcp:127.0.0.1:PORT (loopback only)")
            return cls(kind, host.strip("[]"), int(port))
        raise ConfigError(f"serial endpoint {spec!r}: expected unix:PATH, tcp:127.0.0.1:PORT or file:PATH")

    def connect(self, timeout: float) -> Stream:
        """A connected socket (unix or tcp), or what the opener made.

        Raises:
            OSError: nobody listening (yet).
        """
        if self.opener is not None:
            return self.opener(timeout)
        if self.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: str | tuple[str, int] = self.address
        else:
            sock = socket.socket(socket.AF_INET6 if ":" in self.address else socket.AF_INET, socket.SOCK_STREAM)
            target = (self.address, self.port)
        sock.settimeout(timeout)
        try:
            sock.connect(target)
        except OSError:
            sock.close()
            raise
        return sock


class SerialReader(ABC):
    """Reads one serial endpoint in a thread into the timeline; subclasses decode the bytes."""

    def __init__(self, endpoint: Endpoint, timeline: Timeline, raw_path: Path, reconnect: bool = True) -> None:
        self.endpoint = endpoint
        self.timeline = timeline
        self.raw_path = raw_path
        self.reconnect = reconnect
        self.connections = 0
        self.last_activity = time.monotonic()  # when the last byte arrived (watchdogs read it)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: Stream | None = None
        self._raw: IO[bytes] | None = None

    # -- decoding, per subclass -------------------------------------------------------------------

    @abstractmethod
    def feed(self, data: bytes) -> bytes:
        """Decode bytes into timeline events; return bytes to send back."""

    def on_idle(self) -> bytes:
        return b""

    @abstractmethod
    def on_connect(self) -> bytes:
        """A (re)connection started: forget per-connection state; return bytes to send first."""

    @abstractmethod
    def on_close(self) -> None:
        """The stream ended for good."""

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        self.raw_path.parent.mkdir(parents=True, exist_ok=True)
        self._raw = open(self.raw_path, "ab", buffering=0)  # noqa: SIM115 - closed in stop()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"serial-{self.endpoint.kind}")
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading; what had already arrived is read and recorded first (the raw capture is the evidence)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)  # it notices within IDLE seconds, drains, and ends
            if self._thread.is_alive():  # blocked somewhere else (a connect): cut it short
                sock = self._sock
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                self._thread.join(timeout)
            self._thread = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    def wait_connected(self, count: int = 1, timeout: float = 30.0) -> bool:
        """True once ``count`` connections were made (and what ``on_connect`` returned was sent on each)."""
        deadline = time.monotonic() + timeout
        while self.connections < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.connections >= count

    def __enter__(self) -> SerialReader:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        if self._raw is not None:
            self._raw.write(data)  # before decoding

    def _run(self) -> None:
        try:
            if self.endpoint.kind == "file":
                self._replay_file()
            else:
                self._run_socket()
        finally:
            self.on_close()

    def _replay_file(self) -> None:
        self.connections += 1
        self.on_connect()
        with open(self.endpoint.address, "rb") as handle:
            while not self._stop.is_set():
                data = handle.read(65536)
                if not data:
                    break
                self._record(data)
                self.feed(data)
        self.on_idle()

    def _run_socket(self) -> None:
        while not self._stop.is_set():
            try:
                sock = self.endpoint.connect(timeout=1.0)
            except OSError:
                self._stop.wait(0.05)
                continue
            self._sock = sock
            greeting = self.on_connect()
            sock.settimeout(IDLE)
            try:
                if greeting:
                    self._send(sock, greeting)
                self.connections += 1  # counted once greeted: a VM resumed after wait_connected() finds the break-in
                self._pump(sock)
            finally:
                self._sock = None
                sock.close()
            if not self.reconnect:
                break

    def _pump(self, sock: Stream) -> None:
        while not self._stop.is_set():
            try:
                data = sock.recv(65536)
            except TimeoutError:
                reply = self.on_idle()
                if reply:
                    self._send(sock, reply)
                continue
            except OSError:
                return
            if not data:
                return
            self._record(data)
            reply = self.feed(data)
            if reply:
                self._send(sock, reply)
        self._drain(sock)

    def _drain(self, sock: Stream, limit: float = DRAIN) -> None:
        """On stop: read and record what the other side had already sent, until the line is quiet (bounded)."""
        sock.settimeout(0.05)
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except (TimeoutError, OSError):
                return
            if not data:
                return
            self._record(data)
            self.feed(data)

    def _send(self, sock: Stream, data: bytes) -> None:
        try:
            sock.sendall(data)
        except OSError as error:
            log.warning("serial %s: send failed: %s", self.endpoint.address, error)


class TextSerialReader(SerialReader):
    """A port that carries plain text (a second COM port, a Linux guest's console): one LogLine per line, from ``source``."""

    def __init__(self, endpoint: Endpoint, timeline: Timeline, raw_path: Path, reconnect: bool = True, source: str = "serial") -> None:
        super().__init__(endpoint, timeline, raw_path, reconnect)
        self.source = source
        self._partial = bytearray()

    def feed(self, data: bytes) -> bytes:
        self._partial += data
        while (newline := self._partial.find(b"\n")) >= 0:
            line = self._partial[:newline].rstrip(b"\r").decode("utf-8", "replace")
            del self._partial[: newline + 1]
            self.timeline.append(LogLine(t=self.timeline.now(), text=line, source=self.source))
        return b""

    def on_connect(self) -> bytes:
        self._flush()
        return b""

    def on_close(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if self._partial:
            self.timeline.append(LogLine(t=self.timeline.now(), text=self._partial.decode("utf-8", "replace"), source=self.source))
            self._partial.clear()


def kd_event(event: KdEvent, t: float) -> Event:
    """A KD host event as a kernel event of the harness."""
    if isinstance(event, KdLine):
        return LogLine(t=t, text=event.text)
    if isinstance(event, KdBugcheck):
        if event.forced:  # the harness's own doing (a dump of a hang): not a crash of the scenario
            return DebugEvent(t=t, kind="forced-crash", summary=event.describe())
        return GuestCrash(t=t, summary=event.describe(), code=event.code, parameters=event.parameters)
    if isinstance(event, KdStacks):
        return dataclasses.replace(event.report, t=t)
    if isinstance(event, KdStateChange):
        return DebugEvent(t=t, kind="state-change", summary=event.describe())
    if isinstance(event, KdModule):
        return DebugEvent(t=t, kind="module", summary=event.describe())
    if isinstance(event, KdAttach):
        return DebugEvent(t=t, kind="attach", summary=event.describe())
    assert isinstance(event, KdNotice)
    return DebugEvent(t=t, kind="notice", summary=event.describe())


class KdSerialReader(SerialReader):
    """A port where Windows speaks KDCOM: the harness is its kernel debugger."""

    def __init__(self, endpoint: Endpoint, timeline: Timeline, raw_path: Path, reconnect: bool = True, prompt_reply: str = "i") -> None:
        super().__init__(endpoint, timeline, raw_path, reconnect)
        self.host = KdHost(prompt_reply=prompt_reply)
        self._lock = threading.Lock()

    def _emit(self, events: list[KdEvent]) -> None:
        now = self.timeline.now()
        for event in events:
            if isinstance(event, KdStacks):
                self.timeline.append(DebugEvent(t=now, kind="stacks", summary=event.describe()))
            self.timeline.append(kd_event(event, now))

    # -- where it crashed or hung (harness.kd.inspect) ------------------------------------------------------------

    def add_image(self, module: str, image: Path) -> None:
        """The image file of module ``module`` (its file name in the guest): its unwind data is read from the file."""
        try:
            pe = PeImage(image)
        except ImageError as error:
            log.warning("%s: its unwind data will be read from the guest: %s", image, error)
            return
        with self._lock:
            self.host.images[module.lower()] = pe

    def report_stacks(self, timeout: float, crash_after: bool = False) -> StackReport | None:
        """Break in, read every processor's stack, continue (``crash_after``: cause a bugcheck for a dump instead).

        Returns the hang's report, or None when none came within ``timeout`` seconds (a kernel that does not poll
        for a break-in, or a link nobody answers); then nothing is waited for any more. Never raises.
        """
        started = self.timeline.now()
        with self._lock:
            self.host.request_stacks(crash_after)

        def arrived(events: list[Event]) -> StackReport | None:
            return next((e for e in reversed(events) if isinstance(e, StackReport) and e.kind == "hang" and e.t >= started), None)

        report = self.timeline.wait_for(arrived, started + timeout)
        if report is None:
            with self._lock:
                events = self.host.cancel_stacks(time.monotonic())
            self._emit(events)
            report = arrived(self.timeline.events())
        return report

    def wait_inspected(self, timeout: float) -> bool:
        """True once no stop is being read and no announced bugcheck's break is pending (False after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self.host.inspecting:
                    return True
            time.sleep(0.05)
        return False

    def expect_forced_bugcheck(self, code: int) -> None:
        """The harness causes a bugcheck ``code`` itself (an NMI for a dump): it is not a crash of the scenario."""
        with self._lock:
            self.host.expect_forced_bugcheck(code)

    def feed(self, data: bytes) -> bytes:
        with self._lock:
            out = self.host.receive(data, time.monotonic())
        self._emit(out.events)
        return out.send

    def on_idle(self) -> bytes:
        with self._lock:
            out = self.host.idle(time.monotonic())
        self._emit(out.events)
        return out.send

    def on_connect(self) -> bytes:
        with self._lock:
            out = self.host.attached(time.monotonic())
        self._emit(out.events)
        return out.send

    def on_close(self) -> None:
        with self._lock:
            out = self.host.close()
        self._emit(out.events)


def replay(path: Path) -> list[KdEvent]:
    """Decode a raw KD capture offline (what the target sent), as the live host would have."""
    host = KdHost()
    events: list[KdEvent] = []
    with open(path, "rb") as handle:
        while chunk := handle.read(65536):
            events += host.receive(chunk).events
    events += host.close().events
    return events
