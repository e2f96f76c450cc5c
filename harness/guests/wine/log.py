"""Turning the Wine session's stderr into kernel events. Pure.

With ``WINEDEBUG=-all,warn+debugstr`` Wine writes each DbgPrint as
``TID:warn:debugstr:vDbgPrintExWithPrefix COMPONENT:LEVEL: message``; the
callback shim announces driver load results as ``kcb-shim: load NAME status
0x........``; a fault that takes winedevice.exe down is reported by Wine as
``wine: Unhandled page fault on ... at address ... (thread ...)``, after the
shim's ``kcb-triage:`` lines with the faulting thread's stack (those, and the
stacks reported at a hang, are gathered by ``KernelLogParser``). A program a
scenario runs has its lines forwarded into the same stream by ``kcbagent.exe
run`` as ``kcb-run<TAB>stdout|stderr<TAB>NAME<TAB>TEXT``, and the end of the run
as ``kcb-run<TAB>end<TAB>ID<TAB>REPORT`` (see agent/kcbagent.c).
"""

from __future__ import annotations

import re

from harness.guests.base import ProgramResult
from harness.guests.wine.triage_log import TriageLines
from harness.kernel.events import DriverStatus, Event, GuestCrash, LogLine, program_source

#: Wine's optional ``+timestamp`` prefix (its monotonic tick count, in seconds with milliseconds).
_TIMESTAMP = re.compile(r"^(\d+\.\d{3}):")
_DBGPRINT = re.compile(r"^(?:\d+\.\d{3}:)?[0-9a-f]{4,8}:warn:debugstr:vDbgPrintExWithPrefix [0-9a-f]{8}:[0-9a-f]{8}: (.*)$")
_WINE_CHANNEL = re.compile(r"^(?:\d+\.\d{3}:)?[0-9a-f]{4,8}:(fixme|err|warn|trace):")
_SHIM = re.compile(r"^kcb-shim: (load|unload) (\S+) status 0x([0-9a-fA-F]{8})$")
_UNHANDLED = re.compile(
    r"^wine: Unhandled (.*?)(?: at address ([0-9A-Fa-f]+))?(?: \(thread ([0-9a-fA-F]+)\))?(?:, starting debugger\.\.\.)?$"
)
_PROGRAM_LINE = re.compile(r"^kcb-run\t(stdout|stderr)\t([^\t]+)\t(.*)$", re.DOTALL)
_RUN_END = re.compile(r"^kcb-run\tend\t([^\t]+)\t(.*)$")
_EXIT = re.compile(r"^exit ([0-9]+)$")
_ERROR = re.compile(r"^error ([0-9]+) (.*)$")
_EXCEPTION_CODE = re.compile(r"exception (?:code )?(?:0x)?([0-9a-fA-F]{8})")
_ACCESS = re.compile(r"page fault on (read|write|execute) access to (?:0x)?([0-9A-Fa-f]+)")

STATUS_ACCESS_VIOLATION = 0xC0000005
_ACCESS_KIND = {"read": 0, "write": 1, "execute": 8}


def parse_line(text: str, t: float) -> Event | None:
    """The event one stderr line stands for, or None for Wine's own chatter.

    A line that is no Wine debug line at all is taken as the continuation of a
    multi-line DbgPrint and becomes a LogLine too.
    """
    text = text.rstrip("\r\n")
    program = _PROGRAM_LINE.match(text)
    if program:  # before anything else: a program's text is never taken for Wine's (a crash) or a driver's
        stream, name, line = program.groups()
        return LogLine(t=t, text=line, source=program_source(name, stream))
    if _RUN_END.match(text):
        return None  # for the guest (run_end), not the timeline
    match = _DBGPRINT.match(text)
    if match:
        message = match.group(1)
        if TriageLines.claims(message):
            return None  # part of a stack report: KernelLogParser
        shim = _SHIM.match(message)
        if shim:
            return DriverStatus(t=t, action=shim.group(1), service=shim.group(2), status=int(shim.group(3), 16))
        return LogLine(t=t, text=message)
    unhandled = _UNHANDLED.match(text)
    if unhandled:
        return _crash(text, unhandled, t)
    if _WINE_CHANNEL.match(text) or text.startswith("wine: ") or not text:
        return None
    return LogLine(t=t, text=text)


class KernelLogParser:
    """``parse_line`` with the state a report over several lines needs (the driver host's stack reports)."""

    def __init__(self) -> None:
        self._triage = TriageLines()

    def feed(self, text: str, t: float) -> list[Event]:
        """The events one stderr line stands for: a StackReport when it ends one; at a crash line, a crash report
        the driver host began but could not finish comes first."""
        match = _DBGPRINT.match(text.rstrip("\r\n"))
        if match and TriageLines.claims(match.group(1)):
            report = self._triage.feed(match.group(1), t)
            return [report] if report is not None else []
        event = parse_line(text, t)
        if event is None:
            return []
        if isinstance(event, GuestCrash):
            partial = self._triage.cut_short("crash")
            return [partial, event] if partial is not None else [event]
        return [event]


def run_end(text: str) -> tuple[str, str] | None:
    """(run id, report) when ``text`` is the line that ends a program's run."""
    match = _RUN_END.match(text.rstrip("\r\n"))
    return (match.group(1), match.group(2)) if match else None


def program_result(report: str, diagnostics: list[str]) -> ProgramResult:
    """The result a run's report (``exit CODE``, ``timeout``, ``error WIN32 WHAT``) stands for; ``diagnostics`` are
    what Wine printed about the program (its Unix stderr: an unhandled exception), kept as the detail."""
    detail = " | ".join(line for line in diagnostics if line.strip())
    exited = _EXIT.match(report)
    if exited:
        return ProgramResult(exit_code=int(exited.group(1)), detail=detail)
    if report == "timeout":
        return ProgramResult(exit_code=None, timed_out=True, detail=detail)
    error = _ERROR.match(report)
    if error:
        return ProgramResult(exit_code=None, detail=f"{error.group(2)} (Win32 error {error.group(1)})")
    return ProgramResult(exit_code=None, detail=f"the program runner reported {report!r}")


def guest_timestamp(text: str) -> float | None:
    """Wine's ``+timestamp`` of a line (CLOCK_MONOTONIC_RAW seconds), when present."""
    match = _TIMESTAMP.match(text)
    return float(match.group(1)) if match else None


def _crash(text: str, match: re.Match[str], t: float) -> GuestCrash:
    what = match.group(1)
    access = _ACCESS.search(what)
    if access:
        kind, address = access.groups()
        return GuestCrash(
            t=t,
            summary=f"unhandled page fault ({kind} access to 0x{int(address, 16):x}) in the driver host",
            code=STATUS_ACCESS_VIOLATION,
            parameters=(_ACCESS_KIND[kind], int(address, 16)),
            evidence=(text,),
        )
    code = _EXCEPTION_CODE.search(what)
    return GuestCrash(
        t=t,
        summary=f"unhandled {what} in the driver host",
        code=int(code.group(1), 16) if code else None,
        evidence=(text,),
    )
