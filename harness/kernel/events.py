"""What a guest reports while a scenario runs: kernel-log lines, load results, crashes.

Every event carries ``t``, seconds since the scenario started (monotonic clock),
so the expectation engine can reason about order and time windows. Pure data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.kernel.stacks import StackReport as StackReport

#: Where a line came from: the kernel debug log (DbgPrint), or another source (a serial console, a program's output).
KERNEL = "kernel"
#: A program's output streams: its lines come from ``program_source(name, stream)``.
PROGRAM_STREAMS = ("stdout", "stderr")
#: What an expectation's ``source`` may say besides a program's name (``NAME.exe``, ``NAME.exe:stdout``, ...).
SOURCE_KEYWORDS = (KERNEL, "program", *PROGRAM_STREAMS, "serial")
_SERIAL = re.compile(r"serial|com[0-9]+")


def program_source(program: str, stream: str) -> str:
    """The source of a line a program wrote: ``ioctl-client.exe:stdout``."""
    return f"{program}:{stream}"


def selects(selector: str | None, source: str) -> bool:
    """Whether an expectation's ``source`` (None: any) takes a line from ``source``.

    ``kernel``: the kernel debug log; ``program``: any program's stdout and stderr; ``stdout``/``stderr``: that stream
    of any program; ``serial``: a serial console (``serial``, ``com2``); ``NAME.exe``: that program's lines (the name
    without regard to case, as Windows file names); ``NAME.exe:stdout``/``NAME.exe:stderr``: one stream of it.
    """
    if selector is None:
        return True
    if selector == KERNEL:
        return source == KERNEL
    if selector == "serial":
        return _SERIAL.fullmatch(source) is not None
    program, _, stream = source.rpartition(":")
    if not program or stream not in PROGRAM_STREAMS:
        return False  # not a program's line
    if selector == "program":
        return True
    if selector in PROGRAM_STREAMS:
        return stream == selector
    wanted, _, wanted_stream = selector.partition(":")
    return program.lower() == wanted.lower() and wanted_stream in ("", stream)


@dataclass(frozen=True)
class LogLine:
    """One log line, without its trailing newline: a kernel debug-log line (DbgPrint) unless ``source`` says otherwise."""

    t: float
    text: str
    source: str = KERNEL


@dataclass(frozen=True)
class DriverStatus:
    """What the kernel's driver loader returned for a load or unload (an NTSTATUS)."""

    t: float
    action: str  # "load" or "unload"
    service: str
    status: int


@dataclass(frozen=True)
class GuestCrash:
    """The guest's kernel (or the process standing in for it) died: a bugcheck or a fault."""

    t: float
    summary: str
    code: int | None = None
    parameters: tuple[int, ...] = ()
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True)
class GuestHang:
    """The guest stopped making progress (a watchdog saw no output and no CPU time)."""

    t: float
    summary: str


@dataclass(frozen=True)
class DebugEvent:
    """Something the kernel debugger saw besides a log line: a stop, a module load, a link notice."""

    t: float
    kind: str  # "state-change", "module", "notice", "attach"
    summary: str


@dataclass(frozen=True)
class Action:
    """Something the harness did: a step, with when it started and ended and how it went."""

    t: float
    end: float
    kind: str
    target: str
    outcome: str = ""
    ok: bool = True


Event = LogLine | DriverStatus | GuestCrash | GuestHang | DebugEvent | Action | StackReport
