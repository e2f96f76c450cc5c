"""Where a VM guest crashed or hung, as its kernel debugger reads it: the KD host against the emulator holding a
synthetic kernel with the project's real driver builds mapped in it (harness.kd.synthetic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import project_root
from harness.kd import inspect as kd_inspect
from harness.kd import packets as kd
from harness.kd.emulator import KdTarget
from harness.kd.session import KdBugcheck, KdEvent, KdHost, KdStacks
from harness.kd.synthetic import (
    KERNEL,
    KMODE_EXCEPTION_NOT_HANDLED,
    DriverFile,
    Machine,
    build_kernel,
    locate_null_deref_sites,
    locate_stall_site,
    null_deref_machine,
    stall_machine,
)
from harness.kernel.stacks import StackReport
from harness.triage.analyse import DriverModule, analyse
from harness.triage.model import Triage
from harness.triage.pe import PeImage
from harness.triage.symbols import Symbolizer
from tests.unit.test_kd_link import pump

DRIVERS = project_root() / "build" / "drivers"
NULL_DEREF = project_root() / "build" / "drivers-null-deref"
RECEIVER_BASE, SENDER_BASE, STALL_BASE = 0xFFFFF80000400000, 0xFFFFF80000500000, 0xFFFFF80000600000
RECEIVER = DriverModule(guest_name="sysRecv1.sys", image="receiver.sys", service="sysRecv1")
SENDER = DriverModule(guest_name="sysTest.sys", image="sender.sys", service="sysTest")
STALL = DriverModule(guest_name="stall.sys", image="stall.sys", service="stall")


def crash_machine(code: int = 0x7E) -> Machine:
    assert (NULL_DEREF / "receiver.sys").is_file(), "drivers not built: make build"
    sites = locate_null_deref_sites(NULL_DEREF / "receiver.debug", NULL_DEREF / "sender.debug")
    receiver = DriverFile("sysRecv1.sys", (NULL_DEREF / "receiver.sys").read_bytes(), RECEIVER_BASE)
    sender = DriverFile("sysTest.sys", (NULL_DEREF / "sender.sys").read_bytes(), SENDER_BASE)
    return null_deref_machine(receiver, sender, sites, code)


def hang_machine() -> Machine:
    site = locate_stall_site(DRIVERS / "stall.debug")
    return stall_machine(DriverFile("stall.sys", (DRIVERS / "stall.sys").read_bytes(), STALL_BASE), site)


def kernel_folder(tmp_path: Path) -> Path:
    """The synthetic ntoskrnl.exe as a file, where a guest's system images would be."""
    (tmp_path / KERNEL).write_bytes(build_kernel().file)
    return tmp_path


def stacks(events: list[KdEvent]) -> list[KdStacks]:
    return [event for event in events if isinstance(event, KdStacks)]


def functions(triage: Triage, thread: int) -> list[str]:
    return [f"{frame.module}!{frame.function}" for frame in triage.threads[thread].frames]


def name(report: StackReport, drivers: list[DriverModule], folder: Path, tmp_path: Path) -> Triage:
    images = {driver.image: folder / driver.image for driver in drivers}
    return analyse(report, drivers, Symbolizer(images, (), [kernel_folder(tmp_path)]))


