"""A scenario's timeline as text: actions and kernel-log lines with their times."""

from __future__ import annotations

from harness.kernel.events import Action, DebugEvent, DriverStatus, Event, GuestCrash, GuestHang, LogLine
from harness.ntstatus import status_name
from harness.runner import ScenarioResult


def event_row(event: Event) -> tuple[float, str, str]:
    """(time, kind, text) of one event, as the reports show it."""
    if isinstance(event, LogLine):
        return event.t, "log", event.text
    if isinstance(event, DriverStatus):
        return event.t, "status", f"{event.action} {event.service} -> {status_name(event.status)}"
    if isinstance(event, GuestCrash):
        detail = f" code {status_name(event.code)}" if event.code is not None else ""
        params = f" params ({', '.join(f'0x{p:x}' for p in event.parameters)})" if event.parameters else ""
        return event.t, "crash", f"{event.summary}{detail}{params}"
    if isinstance(event, GuestHang):
        return event.t, "hang", event.summary
    if isinstance(event, DebugEvent):
        return event.t, "kd", event.summary
    assert isinstance(event, Action)
    mark = "" if event.ok else " [FAILED]"
    return event.t, "action", f"{event.target} ({event.end - event.t:.3f}s){mark}: {event.outcome}"


def render_timeline(result: ScenarioResult) -> str:
    rows = sorted((event_row(event) for event in result.events), key=lambda row: row[0])
    return "".join(f"+{t:9.3f}s {kind:<6} {text}\n" for t, kind, text in rows)


def write_timeline(result: ScenarioResult) -> None:
    result.run_dir.mkdir(parents=True, exist_ok=True)
    (result.run_dir / "timeline.txt").write_text(render_timeline(result), encoding="utf-8")
