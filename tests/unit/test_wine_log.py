"""Parsing the Wine session's stderr into kernel events."""

from __future__ import annotations

import pytest

from harness.guests.base import ProgramResult
from harness.guests.wine.log import STATUS_ACCESS_VIOLATION, parse_line, program_result, run_end
from harness.kernel.events import DriverStatus, GuestCrash, LogLine

PREFIX = "012c:warn:debugstr:vDbgPrintExWithPrefix 0000004d:00000001: "


def test_dbgprint_keeps_the_exact_text_with_tabs() -> None:
    event = parse_line(PREFIX + "[sysRecv1]:get notify ulType:(1)\tulValue:(hello)\n", 1.5)
    assert event == LogLine(t=1.5, text="[sysRecv1]:get notify ulType:(1)\tulValue:(hello)")


def test_dbgprint_keeps_leading_spaces_of_the_message() -> None:
    event = parse_line(PREFIX + "  indented\n", 0.0)
    assert isinstance(event, LogLine) and event.text == "  indented"


@pytest.mark.parametrize(
    ("line", "action", "service", "status"),
    [
        (PREFIX + "kcb-shim: load sysRecv1 status 0xc0000034", "load", "sysRecv1", 0xC0000034),
        (PREFIX + "kcb-shim: unload sysTest status 0x00000000", "unload", "sysTest", 0),
    ],
)
def test_shim_status_lines(line: str, action: str, service: str, status: int) -> None:
    assert parse_line(line, 2.0) == DriverStatus(t=2.0, action=action, service=service, status=status)


def test_page_fault_is_a_crash_with_code_and_address() -> None:
    line = (
        "wine: Unhandled page fault on execute access to 00000000024B1020 at address 00000000024B1020 (thread 0158), starting debugger..."
    )
    event = parse_line(line, 3.0)
    assert isinstance(event, GuestCrash)
    assert event.code == STATUS_ACCESS_VIOLATION
    assert event.parameters == (8, 0x24B1020)
    assert "execute access to 0x24b1020" in event.summary
    assert event.evidence == (line,)


def test_other_unhandled_exception() -> None:
    event = parse_line("wine: Unhandled exception 0xc0000409 in thread 0158 at address 0000000140001000", 0.0)
    assert isinstance(event, GuestCrash) and event.code == 0xC0000409


@pytest.mark.parametrize(
    "line",
    ["0024:fixme:ntoskrnl:KeInitializeSpinLock stub", "0024:err:module:import_dll failed", "wine: created the configuration directory", ""],
)
def test_wine_chatter_is_ignored(line: str) -> None:
    assert parse_line(line, 0.0) is None


def test_continuation_of_a_multiline_print_is_a_log_line() -> None:
    assert parse_line("second line of a DbgPrint\n", 0.0) == LogLine(t=0.0, text="second line of a DbgPrint")


def test_wine_timestamps_are_accepted_and_read() -> None:
    from harness.guests.wine.log import guest_timestamp

    line = "1175.921:0060:warn:debugstr:vDbgPrintExWithPrefix 0000004d:00000001: [sysTest] send."
    assert parse_line(line, 0.0) == LogLine(t=0.0, text="[sysTest] send.")
    assert guest_timestamp(line) == pytest.approx(1175.921)
    assert guest_timestamp(PREFIX + "x") is None
    assert parse_line("1175.921:0060:fixme:ntoskrnl:stub", 0.0) is None


# -- programs' output, forwarded into the same stream by kcbagent.exe run ---------------------------------------------


@pytest.mark.parametrize(
    ("line", "event"),
    [
        ("kcb-run\tstdout\tioctl-client.exe\tclient: sent 5 bytes\n", LogLine(2.0, "client: sent 5 bytes", "ioctl-client.exe:stdout")),
        ("kcb-run\tstderr\tioctl-client.exe\ttab\tinside\n", LogLine(2.0, "tab\tinside", "ioctl-client.exe:stderr")),
        ("kcb-run\tstdout\tioctl-client.exe\t\n", LogLine(2.0, "", "ioctl-client.exe:stdout")),
        (
            "kcb-run\tstdout\tioctl-client.exe\twine: Unhandled page fault on read access to 0 at address 0\n",
            LogLine(2.0, "wine: Unhandled page fault on read access to 0 at address 0", "ioctl-client.exe:stdout"),
        ),
    ],
)
def test_a_programs_forwarded_line_is_a_line_from_that_program(line: str, event: LogLine) -> None:
    assert parse_line(line, 2.0) == event


def test_the_end_of_a_run_is_no_log_line() -> None:
    line = "kcb-run\tend\t7\texit 3221225477\n"
    assert parse_line(line, 2.0) is None
    assert run_end(line) == ("7", "exit 3221225477")
    assert run_end("kcb-run\tstdout\tx.exe\tend\n") is None
    assert run_end(PREFIX + "kcb-run\tend\t7\texit 0\n") is None


UNHANDLED = "wine: Unhandled page fault on write access to 0000000000000000 at address 0000000140001B2C (thread 013c), starting debugger..."


@pytest.mark.parametrize(
    ("report", "diagnostics", "result"),
    [
        ("exit 0", [], ProgramResult(exit_code=0)),
        ("exit 3221225477", [UNHANDLED], ProgramResult(0xC0000005, False, UNHANDLED)),
        ("timeout", [], ProgramResult(exit_code=None, timed_out=True)),
        ("error 2 CreateProcess failed", [], ProgramResult(exit_code=None, detail="CreateProcess failed (Win32 error 2)")),
        ("garbage", [], ProgramResult(exit_code=None, detail="the program runner reported 'garbage'")),
    ],
)
def test_program_result_from_the_runners_report(report: str, diagnostics: list[str], result: ProgramResult) -> None:
    assert program_result(report, diagnostics) == result
