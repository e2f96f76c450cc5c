"""The runner's verdicts, with a scripted in-memory guest (the real guests have integration tests)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from harness.errors import GuestError, GuestHung
from harness.guests.base import ControlResult, CrashEvidence, DriverInstall, Guest
from harness.kernel.events import DriverStatus, GuestCrash, LogLine
from harness.kernel.stacks import ModuleRange, StackFrame, StackReport, ThreadStack
from harness.runner import ScenarioResult, run_scenario
from harness.scenario.loader import load_scenario
from harness.timeline import Timeline

Script = Callable[["ScriptedGuest", str, str], ControlResult]


class ScriptedGuest(Guest):
    name = "scripted"

    def __init__(self, timeline: Timeline, run_dir: Path, script: Script) -> None:
        super().__init__(timeline, run_dir)
        self.script = script
        self.installed: list[DriverInstall] = []
        self.started = self.stopped = False
        self.collected: list[Path] = []
        self.stacks_asked: list[bool] = []  # each time: was the guest still up?
        self.hang_report: StackReport | None = None

    def collect_crash_evidence(self, dest: Path) -> CrashEvidence:
        assert not self.stopped, "evidence is collected while the guest is still up"
        self.collected.append(dest)
        return CrashEvidence((dest / "MINI.dmp",), "1 crash dump(s) pulled after 3s")

    def report_stacks(self, timeout: float) -> None:
        self.stacks_asked.append(not self.stopped)
        if self.hang_report is not None:
            self.timeline.append(self.hang_report)

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def install(self, driver: DriverInstall, timeout: float) -> None:
        self.installed.append(driver)

    def load(self, service: str, timeout: float) -> ControlResult:
        return self.script(self, "load", service)

    def unload(self, service: str, timeout: float) -> ControlResult:
        return self.script(self, "unload", service)

    def log(self, *texts: str) -> None:
        for text in texts:
            self.timeline.append(LogLine(t=self.timeline.now(), text=text))


def succeed(guest: ScriptedGuest, action: str, service: str) -> ControlResult:
    guest.timeline.append(DriverStatus(t=guest.timeline.now(), action=action, service=service, status=0))
    if action == "load" and service == "sysTest":
        guest.log("[sysTest] send.", "[sysTest] send.")
    return ControlResult(ok=True, status=0, win32=None, detail="ok")


SCENARIO = """\
name: scripted
drivers:
  sender: {image: sender.sys, service: sysTest, parameters: {PeriodMs: 200}}
timeout: 5s
steps:
  - load: sender
  - expect: {line: "[sysTest] send.", count: {min: 2}, within: 200ms}
  - unload: sender
