"""A scenario's timeline as text: actions and log lines with their times (a line not from the kernel log with its source)."""

from __future__ import annotations

from harness.kernel.events import KERNEL, Action, DebugEvent, DriverStatus, Event, GuestCrash, GuestHang, LogLine, StackReport
from harness.ntstatus import status_name
from harness.runner import ScenarioResult


def line_text(line: LogLine) -> str:
    """A log line as the reports show it: a kernel-log line as it is, any other with its source first
    (``[ioctl-client.exe:stdout] client: sent 5 bytes``, ``[com2] ...``)."""
    return line.text if line.source == KERNEL else f"[{line.source}] {line.text}"


def context_line(line: LogLine) -> str:
    """A line of a failure's context (the log lines before it), with its time: ``+1.250s [com2] login:``."""
    return f"+{line.t:.3f}s {line_text(line)}"


def event_row(event: Event) -> tuple[float, str, str]:
    """(time, kind, text) of one event, as the reports show it."""
    if isinstance(event, LogLine):
        return event.t, "log", line_text(event)
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
    if isinstance(event, StackReport):
        frames = sum(len(thread.frames) for thread in event.threads)
        return event.t, "stacks", f"{event.kind} report: {len(event.threads)} thread(s), {frames} frame(s), {len(event.modules)} module(s)"
    assert isinstance(event, Action)
    mark = "" if event.ok else " [FAILED]"
    return event.t, "action", f"{event.target} ({event.end - event.t:.3f}s){mark}: {event.outcome}"


def render_timeline(result: ScenarioResult) -> str:
    """The events in time order, then where it crashed or hung (the triage), when known."""
    rows = sorted((event_row(event) for event in result.events), key=lambda row: row[0])
    text = "".join(f"+{t:9.3f}s {kind:<6} {text}\n" for t, kind, text in rows)
    if result.triage is not None:
        text += "\nwhere:\n" + result.triage.render()
    elif result.signature is not None:
        text += f"\nsignature: {result.signature}\n"
    return text


def write_timeline(result: ScenarioResult) -> None:
    result.run_dir.mkdir(parents=True, exist_ok=True)
    (result.run_dir / "timeline.txt").write_text(render_timeline(result), encoding="utf-8")
