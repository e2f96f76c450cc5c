"""The scenario's shared record of events: guests append from reader threads, the runner reads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from harness.kernel.events import Event, LogLine

T = TypeVar("T")


class Cancelled(KeyboardInterrupt):
    """The scenario was cancelled from outside (a suite interrupted by Ctrl-C or SIGTERM while this ran in a worker)."""


class Timeline:
    """Append-only, thread-safe list of events with a common clock (seconds since creation).

    ``cancel`` ends every wait on it with ``Cancelled``, so a scenario running in a worker thread stops as the
    main thread's Ctrl-C would stop one running in the main thread.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._origin = clock()
        self._events: list[Event] = []
        self._changed = threading.Condition()
        self._listeners: list[Callable[[Event], None]] = []
        self._cancelled: str | None = None

    def cancel(self, reason: str) -> None:
        """Make every current and later wait on this timeline raise ``Cancelled(reason)``."""
        with self._changed:
            self._cancelled = reason
            self._changed.notify_all()

    def check_cancelled(self) -> None:
        """Raises ``Cancelled`` once ``cancel`` was called (for loops that poll rather than wait)."""
        if self._cancelled is not None:
            raise Cancelled(self._cancelled)

    def now(self) -> float:
        return self._clock() - self._origin

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener`` for every event appended from now on (e.g. a progress printer)."""
        self._listeners.append(listener)

    def append(self, event: Event) -> None:
        with self._changed:
            self._events.append(event)
            self._changed.notify_all()
        for listener in self._listeners:
            listener(event)

    def events(self) -> list[Event]:
        with self._changed:
            return list(self._events)

    def lines(self) -> list[LogLine]:
        return [event for event in self.events() if isinstance(event, LogLine)]

    def of_type(self, kind: type[T]) -> list[T]:
        return [event for event in self.events() if isinstance(event, kind)]

    def wait_for(self, check: Callable[[list[Event]], T | None], deadline: float) -> T | None:
        """Re-run ``check`` on the events each time one arrives until it returns non-None or ``deadline`` (timeline seconds) passes."""
        with self._changed:
            while True:
                self.check_cancelled()
                result = check(self._events)
                if result is not None:
                    return result
                remaining = deadline - self.now()
                if remaining <= 0:
                    return None
                self._changed.wait(timeout=min(remaining, 0.25))

    def extend(self, events: Iterable[Event]) -> None:
        for event in events:
            self.append(event)