"""


def run(
    tmp_path: Path, script: Script, text: str = SCENARIO, images: bool = True, guest_class: type[ScriptedGuest] = ScriptedGuest
) -> tuple[ScenarioResult, list[ScriptedGuest]]:
    drivers = tmp_path / "drivers"
    drivers.mkdir(exist_ok=True, parents=True)
    if images:
        (drivers / "sender.sys").write_bytes(b"MZ")
    path = tmp_path / "case.yaml"
    path.write_text(text)
    guests: list[ScriptedGuest] = []

    def factory(timeline: Timeline, run_dir: Path) -> Guest:
        guests.append(guest_class(timeline, run_dir, script))
        return guests[-1]

    return run_scenario(load_scenario(path), factory, drivers, tmp_path / "out"), guests


def test_passing_scenario(tmp_path: Path) -> None:
    result, guests = run(tmp_path, succeed)
    assert result.outcome == "passed", result.message
    assert [s.state for s in result.steps] == ["passed", "passed", "passed"]
    assert guests[0].installed[0].parameters == {"PeriodMs": 200}
    assert guests[0].started and guests[0].stopped


def test_failed_expectation_reports_step_line_and_nearby_lines(tmp_path: Path) -> None:
    result, guests = run(tmp_path, succeed, SCENARIO.replace("{min: 2}", "{min: 3}"))
    assert result.outcome == "failed"
    assert result.message.startswith("step 2 (line 7) expect at least 3 of line '[sysTest] send.'")
    assert "saw 2" in result.message
    assert [line.text for line in result.context] == ["[sysTest] send.", "[sysTest] send."]
    assert [s.state for s in result.steps] == ["passed", "failed", "skipped"]
    assert guests[0].stopped


def test_wrong_load_status(tmp_path: Path) -> None:
    def fail_load(guest: ScriptedGuest, action: str, service: str) -> ControlResult:
        return ControlResult(ok=False, status=0xC0000034, win32=2, detail="StartService failed")

    result, _ = run(tmp_path, fail_load)
    assert result.outcome == "failed"
    assert "expected STATUS_SUCCESS (0x00000000), got STATUS_OBJECT_NAME_NOT_FOUND (0xC0000034)" in result.message


def test_hang_is_reported_as_hung(tmp_path: Path) -> None:
    def hang(guest: ScriptedGuest, action: str, service: str) -> ControlResult:
        raise GuestHung("the guest did not answer 'start' within 30s")

    result, guests = run(tmp_path, hang)
    assert result.outcome == "hung" and "did not answer" in result.message
    assert guests[0].stopped


def test_crash_is_reported_as_crashed_with_evidence(tmp_path: Path) -> None:
    def crash(guest: ScriptedGuest, action: str, service: str) -> ControlResult:
        guest.log("[sysRecv1] last words")
        guest.timeline.append(GuestCrash(t=guest.timeline.now(), summary="unhandled page fault", code=0xC0000005))
        return ControlResult(ok=False, status=None, win32=None, detail="guest crashed")

    result, _ = run(tmp_path, crash)
    assert result.outcome == "crashed" and "unhandled page fault" in result.message
    assert result.crash is not None and result.crash.code == 0xC0000005
    assert [line.text for line in result.context] == ["[sysRecv1] last words"]


def test_infrastructure_error(tmp_path: Path) -> None:
    def broken(guest: ScriptedGuest, action: str, service: str) -> ControlResult:
        raise GuestError("the Wine guest agent exited")

    result, _ = run(tmp_path, broken)
    assert result.outcome == "infra" and "agent exited" in result.message


def test_missing_image_is_an_error_before_any_guest_starts(tmp_path: Path) -> None:
    result, guests = run(tmp_path, succeed, images=False)
    assert result.outcome == "error" and "sender.sys (driver sender)" in result.message
    assert guests == []


def test_scenario_timeout_ends_a_long_wait(tmp_path: Path) -> None:
    text = SCENARIO.replace("timeout: 5s", "timeout: 300ms").replace("within: 200ms", "within: 10s").replace("{min: 2}", "{min: 9}")
    result, _ = run(tmp_path, succeed, text)
    assert result.outcome == "hung" and "scenario's timeout" in result.message


@pytest.mark.parametrize(("since", "outcome"), [("previous", "passed"), ("start", "failed")])
def test_expect_no_looks_after_the_previous_step(tmp_path: Path, since: str, outcome: str) -> None:
    text = SCENARIO + f"  - expect_no: {{line: '[sysTest] send.', for: 50ms, since: {since}}}\n"
    result, _ = run(tmp_path, succeed, text)
    assert result.outcome == outcome, result.message


@pytest.mark.parametrize(("supported", "outcome"), [(False, "error"), (True, "passed")])
def test_verifier_needs_a_guest_that_has_it(tmp_path: Path, supported: bool, outcome: str) -> None:
    ScriptedGuest.supports_verifier = supported
    try:
        result, guests = run(tmp_path, succeed, SCENARIO.replace("timeout: 5s", "timeout: 5s\nverifier: {flags: 0x209BB}"))
    finally:
        ScriptedGuest.supports_verifier = False
    assert result.outcome == outcome, result.message
    if supported:
        assert guests[0].verifier == (0x209BB, ("sysTest.sys",))
    else:
        assert "needs the Windows VM guest" in result.message and not guests[0].started


def test_a_watchdog_hang_is_reported_as_hung(tmp_path: Path) -> None:
    from harness.kernel.events import GuestHang

    def hang_after_load(guest: ScriptedGuest, action: str, service: str) -> ControlResult:
        outcome = succeed(guest, action, service)
        guest.timeline.append(GuestHang(t=guest.timeline.now(), summary="no output for 60s and no CPU time"))
        return outcome

    result, guests = run(tmp_path, hang_after_load)
    assert result.outcome == "hung" and "no CPU time" in result.message and guests[0].stopped


def test_no_evidence_is_collected_without_a_crash(tmp_path: Path) -> None:
    result, guests = run(tmp_path, succeed)
    assert result.outcome == "passed" and guests[0].collected == [] and result.crash_evidence == CrashEvidence()


def test_a_crash_that_breaks_the_transport_is_crashed_and_its_dump_is_collected(tmp_path: Path) -> None:
    def crash_then_silence(guest: ScriptedGuest, action: str, service: str) -> ControlResult:
        guest.timeline.append(GuestCrash(t=guest.timeline.now(), summary="bugcheck 0x000000D1", code=0xD1))
        raise GuestError("winrm 127.0.0.1:5985: connection reset")

    result, guests = run(tmp_path, crash_then_silence)
    assert result.outcome == "crashed", result.message
    assert result.message.startswith("the guest crashed: bugcheck 0x000000D1") and "connection reset" in result.message
    assert guests[0].collected == [result.run_dir / "crash"] and guests[0].stopped
    assert result.crash_evidence.files == (result.run_dir / "crash" / "MINI.dmp",)


def test_a_crash_with_a_stack_report_gets_its_triage_and_signature(tmp_path: Path) -> None:
    """The report names the scenario's image (sender.sys) for the guest's module of its service (sysTest.sys)."""

    def crash(guest: ScriptedGuest, action: str, service: str) -> ControlResult:
        module = ModuleRange("C:\\kcb\\sysTest.sys", 0x2000000, 0x9000)
        frames = (StackFrame(0x2001020, 0x100, "context"),)
        report = StackReport(guest.timeline.now(), "crash", (ThreadStack(7, frames),), (module,), code=0xC0000005, thread=7)
        guest.timeline.append(report)
        guest.timeline.append(GuestCrash(t=guest.timeline.now(), summary="unhandled page fault", code=0xC0000005))
        return ControlResult(ok=False, status=None, win32=None, detail="guest crashed")

    class NamedAfterService(ScriptedGuest):
        def module_name(self, driver: DriverInstall) -> str:
            return f"{driver.service}.sys"

    result, _ = run(tmp_path, crash, guest_class=NamedAfterService)
    assert result.outcome == "crashed" and result.triage is not None
    assert result.signature == "0xC0000005 sender.sys+0x1020"  # the image is no PE file here: module and offset


def test_a_hang_asks_the_guest_for_its_stacks_before_teardown(tmp_path: Path) -> None:
    def hang(guest: ScriptedGuest, action: str, service: str) -> ControlResult:
        guest.hang_report = StackReport(guest.timeline.now(), "hang", (ThreadStack(1, (StackFrame(0x10, 0x20, "context"),)),))
        raise GuestHung("the guest did not answer 'start' within 30s")

    result, guests = run(tmp_path, hang)
    assert result.outcome == "hung" and guests[0].stacks_asked == [True]
    assert result.triage is not None and result.signature == "hang (no driver frame)"


def test_a_hang_without_stacks_and_a_pass_have_the_expected_signatures(tmp_path: Path) -> None:
    def hang(guest: ScriptedGuest, action: str, service: str) -> ControlResult:
        raise GuestHung("the guest did not answer 'start' within 30s")

    hung, _ = run(tmp_path / "a", hang)
    assert hung.triage is None and hung.signature == "hang (no stacks)"
    passed, guests = run(tmp_path / "b", succeed)
    assert passed.signature is None and guests[0].stacks_asked == []


def test_an_image_the_guest_refuses_ends_the_scenario_before_the_guest_starts(tmp_path: Path) -> None:
    class Refusing(ScriptedGuest):
        def check_images(self, images: Sequence[Path]) -> list[str]:
            self.checked = list(images)
            return [f"{image.name} imports functions the guest does not implement: ntoskrnl.exe!KeFoo" for image in images]

    guests: list[Refusing] = []
    drivers = tmp_path / "drivers"
    drivers.mkdir()
    (drivers / "sender.sys").write_bytes(b"MZ")
    (tmp_path / "case.yaml").write_text(SCENARIO)

    def factory(timeline: Timeline, run_dir: Path) -> Guest:
        guests.append(Refusing(timeline, run_dir, succeed))
        return guests[-1]

    result = run_scenario(load_scenario(tmp_path / "case.yaml"), factory, drivers, tmp_path / "out")
    assert result.outcome == "error"
    assert result.message == "sender.sys imports functions the guest does not implement: ntoskrnl.exe!KeFoo"
    assert guests[0].checked == [drivers / "sender.sys"]
    assert not guests[0].started and not guests[0].installed and not guests[0].stopped
    assert [s.state for s in result.steps] == ["skipped", "skipped", "skipped"]


def test_every_guest_runs_every_image_unless_it_says_otherwise(tmp_path: Path) -> None:
    assert ScriptedGuest(Timeline(), tmp_path, succeed).check_images([tmp_path / "any.sys"]) == []
