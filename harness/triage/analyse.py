"""A guest's stack report -> named frames, the thread to blame, a signature. Pure (names come from a Namer)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from harness.kernel.stacks import StackReport, ThreadStack
from harness.triage.model import Frame, ThreadTriage, Triage
from harness.triage.signature import crash_signature, hang_signature
from harness.triage.symbols import SourceLocation


@dataclass(frozen=True)
class DriverModule:
    """A driver under test as the guest names its module, and as the user knows it."""

    guest_name: str  # the module's file name in the guest (sysRecv1.sys)
    image: str  # the image file in the drivers folder (receiver.sys)
    service: str


#: Where a frame is: (module name as the user knows it, module base, under test, unloaded, "step N" that unloaded it).
_Placement = tuple[str, int, bool, bool, str]


class Namer(Protocol):
    def locate(self, name: str, rvas: Sequence[int]) -> Mapping[int, SourceLocation]: ...

    def notes(self) -> tuple[str, ...]: ...


def analyse(
    report: StackReport,
    drivers: Sequence[DriverModule],
    namer: Namer,
    unload_steps: Mapping[str, int] | None = None,
    focus_service: str | None = None,
) -> Triage:
    """Name every frame of the report, put the thread to blame first, and sign it.

    Args:
        unload_steps: service (any case) -> the 1-based number of the scenario step that unloaded it.
        focus_service: at a hang, the service whose step hung: a thread in that driver is blamed first.
    """
    by_guest_name = {driver.guest_name.lower(): driver for driver in drivers}
    steps = {service.lower(): step for service, step in (unload_steps or {}).items()}

    # Which module each frame is in, and every RVA a module must name (one symbol lookup per module).
    placed: dict[tuple[int, int], _Placement] = {}
    wanted: dict[str, set[int]] = {}
    for number, stack in enumerate(report.threads):  # by position: two stacks may be of one thread (a context record)
        for index, frame in enumerate(stack.frames):
            lookup = frame.pc - 1 if frame.is_return_address and frame.pc else frame.pc
            module = report.module_at(lookup)
            if module is None:
                continue
            driver = by_guest_name.get(module.name.lower())
            name = driver.image if driver is not None else module.name
            step = steps.get(module.service.lower()) if module.unloaded and module.service else None
            placed[(number, index)] = (name, module.base, driver is not None, module.unloaded, f"step {step}" if step else "")
            wanted.setdefault(name, set()).add(lookup - module.base)
    names = {name: namer.locate(name, sorted(rvas)) for name, rvas in wanted.items()}

    threads = [_name_thread(number, stack, placed, names) for number, stack in enumerate(report.threads)]
    if report.kind == "crash":
        threads.sort(key=lambda thread: thread.thread != report.thread)
    else:
        focus = next((d.image for d in drivers if focus_service and d.service.lower() == focus_service.lower()), None)
        threads.sort(key=lambda thread: _blame(thread, focus))
    triage = Triage(kind=report.kind, signature="", threads=tuple(threads), code=report.code, notes=namer.notes())
    signature = crash_signature(report.code, triage.culprit) if report.kind == "crash" else hang_signature(triage.culprit)
    return replace(triage, signature=signature)


def _name_thread(
    number: int, stack: ThreadStack, placed: Mapping[tuple[int, int], _Placement], names: Mapping[str, Mapping[int, SourceLocation]]
) -> ThreadTriage:
    frames = []
    for index, raw in enumerate(stack.frames):
        where = placed.get((number, index))
        if where is None:
            frames.append(Frame(pc=raw.pc, how=raw.how))
            continue
        name, base, under_test, unloaded, unloaded_at = where
        lookup = raw.pc - 1 if raw.is_return_address and raw.pc else raw.pc
        location = names.get(name, {}).get(lookup - base)
        displacement = None
        if location is not None and location.displacement is not None:
            displacement = location.displacement + (lookup != raw.pc)  # back to the return address itself
        frames.append(
            Frame(
                pc=raw.pc,
                how=raw.how,
                module=name,
                offset=raw.pc - base,
                function=location.function if location else None,
                displacement=displacement,
                file=location.file if location else None,
                line=location.line if location else None,
                inlined_into=location.inlined_into if location else (),
                under_test=under_test,
                unloaded=unloaded,
                unloaded_at=unloaded_at,
            )
        )
    return ThreadTriage(thread=stack.thread, frames=tuple(frames), end=stack.end)


def _blame(thread: ThreadTriage, focus: str | None) -> int:
    """0: in the driver whose step hung; 1: in another driver under test; 2: in no driver."""
    if focus is not None and any(frame.under_test and frame.module == focus for frame in thread.frames):
        return 0
    return 1 if thread.first_under_test() is not None else 2
