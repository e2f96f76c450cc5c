"""Naming a stack report: modules, drivers under test, unloaded drivers and their step, the thread to blame, signatures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from harness.kernel.stacks import ModuleRange, StackFrame, StackReport, ThreadStack
from harness.triage.analyse import DriverModule, analyse
from harness.triage.model import Frame
from harness.triage.signature import crash_signature, frame_key, hang_signature
from harness.triage.symbols import SourceLocation

SHIM = ModuleRange(r"C:\windows\system32\ntoskrnl.exe", 0x225EE0000, 0x4C000)
SENDER = ModuleRange(r"C:\kcb\sysTest.sys", 0x24B0000, 0x9000)
RECEIVER_GONE = ModuleRange(r"C:\kcb\sysRecv1.sys", 0x27C0000, 0x9000, unloaded=True, unload_sequence=1, service="sysRecv1")
DRIVERS = [DriverModule("sysTest.sys", "sender.sys", "sysTest"), DriverModule("sysRecv1.sys", "receiver.sys", "sysRecv1")]


class Names:
    """A symbol source that knows a few functions by (module, RVA)."""

    def __init__(self, known: Mapping[tuple[str, int], SourceLocation]) -> None:
        self.known = known
        self.asked: list[tuple[str, tuple[int, ...]]] = []

    def locate(self, name: str, rvas: Sequence[int]) -> Mapping[int, SourceLocation]:
        self.asked.append((name, tuple(rvas)))
        return {rva: self.known[(name, rva)] for rva in rvas if (name, rva) in self.known}

    def notes(self) -> tuple[str, ...]:
        return ("sender.sys: a note",)


KNOWN = {
    ("receiver.sys", 0x1020): SourceLocation("OnNotify", "/src/receiver/receiver.c", 91),
    ("ntoskrnl.exe", 0x17E5): SourceLocation("ExNotifyCallback", "/src/callbacks.c", 303),
    ("sender.sys", 0x10EF): SourceLocation("NotifyThread", "/src/sender.c", 81),
}

SEEDED_CRASH = StackReport(
    t=1.3,
    kind="crash",
    code=0xC0000005,
    thread=0x12C,
    threads=(
        ThreadStack(
            0x12C,
            (
                StackFrame(0x27C1020, 0x100, "context"),
                StackFrame(0x225EE17E6, 0x108, "leaf"),
                StackFrame(0x24B10F0, 0x178, "unwind"),
                StackFrame(0x7B627E49, 0x1F8, "unwind"),
            ),
            end="thread-start",
        ),
    ),
    modules=(SHIM, SENDER, RECEIVER_GONE),
)


def test_the_seeded_bug_names_the_unloaded_routine_its_step_and_the_chain() -> None:
    names = Names(KNOWN)
    triage = analyse(SEEDED_CRASH, DRIVERS, names, unload_steps={"SYSRECV1": 4})
    frames = triage.threads[0].frames
    assert frames[0] == Frame(
        pc=0x27C1020, how="context", module="receiver.sys", offset=0x1020, function="OnNotify", file="/src/receiver/receiver.c",
        line=91, under_test=True, unloaded=True, unloaded_at="step 4",
    )  # fmt: skip
    assert frames[0].describe() == "receiver.sys!OnNotify (receiver.c:91) [receiver.sys+0x1020, unloaded at step 4]"
    # Return addresses are named by the call before them (pc - 1), shown at their own offset.
    assert frames[1].label == "ntoskrnl.exe!ExNotifyCallback" and frames[1].offset == 0x17E6 and not frames[1].under_test
    assert frames[2].label == "sender.sys!NotifyThread" and frames[2].under_test
    assert frames[3] == Frame(pc=0x7B627E49, how="unwind")  # in no module the guest listed
    assert triage.signature == "0xC0000005 receiver.sys!OnNotify (unloaded)"
    assert triage.culprit == frames[0]
    assert triage.notes == ("sender.sys: a note",)
    assert sorted(names.asked) == [("ntoskrnl.exe", (0x17E5,)), ("receiver.sys", (0x1020,)), ("sender.sys", (0x10EF,))]
    text = triage.render()
    assert "crash signature: 0xC0000005 receiver.sys!OnNotify (unloaded)" in text
    assert "frame 1  ntoskrnl.exe!ExNotifyCallback (callbacks.c:303) [ntoskrnl.exe+0x17e6]" in text
    assert triage.chain(2) == "receiver.sys!OnNotify (receiver.c:91) <- ntoskrnl.exe!ExNotifyCallback (callbacks.c:303) <- ..."


def test_without_symbols_the_frame_is_module_and_offset() -> None:
    triage = analyse(SEEDED_CRASH, DRIVERS, Names({}), unload_steps={})
    first = triage.threads[0].frames[0]
    assert first.label == "receiver.sys+0x1020" and first.describe() == "receiver.sys+0x1020 [unloaded]"
    assert triage.signature == "0xC0000005 receiver.sys+0x1020 (unloaded)"


def test_a_crash_outside_the_drivers_is_signed_by_its_first_module_frame() -> None:
    report = StackReport(
        t=0.0, kind="crash", code=0xC0000005, thread=1, threads=(ThreadStack(1, (StackFrame(0x225EE17E6, 0),)),), modules=(SHIM,)
    )
    assert analyse(report, DRIVERS, Names({})).signature == "0xC0000005 ntoskrnl.exe+0x17e6"
    empty = StackReport(t=0.0, kind="crash", code=0xC000001D, thread=1, threads=())
    assert analyse(empty, DRIVERS, Names({})).signature == "0xC000001D (no stack)"


def hang_report() -> StackReport:
    stall = ModuleRange(r"C:\kcb\kcbStall.sys", 0x2500000, 0x8000)
    return StackReport(
        t=9.0,
        kind="hang",
        threads=(
            ThreadStack(0x110, (StackFrame(0x17000EBE4, 0x10, "context"),)),  # the service dispatcher: no driver
            ThreadStack(0x118, (StackFrame(0x17000EBE4, 0x20, "context"), StackFrame(0x24B10F0, 0x30))),  # the sender's thread
            ThreadStack(0x10C, (StackFrame(0x17000EBE4, 0x40, "context"), StackFrame(0x25011B3, 0x50))),  # in DriverEntry
        ),
        modules=(SENDER, stall),
    )


def test_a_hang_blames_the_thread_in_the_driver_whose_step_hung() -> None:
    drivers = [*DRIVERS, DriverModule("kcbStall.sys", "stall.sys", "kcbStall")]
    names = Names({("stall.sys", 0x11B2): SourceLocation("DriverEntry", "stall.c", 25)})
    triage = analyse(hang_report(), drivers, names, focus_service="kcbstall")
    assert [thread.thread for thread in triage.threads] == [0x10C, 0x118, 0x110]
    assert triage.signature == "hang stall.sys!DriverEntry"
    # Without knowing which step hung: the first thread in any driver under test.
    assert analyse(hang_report(), drivers, names).signature == "hang sender.sys+0x10f0"


def test_a_hang_in_no_driver() -> None:
    report = StackReport(t=0.0, kind="hang", threads=(ThreadStack(1, (StackFrame(0x225EE17E6, 0),)),), modules=(SHIM,))
    assert analyse(report, DRIVERS, Names({})).signature == "hang (no driver frame)"


def test_signatures_leave_out_what_moves_between_builds() -> None:
    exported = Frame(pc=0, how="unwind", module="ntdll.dll", offset=0x5DCA8, function="RtlUserThreadStart", displacement=0x88)
    assert exported.label == "ntdll.dll!RtlUserThreadStart+0x88"
    assert frame_key(exported) == "ntdll.dll!RtlUserThreadStart"
    assert crash_signature(None, exported) == "crash ntdll.dll!RtlUserThreadStart"
    assert hang_signature(None) == "hang (no driver frame)"
    assert frame_key(Frame(pc=0x10, how="context")) == "(no module)"
