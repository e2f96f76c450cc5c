"""Comparing two driver builds on the same scenarios: which outcomes changed and how the logs differ. Pure.

A scenario *regressed* when it passed with the baseline and does not with the
candidate; *fixed* the other way round. For every scenario the kernel logs are
compared by line counts (lines with hex addresses or numbers in them are
compared with those masked), by the first line that differs, and by the
timing of the notifications (median interval of "get notify" lines). Where the
candidate crashed or hung, its signature is compared with the baseline's: the
same crash (or hang), or a new one.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from harness.kernel.events import LogLine
from harness.runner import ScenarioResult

_VOLATILE = re.compile(r"0x[0-9A-Fa-f]+|\b\d+\b")
NOTIFY = re.compile(r"get notify")


def normalise(text: str) -> str:
    """A log line with its numbers masked, so runs can be compared."""
    return _VOLATILE.sub("#", text)


@dataclass(frozen=True)
class LogDiff:
    """How two kernel logs of one scenario differ."""

    only_baseline: dict[str, int] = field(default_factory=dict)  # normalised line -> how many more in the baseline
    only_candidate: dict[str, int] = field(default_factory=dict)
    first_difference: tuple[int, str, str] | None = None  # index, baseline line, candidate line ("" when absent)
    notify_interval: tuple[float | None, float | None] = (None, None)  # median seconds between notifications

    @property
    def same(self) -> bool:
        return not self.only_baseline and not self.only_candidate and self.first_difference is None


@dataclass(frozen=True)
class ScenarioChange:
    id: str
    name: str
    baseline: str
    candidate: str
    candidate_message: str
    logs: LogDiff
    baseline_signature: str | None = None
    candidate_signature: str | None = None

    @property
    def failure_verdict(self) -> str | None:
        """For a candidate that crashed or hung: "same crash"/"same hang" as the baseline's, or "new crash"/"new hang"."""
        if self.candidate_signature is None:
            return None
        what = "hang" if self.candidate == "hung" else "crash"
        return f"same {what}" if self.candidate_signature == self.baseline_signature else f"new {what}"

    @property
    def kind(self) -> str:
        if self.baseline == self.candidate:
            return "unchanged"
        if self.baseline == "passed":
            return "regressed"
        if self.candidate == "passed":
            return "fixed"
        return "changed"


def _lines(result: ScenarioResult) -> list[str]:
    return [event.text for event in result.events if isinstance(event, LogLine)]


def _notify_interval(result: ScenarioResult) -> float | None:
    times = [event.t for event in result.events if isinstance(event, LogLine) and NOTIFY.search(event.text)]
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    return statistics.median(gaps) if gaps else None


def diff_logs(baseline: ScenarioResult, candidate: ScenarioResult) -> LogDiff:
    a = [normalise(line) for line in _lines(baseline)]
    b = [normalise(line) for line in _lines(candidate)]
    counts_a, counts_b = Counter(a), Counter(b)
    only_a = {line: count for line, count in (counts_a - counts_b).items()}
    only_b = {line: count for line, count in (counts_b - counts_a).items()}
    first = None
    for index in range(max(len(a), len(b))):
        left = a[index] if index < len(a) else ""
        right = b[index] if index < len(b) else ""
        if left != right:
            first = (index, _lines(baseline)[index] if index < len(a) else "", _lines(candidate)[index] if index < len(b) else "")
            break
    return LogDiff(only_a, only_b, first, (_notify_interval(baseline), _notify_interval(candidate)))


def compare(baseline: Sequence[ScenarioResult], candidate: Sequence[ScenarioResult]) -> list[ScenarioChange]:
    """One change record per scenario present in both runs, in the baseline's order."""
    by_id = {result.id: result for result in candidate}
    changes = []
    for left in baseline:
        right = by_id.get(left.id)
        if right is None:
            continue
        changes.append(
            ScenarioChange(
                left.id,
                left.name,
                left.outcome,
                right.outcome,
                right.message,
                diff_logs(left, right),
                baseline_signature=left.signature,
                candidate_signature=right.signature,
            )
        )
    return changes


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def render(changes: Sequence[ScenarioChange]) -> str:
    """A text report, regressions first."""
    order = {"regressed": 0, "changed": 1, "fixed": 2, "unchanged": 3}
    out = []
    for change in sorted(changes, key=lambda c: order[c.kind]):
        out.append(f"{change.kind.upper():<9} {change.id}: {change.baseline} -> {change.candidate}")
        if change.kind != "unchanged" and change.candidate_message:
            out.append(f"          candidate: {change.candidate_message}")
        verdict = change.failure_verdict
        if verdict is not None and verdict.startswith("same"):
            out.append(f"          {verdict}: {change.candidate_signature}")
        elif verdict is not None:
            out.append(f"          {verdict}: {change.candidate_signature} (baseline: {change.baseline_signature or change.baseline})")
        logs = change.logs
        for label, lines in (("baseline only", logs.only_baseline), ("candidate only", logs.only_candidate)):
            for line, count in sorted(lines.items(), key=lambda item: -item[1])[:5]:
                out.append(f"          {label}: {count} x {line!r}")
        if logs.first_difference is not None:
            index, left, right = logs.first_difference
            out.append(f"          first difference at line {index + 1}: {left!r} vs {right!r}")
        before, after = logs.notify_interval
        if before is not None or after is not None:
            out.append(f"          notification interval: {_ms(before)} -> {_ms(after)}")
    regressed = sum(1 for change in changes if change.kind == "regressed")
    out.append(f"{regressed} regressed, {sum(1 for c in changes if c.kind == 'fixed')} fixed, {len(changes)} compared")
    return "\n".join(out) + "\n"
