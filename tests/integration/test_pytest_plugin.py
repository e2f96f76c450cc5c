"""The pytest plugin as an installed package gives it to any project: scenario files as test items."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT

pytestmark = pytest.mark.wine

BAD = "name: bad\ndrivers:\n  sender: {image: sender.sys, service: sysTest}\nsteps:\n  - load: nobody\n"
WINDOWS_ONLY = "import pytest\n\n\n@pytest.mark.windows_vm\ndef test_needs_windows():\n    pass\n"


def pytest_in(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest as a user's project runs it: no conftest of ours, only the installed plugin."""
    return subprocess.run(
        # --opt=value: pytest finds its rootdir and ini before plugins load, and would take a separate value for a path.
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--kcb-out={folder / 'reports'}",
         f"--kcb-drivers={ROOT / 'build' / 'drivers'}", *args],
        cwd=folder, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "checks").mkdir()
    shutil.copy(ROOT / "scenarios" / "03-no-receiver.yaml", tmp_path / "checks" / "sender-alone.yaml")
    (tmp_path / "checks" / "broken.yaml").write_text(BAD)
    (tmp_path / "test_windows_only.py").write_text(WINDOWS_ONLY)
    return tmp_path


def test_a_scenario_file_named_on_the_command_line_is_run_wherever_it_is(project: Path) -> None:
    result = pytest_in(project, "checks/sender-alone.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert (project / "reports" / "junit.xml").is_file()
    assert (project / "reports" / "scenarios" / "sender-alone" / "kernel-raw.log").read_text().count("[sysTest] send.") >= 5


def test_which_files_are_scenarios_comes_from_the_ini(project: Path) -> None:
    # Without the setting, a folder not called "scenarios" holds no scenarios: only the Python test runs.
    result = pytest_in(project, "-m", "not wine")
    assert "broken.yaml" not in result.stdout + result.stderr and "1 passed" in result.stdout, result.stdout + result.stderr
    (project / "pytest.ini").write_text("[pytest]\nkcb_scenario_files = checks/*.yaml\n")
    result = pytest_in(project, "--collect-only")
    assert result.returncode != 0, result.stdout + result.stderr  # broken.yaml is a collection error naming file, line and field
    assert f"{project / 'checks' / 'broken.yaml'}:5: steps[0].load: no driver named 'nobody'" in result.stdout
    assert "sender-alone" in result.stdout


def test_the_shipped_plugin_does_not_deselect_anyone_elses_tests(project: Path) -> None:
    # windows_vm deselection is this repository's policy (its conftest.py), not the plugin's.
    result = pytest_in(project, "test_windows_only.py")
    assert result.returncode == 0 and "1 passed" in result.stdout and "deselected" not in result.stdout, result.stdout + result.stderr


def test_a_crashing_scenario_item_says_where_it_crashed(project: Path) -> None:
    shutil.copy(ROOT / "tests" / "data" / "failing" / "unload-without-unregister.yaml", project / "checks" / "crash.yaml")
    result = pytest_in(project, "checks/crash.yaml", f"--kcb-drivers={ROOT / 'build' / 'drivers-seeded-bug'}")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "crash signature: 0xC0000005 receiver.sys!OnNotify (unloaded)" in result.stdout
    assert "frame 0  receiver.sys!OnNotify (receiver.c:" in result.stdout and "unloaded at step 4" in result.stdout
