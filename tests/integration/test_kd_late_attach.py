"""A kernel debugger that attaches late, for real: libvirtd + QEMU (TCG) boot the Linux stand-in guest,
whose ``kdtarget`` (KDCOM rules of docs/windows-facts.md) prints ``kdticks: line N`` every 0.2 s over
the emulated 16550 UART (COM1) and reports over COM2 when it gives up on the debugger and when a
break-in brings it back. Nobody listens on COM1 until it has given up, as when Windows booted with
``/debug on`` and no debugger: only a debugger that breaks in when it attaches gets lines again.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.guests.libvirt_vm.handoff import KdHandoff
from harness.guests.libvirt_vm.standin import standin_vm
from harness.guests.libvirt_vm.vm import VirtualMachine
from harness.kd.serial import Endpoint, KdSerialReader, TextSerialReader
from harness.kernel.events import DebugEvent
from harness.timeline import Timeline

pytestmark = pytest.mark.libvirt

PREFIX = "kcbkd"
LINE = re.compile(r"^kdticks: line (\d+)$")
GAVE_UP = re.compile(r"^kdtarget: debugger not present: gave up at line (\d+)$")
DROPPED = re.compile(r"^kdtarget: dropped line (\d+)$")
BREAKIN = re.compile(r"^kdtarget: break-in after line (\d+)$")


@pytest.fixture
def machine(libvirt_uri: str, vm_dir: Path) -> Iterator[VirtualMachine]:
    vm = standin_vm(libvirt_uri, vm_dir / "vm", mode="kdticks", prefix=PREFIX)
    vm.connect()
    yield vm
    vm.close()


def numbers(timeline: Timeline, pattern: re.Pattern[str] = LINE) -> list[int]:
    return [int(m.group(1)) for line in timeline.lines() if (m := pattern.match(line.text))]


def wait_numbers(timeline: Timeline, count: int, timeout: float, pattern: re.Pattern[str] = LINE) -> list[int]:
    timeline.wait_for(lambda events: True if len(numbers(timeline, pattern)) >= count else None, timeline.now() + timeout)
    return numbers(timeline, pattern)


def wait_lines(timeline: Timeline, count: int, timeout: float) -> None:
    timeline.wait_for(lambda events: True if len(timeline.lines()) >= count else None, timeline.now() + timeout)


def endpoint(port: Path | int | None) -> Endpoint:
    assert isinstance(port, Path)
    return Endpoint.parse(f"unix:{port}")


def test_a_debugger_that_attaches_after_the_kernel_gave_up_gets_every_line_printed_after_the_attach(
    machine: VirtualMachine, tmp_path: Path
) -> None:
    machine.boot()  # running at once, and nobody on COM1
    reports, kd_lines = Timeline(), Timeline()
    with TextSerialReader(endpoint(machine.spec.com2), reports, tmp_path / "com2.log"):
        gave_up = wait_numbers(reports, 1, 180, GAVE_UP)
        assert gave_up, f"kdtarget did not give up on the debugger: {[line.text for line in reports.lines()]}"
        assert len(wait_numbers(reports, 3, 30, DROPPED)) >= 3  # and it prints on, to nobody
        with KdSerialReader(endpoint(machine.spec.com1), kd_lines, tmp_path / "kd-raw.log"):
            arrived = wait_numbers(kd_lines, 25, 60)
        breakin, dropped = numbers(reports, BREAKIN), numbers(reports, DROPPED)
    assert arrived, "no line arrived after the debugger attached"
    # Every line the kernel printed after it noticed the debugger, in order and without a gap, from the line after
    # the break-in on; the lines it printed while nobody listened were dropped (not kept for later).
    assert arrived == list(range(arrived[0], arrived[0] + len(arrived)))
    assert breakin and arrived[0] == breakin[0] + 1, (breakin, arrived[:3])
    assert dropped == list(range(gave_up[0] + 1, arrived[0])), (gave_up, dropped, arrived[:3])


def test_a_paused_boot_with_the_debugger_attached_loses_nothing_from_line_1(machine: VirtualMachine, tmp_path: Path) -> None:
    machine.boot(paused=True)
    assert machine.state() == "paused"
    reports, kd_lines = Timeline(), Timeline()
    with (
        TextSerialReader(endpoint(machine.spec.com2), reports, tmp_path / "com2.log") as com2,
        KdSerialReader(endpoint(machine.spec.com1), kd_lines, tmp_path / "kd-raw.log") as kd,
    ):
        assert com2.wait_connected() and kd.wait_connected()
        machine.resume()
        arrived = wait_numbers(kd_lines, 15, 180)
    assert arrived[:15] == list(range(1, 16))
    assert numbers(reports, GAVE_UP) == []


def test_a_snapshot_of_a_kernel_that_gave_up_talks_again_after_every_revert(machine: VirtualMachine, tmp_path: Path) -> None:
    """What the harness did to every scenario: a running snapshot of a kernel that found no debugger. Per scenario
    (LibvirtGuest.start) the snapshot is reverted paused, the readers attach (the KD reader breaks in), the guest runs."""
    machine.boot()
    reports = Timeline()
    with TextSerialReader(endpoint(machine.spec.com2), reports, tmp_path / "com2.log"):
        assert wait_numbers(reports, 1, 180, GAVE_UP)
    machine.take_ready_snapshot()
    for round_ in range(2):
        machine.revert(paused=True)
        reports, kd_lines = Timeline(), Timeline()
        with (
            TextSerialReader(endpoint(machine.spec.com2), reports, tmp_path / f"com2-{round_}.log") as com2,
            KdSerialReader(endpoint(machine.spec.com1), kd_lines, tmp_path / f"kd-raw-{round_}.log") as kd,
        ):
            assert com2.wait_connected() and kd.wait_connected()
            machine.resume()
            arrived = wait_numbers(kd_lines, 10, 60)
            breakin = numbers(reports, BREAKIN)
        # The restored kernel stopped for the break-in, was continued, and printed every line after it.
        assert arrived and breakin and arrived == list(range(breakin[0] + 1, breakin[0] + 1 + len(arrived))), (breakin, arrived)
        stops = [event.summary for event in kd_lines.events() if isinstance(event, DebugEvent) and event.kind == "state-change"]
        assert len(stops) == 1 and stops[0].startswith("state change: exception 0x80000003") and stops[0].endswith(", continued")


def test_a_failed_vm_is_held_paused_and_a_debugger_on_the_printed_port_talks_to_its_kernel(machine: VirtualMachine, tmp_path: Path) -> None:
    """--keep-failed (LibvirtGuest.hold_failed): the harness's reader lets go of COM1, the VM is paused, and COM1 is
    served on a loopback TCP port; a debugger attaching there (here the harness's own KD reader, by the address the
    printed command line names) resumes the VM, breaks in and gets the kernel's packets."""
    machine.boot(paused=True)
    timeline = Timeline()
    with KdSerialReader(endpoint(machine.spec.com1), timeline, tmp_path / "kd-raw.log") as kd:
        assert kd.wait_connected()
        machine.resume()
        before = wait_numbers(timeline, 3, 180)
    assert before[:3] == [1, 2, 3]
    with KdHandoff(machine.pause, machine.resume, endpoint(machine.spec.com1)) as handoff:
        assert machine.state() == "paused"
        [windbg, kd_line] = handoff.commands()
        assert windbg == f"windbg -k com:ipport={handoff.port},port=127.0.0.1" and kd_line.startswith("kd -k com:ipport=")
        port = int(windbg.split("ipport=")[1].split(",")[0])
        debugger = Timeline()
        with KdSerialReader(Endpoint.parse(f"tcp:127.0.0.1:{port}"), debugger, tmp_path / "debugger.raw", reconnect=False) as client:
            assert client.wait_connected()
            after = wait_numbers(debugger, 5, 120)
        assert machine.state() == "running" and handoff.connections == 1
        assert handoff.bytes_from_guest > 0 and handoff.bytes_to_guest > 0  # ACKs, the break-in and its continue went in
    # The kernel went on from where it was held: its numbering continues, in order, without a gap.
    assert after == list(range(after[0], after[0] + len(after))) and after[0] > before[-1]
    assert any(event.kind == "attach" for event in debugger.events() if isinstance(event, DebugEvent))
