"""After a crash: wait until the guest is back, then pull the crash dumps it wrote.

Windows set up by the image recipe (small memory dump, AutoReboot on) writes
the dump into the page file during the bugcheck, restarts, and at the next
boot moves it to ``%SystemRoot%\\Minidump``. So the harness waits for the
transport to answer again, lists the dump folder, and downloads every dump it
did not see in the ready snapshot, with a SHA-256 check, into the scenario's
folder. Nothing here raises: what happened is one line of the report. Each dump's own header is read on this
host and set beside what the kernel debugger saw (``with_headers``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path

from harness.errors import GuestError
from harness.guests.base import CrashEvidence
from harness.transports.base import Transport
from harness.triage.dumpfile import DumpError, read_header

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def dump_names(listing: str) -> list[str]:
    """The guest paths in a listing (one per line, blank lines and stray spaces ignored)."""
    return [line.strip() for line in listing.splitlines() if line.strip()]


def local_name(remote: str) -> str:
    """A safe file name for a guest path (Windows or POSIX)."""
    base = re.split(r"[\\/]", remote)[-1] or "dump"
    return _SAFE_NAME.sub("_", base)


def collect_dumps(
    connect: Callable[[float], Transport],
    list_command: str,
    dest: Path,
    timeout: float,
    known: Collection[str] = (),
    stopped: Callable[[], str | None] = lambda: None,
    settle: float = 60.0,
) -> CrashEvidence:
    """Wait up to ``timeout`` seconds for the guest to answer, then download its new dumps into ``dest``.

    Args:
        connect: opens a transport, retrying for at most the seconds given (raises GuestError when nothing answered).
        list_command: prints the guest paths of the dumps, one per line.
        known: dumps that were there before the scenario (in the snapshot): not pulled.
        stopped: why the guest will never come back (a VM stopped at the crash), or None.
        settle: how long to keep looking once the guest answers (the dump may be moved into place late in its boot).
    """
    reason = stopped()
    if reason is not None:
        return CrashEvidence((), f"no crash dump: {reason}")
    started = time.monotonic()
    try:
        transport = connect(timeout)
    except GuestError as error:
        return CrashEvidence((), f"no crash dump: the guest did not come back within {timeout:g}s ({error})")
    files: list[Path] = []
    problems: list[str] = []
    with transport:
        answered = time.monotonic()
        while True:
            try:
                listing = transport.run(list_command, 120)
            except GuestError as error:
                return CrashEvidence((), f"no crash dump: listing the dumps failed ({error})")
            new = [name for name in dump_names(listing.stdout) if name not in known]
            if new:
                break
            if time.monotonic() - answered >= settle or time.monotonic() - started >= timeout:
                waited = f"came back after {answered - started:.0f}s and had none {time.monotonic() - answered:.0f}s later"
                return CrashEvidence((), f"no crash dump: the guest {waited}")
            time.sleep(min(5.0, max(settle / 10, 0.01)))
        dest.mkdir(parents=True, exist_ok=True)
        for remote in new:
            target = dest / local_name(remote)
            try:
                transport.download(remote, target, max(timeout - (time.monotonic() - started), 60))
                files.append(target)
            except GuestError as error:
                target.unlink(missing_ok=True)
                problems.append(f"{remote}: {error}")
    note = f"{len(files)} crash dump(s) pulled after {time.monotonic() - started:.0f}s"
    if problems:
        note += "; failed: " + "; ".join(problems)
    log.info("%s", note)
    return CrashEvidence(tuple(files), note)


def with_headers(evidence: CrashEvidence, code: int | None, parameters: tuple[int, ...]) -> CrashEvidence:
    """The evidence with each pulled dump's own header (DUMP_HEADER64) read and compared with the kernel debugger's
    view of the bugcheck (``code``, ``parameters``): both go in the report, a mismatch flagged."""
    headers = []
    lines = []
    for path in evidence.files:
        try:
            header = read_header(path)
        except DumpError as error:
            lines.append(f"{path.name}: {error}")
            continue
        headers.append(header)
        lines.append(f"{header.describe()}; {header.compare(code, parameters)}")
    if not lines:
        return evidence
    return replace(evidence, note="; ".join([evidence.note, *lines]) if evidence.note else "; ".join(lines), headers=tuple(headers))
