"""Reports of a run: JUnit XML, a self-contained HTML page, per-scenario timelines."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from harness.reports.html import write_html
from harness.reports.junit import write_junit
from harness.reports.timeline import write_timeline
from harness.runner import ScenarioResult


def write_reports(results: Sequence[ScenarioResult], out_dir: Path) -> None:
    """Write (or rewrite) every report for the results so far."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for result in results:
        write_timeline(result)
    write_junit(results, out_dir / "junit.xml")
    write_html(results, out_dir / "report.html")
