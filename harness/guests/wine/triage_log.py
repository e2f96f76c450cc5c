"""The driver host's ``kcb-triage:`` lines (ntoskrnl/triage.c) back into stack reports. Pure.

One report spans many DbgPrint lines, from ``<kind> begin`` to ``<kind> end``
(kind: crash or hang); crash and hang reports are collected apart, so lines of
both may interleave. A line that does not parse is dropped: the raw log keeps it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import cast

from harness.kernel.stacks import FrameHow, ModuleRange, ReportKind, StackFrame, StackReport, ThreadStack

PREFIX = "kcb-triage: "
_LINE = re.compile(r"^kcb-triage: (crash|hang) (\w+)(?: (.*))?$")
_PAIR = re.compile(r"(\w+)=(\S*)")
_HOW: frozenset[str] = frozenset({"context", "leaf", "unwind"})


@dataclass
class _Thread:
    frames: dict[int, StackFrame] = field(default_factory=dict)
    end: str = ""
    registers: dict[str, int] = field(default_factory=dict)
    memory: list[tuple[int, bytes]] = field(default_factory=list)


@dataclass
class _Draft:
    kind: ReportKind
    t: float
    fields: dict[str, str]
    threads: dict[int, _Thread] = field(default_factory=dict)
    modules: list[ModuleRange] = field(default_factory=list)

    def thread(self, tid: int) -> _Thread:
        return self.threads.setdefault(tid, _Thread())


def _pairs(text: str) -> dict[str, str]:
    return dict(_PAIR.findall(text))


def _hex(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text, 16)
    except ValueError:
        return None


class TriageLines:
    """Collects ``kcb-triage:`` messages; a complete report comes out at its ``end`` line."""

    def __init__(self) -> None:
        self._drafts: dict[str, _Draft] = {}

    @staticmethod
    def claims(message: str) -> bool:
        """Whether a DbgPrint message is a triage line (and so no driver's log line)."""
        return message.startswith(PREFIX)

    def feed(self, message: str, t: float) -> StackReport | None:
        """Take one triage message (without Wine's prefix); the finished report at its end line."""
        match = _LINE.match(message.rstrip("\r\n"))
        if match is None:
            return None
        kind, record, rest = match.group(1), match.group(2), match.group(3) or ""
        if record == "begin":
            self._drafts[kind] = _Draft(kind=cast(ReportKind, kind), t=t, fields=_pairs(rest))
            return None
        draft = self._drafts.get(kind)
        if draft is None:
            return None
        if record == "end":
            del self._drafts[kind]
            return _finish(draft)
        if record == "module":
            module = _module(rest)
            if module is not None:
                draft.modules.append(module)
            return None
        pairs = _pairs(rest)
        tid = _hex(pairs.pop("tid", None))
        if tid is None:
            return None
        thread = draft.thread(tid)
        if record == "frame":
            pc, sp, n = _hex(pairs.get("pc")), _hex(pairs.get("sp")), pairs.get("n", "")
            how = pairs.get("how", "")
            if pc is not None and sp is not None and n.isdigit() and how in _HOW:
                thread.frames[int(n)] = StackFrame(pc=pc, sp=sp, how=cast(FrameHow, how))
        elif record == "walk":
            thread.end = pairs.get("end", "")
        elif record == "regs":
            for name, value in pairs.items():
                number = _hex(value)
                if number is not None:
                    thread.registers[name] = number
        elif record == "stack":
            at = _hex(pairs.get("at"))
            try:
                data = bytes.fromhex(pairs.get("bytes", ""))
            except ValueError:
                return None
            if at is not None and data:
                thread.memory.append((at, data))
        return None

    def cut_short(self, kind: ReportKind) -> StackReport | None:
        """The report begun but never ended (the driver host died while printing it), as far as it got."""
        draft = self._drafts.pop(kind, None)
        if draft is None:
            return None
        report = _finish(draft)
        threads = tuple(replace(thread, end=thread.end or "report-cut-short") for thread in report.threads)
        return replace(report, threads=threads)


def _module(rest: str) -> ModuleRange | None:
    head, separator, path = rest.partition(" path=")
    if not separator:
        return None
    pairs = _pairs(head)
    base, size = _hex(pairs.get("base")), _hex(pairs.get("size"))
    if base is None or size is None:
        return None
    unload = pairs.get("unload", "0")
    service = pairs.get("service", "-")
    return ModuleRange(
        path=path.strip(),
        base=base,
        size=size,
        unloaded=pairs.get("state") == "unloaded",
        unload_sequence=int(unload) if unload.isdigit() else 0,
        service="" if service == "-" else service,
    )


def _finish(draft: _Draft) -> StackReport:
    threads = tuple(
        ThreadStack(
            thread=tid,
            frames=tuple(thread.frames[n] for n in sorted(thread.frames)),
            end=thread.end,
            registers=tuple(thread.registers.items()),
            memory=tuple(thread.memory),
        )
        for tid, thread in draft.threads.items()
    )
    fields = draft.fields
    parameters = tuple(value for value in (_hex(part) for part in fields.get("params", "").split(",")) if value is not None)
    return StackReport(
        t=draft.t,
        kind=draft.kind,
        threads=threads,
        modules=tuple(draft.modules),
        code=_hex(fields.get("code")),
        address=_hex(fields.get("address")),
        parameters=parameters,
        thread=_hex(fields.get("tid")),
    )
