"""The expectation engine: decides ``expect``/``expect_no``/``expect_order`` over log lines. Pure.

Each check looks at the lines with ``t >= start`` and is given the current
time and the deadline of its window. It answers pass, fail, or pending (not
decided yet: wait for more lines or for the deadline).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from harness.durations import format_duration
from harness.kernel.events import LogLine, selects
from harness.scenario.model import Absence, LinePattern, Order, Presence

State = Literal["pass", "fail", "pending"]


@dataclass(frozen=True)
class Verdict:
    """The state of one expectation, what it saw, and a sentence for the report."""

    state: State
    message: str = ""
    seen: tuple[LogLine, ...] = ()

    @property
    def decided(self) -> bool:
        return self.state != "pending"


def _window(lines: Sequence[LogLine], start: float) -> list[LogLine]:
    return [line for line in lines if line.t >= start]


def matches(pattern: LinePattern, line: LogLine) -> bool:
    """Whether ``line`` comes from the pattern's source (any, when it names none) and its text matches."""
    return selects(pattern.source, line.source) and pattern.matches(line.text)


def check_presence(spec: Presence, lines: Sequence[LogLine], start: float, now: float, deadline: float) -> Verdict:
    """``expect``: passes as soon as the count is within bounds; fails past ``max`` or at the deadline."""
    seen = tuple(line for line in _window(lines, start) if matches(spec, line))
    wanted = f"{spec.count.describe()} {_lines(spec.count.min)} with {spec.describe()} within {format_duration(spec.within)}"
    if spec.count.max is not None and len(seen) > spec.count.max:
        return Verdict("fail", f"expected {wanted}; saw {len(seen)}", seen)
    if len(seen) >= spec.count.min:
        return Verdict("pass", f"saw {len(seen)} {_lines(len(seen))} with {spec.describe()}", seen)
    if now >= deadline:
        return Verdict("fail", f"expected {wanted}; saw {len(seen)}", seen)
    return Verdict("pending", "", seen)


def check_absence(spec: Absence, lines: Sequence[LogLine], start: float, now: float, deadline: float) -> Verdict:
    """``expect_no``: fails at the first matching line; passes when the watched window has closed."""
    seen = tuple(line for line in _window(lines, start) if matches(spec, line))
    if seen:
        first = seen[0]
        return Verdict(
            "fail",
            f"expected no line with {spec.describe()} for {format_duration(spec.for_)}; "
            f"saw {len(seen)}, first at +{first.t:.3f}s: {first.text!r}",
            seen,
        )
    if now >= deadline:
        return Verdict("pass", f"no line with {spec.describe()} for {format_duration(spec.for_)}")
    return Verdict("pending")


def check_order(spec: Order, lines: Sequence[LogLine], start: float, now: float, deadline: float) -> Verdict:
    """``expect_order``: each pattern matched by a later line than the previous one."""
    found: list[LogLine] = []
    for line in _window(lines, start):
        if len(found) < len(spec.lines) and matches(spec.lines[len(found)], line):
            found.append(line)
    if len(found) == len(spec.lines):
        return Verdict("pass", f"saw all {len(found)} lines in order", tuple(found))
    if now >= deadline:
        missing = spec.lines[len(found)]
        after = f" after +{found[-1].t:.3f}s" if found else ""
        return Verdict(
            "fail",
            f"expected {len(spec.lines)} lines in order within {format_duration(spec.within)}; "
            f"matched {len(found)}, then no {missing.describe()}{after}",
            tuple(found),
        )
    return Verdict("pending", "", tuple(found))


def _lines(count: int) -> str:
    return "line" if count == 1 else "lines"


def nearby(lines: Sequence[LogLine], start: float, end: float, limit: int = 8) -> list[LogLine]:
    """The log lines a failure report shows: the last ``limit`` lines of [start, end], or the ones just before."""
    inside = [line for line in lines if start <= line.t <= end]
    if inside:
        return inside[-limit:]
    return [line for line in lines if line.t <= end][-limit:]
