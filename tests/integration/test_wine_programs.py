"""run: steps on the real embedded guest: kcbioctl.sys and ioctl-client.exe (mingw-w64) under Wine."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import Settings
from harness.guests import GuestFactory
from harness.guests.base import DriverInstall, Guest, ProgramResult
from harness.guests.wine.prefix import WinePrefix
from harness.kernel.events import Action, LogLine
from harness.reports.timeline import render_timeline
from harness.runner import ScenarioResult, run_scenario
from harness.scenario.loader import load_scenario
from harness.timeline import Timeline
from tests.integration.conftest import DATA, ROOT

pytestmark = [pytest.mark.wine, pytest.mark.usefixtures("no_session_left")]

PROGRAMS = DATA / "programs"
CLIENT = "ioctl-client.exe"


def run(path: Path, factory: GuestFactory, settings: Settings, out: Path) -> ScenarioResult:
    return run_scenario(load_scenario(path), factory, settings.drivers_dir, out)


def client_processes(prefix: WinePrefix) -> list[int]:
    """Live processes of the session that are the client (Wine puts the Windows path in the Unix command line)."""
    found = []
    for pid in prefix.session_pids():
        try:
            if CLIENT.encode() in (Path("/proc") / str(pid) / "cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def test_a_program_sends_an_ioctl_and_both_lines_are_seen_in_order(wine_factory: GuestFactory, settings: Settings, tmp_path: Path) -> None:
    result = run(ROOT / "scenarios" / "10-program-sends-ioctl.yaml", wine_factory, settings, tmp_path)
    assert result.outcome == "passed", result.message
    assert result.steps[1].message == "exited with 0"
    lines = [event for event in result.events if isinstance(event, LogLine)]
    kernel = next(line for line in lines if line.text == 'kcbioctl: got IOCTL 0x00222004 with 5 bytes: "hello"')
    program = next(line for line in lines if line.text == "client: sent 5 bytes")
    assert (kernel.source, program.source) == ("kernel", "ioctl-client.exe:stdout")
    assert kernel.t <= program.t and lines.index(kernel) < lines.index(program)
    # The report's timeline says where each line came from; the raw log keeps the forwarded lines as they came.
    timeline = render_timeline(result)
    assert "[ioctl-client.exe:stdout] client: sent 5 bytes" in timeline
    assert "kcb-run\tstdout\tioctl-client.exe\tclient: sent 5 bytes" in result.raw_log.read_text()


def test_a_wrong_exit_code_fails_with_a_clear_message(wine_factory: GuestFactory, settings: Settings, tmp_path: Path) -> None:
    result = run(PROGRAMS / "wrong-exit-code.yaml", wine_factory, settings, tmp_path)
    assert result.outcome == "failed"
    assert result.message == "step 2 (line 7) run ioctl-client.exe hello 3: ioctl-client.exe exited with 3, expected 0"
    assert 'client: reply "kcbioctl heard 5 bytes"' in [line.text for line in result.context]
    assert [step.state for step in result.steps] == ["passed", "failed", "skipped"]


def test_a_hanging_program_is_hung_and_ended(wine_factory: GuestFactory, settings: Settings, tmp_path: Path) -> None:
    result = run(PROGRAMS / "hanging-program.yaml", wine_factory, settings, tmp_path)
    assert result.outcome == "hung"
    assert "ioctl-client.exe did not finish within 2s: it was ended, with every process it started" in result.message
    action = next(event for event in result.events if isinstance(event, Action) and event.kind == "run")
    assert not action.ok and action.end - action.t >= 2.0


def test_a_crashing_program_is_its_exit_code_not_a_guest_crash(wine_factory: GuestFactory, settings: Settings, tmp_path: Path) -> None:
    result = run(PROGRAMS / "crashing-program.yaml", wine_factory, settings, tmp_path)
    assert result.outcome == "failed" and result.crash is None
    assert "ioctl-client.exe exited with STATUS_ACCESS_VIOLATION (0xC0000005), expected 0" in result.message
    assert "Unhandled page fault" in result.message  # what Wine said about the program, from the program's own stderr
    assert "Unhandled page fault" not in result.raw_log.read_text()  # never in the kernel log


def test_an_expected_crash_passes_and_the_guest_goes_on(wine_factory: GuestFactory, settings: Settings, tmp_path: Path) -> None:
    text = (
        (PROGRAMS / "crashing-program.yaml")
        .read_text()
        .replace("args: [--crash]", "args: [--crash]\n    expect_exit: STATUS_ACCESS_VIOLATION")
    )
    path = tmp_path / "expected-crash.yaml"
    path.write_text(text)
    result = run(path, wine_factory, settings, tmp_path / "out")
    assert result.outcome == "passed", result.message


def test_a_missing_program_is_an_error_before_anything_runs(wine_factory: GuestFactory, settings: Settings, tmp_path: Path) -> None:
    result = run(PROGRAMS / "missing-program.yaml", wine_factory, settings, tmp_path)
    assert result.outcome == "error" and result.guest == ""
    assert "no-such-client.exe (step 2)" in result.message


@pytest.fixture
def guest(wine_factory: GuestFactory, settings: Settings, tmp_path: Path) -> Guest:
    guest = wine_factory(Timeline(), tmp_path / "run")
    guest.start()
    try:
        guest.install(DriverInstall(service="kcbIoctl", image=settings.drivers_dir / "kcbioctl.sys"), 30)
        assert guest.load("kcbIoctl", 30).ok
    except BaseException:
        guest.stop()
        raise
    return guest


def test_nothing_of_a_timed_out_program_is_left_running_and_the_session_goes_on(
    guest: Guest, settings: Settings, wine_prefix: WinePrefix
) -> None:
    try:
        result = guest.run_program(settings.drivers_dir / CLIENT, ["--hang"], 5.0)
        assert result == ProgramResult(exit_code=None, timed_out=True)
        hanging = [line.text for line in guest.timeline.lines() if line.source == "ioctl-client.exe:stdout"]
        assert hanging[0] == "client: child hanging" and hanging[1].startswith("client: hanging, child pid")  # both ran
        assert client_processes(wine_prefix) == []  # the client and the copy it started, both ended
        assert guest.run_program(settings.drivers_dir / CLIENT, ["again"], 20) == ProgramResult(exit_code=0)
        assert any('"again"' in line.text for line in guest.timeline.lines() if line.source == "kernel")
    finally:
        guest.stop()


ARGS = ["a b", "", 'x"y', "c:\\my dir\\", "\\\\server\\share\\", 'a\\"b', "%PATH%", "^&|<>", "it's", "ünï €"]


def test_arguments_reach_the_program_exactly(guest: Guest, settings: Settings) -> None:
    # Through the real C runtime (mingw-w64's wmain, Wine's msvcrt parser): the quoting rules hold end to end.
    try:
        assert guest.run_program(settings.drivers_dir / CLIENT, ["--echo", *ARGS], 20) == ProgramResult(exit_code=0)
        lines = [line.text for line in guest.timeline.lines() if line.source == "ioctl-client.exe:stdout"]
        assert lines == [f"arg[{index}]=<{arg}>" for index, arg in enumerate(ARGS)] + [f"args={len(ARGS)}"]
    finally:
        guest.stop()
