"""Comparing two builds' results (pure)."""

from __future__ import annotations

from pathlib import Path

from harness.compare import compare, diff_logs, normalise, render
from harness.kernel.events import LogLine
from harness.runner import Outcome, ScenarioResult
from harness.triage.model import Frame, ThreadTriage, Triage

NOTIFY = "[sysRecv1]:get notify ulType:(1)\tulValue:(hello)"


def result(id: str, outcome: Outcome, lines: list[tuple[float, str]]) -> ScenarioResult:
    r = ScenarioResult(id=id, name=id, path=Path(f"{id}.yaml"), guest="wine", run_dir=Path("/nonexistent"), outcome=outcome)
    r.events = [LogLine(t, text) for t, text in lines]
    if outcome != "passed":
        r.message = "the guest crashed"
    return r


def test_normalise_masks_numbers() -> None:
    assert normalise("[x] DriverEntry status:(0xc0000034) after 12 ms") == "[x] DriverEntry status:(#) after # ms"


def test_regression_fix_and_unchanged() -> None:
    base = [result("a", "passed", [(0, NOTIFY)]), result("b", "crashed", []), result("c", "passed", [])]
    cand = [result("a", "crashed", [(0, NOTIFY)]), result("b", "passed", []), result("c", "passed", [])]
    kinds = {change.id: change.kind for change in compare(base, cand)}
    assert kinds == {"a": "regressed", "b": "fixed", "c": "unchanged"}
    text = render(compare(base, cand))
    assert text.splitlines()[0].startswith("REGRESSED a: passed -> crashed")
    assert text.endswith("1 regressed, 1 fixed, 3 compared\n")


def test_log_diff_counts_first_difference_and_timing() -> None:
    base = result("a", "passed", [(0.0, "start"), (0.2, NOTIFY), (0.4, NOTIFY), (0.6, NOTIFY), (0.7, "end")])
    cand = result("a", "passed", [(0.0, "start"), (0.5, NOTIFY), (1.5, NOTIFY)])
    diff = diff_logs(base, cand)
    assert diff.only_baseline == {normalise(NOTIFY): 1, "end": 1} and diff.only_candidate == {}
    assert diff.first_difference == (3, NOTIFY, "")
    assert diff.notify_interval[0] is not None and abs(diff.notify_interval[0] - 0.2) < 1e-9
    assert diff.notify_interval[1] == 1.0
    assert diff_logs(base, base).same


def crashed(id: str, signature: str) -> ScenarioResult:
    r = result(id, "crashed", [])
    r.triage = Triage(kind="crash", signature=signature, threads=(ThreadTriage(1, (Frame(pc=0, how="context"),)),))
    return r


def test_the_candidates_crash_is_the_baselines_or_a_new_one() -> None:
    seeded = "0xC0000005 receiver.sys!OnNotify (unloaded)"
    base = [crashed("a", seeded), crashed("b", seeded), result("c", "passed", []), result("d", "hung", [])]
    cand = [crashed("a", seeded), crashed("b", "0xC0000005 receiver.sys!CountNotification"), crashed("c", seeded), result("d", "hung", [])]
    changes = {change.id: change for change in compare(base, cand)}
    assert changes["a"].failure_verdict == "same crash" and changes["b"].failure_verdict == "new crash"
    assert changes["c"].failure_verdict == "new crash" and changes["d"].failure_verdict == "same hang"
    text = render(list(changes.values()))
    assert f"same crash: {seeded}" in text
    assert f"new crash: 0xC0000005 receiver.sys!CountNotification (baseline: {seeded})" in text
    assert f"new crash: {seeded} (baseline: passed)" in text
    assert "same hang: hang (no stacks)" in text
