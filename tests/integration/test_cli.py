"""`python -m harness run` as users and CI call it, on the real embedded guest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.guests.wine.prefix import WinePrefix
from tests.integration.conftest import DATA, ROOT, session_processes

pytestmark = pytest.mark.wine

NOTIFY = "[sysRecv1]:get notify ulType:(1)\tulValue:(hello)"


def harness(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_run_all_scenarios_writes_reports(tmp_path: Path, wine_prefix: WinePrefix) -> None:
    process = harness("run", "--out", str(tmp_path))
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, out + err
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert len(cases) >= 6
    assert all(case.find("failure") is None and case.find("error") is None for case in cases)
    by_id = {case.get("classname"): case for case in cases}
    assert NOTIFY in (by_id["scenarios.01-sender-then-receiver"].findtext("system-out") or "")
    assert "STATUS_OBJECT_NAME_NOT_FOUND (0xC0000034)" in (by_id["scenarios.02-receiver-before-sender"].findtext("system-out") or "")
    assert NOTIFY in (tmp_path / "scenarios" / "01-sender-then-receiver" / "kernel-raw.log").read_text()
    html = (tmp_path / "report.html").read_text()
    assert "STATUS_OBJECT_NAME_NOT_FOUND (0xC0000034)" in html
    assert f"{len(cases)} passed, 0 failed" in out
    assert session_processes(wine_prefix) == []


def test_failing_scenario_exits_1(tmp_path: Path) -> None:
    process = harness("run", str(DATA / "failing" / "wrong-status.yaml"), "--out", str(tmp_path))
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1, out + err
    assert "FAILED wrong-status" in out and "got STATUS_OBJECT_NAME_NOT_FOUND" in out


def test_malformed_scenario_is_one_line_with_file_and_line(tmp_path: Path) -> None:
    bad = DATA / "malformed" / "bad-count.yaml"
    process = harness("run", str(bad), "--out", str(tmp_path))
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert err == f"error: {bad}:6: steps[1].expect.count.min: Input should be a valid integer, unable to parse string as an integer\n"
    assert "Traceback" not in out + err


@pytest.mark.parametrize("args", [["run", "--guest", "nope"], ["run", "no/such/dir"], ["frobnicate"]])
def test_bad_command_line_exits_2(args: list[str]) -> None:
    process = harness(*args)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2, out + err
    assert "Traceback" not in err


def wait_for(path: Path, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared in {path}")


def test_ctrl_c_tears_the_guest_down_and_keeps_the_log(tmp_path: Path, wine_prefix: WinePrefix) -> None:
    raw = tmp_path / "scenarios" / "long-run" / "kernel-raw.log"
    process = harness("run", str(DATA / "long" / "long-run.yaml"), "--out", str(tmp_path))
    wait_for(raw, NOTIFY)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, out + err
    assert "interrupted" in err and "Traceback" not in err
    assert NOTIFY in raw.read_text()
    assert session_processes(wine_prefix) == []


@pytest.mark.parametrize("signals", [[signal.SIGTERM], [signal.SIGINT], [signal.SIGTERM, signal.SIGINT]], ids=["term", "int", "term+int"])
def test_a_signal_ends_the_run_cleanly_with_every_report_and_log(tmp_path: Path, wine_prefix: WinePrefix, signals: list[int]) -> None:
    """Finished scenarios reported, the interrupted one reported as interrupted, its raw log whole, no Wine process left.
    A second signal during the teardown does not cut it short."""
    raw = tmp_path / "scenarios" / "long-run" / "kernel-raw.log"
    # Two workers: the long scenario runs beside the short one, which finishes first (whichever the suite starts first).
    process = harness(
        "run", "-j", "2", str(ROOT / "scenarios" / "03-no-receiver.yaml"), str(DATA / "long" / "long-run.yaml"), "--out", str(tmp_path)
    )
    wait_for(raw, NOTIFY)
    wait_for(tmp_path / "scenarios" / "03-no-receiver" / "result.json", '"outcome": "passed"')
    for number in signals:
        process.send_signal(number)
        time.sleep(0.05)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, out + err
    assert "interrupted after 1 of 2 scenarios" in err and "Traceback" not in out + err
    assert session_processes(wine_prefix) == []
    cases = {case.get("classname"): case for case in ET.parse(tmp_path / "junit.xml").getroot().iter("testcase")}
    assert cases["scenarios.03-no-receiver"].find("error") is None and cases["scenarios.03-no-receiver"].find("failure") is None
    interrupted = cases["scenarios.long-run"].find("error")
    assert interrupted is not None and "interrupted" in (interrupted.get("message") or "")
    text = raw.read_text()
    assert text.endswith("\n") and NOTIFY in text  # every line the session wrote, none cut off
    assert (tmp_path / "scenarios" / "03-no-receiver" / "kernel-raw.log").read_text().count("[sysTest] send.") >= 5


def test_a_killed_harness_loses_no_log_and_the_next_run_recovers(tmp_path: Path, wine_prefix: WinePrefix) -> None:
    raw = tmp_path / "killed" / "scenarios" / "long-run" / "kernel-raw.log"
    process = harness("run", str(DATA / "long" / "long-run.yaml"), "--out", str(tmp_path / "killed"))
    wait_for(raw, NOTIFY)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    assert NOTIFY in raw.read_text()
    assert session_processes(wine_prefix) != []  # SIGKILL leaves the Wine session running...

    again = harness("run", str(ROOT / "scenarios" / "03-no-receiver.yaml"), "--out", str(tmp_path / "again"))
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, out + err  # ...and the next run removes it first
    assert session_processes(wine_prefix) == []


def test_libvirt_guest_without_an_image_says_what_is_missing() -> None:
    process = harness("run", "--guest", "libvirt", "--config", str(ROOT / "harness.example.yaml"))
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2, out + err
    assert err.count("\n") == 1 and "win10.qcow2 does not exist" in err and "vm-images/README.md" in err


def test_libvirt_guest_without_a_configuration(tmp_path: Path) -> None:
    process = harness("run", "--guest", "libvirt", "--config", str(tmp_path / "harness.yaml"))
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2 and "copy harness.example.yaml to harness.yaml" in err


def test_bad_configuration_names_file_line_and_field(tmp_path: Path) -> None:
    config = tmp_path / "harness.yaml"
    config.write_text("vm:\n  image: x.qcow2\n  vcpus: many\n")
    process = harness("run", "--guest", "libvirt", "--config", str(config))
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert err == f"error: {config}:3: vm.vcpus: Input should be a valid integer, unable to parse string as an integer\n"


def test_compare_names_the_scenarios_a_seeded_bug_breaks(tmp_path: Path) -> None:
    build = ROOT / "build"
    scenarios = [str(ROOT / "scenarios" / name) for name in ("04-receiver-unloads.yaml", "06-unload-sender-first.yaml")]
    process = harness(
        "compare",
        "--baseline",
        str(build / "drivers"),
        "--candidate",
        str(build / "drivers-seeded-bug"),
        "--out",
        str(tmp_path),
        *scenarios,
    )
    out, err = process.communicate(timeout=300)
    assert process.returncode == 1, out + err
    assert "REGRESSED 04-receiver-unloads: passed -> crashed" in out
    assert "UNCHANGED 06-unload-sender-first: passed -> passed" in out
    assert "1 regressed, 0 fixed, 2 compared" in out
    assert (tmp_path / "compare.txt").read_text() in out
    # One report for both builds: each scenario once per build.
    cases = [case.get("classname", "") for case in ET.parse(tmp_path / "junit.xml").getroot().iter("testcase")]
    assert sorted(cases) == sorted(
        f"scenarios.{s}@{b}" for s in ("04-receiver-unloads", "06-unload-sender-first") for b in ("baseline", "candidate")
    )


def test_image_build_help_and_missing_iso() -> None:
    process = harness("image", "build", "--help")
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    for option in ("--iso", "--edition", "--out", "--password-env", "--locale", "--timezone", "--product-key", "--ssh", "--certificate",
                   "--disk-size", "--memory-mib", "--vcpus", "--timeout", "--uri"):  # fmt: skip
        assert option in out, option
    process = harness("image", "build")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2 and err.count("\n") == 1 and "no installer ISO" in err and "Traceback" not in err


def test_a_scenario_with_a_nul_byte_is_exit_2_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "nul.yaml"
    bad.write_bytes((DATA / "malformed" / "bad-count.yaml").read_bytes().replace(b"steps:", b"st\0eps:"))
    process = harness("run", str(bad), "--out", str(tmp_path / "out"))
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2, out + err
    assert err.startswith(f"error: {bad}:") and err.count("\n") == 1 and "Traceback" not in out + err
