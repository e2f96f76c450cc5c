"""Crash and hang signatures: what makes two failures "the same". Pure.

A crash's signature is its exception (or bugcheck) code and the first frame in a
driver under test, as module!function, marked when that driver was already
unloaded: ``0xC0000005 receiver.sys!OnNotify (unloaded)``. A hang's is ``hang``
and the first driver frame of the thread to blame: ``hang stall.sys!DriverEntry``.
Function names stay the same from one build to the next, so two builds with the
same bug get the same signature; without symbols the frame is module+offset,
which may move between builds.
"""

from __future__ import annotations

from harness.triage.model import Frame


def frame_key(frame: Frame) -> str:
    """The part of a frame that identifies it across builds (no displacement inside the function)."""
    if frame.module is None:
        return "(no module)"
    key = f"{frame.module}!{frame.function}" if frame.function else f"{frame.module}+0x{frame.offset or 0:x}"
    return key + (" (unloaded)" if frame.unloaded else "")


def crash_signature(code: int | None, culprit: Frame | None) -> str:
    """``0xC0000005 receiver.sys!OnNotify (unloaded)``; ``0xC0000005 (no stack)`` without frames."""
    head = f"0x{code:08X}" if code is not None else "crash"
    return f"{head} {frame_key(culprit)}" if culprit is not None else f"{head} (no stack)"


def hang_signature(culprit: Frame | None) -> str:
    """``hang stall.sys!DriverEntry``; ``hang (no driver frame)`` when no thread was in a driver."""
    return f"hang {frame_key(culprit)}" if culprit is not None else "hang (no driver frame)"


def unreported_hang_signature() -> str:
    """A hang whose guest reported no stacks."""
    return "hang (no stacks)"
