"""Where a VM guest crashed or hung, through the whole harness: the runner, a guest whose kernel debugger link is a
real unix socket read by KdSerialReader, the KD target emulator holding a synthetic kernel with the project's
driver builds in it, and the reports."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from harness.guests.base import Guest
from harness.kd.synthetic import (
    KERNEL,
    DriverFile,
    build_kernel,
    locate_null_deref_sites,
    locate_stall_site,
    null_deref_machine,
    stall_machine,
)
from harness.kernel.events import DebugEvent, StackReport
from harness.reports import write_reports
from harness.runner import run_scenario
from harness.scenario.loader import load_scenario
from harness.timeline import Timeline
from tests.integration.conftest import ROOT
from tests.integration.kd_guest import KdEmulatorGuest

NULL_DEREF = ROOT / "build" / "drivers-null-deref"
DRIVERS = ROOT / "build" / "drivers"

CRASH = """name: the receiver's notify routine writes through NULL (a bugcheck on the VM)
drivers:
  receiver: {image: receiver.sys, service: sysRecv1}
  sender:   {image: sender.sys,   service: sysTest}
timeout: 30s
steps:
  - load: receiver
  - load: sender
  - expect: {line: "[sysTest] send.", within: 10s}
"""

HANG = """name: a DriverEntry that never returns (a hang on the VM)
drivers:
  stall: {image: stall.sys, service: stall}
timeout: 30s
steps:
  - load: stall
    timeout: 1s
"""


def system_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "system"
    folder.mkdir()
    (folder / KERNEL).write_bytes(build_kernel().file)
    return folder


def test_a_bugcheck_read_over_the_kd_link_names_the_driver_function_in_the_result_and_reports(tmp_path: Path) -> None:
    sites = locate_null_deref_sites(NULL_DEREF / "receiver.debug", NULL_DEREF / "sender.debug")
    machine = null_deref_machine(
        DriverFile("sysRecv1.sys", (NULL_DEREF / "receiver.sys").read_bytes(), 0xFFFFF80000400000),
        DriverFile("sysTest.sys", (NULL_DEREF / "sender.sys").read_bytes(), 0xFFFFF80000500000),
        sites,
    )
    scenario = tmp_path / "crash.yaml"
    scenario.write_text(CRASH)
    system = system_folder(tmp_path)
    out = tmp_path / "out"

    def factory(timeline: Timeline, run_dir: Path) -> Guest:
        return KdEmulatorGuest(timeline, run_dir, machine, system, crash_on="sysTest")

    result = run_scenario(load_scenario(scenario), factory, NULL_DEREF, out)
    assert result.outcome == "crashed", result.message
    assert result.crash is not None and result.crash.code == 0x7E
    assert result.triage is not None, [e for e in result.events if isinstance(e, DebugEvent)]
    assert result.signature == "0x0000007E receiver.sys!CountNotification"
    first = result.triage.threads[0].frames[0]
    assert (first.function, first.source, first.where) == ("CountNotification", "receiver.c:86", "receiver.sys+0x1000")
    assert "sender.sys!NotifyThread (sender.c:" in result.triage.chain(limit=8)
    reports = [event for event in result.events if isinstance(event, StackReport)]
    assert [report.kind for report in reports] == ["crash"]
    write_reports([result], out)
    case = ET.parse(out / "junit.xml").getroot().find("testsuite/testcase")
    assert case is not None
    properties = {prop.get("name"): prop.get("value") for prop in case.iter("property")}
    assert properties["signature"] == "0x0000007E receiver.sys!CountNotification"
    error = case.find("error")
    assert error is not None and "receiver.sys!CountNotification (receiver.c:86)" in (error.text or "")
    html = (out / "report.html").read_text()
    assert "receiver.sys!CountNotification" in html and "receiver.c:86" in html


def test_a_hang_breaks_in_and_shows_where_each_processor_was(tmp_path: Path) -> None:
    site = locate_stall_site(DRIVERS / "stall.debug")
    machine = stall_machine(DriverFile("stall.sys", (DRIVERS / "stall.sys").read_bytes(), 0xFFFFF80000600000), site)
    scenario = tmp_path / "hang.yaml"
    scenario.write_text(HANG)
    system = system_folder(tmp_path)
    guests: list[KdEmulatorGuest] = []

    def factory(timeline: Timeline, run_dir: Path) -> Guest:
        guests.append(KdEmulatorGuest(timeline, run_dir, machine, system, stall_on="stall"))
        return guests[-1]

    result = run_scenario(load_scenario(scenario), factory, DRIVERS, tmp_path / "out")
    assert result.outcome == "hung", result.message
    assert result.signature == "hang stall.sys!DriverEntry"
    assert result.triage is not None and [thread.thread for thread in result.triage.threads] == [0, 1]
    stalled = result.triage.threads[0].first_under_test()
    assert stalled is not None and stalled.source.startswith("stall.c:")
    summaries = [event.summary for event in result.events if isinstance(event, DebugEvent)]
    assert any(summary.startswith("hang stacks read: 2 stack(s)") for summary in summaries), summaries
    log = guests[0].log
    assert log is not None and log.breakins >= 1 and log.continues[-1].breakin  # the break-in stop was continued
