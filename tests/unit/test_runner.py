"""The runner's verdicts, with a scripted in-memory guest (the real guests have integration tests)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from harness.errors import GuestError, GuestHung
from harness.guests.base import ControlResult, CrashEvidence, DriverInstall, Guest, ProgramResult
from harness.kernel.events import Action, DriverStatus, GuestCrash, LogLine, program_source
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
        self.programs: list[tuple[Path, tuple[str, ...], float]] = []
        self.program_result: ProgramResult | Exception = ProgramResult(exit_code=0)

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

    def run_program(self, program: Path, args: Sequence[str], timeout: float) -> ProgramResult:
        self.programs.append((program, tuple(args), timeout))
        self.timeline.append(LogLine(self.timeline.now(), f"client: sent {' '.join(args)}", program_source(program.name, "stdout")))
        if isinstance(self.program_result, Exception):
            raise self.program_result
        return self.program_result

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


# -- run: steps ------------------------------------------------------------------------------------------------------

RUN_SCENARIO = """\
name: a program talks to the driver
drivers:
  sender: {image: sender.sys, service: sysTest}
timeout: 5s
steps:
  - load: sender
  - run: client.exe
    args: [hello, 42]
    timeout: 2s
  - expect_order:
      lines:
        - {line: "[sysTest] send.", source: kernel}
        - {line: "client: sent hello 42", source: client.exe}
      since: start
  - expect: {line: "client: sent hello 42", source: kernel, count: 0}
"""


EXITED = ProgramResult(exit_code=0)


def run_program_scenario(
    tmp_path: Path, result: ProgramResult | Exception = EXITED, text: str = RUN_SCENARIO, where: str = "drivers"
) -> tuple[ScenarioResult, list[ScriptedGuest]]:
    folder = tmp_path / where
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "client.exe").write_bytes(b"MZ")

    class Guest(ScriptedGuest):
        def __init__(self, timeline: Timeline, run_dir: Path, script: Script) -> None:
            super().__init__(timeline, run_dir, script)
            self.program_result = result

    return run(tmp_path, succeed, text, guest_class=Guest)


def test_a_run_step_passes_and_its_lines_count_for_expectations_by_source(tmp_path: Path) -> None:
    result, guests = run_program_scenario(tmp_path)
    assert result.outcome == "passed", result.message
    assert guests[0].programs == [(tmp_path / "drivers" / "client.exe", ("hello", "42"), 2.0)]
    step = result.steps[1]
    assert (step.kind, step.description, step.message) == ("run", "run client.exe hello 42", "exited with 0")
    action = next(event for event in result.events if isinstance(event, Action) and event.kind == "run")
    assert action.ok and action.target == "run client.exe hello 42"


def test_the_run_step_timeout_defaults_to_the_step_timeout(tmp_path: Path) -> None:
    _, guests = run_program_scenario(tmp_path, text=RUN_SCENARIO.replace("    timeout: 2s\n", ""))
    assert 4.0 < guests[0].programs[0][2] < 5.0  # the step timeout (30s), capped by what is left of the scenario's 5s
    _, guests = run_program_scenario(
        tmp_path, text=RUN_SCENARIO.replace("    timeout: 2s\n", "").replace("timeout: 5s", "timeout: 60s\nstep_timeout: 7s")
    )
    assert guests[0].programs[0][2] == 7.0


def test_a_wrong_exit_code_fails_the_step_with_both_codes(tmp_path: Path) -> None:
    result, _ = run_program_scenario(tmp_path, ProgramResult(exit_code=0xC0000005, detail="wine: Unhandled page fault"))
    assert result.outcome == "failed"
    assert result.message == (
        "step 2 (line 7) run client.exe hello 42: client.exe exited with STATUS_ACCESS_VIOLATION (0xC0000005), expected 0 "
        "(wine: Unhandled page fault)"
    )
    assert [line.text for line in result.context] == ["client: sent hello 42"]


def test_the_expected_exit_code_passes(tmp_path: Path) -> None:
    text = RUN_SCENARIO.replace("    timeout: 2s\n", "    timeout: 2s\n    expect_exit: 3\n")
    result, _ = run_program_scenario(tmp_path, ProgramResult(exit_code=3), text)
    assert result.outcome == "passed", result.message
    assert result.steps[1].description == "run client.exe hello 42 (expect exit 3)"


def test_a_program_that_does_not_finish_is_hung(tmp_path: Path) -> None:
    result, guests = run_program_scenario(tmp_path, ProgramResult(exit_code=None, timed_out=True))
    assert result.outcome == "hung"
    assert "client.exe did not finish within 2s: it was ended, with every process it started" in result.message
    assert [step.state for step in result.steps] == ["passed", "hung", "skipped", "skipped"]
    assert guests[0].stopped


def test_a_program_that_cannot_start_fails(tmp_path: Path) -> None:
    result, _ = run_program_scenario(tmp_path, ProgramResult(exit_code=None, detail="CreateProcess failed (Win32 error 193)"))
    assert result.outcome == "failed" and "client.exe could not be started: CreateProcess failed (Win32 error 193)" in result.message


def test_a_guest_that_stops_answering_during_a_run_is_hung(tmp_path: Path) -> None:
    result, _ = run_program_scenario(tmp_path, GuestHung("the VM did not answer"))
    assert result.outcome == "hung" and "the VM did not answer" in result.message


def test_a_missing_program_is_an_error_before_any_guest_starts(tmp_path: Path) -> None:
    text = RUN_SCENARIO.replace("run: client.exe", "run: ghost.exe").replace("source: client.exe", "source: ghost.exe")
    result, guests = run_program_scenario(tmp_path, text=text)
    assert result.outcome == "error" and guests == []
    drivers = tmp_path / "drivers"
    assert result.message == f"program not found in {drivers} or {tmp_path / 'programs'}: ghost.exe (step 2)"


def test_programs_are_found_in_a_programs_folder_beside_the_drivers(tmp_path: Path) -> None:
    result, guests = run_program_scenario(tmp_path, where="programs")
    assert result.outcome == "passed", result.message
    assert guests[0].programs[0][0] == tmp_path / "programs" / "client.exe"


def test_the_scenarios_programs_folder_is_relative_to_the_scenario_file(tmp_path: Path) -> None:
    text = RUN_SCENARIO.replace("timeout: 5s", "timeout: 5s\nprograms: tools/bin")
    result, guests = run_program_scenario(tmp_path, text=text, where="tools/bin")
    assert result.outcome == "passed", result.message
    assert guests[0].programs[0][0] == tmp_path / "tools" / "bin" / "client.exe"
    (tmp_path / "tools" / "bin" / "client.exe").unlink()
    (tmp_path / "drivers" / "client.exe").parent.mkdir(exist_ok=True)
    (tmp_path / "drivers" / "client.exe").write_bytes(b"MZ")
    result, _ = run_program_scenario(tmp_path, text=text, where="elsewhere")
    assert result.outcome == "error" and f"program not found in {tmp_path / 'tools' / 'bin'}: client.exe" in result.message
