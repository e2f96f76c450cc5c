"""The driver host's kcb-triage lines (as a real seeded-bug crash and stall hang printed them) into stack reports."""

from __future__ import annotations

from harness.guests.wine.log import KernelLogParser, parse_line
from harness.kernel.events import Event, GuestCrash, LogLine
from harness.kernel.stacks import ModuleRange, StackFrame, StackReport

PREFIX = "012c:warn:debugstr:vDbgPrintExWithPrefix 0000004d:00000001: "

CRASH = [
    "kcb-triage: crash begin pid=0110 tid=012c code=0xc0000005 address=0x27c1020 params=0x8,0x27c1020",
    "kcb-triage: crash regs tid=012c rip=0x27c1020 rsp=0x26bfd48 rbp=0x26bfdf4 rax=0x1 eflags=0x10246",
    "kcb-triage: crash frame tid=012c n=0 pc=0x27c1020 sp=0x26bfd48 how=context",
    "kcb-triage: crash frame tid=012c n=1 pc=0x225ee17e6 sp=0x26bfd50 how=leaf",
    "kcb-triage: crash frame tid=012c n=2 pc=0x24b10f0 sp=0x26bfdc0 how=unwind",
    "kcb-triage: crash walk tid=012c frames=3 end=thread-start",
    "kcb-triage: crash stack tid=012c at=0x26bfd48 bytes=e617ee2502000000",
    "kcb-triage: crash module base=0x225ee0000 size=0x4c000 state=loaded unload=0 service=- path=C:\\windows\\system32\\ntoskrnl.exe",
    "kcb-triage: crash module base=0x27c0000 size=0x9000 state=unloaded unload=1 service=sysRecv1 path=C:\\kcb\\sysRecv1.sys",
    "kcb-triage: crash module base=0x1000 size=0x1000 state=loaded unload=0 service=- path=C:\\Program Files\\with spaces.dll",
    "kcb-triage: crash end",
]


def feed(parser: KernelLogParser, messages: list[str], t: float = 1.0) -> list[Event]:
    return [event for message in messages for event in parser.feed(PREFIX + message + "\n", t)]


def test_a_crash_report_comes_out_whole_at_its_end_line() -> None:
    events = feed(KernelLogParser(), CRASH)
    assert len(events) == 1
    report = events[0]
    assert isinstance(report, StackReport)
    assert (report.kind, report.code, report.address, report.parameters, report.thread) == (
        "crash",
        0xC0000005,
        0x27C1020,
        (8, 0x27C1020),
        0x12C,
    )
    (thread,) = report.threads
    assert thread.frames == (
        StackFrame(0x27C1020, 0x26BFD48, "context"),
        StackFrame(0x225EE17E6, 0x26BFD50, "leaf"),
        StackFrame(0x24B10F0, 0x26BFDC0, "unwind"),
    )
    assert thread.end == "thread-start"
    assert dict(thread.registers)["rsp"] == 0x26BFD48
    assert thread.memory == ((0x26BFD48, bytes.fromhex("e617ee2502000000")),)
    assert report.modules[1] == ModuleRange(r"C:\kcb\sysRecv1.sys", 0x27C0000, 0x9000, unloaded=True, unload_sequence=1, service="sysRecv1")
    assert report.modules[2].path == r"C:\Program Files\with spaces.dll" and report.modules[2].name == "with spaces.dll"


def test_the_module_of_an_address_prefers_loaded_then_the_latest_unloaded() -> None:
    report = StackReport(
        t=0.0,
        kind="crash",
        threads=(),
        modules=(
            ModuleRange("a.sys", 0x1000, 0x1000, unloaded=True, unload_sequence=1),
            ModuleRange("b.sys", 0x1000, 0x1000, unloaded=True, unload_sequence=2),
            ModuleRange("c.sys", 0x5000, 0x1000),
        ),
    )
    names = [module.name if module is not None else None for module in map(report.module_at, (0x1800, 0x5000, 0x6000))]
    assert names == ["b.sys", "c.sys", None]


def test_triage_lines_are_not_driver_log_lines() -> None:
    assert parse_line(PREFIX + CRASH[2], 0.0) is None
    assert parse_line(PREFIX + "[sysTest] send.", 0.0) == LogLine(0.0, "[sysTest] send.")


def test_crash_and_hang_reports_may_interleave_and_other_lines_pass_through() -> None:
    parser = KernelLogParser()
    hang = ["kcb-triage: hang begin pid=0108 threads=1", "kcb-triage: hang frame tid=010c n=0 pc=0x17000ebe4 sp=0x21f6c8 how=context"]
    events = feed(
        parser, hang + CRASH[:3] + ["[sysTest] send."] + ["kcb-triage: hang walk tid=010c frames=1 end=frame-limit", "kcb-triage: hang end"]
    )
    assert events[0] == LogLine(1.0, "[sysTest] send.")
    report = events[1]
    assert isinstance(report, StackReport) and report.kind == "hang"
    assert report.threads[0].thread == 0x10C and report.threads[0].end == "frame-limit"
    crash = feed(parser, CRASH[3:])
    assert isinstance(crash[0], StackReport) and len(crash[0].threads[0].frames) == 3


def test_bad_lines_are_dropped_and_an_unfinished_report_never_comes_out() -> None:
    parser = KernelLogParser()
    garbled = [
        "kcb-triage: crash frame tid=012c n=0 pc=0x1 sp=0x2 how=context",  # before any begin
        "kcb-triage: crash begin pid=0110 tid=012c code=0xc0000005 address=0x0 params=-",
        "kcb-triage: crash frame tid=zz n=0 pc=0x1 sp=0x2 how=context",
        "kcb-triage: crash frame tid=012c n=x pc=0x1 sp=0x2 how=context",
        "kcb-triage: crash frame tid=012c n=0 pc=0x1 sp=0x2 how=guessed",
        "kcb-triage: crash stack tid=012c at=0x10 bytes=zz",
        "kcb-triage: crash module base=0x1 size=0x1 state=loaded",
        "kcb-triage: crash nonsense",
        "kcb-triage: hang end",  # no hang begun
    ]
    assert feed(parser, garbled) == []
    (report,) = feed(parser, ["kcb-triage: crash end"])
    assert isinstance(report, StackReport)
    assert report.threads == () or all(not thread.frames for thread in report.threads)
    assert report.parameters == () and report.modules == ()


def test_a_report_the_driver_host_could_not_finish_comes_out_at_the_crash_line() -> None:
    parser = KernelLogParser()
    assert feed(parser, CRASH[:4]) == []
    unhandled = "wine: Unhandled page fault on execute access to 00000000027C1020 at address 00000000027C1020 (thread 012c)"
    partial, crash = parser.feed(unhandled, 2.0)
    assert isinstance(partial, StackReport) and isinstance(crash, GuestCrash)
    assert len(partial.threads[0].frames) == 2 and partial.threads[0].end == "report-cut-short"
    assert parser.feed(unhandled, 2.0) == [crash]  # nothing left over for a second crash line
