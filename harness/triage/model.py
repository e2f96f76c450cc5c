"""A crash's or hang's triage as the reports show it: named frames and a signature. Pure data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from harness.kernel.stacks import FrameHow, ReportKind


@dataclass(frozen=True)
class Frame:
    """One frame, named as far as the symbols go."""

    pc: int
    how: FrameHow
    module: str | None = None  # the image's name as the user knows it (receiver.sys, ntoskrnl.exe); None: no module
    offset: int | None = None  # pc - module base
    function: str | None = None
    displacement: int | None = None  # from the function's start, when only a map or exports named it
    file: str | None = None
    line: int | None = None
    inlined_into: tuple[str, ...] = ()  # the functions ``function`` was inlined into, innermost first
    under_test: bool = False  # in a driver of the scenario
    unloaded: bool = False
    unloaded_at: str = ""  # "step 4" when the scenario's step that unloaded it is known

    @property
    def label(self) -> str:
        """``receiver.sys!OnNotify``, ``ntdll.dll!RtlUserThreadStart+0x21``, ``receiver.sys+0x1020`` or ``0x27c1020``."""
        if self.module is None:
            return f"0x{self.pc:x}"
        if self.function is None:
            return f"{self.module}+0x{self.offset or 0:x}"
        extra = f"+0x{self.displacement:x}" if self.displacement else ""
        return f"{self.module}!{self.function}{extra}"

    @property
    def source(self) -> str:
        """``receiver.c:91`` (file name only; ``, inlined into Caller`` when it was), or ""."""
        if self.file is None:
            return ""
        name = PurePath(self.file.replace("\\", "/")).name
        text = f"{name}:{self.line}" if self.line is not None else name
        return text + (f", inlined into {' < '.join(self.inlined_into)}" if self.inlined_into else "")

    @property
    def where(self) -> str:
        """Module and offset, and when the module was unloaded: ``receiver.sys+0x1020, unloaded at step 4``."""
        parts = []
        if self.module is not None and self.function is not None:
            parts.append(f"{self.module}+0x{self.offset or 0:x}")
        if self.unloaded:
            parts.append(f"unloaded at {self.unloaded_at}" if self.unloaded_at else "unloaded")
        return ", ".join(parts)

    def describe(self) -> str:
        """One line: ``receiver.sys!OnNotify (receiver.c:91) [receiver.sys+0x1020, unloaded at step 4]``."""
        text = self.label
        if self.source:
            text += f" ({self.source})"
        if self.where:
            text += f" [{self.where}]"
        return text


@dataclass(frozen=True)
class ThreadTriage:
    thread: int
    frames: tuple[Frame, ...]
    end: str = ""  # why the walk stopped

    def first_under_test(self) -> Frame | None:
        return next((frame for frame in self.frames if frame.under_test), None)


@dataclass(frozen=True)
class Triage:
    """Where a scenario crashed or hung."""

    kind: ReportKind
    signature: str
    threads: tuple[ThreadTriage, ...]  # crash: the faulting thread; hang: every thread, the one to blame first
    code: int | None = None
    notes: tuple[str, ...] = ()  # what could not be named and why

    @property
    def culprit(self) -> Frame | None:
        """The frame the signature names: the blamed thread's first frame in a driver under test (a crash in no
        driver: its first frame in any module)."""
        if not self.threads:
            return None
        thread = self.threads[0]
        if self.kind == "hang":
            return thread.first_under_test()
        return thread.first_under_test() or next((frame for frame in thread.frames if frame.module), None)

    def chain(self, limit: int = 5) -> str:
        """The blamed thread's first frames, innermost first: ``a (f.c:1) <- b (g.c:2) <- ...``."""
        if not self.threads:
            return ""
        frames = self.threads[0].frames[:limit]
        text = " <- ".join(frame.label + (f" ({frame.source})" if frame.source else "") for frame in frames)
        return text + (" <- ..." if len(self.threads[0].frames) > limit else "")

    def render(self) -> str:
        """Text for timeline.txt, JUnit and the console: the signature, then each thread's frames."""
        head = f"{self.kind} signature: {self.signature}"
        out = [head]
        for thread in self.threads:
            out.append(f"  thread {thread.thread:04x}:" + (" (the faulting thread)" if self.kind == "crash" else ""))
            for index, frame in enumerate(thread.frames):
                out.append(f"    frame {index:<2} {frame.describe()}")
            if thread.end:
                out.append(f"    (walk ended: {thread.end})")
        out.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(out) + "\n"
