"""JUnit XML and HTML reports from results."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from harness.guests.base import CrashEvidence
from harness.kernel.events import Action, GuestCrash, LogLine
from harness.reports import write_reports
from harness.runner import ScenarioResult, StepResult
from harness.triage.model import Frame, ThreadTriage, Triage

NOTIFY = "[sysRecv1]:get notify ulType:(1)\tulValue:(hello)"


def results(tmp_path: Path) -> list[ScenarioResult]:
    good = ScenarioResult(id="01-good", name="good <one>", path=Path("scenarios/01-good.yaml"), guest="wine", run_dir=tmp_path / "s" / "01")
    good.events = [LogLine(0.5, NOTIFY), Action(0.1, 0.2, "load", "load sender", "STATUS_SUCCESS (0x00000000)")]
    good.steps = [StepResult(0, 7, "load", "load sender", "passed", "ok", 0.1, 0.2)]
    bad = ScenarioResult(id="02-bad", name="bad", path=Path("scenarios/02-bad.yaml"), guest="wine", run_dir=tmp_path / "s" / "02")
    bad.outcome, bad.message = "failed", "step 2 (line 9) expect: saw 0"
    bad.context = [LogLine(1.0, "control \x01 char")]
    crashed = ScenarioResult(id="03-crash", name="crash", path=Path("scenarios/03.yaml"), guest="wine", run_dir=tmp_path / "s" / "03")
    crashed.outcome, crashed.message = "crashed", "page fault"
    crashed.crash = GuestCrash(2.0, "page fault", code=0xC0000005, parameters=(8, 0x1000), evidence=("wine: Unhandled page fault <here>",))
    crashed.events = [crashed.crash]
    crashed.crash_evidence = CrashEvidence((tmp_path / "s" / "03" / "crash" / "112526-01.dmp",), "1 crash dump(s) pulled after 95s")
    return [good, bad, crashed]


def test_junit_has_one_case_per_scenario_and_parses(tmp_path: Path) -> None:
    write_reports(results(tmp_path), tmp_path)
    root = ET.parse(tmp_path / "junit.xml").getroot()
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "3" and suite.get("failures") == "1" and suite.get("errors") == "1"
    cases = suite.findall("testcase")
    assert [case.get("name") for case in cases] == ["good <one>", "bad", "crash"]
    assert cases[0].find("failure") is None and NOTIFY in (cases[0].findtext("system-out") or "")
    failure = cases[1].find("failure")
    assert failure is not None and failure.get("message") == "step 2 (line 9) expect: saw 0"
    assert "\ufffd" in (failure.text or "")
    error = cases[2].find("error")
    assert error is not None and error.get("type") == "crashed"
    props = {p.get("name"): p.get("value") for p in cases[2].iter("property")}
    assert props["crash_code"] == "0xC0000005" and props["outcome"] == "crashed"
    assert props["crash_evidence"] == "1 crash dump(s) pulled after 95s"
    dump = tmp_path / "s" / "03" / "crash" / "112526-01.dmp"
    assert (cases[2].findtext("system-out") or "").startswith(f"[[ATTACHMENT|{dump.resolve()}]]\n")
    assert "ATTACHMENT" not in (cases[0].findtext("system-out") or "")


def test_html_is_self_contained_and_escaped(tmp_path: Path) -> None:
    write_reports(results(tmp_path), tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert "good &lt;one&gt;" in page and "good <one>" not in page
    assert "<script" not in page and "http" not in page.split("<body>")[1].split("href")[0]
    assert NOTIFY in page
    assert "wine: Unhandled page fault &lt;here&gt;" in page
    assert 'crash dump: 1 crash dump(s) pulled after 95s <a href="s/03/crash/112526-01.dmp">112526-01.dmp</a>' in page
    assert (tmp_path / "s" / "01" / "timeline.txt").read_text().count("\n") == 2


def test_crashes_show_where_and_group_by_signature(tmp_path: Path) -> None:
    signature = "0xC0000005 receiver.sys!OnNotify (unloaded)"
    frame = Frame(pc=0x27C1020, how="context", module="receiver.sys", offset=0x1020, function="OnNotify", file="/src/receiver.c",
                  line=91, under_test=True, unloaded=True, unloaded_at="step 4")  # fmt: skip
    triage = Triage(kind="crash", signature=signature, threads=(ThreadTriage(0x12C, (frame,), "thread-start"),), notes=("a <note>",))
    all_results = results(tmp_path)
    twin = ScenarioResult(id="04-twin", name="twin", path=Path("scenarios/04.yaml"), guest="wine", run_dir=tmp_path / "s" / "04")
    twin.outcome, twin.message = "crashed", "page fault"
    for crashed in (all_results[2], twin):
        crashed.triage = triage
    write_reports([*all_results, twin], tmp_path)
    cases = ET.parse(tmp_path / "junit.xml").getroot().findall("testsuite/testcase")
    props = {p.get("name"): p.get("value") for p in cases[2].iter("property")}
    assert props["signature"] == signature
    error = cases[2].find("error")
    assert error is not None and "frame 0  receiver.sys!OnNotify (receiver.c:91) [receiver.sys+0x1020, unloaded at step 4]" in (
        error.text or ""
    )
    timeline = (tmp_path / "s" / "03" / "timeline.txt").read_text()
    assert "where:\ncrash signature: " + signature in timeline and "(walk ended: thread-start)" in timeline
    page = (tmp_path / "report.html").read_text()
    assert "Crashes and hangs by signature" in page
    assert f'<td class="signature">{signature}</td><td>2</td><td><a href="#03-crash">03-crash</a>, <a href="#04-twin">04-twin</a>' in page
    assert 'title="/src/receiver.c:91">receiver.c:91</td>' in page and "unloaded at step 4" in page and "a &lt;note&gt;" in page


def test_a_line_not_from_the_kernel_log_shows_its_source() -> None:
    from harness.kernel.events import LogLine
    from harness.reports.timeline import event_row

    assert event_row(LogLine(1.0, "kcbioctl: open")) == (1.0, "log", "kcbioctl: open")
    assert event_row(LogLine(1.5, "client: sent 5 bytes", "ioctl-client.exe:stdout")) == (
        1.5,
        "log",
        "[ioctl-client.exe:stdout] client: sent 5 bytes",
    )
    assert event_row(LogLine(2.0, "login:", "com2")) == (2.0, "log", "[com2] login:")
