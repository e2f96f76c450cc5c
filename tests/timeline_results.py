"""Scenario results with known event times, for the timeline picture's tests (unit and browser)."""

from __future__ import annotations

from pathlib import Path

from harness.kernel.events import Action, DriverStatus, Event, GuestCrash, LogLine
from harness.runner import ScenarioResult, StepResult

CRASH_SUMMARY = 'page fault in <sysRecv1.sys> & "friends"'


def two_drivers_failed_and_crashed(tmp_path: Path) -> ScenarioResult:
    """Two drivers loaded at 0.5s and 1.0s, a failed expect from 1.1s to 3.1s, a crash at 3.5s; 4s in all.

    Kernel lines at 0.55, 1.05, 1.5, 2.0, 2.5 and 3.45s; serial-console (com2) lines at 0.2, 0.8, 2.6 and 3.4s.
    """
    result = ScenarioResult(id="10-crash", name="two drivers <crash>", path=Path("scenarios/10.yaml"), guest="wine", run_dir=tmp_path / "s")
    result.outcome, result.message = "crashed", "step 3 (line 12) expect: saw 0 lines"
    result.duration = 4.0
    result.crash = GuestCrash(3.5, CRASH_SUMMARY, code=0xC0000005)
    result.steps = [
        StepResult(0, 8, "load", "load sender", "passed", "STATUS_SUCCESS (0x00000000)", 0.5, 0.6),
        StepResult(1, 9, "load", "load receiver", "passed", "STATUS_SUCCESS (0x00000000)", 1.0, 1.1),
        StepResult(2, 10, "expect", "expect at least 2 of line 'notify' within 2s", "failed", "saw 0 lines", 1.1, 3.1),
        StepResult(3, 11, "unload", "unload receiver"),
        StepResult(4, 12, "unload", "unload sender"),
    ]
    events: list[Event] = [DriverStatus(0.1, "load", "MountMgr", 0)]  # the guest's own driver, before the steps
    events += [Action(s.start, s.end, s.kind, s.description, s.message, s.state == "passed") for s in result.steps[:3]]
    events += [DriverStatus(0.58, "load", "sysTest", 0), DriverStatus(1.12, "load", "sysRecv1", 0)]
    events += [LogLine(t, f"[sysTest] line at {t}") for t in (0.55, 1.05, 1.5, 2.0, 2.5, 3.45)]
    events += [LogLine(t, f"console {t}", source="com2") for t in (0.2, 0.8, 2.6, 3.4)]
    events.append(result.crash)
    result.events = sorted(events, key=lambda event: event.t)
    return result
