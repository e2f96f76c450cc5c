"""Where a scenario crashed or hung, on the real embedded guest: module, function, source line, call chain, signature."""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.config import Settings
from harness.guests import GuestFactory
from harness.guests.wine.guest import WINE_PE_DIRS
from harness.guests.wine.prefix import WinePrefix
from harness.kernel.stacks import StackReport
from harness.runner import run_scenario
from harness.scenario.loader import load_scenario
from harness.triage.symbols import Symbolizer
from harness.triage.unwind import CodeModule, ImagesMemory, LayeredMemory, SnapshotMemory, walk_stack
from tests.integration.conftest import DATA, ROOT, session_processes

pytestmark = pytest.mark.wine

SEEDED = ROOT / "build" / "drivers-seeded-bug"
NULL_DEREF = ROOT / "build" / "drivers-null-deref"
UNLOAD = DATA / "failing" / "unload-without-unregister.yaml"
WINE_PE = next(folder for folder in WINE_PE_DIRS if folder.is_dir())


def harness(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def receiver_line(function: str) -> int:
    """The line of ``function``'s body in receiver.c (where its code starts after the prologue)."""
    lines = (ROOT / "guest-drivers" / "receiver" / "receiver.c").read_text().splitlines()
    start = next(index for index, text in enumerate(lines) if text.startswith("static VOID " + function + "("))
    return start + 1


def test_seeded_bug_names_the_unloaded_routine_its_source_line_and_the_senders_thread(tmp_path: Path, wine_prefix: WinePrefix) -> None:
    done = harness("run", str(UNLOAD), "--drivers", str(SEEDED), "--out", str(tmp_path))
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    # The console names the signature and where it is.
    assert "signature 0xC0000005 receiver.sys!OnNotify (unloaded)" in out, out
    timeline = (tmp_path / "scenarios" / "unload-without-unregister" / "timeline.txt").read_text()
    assert "receiver.sys!OnNotify" in timeline and "unloaded at step 4" in timeline, timeline
    assert "receiver.c:" in timeline
    # The chain: the routine was called by the shim's ExNotifyCallback on the sender's notification thread.
    frames = [line for line in timeline.splitlines() if " frame " in line]
    names = " | ".join(frames)
    chain = [names.index(name) for name in ("receiver.sys!OnNotify", "ntoskrnl.exe!ExNotifyCallback", "sender.sys!NotifyThread")]
    assert chain == sorted(chain), names
    assert "sender.c:" in names
    case = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite/testcase")
    assert case is not None
    properties = {prop.get("name"): prop.get("value") for prop in case.iter("property")}
    assert properties["signature"] == "0xC0000005 receiver.sys!OnNotify (unloaded)"
    html = (tmp_path / "report.html").read_text()
    assert "receiver.sys!OnNotify" in html and "unloaded at step 4" in html
    assert session_processes(wine_prefix) == []


def test_a_driver_without_debug_information_is_still_named_by_module_and_offset(tmp_path: Path) -> None:
    stripped = tmp_path / "drivers"
    stripped.mkdir()
    for name in ("sender.sys", "receiver.sys"):
        shutil.copyfile(SEEDED / name, stripped / name)
    done = harness("run", str(UNLOAD), "--drivers", str(stripped), "--out", str(tmp_path / "out"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "signature 0xC0000005 receiver.sys+0x" in done.stdout, done.stdout
    timeline = (tmp_path / "out" / "scenarios" / "unload-without-unregister" / "timeline.txt").read_text()
    assert "receiver.sys+0x" in timeline and "unloaded at step 4" in timeline, timeline


def test_a_hang_on_the_embedded_guest_shows_where_it_hung(tmp_path: Path, wine_prefix: WinePrefix) -> None:
    done = harness("run", str(DATA / "failing" / "stalled-driver-entry.yaml"), "--out", str(tmp_path))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "signature hang stall.sys!DriverEntry" in done.stdout, done.stdout
    timeline = (tmp_path / "scenarios" / "stalled-driver-entry" / "timeline.txt").read_text()
    assert "stall.sys!DriverEntry" in timeline and "stall.c:" in timeline, timeline
    assert session_processes(wine_prefix) == []


def test_compare_tells_the_same_crash_from_a_new_one(tmp_path: Path) -> None:
    copy = tmp_path / "seeded-copy"
    shutil.copytree(SEEDED, copy)
    same = harness("compare", str(UNLOAD), "--baseline", str(SEEDED), "--candidate", str(copy), "--out", str(tmp_path / "same"))
    assert "same crash: 0xC0000005 receiver.sys!OnNotify (unloaded)" in same.stdout, same.stdout + same.stderr
    new = harness("compare", str(UNLOAD), "--baseline", str(SEEDED), "--candidate", str(NULL_DEREF), "--out", str(tmp_path / "new"))
    assert "new crash: 0xC0000005 receiver.sys!CountNotification" in new.stdout, new.stdout + new.stderr
    assert "baseline: 0xC0000005 receiver.sys!OnNotify (unloaded)" in new.stdout


def test_the_python_unwinder_finds_the_frames_wine_found(wine_factory: GuestFactory, settings: Settings, tmp_path: Path) -> None:
    """The walker the kernel-debugger side uses, fed the crash's registers and stack memory and the images' unwind data
    from their files, must find exactly the frames the driver host found with Wine's RtlVirtualUnwind."""
    result = run_scenario(load_scenario(UNLOAD), wine_factory, SEEDED, tmp_path)
    assert result.outcome == "crashed", result.message
    (report,) = [event for event in result.events if isinstance(event, StackReport) and event.kind == "crash"]
    (thread,) = report.threads
    guest_names = {"systest.sys": "sender.sys", "sysrecv1.sys": "receiver.sys"}
    symbols = Symbolizer(
        {"sender.sys": SEEDED / "sender.sys", "receiver.sys": SEEDED / "receiver.sys"}, [], [settings.build_dir / "wine", WINE_PE]
    )
    modules, images = [], []
    for module in report.modules:
        image = None if module.unloaded else symbols.image(guest_names.get(module.name.lower(), module.name))
        if image is not None:
            modules.append(CodeModule(module.name, module.base, module.size, image.unwind_table()))
            images.append((module.base, module.size, image))
    memory = LayeredMemory([SnapshotMemory(thread.memory), ImagesMemory(images)])
    walk = walk_stack(dict(thread.registers), modules, memory)
    assert walk.frames == thread.frames and len(walk.frames) >= 4
    assert walk.end == thread.end == "thread-start"
