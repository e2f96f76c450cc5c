"""What a guest reports while a scenario runs: kernel-log lines, load results, crashes.

Every event carries ``t``, seconds since the scenario started (monotonic clock),
so the expectation engine can reason about order and time windows. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.kernel.stacks import StackReport as StackReport

#: Where a line came from: the kernel debug log (DbgPrint), or another source (a serial console, a program's output).
KERNEL = "kernel"


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
