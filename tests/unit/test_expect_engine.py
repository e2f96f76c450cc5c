"""The expectation engine over recorded log lines."""

from __future__ import annotations

import pytest

from harness.expect.engine import check_absence, check_order, check_presence, nearby
from harness.kernel.events import LogLine
from harness.scenario.model import Absence, Count, LinePattern, Order, Presence

NOTIFY = "[sysRecv1]:get notify ulType:(1)\tulValue:(hello)"
SEND = "[sysTest] send."


def timeline(*texts: str, step: float = 0.2) -> list[LogLine]:
    return [LogLine(t=(index + 1) * step, text=text) for index, text in enumerate(texts)]


LINES = timeline(SEND, NOTIFY, SEND, NOTIFY, SEND, "[sysRecv1] Drvier unloaded.", SEND)


def test_presence_passes_once_the_minimum_is_reached() -> None:
    spec = Presence(line=NOTIFY, count=Count(min=2))
    verdict = check_presence(spec, LINES, start=0.0, now=0.0, deadline=2.0)
    assert verdict.state == "pass" and len(verdict.seen) == 2


def test_presence_is_pending_before_the_deadline_and_fails_after() -> None:
    spec = Presence(line=NOTIFY, count=Count(min=3))
    assert check_presence(spec, LINES, 0.0, now=1.0, deadline=2.0).state == "pending"
    verdict = check_presence(spec, LINES, 0.0, now=2.0, deadline=2.0)
    assert verdict.state == "fail"
    assert "at least 3 lines" in verdict.message and "saw 2" in verdict.message


def test_presence_counts_only_the_window() -> None:
    spec = Presence(line=NOTIFY, count=Count(min=2))
    assert check_presence(spec, LINES, start=0.5, now=5.0, deadline=5.0).state == "fail"


def test_presence_line_is_a_literal_whole_line() -> None:
    assert check_presence(Presence(line="send."), LINES, 0.0, 5.0, 5.0).state == "fail"
    assert check_presence(Presence(match=r"send\.$"), LINES, 0.0, 5.0, 5.0).state == "pass"
    tab_less = NOTIFY.replace("\t", " ")
    assert check_presence(Presence(line=tab_less), LINES, 0.0, 5.0, 5.0).state == "fail"


def test_presence_fails_above_max() -> None:
    verdict = check_presence(Presence(line=SEND, count=Count(min=1, max=3)), LINES, 0.0, 0.0, 5.0)
    assert verdict.state == "fail" and "between 1 and 3" in verdict.message and "saw 4" in verdict.message


def test_absence_fails_at_the_first_match_and_names_it() -> None:
    verdict = check_absence(Absence(match="get notify", for_=5.0), LINES, start=0.0, now=0.1, deadline=5.0)
    assert verdict.state == "fail" and "+0.400s" in verdict.message


def test_absence_is_pending_until_the_window_closes() -> None:
    spec = Absence(match="get notify", for_=1.0)
    assert check_absence(spec, LINES, start=1.0, now=1.5, deadline=2.0).state == "pending"
    assert check_absence(spec, LINES, start=1.0, now=2.0, deadline=2.0).state == "pass"


def test_order_is_a_subsequence() -> None:
    spec = Order(lines=[LinePattern(line=NOTIFY), LinePattern(line=SEND), LinePattern(match="unloaded")])
    assert check_order(spec, LINES, 0.0, 0.0, 1.0).state == "pass"


def test_order_fails_when_reversed() -> None:
    spec = Order(lines=[LinePattern(match="unloaded"), LinePattern(line=NOTIFY)])
    assert check_order(spec, LINES, 0.0, 0.5, 1.0).state == "pending"
    verdict = check_order(spec, LINES, 0.0, 1.0, 1.0)
    assert verdict.state == "fail" and "matched 1" in verdict.message and "after +1.200s" in verdict.message


def test_nearby_shows_the_end_of_the_window() -> None:
    assert [line.text for line in nearby(LINES, 0.0, 0.7, limit=2)] == [NOTIFY, SEND]
    assert nearby(LINES, 10.0, 11.0, limit=1) == [LINES[-1]]


# -- sources: kernel lines and programs' output in one timeline ------------------------------------------------------

CLIENT_OUT = "ioctl-client.exe:stdout"
CLIENT_ERR = "ioctl-client.exe:stderr"
MIXED = [
    LogLine(t=0.1, text="client: sending 5 bytes", source=CLIENT_OUT),
    LogLine(t=0.2, text='kcbioctl: got IOCTL 0x00222004 with 5 bytes: "hello"'),
    LogLine(t=0.3, text="client: sent 5 bytes", source=CLIENT_OUT),
    LogLine(t=0.4, text="client: warning", source=CLIENT_ERR),
    LogLine(t=0.5, text="client: sent 5 bytes", source="other.exe:stdout"),
    LogLine(t=0.6, text="client: sent 5 bytes", source="com2"),
]


@pytest.mark.parametrize(
    ("source", "count"),
    [
        (None, 3),
        ("kernel", 0),
        ("program", 2),
        ("stdout", 2),
        ("stderr", 0),
        ("serial", 1),
        ("ioctl-client.exe", 1),
        ("IOCTL-Client.EXE", 1),
        ("ioctl-client.exe:stdout", 1),
        ("ioctl-client.exe:stderr", 0),
        ("other.exe", 1),
    ],
)
def test_presence_counts_only_lines_from_its_source(source: str | None, count: int) -> None:
    spec = Presence(line="client: sent 5 bytes", source=source, count=Count(min=0))
    assert len(check_presence(spec, MIXED, 0.0, 1.0, 1.0).seen) == count


def test_a_kernel_expectation_ignores_a_program_printing_the_same_text() -> None:
    lines = [LogLine(t=0.1, text="kcbioctl: got IOCTL", source=CLIENT_OUT)]
    assert check_presence(Presence(line="kcbioctl: got IOCTL", source="kernel"), lines, 0.0, 1.0, 1.0).state == "fail"
    assert check_presence(Presence(line="kcbioctl: got IOCTL"), lines, 0.0, 1.0, 1.0).state == "pass"


def test_absence_looks_only_at_its_source() -> None:
    assert check_absence(Absence(match="warning", source="stdout"), MIXED, 0.0, 1.0, 1.0).state == "pass"
    verdict = check_absence(Absence(match="warning", source="ioctl-client.exe"), MIXED, 0.0, 1.0, 1.0)
    assert verdict.state == "fail" and "from ioctl-client.exe" in verdict.message


def test_order_matches_each_pattern_against_its_own_source() -> None:
    spec = Order(
        lines=[
            LinePattern(match='got IOCTL .* "hello"', source="kernel"),
            LinePattern(line="client: sent 5 bytes", source="ioctl-client.exe"),
        ]
    )
    verdict = check_order(spec, MIXED, 0.0, 1.0, 1.0)
    assert verdict.state == "pass" and [line.t for line in verdict.seen] == [0.2, 0.3]
    # The program's line before the kernel line does not count for the later pattern.
    wrong = Order(lines=[LinePattern(line="client: sent 5 bytes", source="kernel"), LinePattern(match="got IOCTL")])
    failed = check_order(wrong, MIXED, 0.0, 1.0, 1.0)
    assert failed.state == "fail" and "then no line 'client: sent 5 bytes' from kernel" in failed.message