def test_the_bugcheck_break_is_read_before_it_is_continued_and_names_the_faulting_driver_function(tmp_path: Path) -> None:
    machine = crash_machine()
    host, target = KdHost(), KdTarget(machine=machine)
    target.load_machine_modules()
    target.print("[sysTest] send.\n")
    target.crash()
    events = pump(host, target, rounds=2000)
    assert [event.code for event in events if isinstance(event, KdBugcheck)] == [0x7E]
    [found] = stacks(events)
    assert found.complete and found.report.kind == "crash" and found.report.code == 0x7E
    # Asked: the version block, contexts, memory; the stop was continued afterwards (as handled: a breakpoint).
    assert kd.API_GET_VERSION in target.log.manipulates and kd.API_GET_CONTEXT in target.log.manipulates
    assert target.log.refused == [] and target.log.statuses == [kd.DBG_CONTINUE] * 3  # two module loads, the bugcheck break
    triage = name(found.report, [RECEIVER, SENDER], NULL_DEREF, tmp_path)
    assert triage.signature == "0x0000007E receiver.sys!CountNotification"
    fault = triage.threads[0].frames[0]
    assert (fault.module, fault.function, fault.source, fault.offset) == ("receiver.sys", "CountNotification", "receiver.c:86", 0x1000)
    # The faulting thread's chain, from the context record of parameter 4: into the receiver through the kernel's
    # ExNotifyCallback from the sender's notify thread, which a system thread started.
    assert functions(triage, 0) == [
        "receiver.sys!CountNotification",
        "receiver.sys!OnNotify",
        f"{KERNEL}!ExNotifyCallback",
        "sender.sys!NotifyThread",
        f"{KERNEL}!PspSystemThreadStartup",
    ]
    assert triage.threads[0].end == "thread-start"
    # The stopped processor's own stack, from KeBugCheckEx through the page fault's trap frame, reaches the same code.
    assert functions(triage, 1)[:4] == [
        f"{KERNEL}!KeBugCheckEx",
        f"{KERNEL}!KiBugCheckDispatch",
        f"{KERNEL}!KiPageFault",
        "receiver.sys!CountNotification",
    ]
    assert triage.threads[1].frames[3].how == "trap"


def test_without_a_context_record_the_trap_frame_leads_to_the_driver(tmp_path: Path) -> None:
    host, target = KdHost(), KdTarget(machine=crash_machine(KMODE_EXCEPTION_NOT_HANDLED))
    target.load_machine_modules()
    target.crash()
    [found] = stacks(pump(host, target, rounds=2000))
    assert len(found.report.threads) == 1  # 0x1E: no context record among its parameters
    triage = name(found.report, [RECEIVER, SENDER], NULL_DEREF, tmp_path)
    assert triage.signature == "0x0000001E receiver.sys!CountNotification"
    assert "receiver.sys!OnNotify (receiver.c:94)" in triage.chain(limit=8)


def test_driver_unwind_data_comes_from_the_users_files_and_needs_fewer_reads(tmp_path: Path) -> None:
    runs = []
    for with_files in (False, True):
        host, target = KdHost(), KdTarget(machine=crash_machine())
        if with_files:
            host.images = {"sysrecv1.sys": PeImage(NULL_DEREF / "receiver.sys"), "systest.sys": PeImage(NULL_DEREF / "sender.sys")}
        target.load_machine_modules()
        target.crash()
        [found] = stacks(pump(host, target, rounds=2000))
        runs.append((found.requests, [frame.pc for thread in found.report.threads for frame in thread.frames]))
    assert runs[0][1] == runs[1][1]
    assert runs[1][0] < runs[0][0]


def test_a_module_whose_load_was_not_seen_is_found_in_the_loaded_module_list(tmp_path: Path) -> None:
    machine = crash_machine()
    host, target = KdHost(), KdTarget(machine=machine)
    receiver_path, base, size = machine.modules[0]
    target.load_module(receiver_path, base, size)  # the sender was loaded before the debugger attached
    target.crash()
    [found] = stacks(pump(host, target, rounds=2000))
    assert "sysTest.sys" in [module.name for module in found.report.modules]
    triage = name(found.report, [RECEIVER, SENDER], NULL_DEREF, tmp_path)
    assert "sender.sys!NotifyThread" in triage.chain(limit=8)


