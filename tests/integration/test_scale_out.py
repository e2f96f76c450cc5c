"""Scale-out on the embedded guest: parallel workers, CI shards joined by `report merge`, pytest-xdist, the same files."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.guests.wine.prefix import WinePrefix
from harness.reports.store import load_dir
from tests.integration.conftest import ROOT, session_processes

pytestmark = pytest.mark.wine

SCENARIOS = ROOT / "scenarios"


def harness(*args: str) -> tuple[int, str]:
    process = subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    return process.returncode, process.stdout + process.stderr


def junit_cases(folder: Path) -> list[tuple[str, str, str]]:
    """(classname, name, outcome) of every test case of a run's JUnit file."""
    cases = []
    for case in ET.parse(folder / "junit.xml").getroot().iter("testcase"):
        outcome = "passed" if case.find("failure") is None and case.find("error") is None else "not passed"
        cases.append((case.get("classname", ""), case.get("name", ""), outcome))
    return sorted(cases)


def scenario_files(folder: Path) -> dict[str, set[str]]:
    """Each scenario folder with the files in it."""
    return {path.name: {file.name for file in path.iterdir()} for path in sorted((folder / "scenarios").iterdir())}


def test_two_shards_merged_are_the_unsharded_run(tmp_path: Path, wine_prefix: WinePrefix) -> None:
    whole, first, second, merged = (tmp_path / name for name in ("whole", "shard-1", "shard-2", "merged"))
    for folder, extra in ((whole, []), (first, ["--shard", "1/2"]), (second, ["--shard", "2/2"])):
        code, output = harness("run", "-j", "2", "--out", str(folder), *extra)
        assert code == 0, output
    one, two = ({r.key for r in load_dir(folder)} for folder in (first, second))
    assert one and two and not one & two and one | two == {r.key for r in load_dir(whole)}  # every item exactly once
    code, output = harness("report", "merge", str(first), str(second), "--out", str(merged))
    assert code == 0, output
    assert junit_cases(merged) == junit_cases(whole)
    assert scenario_files(merged) == scenario_files(whole)  # raw logs, timelines, results: all joined
    html = (merged / "report.html").read_text()
    assert all(f'id="{key}"' in html for key in one | two)
    # Shards that overlap are refused, naming the scenario.
    code, output = harness("report", "merge", str(first), str(first), "--out", str(tmp_path / "twice"))
    assert code == 2 and "shards must not overlap" in output
    assert session_processes(wine_prefix) == []


def test_pytest_xdist_writes_what_harness_run_writes(tmp_path: Path, wine_prefix: WinePrefix) -> None:
    code, output = harness("run", "-j", "2", "--out", str(tmp_path / "cli"))
    assert code == 0, output
    process = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "2", f"--kcb-out={tmp_path / 'xdist'}", str(SCENARIOS)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert process.returncode == 0, process.stdout + process.stderr
    assert "9 passed" in process.stdout
    assert scenario_files(tmp_path / "xdist") == scenario_files(tmp_path / "cli")
    assert [(c[0], c[2]) for c in junit_cases(tmp_path / "xdist")] == [(c[0], c[2]) for c in junit_cases(tmp_path / "cli")]
    for name in scenario_files(tmp_path / "cli"):
        # Each raw log is the scenario's own session: the same drivers loaded and unloaded, with the same statuses.
        logs = [(tmp_path / run / "scenarios" / name / "kernel-raw.log").read_text() for run in ("cli", "xdist")]
        loads = [sorted(set(re.findall(r"kcb-shim: (?:load|unload) \S+ status 0x[0-9a-f]{8}", log))) for log in logs]
        assert loads[0] == loads[1] and len(loads[0]) >= 2, (name, loads)
    assert session_processes(wine_prefix) == []
