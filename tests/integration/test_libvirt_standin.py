"""The VM host side for real: libvirtd + QEMU (TCG) boot the Linux stand-in guest under UEFI."""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from harness.errors import ConfigError
from harness.guests.libvirt_vm.dumps import collect_dumps, dump_names
from harness.guests.libvirt_vm.events import crash_from_lifecycle
from harness.guests.libvirt_vm.host import free_port
from harness.guests.libvirt_vm.standin import standin_connector, standin_vm
from harness.guests.libvirt_vm.vm import VirtualMachine, Watchdog, remove_stale
from harness.kd.serial import Endpoint, TextSerialReader
from harness.timeline import Timeline
from harness.transports.commands import posix_list_files
from tests.integration.conftest import ROOT

pytestmark = pytest.mark.libvirt

PREFIX = "kcbtest"
TICK = re.compile(r"^kcb-standin: tick (\d+)$")


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
            connections = reader.connections
            vm.revert(paused=True)
            assert reader.wait_connected(connections + 1, timeout=30), "the serial reader did not re-attach"
            mark = len(timeline.lines())  # all the old QEMU printed is in; the restored guest is still paused
            vm.resume()
            after = wait_ticks(timeline, mark, 3)
            # The guest goes on from the snapshot; nothing the reader saw before the revert comes again.
            assert after == sorted(after) and after[0] > 3
            assert after[0] == after[-1] - len(after) + 1
        # A second, named snapshot later on (as for a Driver Verifier configuration); both stay usable.
        later = wait_ticks(timeline, len(timeline.lines()), 2)[-1]
        vm.take_ready_snapshot("second")
        for name, lowest in (("ready", 4), ("second", later + 1)):
            connections = reader.connections
            vm.revert(paused=True, name=name)
            assert reader.wait_connected(connections + 1, timeout=30)
            mark = len(timeline.lines())
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


def test_driver_goes_in_over_ssh_and_the_crash_dump_comes_out_after_the_restart(libvirt_uri: str, vm_dir: Path, tmp_path: Path) -> None:
    """Through QEMU's user network and the loopback port forward, as with the Windows VM: a driver goes in over
    SFTP (hash-checked in the guest); the guest writes a dump and resets, as Windows does after a bugcheck with
    AutoReboot; the reset is a crash event; once the guest answers again its new dump is pulled, hash-checked."""
    port = free_port()
    machine = standin_vm(libvirt_uri, vm_dir / "vm", mode="ssh", prefix=PREFIX, ssh_port=port)
    connect = standin_connector(port, tmp_path / "known_hosts")
    listing = posix_list_files("/dumps", ".dmp")
    machine.connect()
    try:
        machine.boot()
        with connect(180) as transport:
            driver = ROOT / "build" / "drivers" / "receiver.sys"
            assert transport.upload(driver, "/tmp/receiver.sys", 60) == hashlib.sha256(driver.read_bytes()).hexdigest()
            known = dump_names(transport.run(listing, 30).stdout)
            boot_id = transport.run("cat /proc/sys/kernel/random/boot_id", 30).stdout.strip()
            assert known == [] and boot_id
            transport.run("(sleep 1; /kcb-crash scenario-7) > /dev/null 2>&1 &", 30)
        deadline = time.monotonic() + 60
        while not any(event.event == "rebooted" for event in machine.events) and time.monotonic() < deadline:
            time.sleep(0.2)
        reboot = next(event for event in machine.events if event.event == "rebooted")
        crash = crash_from_lifecycle(reboot, 1.0, machine.domain_log)
        assert crash is not None and "restarted on its own" in crash.summary

        evidence = collect_dumps(connect, listing, tmp_path / "crash", 180, known=known, stopped=lambda: None)
        assert len(evidence.files) == 1, evidence.note
        dump = evidence.files[0].read_text()
        assert evidence.files[0].name == "scenario-7-1.dmp" and evidence.note.startswith("1 crash dump(s) pulled")
        # written by the boot that crashed, pulled from the one after it
        assert "marker: scenario-7" in dump and f"boot: {boot_id}" in dump
        with connect(60) as transport:
            assert transport.run("cat /proc/sys/kernel/random/boot_id", 30).stdout.strip() != boot_id
        assert machine.state() == "running"
    finally:
        machine.close()


def test_vm_files_qemu_cannot_reach_are_named_before_libvirt_is_asked(libvirt_uri: str, vm_dir: Path) -> None:
    """A clone in /root (0700): QEMU runs as libvirt-qemu and cannot pass through it. One clear error instead of libvirt's."""
    private = vm_dir / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    machine = standin_vm(libvirt_uri, private / "vm", mode="text", prefix=PREFIX)
    machine.connect()
    try:
        with pytest.raises(ConfigError) as caught:
            machine.boot()
        message = str(caught.value)
        assert f"cannot pass through {private} " in message and f"setfacl -m u:libvirt-qemu:x {private}" in message
        assert machine.state() == "none"  # nothing was started
    finally:
        machine.close()
