"""libvirt's events: its default event loop in a thread of its own, and each domain's lifecycle events.

libvirt calls back on the event loop's thread, while a domain's listeners are
added and removed by other threads (the guest of each scenario, several VMs
of a pool at once). So a domain's record and listener list are guarded by a
lock, and listeners are called with a copy of the list, outside it.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.errors import GuestError
from harness.kernel.events import GuestCrash

_loop_started = False
_loop_lock = threading.Lock()

#: libvirt's lifecycle event numbers (virDomainEventType).
EVENT_NAMES = {
    0: "defined",
    1: "undefined",
    2: "started",
    3: "suspended",
    4: "resumed",
    5: "stopped",
    6: "shutdown",
    7: "pmsuspended",
    8: "crashed",
}


def libvirt_module() -> Any:
    """The libvirt module, its error printing to stderr turned off (ours are raised, or expected).

    Raises:
        GuestError: libvirt-python is not installed.
    """
    try:
        import libvirt
    except ImportError:
        raise GuestError("libvirt-python is not installed: run `make setup` (pip install libvirt-python needs libvirt-dev)") from None
    libvirt.registerErrorHandler(lambda context, error: None, None)
    return libvirt


def start_event_loop() -> None:
    """libvirt's default event loop in a daemon thread (once per process, before any connection)."""
    global _loop_started
    libvirt = libvirt_module()
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, daemon=True, name="libvirt-events").start()
        _loop_started = True


_PANIC = re.compile(
    r"panic hyper-v: arg1='0x([0-9a-f]+)', arg2='0x([0-9a-f]+)', arg3='0x([0-9a-f]+)', arg4='0x([0-9a-f]+)', arg5='0x([0-9a-f]+)'"
)


def parse_panic_log(text: str) -> tuple[int, tuple[int, int, int, int]] | None:
    """The bugcheck code and parameters from libvirt's domain log (Hyper-V crash MSRs), if any."""
    matches = _PANIC.findall(text)
    if not matches:
        return None
    values = [int(value, 16) for value in matches[-1]]
    return values[0], (values[1], values[2], values[3], values[4])


@dataclass(frozen=True)
class LifecycleEvent:
    """A libvirt lifecycle event of our domain."""

    t: float
    event: str
    detail: int


def crash_from_lifecycle(event: LifecycleEvent, t: float, domain_log: Callable[[], str]) -> GuestCrash | None:
    """The crash a lifecycle event of a scenario's VM means, if any.

    ``crashed`` is libvirt's panic event (Hyper-V crash MSRs or pvpanic; the code is in the domain log);
    ``rebooted`` is a reset the guest asked for, which no scenario step does: Windows restarting after a
    bugcheck (AutoReboot on, after writing its dump).
    """
    if event.event == "crashed":
        panic = parse_panic_log(domain_log())
        code, params = (panic[0], panic[1]) if panic else (None, ())
        return GuestCrash(t, "the VM crashed (libvirt panic event)", code, params)
    if event.event == "rebooted":
        return GuestCrash(t, "the guest restarted on its own (a bugcheck with automatic restart?)")
    return None


class DomainEvents:
    """The lifecycle events (and guest-requested resets) of one domain, by name: recorded, and handed to listeners."""

    def __init__(self, name: Callable[[], str]) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._history: list[LifecycleEvent] = []
        self._listeners: list[Callable[[LifecycleEvent], None]] = []
        self._conn: Any = None
        self._callback_ids: list[int] = []

    def register(self, conn: Any) -> None:
        """Listen on ``conn`` (the event loop must be running: ``start_event_loop``)."""
        libvirt = libvirt_module()
        self._conn = conn
        self._callback_ids = [
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None),
            # A reset the guest asked for (Windows restarting after a bugcheck, with AutoReboot on).
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._on_reboot, None),
        ]

    def deregister(self) -> None:
        """Stop listening; safe to call twice."""
        for callback_id in self._callback_ids:
            with contextlib.suppress(Exception):  # a connection that already went away
                self._conn.domainEventDeregisterAny(callback_id)
        self._callback_ids = []
        self._conn = None

    def add_listener(self, listener: Callable[[LifecycleEvent], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[LifecycleEvent], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def history(self) -> list[LifecycleEvent]:
        """Every event recorded so far, oldest first."""
        with self._lock:
            return list(self._history)

    def _on_lifecycle(self, conn: Any, dom: Any, event: int, detail: int, opaque: Any) -> None:
        if dom.name() == self._name():
            self.record(LifecycleEvent(time.monotonic(), EVENT_NAMES.get(event, str(event)), detail))

    def _on_reboot(self, conn: Any, dom: Any, opaque: Any) -> None:
        if dom.name() == self._name():
            self.record(LifecycleEvent(time.monotonic(), "rebooted", 0))

    def record(self, event: LifecycleEvent) -> None:
        """Keep ``event`` and hand it to every listener (libvirt's thread calls this)."""
        with self._lock:
            self._history.append(event)
            listeners = list(self._listeners)
        for listener in listeners:
            listener(event)
