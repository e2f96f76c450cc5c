"""Where a guest's threads were when it crashed or hung, as the guest reports it: raw addresses. Pure data.

A guest (the embedded guest's driver host, later the VM's kernel debugger) reports
the faulting thread's stack at a crash, or every thread's stack at a hang, with
the modules of its address space, including drivers that were already unloaded.
Naming those addresses (module, function, source line) is the host's job
(``harness.triage``), so every guest gives the same raw material.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ReportKind = Literal["crash", "hang"]

#: How a frame's address was found: the thread's own context (the exact instruction), the return address at [RSP]
#: because the function has no unwind data (a leaf, or code that is no longer mapped), the caller's return address
#: found with the function's unwind data, or the interrupted instruction a machine frame (a trap or an interrupt,
#: UWOP_PUSH_MACHFRAME) saved. "leaf" and "unwind" are return addresses (the call is just before).
FrameHow = Literal["context", "leaf", "unwind", "trap"]


@dataclass(frozen=True)
class ModuleRange:
    """An image in the guest's address space, loaded or already unloaded."""

    path: str  # as the guest names it, e.g. C:\\kcb\\sysRecv1.sys
    base: int
    size: int
    unloaded: bool = False
    unload_sequence: int = 0  # the guest's own count of driver unloads when this one went (1 = the first)
    service: str = ""  # the driver service it belonged to, when the guest knows

    @property
    def name(self) -> str:
        """The file name (``sysRecv1.sys``)."""
        return self.path.replace("/", "\\").rsplit("\\", 1)[-1]

    def holds(self, address: int) -> bool:
        return self.base <= address < self.base + self.size


@dataclass(frozen=True)
class StackFrame:
    pc: int
    sp: int
    how: FrameHow = "unwind"

    @property
    def is_return_address(self) -> bool:
        return self.how in ("leaf", "unwind")


@dataclass(frozen=True)
class ThreadStack:
    """One thread's walked stack, with what the walk started from when the guest gave it."""

    thread: int
    frames: tuple[StackFrame, ...]
    end: str = ""  # why the walk stopped (e.g. thread-start, no-unwind-data, frame-limit)
    registers: tuple[tuple[str, int], ...] = ()  # rip, rsp, rax, ... at the first frame
    memory: tuple[tuple[int, bytes], ...] = ()  # (address, bytes): the stack memory the walk went through


@dataclass(frozen=True)
class StackReport:
    """A guest's report of where it was: at a crash, the faulting thread; at a hang, every thread."""

    t: float
    kind: ReportKind
    threads: tuple[ThreadStack, ...]
    modules: tuple[ModuleRange, ...] = ()
    code: int | None = None  # exception code or bugcheck code (crash)
    address: int | None = None  # where the exception happened (crash)
    parameters: tuple[int, ...] = ()
    thread: int | None = None  # the faulting thread (crash)

    def module_at(self, address: int) -> ModuleRange | None:
        """The module holding ``address``: a loaded one, else the latest unloaded one that held it."""
        for module in self.modules:
            if not module.unloaded and module.holds(address):
                return module
        gone = [module for module in self.modules if module.unloaded and module.holds(address)]
        return max(gone, key=lambda module: module.unload_sequence) if gone else None
