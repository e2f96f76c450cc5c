"""Runs one scenario: scenario -> guest -> steps -> kernel-log events -> expectations -> verdict.

The runner owns time: a whole-scenario deadline and a per-step timeout. A
guest that stops answering is reported as ``hung``, one that dies as
``crashed``, a broken guest as ``infra``; an expectation that does not hold
is ``failed``. The guest is torn down on every path, Ctrl-C included.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from harness.durations import format_duration
from harness.errors import GuestError, GuestHung
from harness.expect.engine import Verdict, check_absence, check_order, check_presence, nearby
from harness.guests import GuestFactory
from harness.guests.base import CrashEvidence, DriverInstall, Guest, ProgramResult
from harness.kernel.events import Action, Event, GuestCrash, GuestHang, LogLine, StackReport
from harness.ntstatus import status_name
from harness.scenario.loader import LoadedScenario
from harness.scenario.model import (
    ExpectNoStep,
    ExpectOrderStep,
    ExpectStep,
    LoadStep,
    RunStep,
    Step,
    UnloadStep,
    WaitStep,
)
from harness.timeline import Timeline
from harness.transports.commands import windows_arguments
from harness.triage.analyse import DriverModule, analyse
from harness.triage.model import Triage
from harness.triage.pe import ImageError
from harness.triage.signature import crash_signature, unreported_hang_signature
from harness.triage.symbols import Symbolizer

log = logging.getLogger(__name__)

#: How long a hung guest gets to report its threads' stacks before it is torn down.
STACKS_TIMEOUT = 5.0

Outcome = Literal["passed", "failed", "crashed", "hung", "infra", "error"]
StepState = Literal["passed", "failed", "crashed", "hung", "infra", "skipped"]


@dataclass
class StepResult:
    """One step: what it was, where it is in the file, how it went."""

    index: int
    line: int
    kind: str
    description: str
    state: StepState = "skipped"
    message: str = ""
    start: float = 0.0
    end: float = 0.0


@dataclass
class ScenarioResult:
    """Everything the reports need about one scenario run."""

    id: str
    name: str
    path: Path
    guest: str
    run_dir: Path
    outcome: Outcome = "passed"
    message: str = ""
    steps: list[StepResult] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    duration: float = 0.0
    crash: GuestCrash | None = None
    context: list[LogLine] = field(default_factory=list)
    raw_log_file: Path | None = None  # the guest's raw kernel log, as the guest names it
    crash_evidence: CrashEvidence = field(default_factory=CrashEvidence)  # dumps pulled after a crash
    triage: Triage | None = None  # where it crashed or hung, when the guest reported its stacks
    image: str | None = None  # the VM image it ran on, in an image matrix
    build: str | None = None  # the driver build it ran with, when several are compared
    host: str = ""  # the VM host it ran on (a pool of them), "" for this machine
    started_at: float = 0.0  # wall clock (seconds since the epoch) when its guest was set up

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    @property
    def key(self) -> str:
        """The scenario's id with the image and build it ran with: unique within one suite."""
        return "@".join(part for part in (self.id, self.image, self.build) if part)

    @property
    def signature(self) -> str | None:
        """What identifies this crash or hang across runs and builds (None when it neither crashed nor hung)."""
        if self.triage is not None:
            return self.triage.signature
        if self.outcome == "crashed":
            return crash_signature(self.crash.code if self.crash is not None else None, None)
        if self.outcome == "hung":
            return unreported_hang_signature()
        return None

    @property
    def raw_log(self) -> Path:
        return self.raw_log_file or self.run_dir / "kernel-raw.log"


class ScenarioInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM ended a scenario; the guest is torn down and ``result`` says how far it got."""

    def __init__(self, result: ScenarioResult) -> None:
        super().__init__(result.message)
        self.result = result


class _StepFailed(Exception):
    def __init__(self, state: StepState, message: str, context: list[LogLine] | None = None) -> None:
        super().__init__(message)
        self.state = state
        self.message = message
        self.context = context or []


def describe_step(step: Step) -> tuple[str, str]:
    """(kind, one-line description) of a step, for progress and reports."""
    if isinstance(step, LoadStep):
        expected = f" (expect {status_name(step.expect_status)})" if step.expect_status else ""
        return "load", f"load {step.load}{expected}"
    if isinstance(step, UnloadStep):
        return "unload", f"unload {step.unload}"
    if isinstance(step, RunStep):
        expected = f" (expect exit {exit_name(step.expect_exit)})" if step.expect_exit else ""
        return "run", " ".join(["run", step.run, windows_arguments(step.args)]).rstrip() + expected
    if isinstance(step, ExpectStep):
        spec = step.expect
        return "expect", f"expect {spec.count.describe()} of {spec.describe()} within {format_duration(spec.within)}"
    if isinstance(step, ExpectNoStep):
        return "expect_no", f"expect no {step.expect_no.describe()} for {format_duration(step.expect_no.for_)}"
    if isinstance(step, ExpectOrderStep):
        return "expect_order", "expect in order: " + ", ".join(p.describe() for p in step.expect_order.lines)
    return "wait", f"wait {format_duration(step.wait)}"


def exit_name(code: int) -> str:
    """An exit code as people read it: small ones in decimal, NTSTATUS-like ones (0x80000000 and up) in hex with a name."""
    return str(code) if code < 0x80000000 else status_name(code)


def program_folders(loaded: LoadedScenario, drivers_dir: Path) -> list[Path]:
    """Where a scenario's programs are looked for, in order: its ``programs`` folder (relative to the scenario file),
    or else the drivers folder and a ``programs`` folder beside it."""
    if loaded.scenario.programs is not None:
        return [loaded.path.parent / loaded.scenario.programs]
    return [drivers_dir, drivers_dir.parent / "programs"]


class ScenarioRun:
    """The state of one scenario while it runs."""

    def __init__(self, loaded: LoadedScenario, guest: Guest, timeline: Timeline, programs: dict[str, Path] | None = None) -> None:
        self.loaded = loaded
        self.scenario = loaded.scenario
        self.guest = guest
        self.timeline = timeline
        self.programs = programs or {}  # run steps' program names -> files on this machine
        self.deadline = 0.0
        self.origin = 0.0
        self.previous: StepResult | None = None

    def crash(self) -> GuestCrash | None:
        crashes = self.timeline.of_type(GuestCrash)
        return crashes[0] if crashes else None

    def hang(self) -> GuestHang | None:
        hangs = self.timeline.of_type(GuestHang)
        return hangs[0] if hangs else None

    def check_alive(self) -> None:
        """Raises _StepFailed when the guest crashed or a watchdog declared it hung."""
        crash = self.crash()
        if crash is not None:
            raise _StepFailed("crashed", f"the guest crashed: {crash.summary}")
        hang = self.hang()
        if hang is not None:
            raise _StepFailed("hung", f"the guest hung: {hang.summary}")

    def remaining(self) -> float:
        return self.deadline - self.timeline.now()

    def step_timeout(self, step: LoadStep | UnloadStep | RunStep) -> float:
        limit = step.timeout if step.timeout is not None else self.scenario.step_timeout
        remaining = self.remaining()
        if remaining <= 0:
            raise _StepFailed("hung", f"the scenario's timeout ({format_duration(self.scenario.timeout)}) has passed")
        return min(limit, remaining)

    def window_deadline(self, length: float) -> float:
        return min(self.timeline.now() + length, self.deadline)

    def execute(self, step: Step, result: StepResult) -> str:
        if isinstance(step, LoadStep | UnloadStep):
            return self._control(step)
        if isinstance(step, RunStep):
            return self._run(step)
        if isinstance(step, ExpectStep | ExpectOrderStep):
            since = step.expect.since if isinstance(step, ExpectStep) else step.expect_order.since
            within = step.expect.within if isinstance(step, ExpectStep) else step.expect_order.within
            # Effects of the previous step may show while it runs: look from its start.
            start = self.origin if since == "start" or self.previous is None else self.previous.start
            return self._await(step, start, self.window_deadline(within))
        if isinstance(step, ExpectNoStep):
            # Absence is about the state after the previous step: look from its end.
            start = self.origin if step.expect_no.since == "start" or self.previous is None else self.previous.end
            return self._await(step, start, self.window_deadline(step.expect_no.for_))
        assert isinstance(step, WaitStep)
        until = self.timeline.now() + step.wait
        if until > self.deadline:
            raise _StepFailed("hung", f"waiting {format_duration(step.wait)} would pass the scenario's timeout")
        self.timeline.wait_for(lambda events: self.crash() or self.hang(), until)
        self.check_alive()
        return f"waited {format_duration(step.wait)}"

    def _control(self, step: LoadStep | UnloadStep) -> str:
        timeout = self.step_timeout(step)
        name = step.load if isinstance(step, LoadStep) else step.unload
        spec = self.scenario.drivers[name]
        verb = "load" if isinstance(step, LoadStep) else "unload"
        try:
            outcome = self.guest.load(spec.service, timeout) if verb == "load" else self.guest.unload(spec.service, timeout)
        except GuestHung as error:
            raise _StepFailed("hung", str(error)) from None
        self.check_alive()
        if outcome.status is None:
            if outcome.ok and step.expect_status == 0:
                return f"ok ({outcome.detail})"
            raise _StepFailed(
                "failed",
                f"expected {status_name(step.expect_status)}, but the guest reported no kernel status "
                f"({outcome.detail}, Win32 error {outcome.win32})",
            )
        if outcome.status != step.expect_status:
            raise _StepFailed("failed", f"expected {status_name(step.expect_status)}, got {status_name(outcome.status)}")
        return status_name(outcome.status)

    def _run(self, step: RunStep) -> str:
        timeout = self.step_timeout(step)
        started = self.timeline.now()
        try:
            result: ProgramResult = self.guest.run_program(self.programs[step.run], step.args, timeout)
        except GuestHung as error:
            raise _StepFailed("hung", str(error)) from None
        self.check_alive()
        context = nearby(self.timeline.lines(), started, self.timeline.now())
        if result.timed_out:
            message = f"{step.run} did not finish within {format_duration(timeout)}: it was ended, with every process it started"
            raise _StepFailed("hung", message, context)
        if result.exit_code is None:
            raise _StepFailed("failed", f"{step.run} could not be started: {result.detail}", context)
        if result.exit_code != step.expect_exit:
            detail = f" ({result.detail})" if result.detail else ""
            message = f"{step.run} exited with {exit_name(result.exit_code)}, expected {exit_name(step.expect_exit)}{detail}"
            raise _StepFailed("failed", message, context)
        return f"exited with {exit_name(result.exit_code)}"

    def _await(self, step: ExpectStep | ExpectNoStep | ExpectOrderStep, start: float, deadline: float) -> str:
        def check(now: float) -> Verdict:
            lines = [event for event in self.timeline.events() if isinstance(event, LogLine)]
            if isinstance(step, ExpectStep):
                return check_presence(step.expect, lines, start, now, deadline)
            if isinstance(step, ExpectNoStep):
                return check_absence(step.expect_no, lines, start, now, deadline)
            return check_order(step.expect_order, lines, start, now, deadline)

        def decided(events: list[Event]) -> Verdict | None:
            if any(isinstance(event, GuestCrash | GuestHang) for event in events):
                return Verdict("fail", "crash or hang")
            verdict = check(self.timeline.now())
            return verdict if verdict.decided else None

        verdict = self.timeline.wait_for(decided, deadline) or check(max(self.timeline.now(), deadline))
        self.check_alive()
        if verdict.state == "pass":
            return verdict.message
        if deadline >= self.deadline and self.timeline.now() >= self.deadline:
            raise _StepFailed(
                "hung", f"the scenario's timeout ({format_duration(self.scenario.timeout)}) ended the wait: {verdict.message}"
            )
        context = nearby(self.timeline.lines(), start, self.timeline.now())
        raise _StepFailed("failed", verdict.message, context)


@dataclass
class SetUp:
    """A scenario ready to run: its timeline, folder, result record and configured (not yet started) guest.

    ``guest`` is None when the scenario ended before any guest was needed (``result`` says why).
    """

    loaded: LoadedScenario
    timeline: Timeline
    result: ScenarioResult
    images: dict[str, Path]
    guest: Guest | None
    symbol_dirs: tuple[Path, ...] = ()  # where else the drivers' symbol files are (X.debug, X.map)
    programs: dict[str, Path] = field(default_factory=dict)  # run steps' programs, found on this machine


def set_up(loaded: LoadedScenario, factory: GuestFactory, drivers_dir: Path, run_dir: Path, symbol_dirs: Sequence[Path] = ()) -> SetUp:
    """Everything before the guest starts: the result record, image checks, the guest made and configured.

    A warm pool calls this for the next scenario and starts the guest early; ``run_set_up`` runs it.

    Args:
        symbol_dirs: where else to look for the drivers' symbol files (X.debug, X.map), after the drivers' own folder.
    """
    scenario = loaded.scenario
    timeline = Timeline()
    run_dir.mkdir(parents=True, exist_ok=True)
    result = ScenarioResult(id=loaded.id, name=scenario.name, path=loaded.path, guest="", run_dir=run_dir, started_at=time.time())
    for index, step in enumerate(scenario.steps):
        kind, description = describe_step(step)
        result.steps.append(StepResult(index=index, line=loaded.step_lines[index], kind=kind, description=description))
    images = {name: drivers_dir / spec.image for name, spec in scenario.drivers.items()}
    done = SetUp(loaded, timeline, result, images, None, tuple(symbol_dirs))
    missing = [f"{path.name} (driver {name})" for name, path in images.items() if not path.is_file()]
    if missing:
        result.outcome = "error"
        result.message = f"driver image not found in {drivers_dir}: {', '.join(missing)}"
        return done
    folders = program_folders(loaded, drivers_dir)
    lost: dict[str, list[int]] = {}
    for index, step in enumerate(scenario.steps):
        if isinstance(step, RunStep) and step.run not in done.programs:
            found = next((folder / step.run for folder in folders if (folder / step.run).is_file()), None)
            if found is None:
                lost.setdefault(step.run, []).append(index + 1)
            else:
                done.programs[step.run] = found
    if lost:
        result.outcome = "error"
        names = ", ".join(f"{name} (step {', '.join(str(number) for number in steps)})" for name, steps in lost.items())
        result.message = f"program not found in {' or '.join(str(folder) for folder in folders)}: {names}"
        return done
    guest = factory(timeline, run_dir)
    result.guest = guest.name
    result.host = guest.location
    result.raw_log_file = guest.raw_log
    refused = guest.check_images(list(images.values()))
    if refused:
        # Before the guest starts: nothing is loaded, no session is opened.
        result.outcome = "error"
        result.message = " | ".join(refused)
        return done
    if scenario.verifier is not None:
        if not guest.supports_verifier:
            result.outcome = "error"
            result.message = "Driver Verifier (verifier:) needs the Windows VM guest (--guest libvirt)"
            result.message += f"; the {guest.name} guest has no such kernel feature"
            return done
        setting: str | int = scenario.verifier if isinstance(scenario.verifier, str) else scenario.verifier.flags
        guest.verifier = (setting, tuple(f"{spec.service}.sys" for spec in scenario.drivers.values()))
    done.guest = guest
    return done


def run_scenario(
    loaded: LoadedScenario,
    factory: GuestFactory,
    drivers_dir: Path,
    out_dir: Path,
    progress: Callable[[str], None] | None = None,
    *,
    symbol_dirs: Sequence[Path] = (),
) -> ScenarioResult:
    """Run one scenario on a fresh guest and return its result (never raises for guest trouble).

    Args:
        symbol_dirs: where else to look for the drivers' symbol files (X.debug, X.map), after the drivers' own folder.

    Raises:
        ScenarioInterrupted: Ctrl-C or SIGTERM, after the guest was torn down (with the result so far).
    """
    return run_set_up(set_up(loaded, factory, drivers_dir, out_dir / "scenarios" / loaded.id, symbol_dirs), progress)


def run_set_up(prepared: SetUp, progress: Callable[[str], None] | None = None) -> ScenarioResult:
    """Run a set-up scenario on its guest (started early, or now) and tear the guest down on every path.

    Raises:
        ScenarioInterrupted: Ctrl-C, SIGTERM or a cancelled timeline, after the guest was torn down.
    """
    guest, result, timeline, images = prepared.guest, prepared.result, prepared.timeline, prepared.images
    if guest is None:
        return result
    run_dir = result.run_dir
    run = ScenarioRun(prepared.loaded, guest, timeline, prepared.programs)
    interrupted = False
    try:
        with guest:
            broken: GuestError | None = None
            try:
                _run_body(run, result, images, progress)
            except GuestError as error:
                broken = error
            if run.crash() is not None:
                # The guest may restart and write a dump; pulled while the guest is still ours.
                result.crash_evidence = guest.collect_crash_evidence(run_dir / "crash")
            elif result.outcome == "hung" or isinstance(broken, GuestHung):
                guest.report_stacks(STACKS_TIMEOUT)  # where it hangs, before the guest is torn down
                result.crash_evidence = guest.collect_hang_evidence(run_dir / "hang")  # a dump it was made to write
            if result.outcome != "passed" or broken is not None:
                guest.hold_failed(f"{result.id}: {result.outcome if broken is None else broken}")  # --keep-failed
            if broken is not None:
                raise broken
    except GuestHung as error:
        result.outcome, result.message = "hung", str(error)
    except GuestError as error:
        result.outcome, result.message = "infra", str(error)
    except KeyboardInterrupt as signal:
        interrupted = True
        result.outcome, result.message = "error", f"interrupted ({signal or 'Ctrl-C'}); the guest was torn down"
    finally:
        result.events = timeline.events()
        result.duration = timeline.now()
        result.crash = run.crash()
        if result.crash is not None:
            result.context = [line for line in timeline.lines() if line.t <= result.crash.t][-10:]
            if result.outcome in ("hung", "infra"):
                # A crash explains a guest that stopped answering: it is what the report should lead with.
                result.message = f"the guest crashed: {result.crash.summary} (then: {result.message})"
                result.outcome = "crashed"
        result.triage = _triage(prepared.loaded, result, guest, images, prepared.symbol_dirs)
    if interrupted:
        raise ScenarioInterrupted(result)
    return result


def _stack_report(result: ScenarioResult) -> StackReport | None:
    """The report that says where it failed: at a crash the faulting thread's, at a hang the last one."""
    reports = [event for event in result.events if isinstance(event, StackReport)]
    if result.outcome == "crashed":
        return next((report for report in reports if report.kind == "crash"), None)
    if result.outcome == "hung":
        return next((report for report in reversed(reports) if report.kind == "hang"), None)
    return None


