"""The VM host side for real: libvirtd + QEMU (TCG) boot the Linux stand-in guest under UEFI."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from harness.guests.libvirt_vm.standin import standin_vm
from harness.guests.libvirt_vm.vm import VirtualMachine, Watchdog, remove_stale
from harness.kd.serial import Endpoint, TextSerialReader
from harness.timeline import Timeline
from tests.integration.conftest import ROOT

pytestmark = pytest.mark.libvirt

PREFIX = "kcbtest"
TICK = re.compile(r"^kcb-standin: tick (\d+)$")


@pytest.fixture
def vm_dir() -> Iterator[Path]:
    """A work folder QEMU (running as libvirt-qemu) can reach: pytest's tmp_path is private to root."""
    folder = ROOT / "build" / "test-vms" / uuid.uuid4().hex[:8]
    folder.mkdir(parents=True)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def vm(libvirt_uri: str, vm_dir: Path) -> Iterator[VirtualMachine]:
    machine = standin_vm(libvirt_uri, vm_dir / "vm", mode="text", prefix=PREFIX)
    machine.connect()
    yield machine
    machine.close()
    assert PREFIX not in " ".join(domain_names(libvirt_uri))


def domain_names(uri: str) -> list[str]:
    conn = libvirt.open(uri)
    try:
        return [dom.name() for dom in conn.listAllDomains(0)]
    finally:
        conn.close()


def ticks(timeline: Timeline, since: int = 0) -> list[int]:
    return [int(m.group(1)) for line in timeline.lines()[since:] if (m := TICK.match(line.text))]


def wait_ticks(timeline: Timeline, since: int, count: int, timeout: float = 90.0) -> list[int]:
    timeline.wait_for(lambda events: True if len(ticks(timeline, since)) >= count else None, timeline.now() + timeout)
    return ticks(timeline, since)


def test_boot_capture_snapshot_and_revert(vm: VirtualMachine, tmp_path: Path) -> None:
    vm.boot()
    timeline = Timeline()
    assert vm.spec.com1 is not None and vm.spec.com1_log is not None
    reader = TextSerialReader(Endpoint.parse(f"unix:{vm.spec.com1}"), timeline, tmp_path / "com1-reader.log")
    with reader:
        assert "kcb-standin: ready" in [line.text for line in timeline.lines()] or wait_ticks(timeline, 0, 3)
        before = wait_ticks(timeline, 0, 3)
        assert before[:3] == [1, 2, 3]
        vm.take_ready_snapshot()
        assert vm.state() == "running"
        for _ in range(2):
            mark = len(timeline.lines())
            connections = reader.connections
            vm.revert(paused=True)
            assert reader.wait_connected(connections + 1, timeout=30), "the serial reader did not re-attach"
            vm.resume()
            after = wait_ticks(timeline, mark, 3)
            # The guest goes on from the snapshot; nothing the reader saw before the revert comes again.
            assert after == sorted(after) and after[0] > 3
            assert after[0] == after[-1] - len(after) + 1
        # A second, named snapshot later on (as for a Driver Verifier configuration); both stay usable.
        later = wait_ticks(timeline, len(timeline.lines()), 2)[-1]
        vm.take_ready_snapshot("second")
        for name, lowest in (("ready", 4), ("second", later + 1)):
            mark = len(timeline.lines())
            connections = reader.connections
            vm.revert(paused=True, name=name)
            assert reader.wait_connected(connections + 1, timeout=30)
            vm.resume()
            first = wait_ticks(timeline, mark, 1)[0]
            assert lowest <= first <= (later if name == "ready" else later + 3), (name, first, later)
    # libvirt's <log append='on'> keeps everything, across QEMU restarts.
    record = vm.spec.com1_log.read_text(errors="replace")
    assert "kcb-standin: ready" in record and record.count("kcb-standin: tick 1\n") == 1


def test_guest_panic_is_seen_as_a_crash_event(libvirt_uri: str, vm_dir: Path) -> None:
    machine = standin_vm(libvirt_uri, vm_dir / "vm", mode="panic", prefix=PREFIX)
    machine.connect()
    try:
        machine.boot()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any(event.event == "crashed" for event in machine.events):
            time.sleep(0.1)
        assert any(event.event == "crashed" for event in machine.events), machine.events
        assert machine.state() in ("crashed", "paused")
    finally:
        machine.close()


HELPER = """
import sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from harness.guests.libvirt_vm.standin import standin_vm
machine = standin_vm({uri!r}, Path({work!r}), mode="text", prefix={prefix!r})
machine.connect()
machine.boot()
print(machine.spec.name, flush=True)
time.sleep(600)
"""


def test_a_killed_harness_leaves_a_vm_that_the_next_run_removes(libvirt_uri: str, vm_dir: Path) -> None:
    work = vm_dir / "killed"
    process = subprocess.Popen(
        [sys.executable, "-c", HELPER.format(root=str(ROOT), uri=libvirt_uri, work=str(work), prefix=PREFIX)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    name = process.stdout.readline().strip()
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert name in domain_names(libvirt_uri)
    assert (work / "run").is_dir()
    removed = remove_stale(libvirt_uri, PREFIX)
    assert name in removed
    assert name not in domain_names(libvirt_uri)
    assert not (work / "run").exists() and not (vm_dir / "killed-golden.qcow2").exists()


def test_watchdog_sees_a_stopped_vm_but_not_a_busy_one(vm: VirtualMachine, tmp_path: Path) -> None:
    vm.boot()
    timeline = Timeline()
    assert vm.spec.com1 is not None
    hangs: list[str] = []
    with TextSerialReader(Endpoint.parse(f"unix:{vm.spec.com1}"), timeline, tmp_path / "com1.log") as reader:
        wait_ticks(timeline, 0, 2)
        watchdog = Watchdog(vm, lambda: reader.last_activity, 2.0, hangs.append)
        watchdog.start()
        time.sleep(4)  # the guest prints every 0.2 s: no hang
        assert hangs == []
        vm.conn.lookupByName(vm.spec.name).suspend()  # silent, and no CPU time
        deadline = time.monotonic() + 20
        while not hangs and time.monotonic() < deadline:
            time.sleep(0.2)
        watchdog.stop()
    assert hangs and "did not advance (state paused)" in hangs[0]
