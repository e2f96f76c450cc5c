"""Results written to disk and read back: every field and every event type survives, bad files are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.guests.base import CrashEvidence
from harness.kernel.events import Action, DebugEvent, DriverStatus, GuestCrash, GuestHang, LogLine
from harness.kernel.stacks import ModuleRange, StackFrame, StackReport, ThreadStack
from harness.reports.store import ResultFormatError, load, load_dir, save
from harness.runner import ScenarioResult, StepResult
from harness.triage.model import Frame, ThreadTriage, Triage


def full_result(run_dir: Path) -> ScenarioResult:
    crash = GuestCrash(2.5, "unhandled page fault", 0xC0000005, (8, 0x24C1020), ("wine: Unhandled page fault",))
    return ScenarioResult(
        id="04-receiver-unloads",
        name="receiver unloads",
        path=Path("scenarios/04-receiver-unloads.yaml"),
        guest="wine",
        run_dir=run_dir,
        outcome="crashed",
        message="the guest crashed: unhandled page fault",
        steps=[StepResult(0, 7, "load", "load sender", "passed", "STATUS_SUCCESS (0x00000000)", 0.1, 0.2)],
        events=[
            LogLine(0.25, "[sysTest] send.\t(tab)"),
            LogLine(0.26, "kcb-standin: tick 1", source="com2"),
            DriverStatus(0.2, "load", "sysTest", 0),
            Action(0.1, 0.2, "load", "load sender", "STATUS_SUCCESS (0x00000000)", True),
            DebugEvent(0.3, "module", "module load: receiver.sys"),
            GuestHang(9.0, "no serial output"),
            StackReport(
                2.4,
                "crash",
                (
                    ThreadStack(
                        0x12C,
                        (StackFrame(0x27C1020, 0x26BFD48, "context"),),
                        "thread-start",
                        (("rip", 0x27C1020),),
                        ((0x26BFD48, b"\xe6\x17\x00"),),
                    ),
                ),  # fmt: skip
                (ModuleRange("C:\\kcb\\sysRecv1.sys", 0x27C0000, 0x9000, True, 1, "sysRecv1"),),
                code=0xC0000005,
                address=0x27C1020,
                parameters=(8, 0x27C1020),
                thread=0x12C,
            ),
            crash,
        ],
        duration=3.5,
        crash=crash,
        context=[LogLine(0.25, "[sysTest] send.\t(tab)")],
        raw_log_file=run_dir / "kernel-raw.log",
        crash_evidence=CrashEvidence((run_dir / "crash" / "MINI.dmp",), "1 crash dump(s) pulled after 3s"),
        triage=Triage(
            kind="crash",
            signature="0xC0000005 receiver.sys!OnNotify (unloaded)",
            threads=(
                ThreadTriage(
                    0x12C, (Frame(0x27C1020, "context", "receiver.sys", 0x1020, "OnNotify", None, "r.c", 91, ("x",), True, True, "step 4"),)
                ),
            ),
            code=0xC0000005,
            notes=("a note",),
        ),
    )


def test_a_result_reads_back_equal(tmp_path: Path) -> None:
    result = full_result(tmp_path / "scenarios" / "04-receiver-unloads")
    path = save(result)
    assert path == result.run_dir / "result.json"
    assert load(path) == result
    assert load_dir(tmp_path) == [result]


def test_an_int_written_for_a_float_reads_as_a_float(tmp_path: Path) -> None:
    result = full_result(tmp_path / "scenarios" / "x")
    result.duration = 3.0
    back = load(save(result))
    assert back.duration == 3.0 and isinstance(back.duration, float)


@pytest.mark.parametrize(
    "text",
    ["", "{", '{"format": 99, "result": {}}', '{"format": 1, "result": {"__type__": "LogLine"}}', "[1, 2]"],
)
def test_files_that_are_not_results_are_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "result.json"
    path.write_text(text)
    with pytest.raises(ResultFormatError):
        load(path)


def test_an_unknown_event_type_is_refused(tmp_path: Path) -> None:
    path = save(full_result(tmp_path / "scenarios" / "x"))
    data = json.loads(path.read_text())
    data["result"]["events"][0]["__type__"] = "Exploit"
    path.write_text(json.dumps(data))
    with pytest.raises(ResultFormatError, match="Exploit"):
        load(path)
