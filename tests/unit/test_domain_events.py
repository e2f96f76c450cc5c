"""A domain's lifecycle events: recorded and handed to listeners while other threads add and remove theirs."""

from __future__ import annotations

import threading

from harness.guests.libvirt_vm.events import DomainEvents, LifecycleEvent


def test_a_listener_gets_every_event_while_others_come_and_go() -> None:
    events = DomainEvents(lambda: "kcb-test")
    seen: list[LifecycleEvent] = []
    churn_stop = threading.Event()

    def churn() -> None:  # a scenario's guest adding and removing its listener (before this one in the list)
        while not churn_stop.is_set():
            listener = lambda event: None  # noqa: E731
            events.add_listener(listener)
            events.remove_listener(listener)

    events.add_listener(lambda event: None)
    events.add_listener(seen.append)
    churner = threading.Thread(target=churn)
    churner.start()
    try:
        for number in range(20_000):  # libvirt's event thread
            events.record(LifecycleEvent(float(number), "resumed", 0))
    finally:
        churn_stop.set()
        churner.join()
    assert len(seen) == 20_000 and len(events.history()) == 20_000


def test_a_removed_listener_is_not_called_again() -> None:
    events = DomainEvents(lambda: "kcb-test")
    seen: list[LifecycleEvent] = []
    events.add_listener(seen.append)
    events.record(LifecycleEvent(1.0, "started", 0))
    events.remove_listener(seen.append)
    events.remove_listener(seen.append)  # twice is fine
    events.record(LifecycleEvent(2.0, "stopped", 0))
    assert [event.event for event in seen] == ["started"]
