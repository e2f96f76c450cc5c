"""VM figures with the Linux stand-in guest under real libvirtd + QEMU (run with `make bench`).

Prints, per round: cold boot to serial-ready (domain start until the guest's
first line on COM1), and revert to serial-ready (restore of the running
snapshot, paused; reader re-attached; resume; until the next line on COM1).
The stand-in boots in seconds; a Windows guest's cold boot is minutes, while
its revert costs about the same as here plus the memory size to load.
Then, in ssh mode: from the guest's crash (it writes its dump and resets, as
Windows with AutoReboot) until the dump is pulled over SSH into this machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.guests.libvirt_vm.dumps import collect_dumps  # noqa: E402
from harness.guests.libvirt_vm.host import free_port  # noqa: E402
from harness.guests.libvirt_vm.standin import standin_connector, standin_vm  # noqa: E402
from harness.kd.serial import Endpoint, TextSerialReader  # noqa: E402
from harness.kernel.events import Event, LogLine  # noqa: E402
from harness.timeline import Timeline  # noqa: E402
from harness.transports.commands import posix_list_files  # noqa: E402


def next_line(timeline: Timeline, after: int, timeout: float = 120.0) -> float:
    """Seconds (timeline clock) when the first line past index ``after`` arrived."""

    def arrived(events: list[Event]) -> float | None:
        lines = [event for event in events if isinstance(event, LogLine)]
        return lines[after].t if len(lines) > after else None

    found = timeline.wait_for(arrived, timeline.now() + timeout)
    if found is None:
        raise RuntimeError("no serial output from the stand-in guest")
    return found


def crash_dump_round(work: Path) -> float:
    """Seconds from the guest's crash (a reset after writing its dump) until the dump is on this machine."""
    port = free_port()
    vm = standin_vm("qemu:///system", work, mode="ssh", prefix="kcbbench", ssh_port=port)
    connect = standin_connector(port, work / "known_hosts", pause=0.5)
    listing = posix_list_files("/dumps", ".dmp")
    vm.connect()
    try:
        vm.boot()
        with connect(180) as transport:
            transport.run("(sleep 1; /kcb-crash bench) > /dev/null 2>&1 &", 30)
            crashed = time.monotonic() + 1.0
        while not any(event.event == "rebooted" for event in vm.events):  # as the guest sees it: a crash event
            if time.monotonic() > crashed + 60:
                raise RuntimeError("the stand-in did not reset")
            time.sleep(0.05)
        evidence = collect_dumps(connect, listing, work / "dumps", 180)
        if len(evidence.files) != 1:
            raise RuntimeError(f"no dump: {evidence.note}")
        return time.monotonic() - crashed
    finally:
        vm.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dump-rounds", type=int, default=3, help="crash-dump rounds (stand-in in ssh mode)")
    args = parser.parse_args()
    subprocess.run([str(ROOT / "scripts" / "start-libvirtd.sh")], check=True, capture_output=True)
    work = ROOT / "build" / "bench-vm"
    cold: list[float] = []
    revert: list[float] = []
    for _ in range(args.rounds):
        vm = standin_vm("qemu:///system", work, mode="text", prefix="kcbbench")
        vm.connect()
        try:
            timeline = Timeline()
            started = timeline.now()
            vm.boot()
            assert vm.spec.com1 is not None
            reader = TextSerialReader(Endpoint.parse(f"unix:{vm.spec.com1}"), timeline, work / "com1-bench.log")
            with reader:
                cold.append(next_line(timeline, 0) - started)
                next_line(timeline, 2)
                vm.take_ready_snapshot()
                connections = reader.connections
                started = timeline.now()
                vm.revert(paused=True)
                reader.wait_connected(connections + 1, 30)
                seen = len(timeline.lines())  # counted once re-attached: nothing the old QEMU printed is taken for the new
                vm.resume()
                revert.append(next_line(timeline, seen) - started)
        finally:
            vm.close()

    dumps = [crash_dump_round(work) for _ in range(args.dump_rounds)]

    def summary(values: list[float]) -> str:
        return f"median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"

    print(f"stand-in VM cold boot to serial-ready: {summary(cold)}")
    print(f"stand-in VM snapshot revert to serial-ready: {summary(revert)}")
    print(f"scenario overhead, revert vs cold boot: {statistics.median(revert):.2f} s vs {statistics.median(cold):.2f} s")
    if dumps:
        print(f"stand-in VM crash -> restarted -> dump pulled over SSH: {summary(dumps)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