def _triage(
    loaded: LoadedScenario, result: ScenarioResult, guest: Guest, images: dict[str, Path], symbol_dirs: Sequence[Path]
) -> Triage | None:
    """Name the guest's stack report with the drivers' symbols; None without a report (never raises)."""
    report = _stack_report(result)
    if report is None:
        return None
    scenario = loaded.scenario
    drivers = [
        DriverModule(
            guest_name=guest.module_name(DriverInstall(service=spec.service, image=images[name])),
            image=images[name].name,
            service=spec.service,
        )
        for name, spec in scenario.drivers.items()
    ]
    unload_steps: dict[str, int] = {}
    focus: str | None = None
    for step, record in zip(scenario.steps, result.steps, strict=True):
        if isinstance(step, UnloadStep) and record.state != "skipped" and record.start <= report.t:
            unload_steps[scenario.drivers[step.unload].service] = record.index + 1
        if isinstance(step, LoadStep | UnloadStep) and record.state == "hung":
            focus = scenario.drivers[step.load if isinstance(step, LoadStep) else step.unload].service
    symbols = Symbolizer({path.name: path for path in images.values()}, symbol_dirs, guest.system_images())
    try:
        return analyse(report, drivers, symbols, unload_steps, focus)
    except (ImageError, OSError, ValueError) as error:
        log.warning("could not name the stacks of %s: %s", result.id, error)
        return None