def test_a_requested_break_in_reports_every_processor_and_continues(tmp_path: Path) -> None:
    host, target = KdHost(), KdTarget(machine=hang_machine())
    target.load_machine_modules()
    target.print("[stall] DriverEntry stalls for 600000 ms.\n")
    pump(host, target)
    host.request_stacks()
    target.receive(host.idle(100.0).send)  # the break-in byte goes out when the line is next quiet
    assert target.poll()  # the clock tick reads it
    events = pump(host, target, rounds=2000)
    [found] = stacks(events)
    assert found.report.kind == "hang" and [thread.thread for thread in found.report.threads] == [0, 1]
    assert target.log.breakins == 1 and target.log.continues[-1].breakin and target.queue == type(target.queue)()
    triage = name(found.report, [STALL], DRIVERS, tmp_path)
    assert triage.signature == "hang stall.sys!DriverEntry"
    stalled = triage.threads[0].first_under_test()
    assert stalled is not None and stalled.how == "trap" and stalled.source.startswith("stall.c:")
    idle = next(thread for thread in triage.threads if thread.thread == 1)
    assert [f"{frame.module}!{frame.function}" for frame in idle.frames] == [f"{KERNEL}!KiIdleLoop", f"{KERNEL}!KiSystemStartup"]


def test_a_hang_inspection_can_end_in_a_debugger_initiated_crash_reported_as_forced() -> None:
    host, target = KdHost(), KdTarget(machine=hang_machine())
    host.request_stacks(crash_after=True)
    target.receive(host.idle(0.0).send)
    target.poll()
    events = pump(host, target, rounds=2000)
    assert kd.API_CAUSE_BUGCHECK in target.log.manipulates
    [bugcheck] = [event for event in events if isinstance(event, KdBugcheck)]
    assert bugcheck.code == 0xE2 and bugcheck.forced
    assert len(stacks(events)) == 1  # the forced bugcheck's break is continued, not inspected as a crash


def test_unknown_requests_are_refused_as_the_protocol_does() -> None:
    target = KdTarget(machine=hang_machine())
    target.exception()
    wire = target.take()
    header = kd.HEADER.unpack_from(wire)
    host_id = kd.INITIAL_ID
    target.receive(kd.encode_control(kd.TYPE_ACKNOWLEDGE, header[3] & ~kd.SYNC_BIT))
    for api, processor in ((0x3151, 0), (kd.API_GET_CONTEXT, 7)):  # DbgKdPageInApi; a processor that does not exist
        target.receive(kd.encode_data(kd.TYPE_STATE_MANIPULATE, host_id, kd.Manipulate(api, processor).encode()))
        host_id ^= 1
        reply = kd.Framer().feed(target.take())
        data = [item for item in reply if isinstance(item, kd.Packet) and not item.is_control]
        answer = kd.Manipulate.decode(data[0].payload)
        assert (answer.api, answer.status, answer.data) == (api, kd.STATUS_UNSUCCESSFUL, b"")
        target.receive(kd.encode_control(kd.TYPE_ACKNOWLEDGE, data[0].id))
    assert target.log.refused == [0x3151, kd.API_GET_CONTEXT] and not target.idle  # still stopped, waiting


class MuteTarget(KdTarget):
    """A target that takes requests (ACKs them) and never answers."""

    def _manipulate(self, request: kd.Manipulate) -> None:
        self.log.manipulates.append(request.api)


def test_a_target_that_does_not_answer_is_continued_after_the_reply_timeout() -> None:
    host, target = KdHost(), MuteTarget(machine=crash_machine())
    target.crash()
    events = pump(host, target, rounds=2000)
    [found] = stacks(events)
    assert not found.complete and [thread.end for thread in found.report.threads] == ["context-record-unreadable", "context-unavailable"]
    assert target.idle and target.log.statuses == [kd.DBG_CONTINUE]  # the stop was continued all the same


def test_the_number_of_requests_is_bounded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(kd_inspect, "MAX_REQUESTS", 5)
    host, target = KdHost(), KdTarget(machine=crash_machine())
    target.load_machine_modules()
    target.crash()
    [found] = stacks(pump(host, target, rounds=2000))
    assert found.requests == 5 and not found.complete and target.idle