def _run_body(run: ScenarioRun, result: ScenarioResult, images: dict[str, Path], progress: Callable[[str], None] | None) -> None:
    scenario = run.scenario
    run.deadline = run.timeline.now() + scenario.timeout
    for name, spec in scenario.drivers.items():
        run.guest.install(DriverInstall(service=spec.service, image=images[name], parameters=spec.parameters), scenario.step_timeout)
    run.origin = run.timeline.now()
    _run_steps(run, result, progress)
    if result.outcome == "passed":
        try:
            run.check_alive()
        except _StepFailed as failure:
            result.outcome = "crashed" if failure.state == "crashed" else "hung"
            result.message = f"after the last step: {failure.message}"


def _run_steps(run: ScenarioRun, result: ScenarioResult, progress: Callable[[str], None] | None) -> None:
    for step, record in zip(run.scenario.steps, result.steps, strict=True):
        record.start = run.timeline.now()
        try:
            record.message = run.execute(step, record)
            record.state = "passed"
        except _StepFailed as failure:
            record.state = failure.state
            record.message = failure.message
            result.outcome = failure.state if failure.state != "skipped" else "failed"
            result.message = f"step {record.index + 1} (line {record.line}) {record.description}: {failure.message}"
            result.context = failure.context
        record.end = run.timeline.now()
        run.timeline.append(
            Action(
                t=record.start,
                end=record.end,
                kind=record.kind,
                target=record.description,
                outcome=record.message,
                ok=record.state == "passed",
            )
        )
        if progress is not None:
            progress(f"  {'ok ' if record.state == 'passed' else record.state.upper()} {record.description}: {record.message}")
        if record.state != "passed":
            return
        run.previous = record
