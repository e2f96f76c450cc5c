"""VM figures with the Linux stand-in guest under real libvirtd + QEMU (run with `make bench`).

Prints, per round: cold boot to serial-ready (domain start until the guest's
first line on COM1), and revert to serial-ready (restore of the running
snapshot, paused; reader re-attached; resume; until the next line on COM1).
The stand-in boots in seconds; a Windows guest's cold boot is minutes, while
its revert costs about the same as here plus the memory size to load.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.guests.libvirt_vm.standin import standin_vm  # noqa: E402
from harness.kd.serial import Endpoint, TextSerialReader  # noqa: E402
from harness.kernel.events import Event, LogLine  # noqa: E402
from harness.timeline import Timeline  # noqa: E402


def next_line(timeline: Timeline, after: int, timeout: float = 120.0) -> float:
    """Seconds (timeline clock) when the first line past index ``after`` arrived."""

    def arrived(events: list[Event]) -> float | None:
        lines = [event for event in events if isinstance(event, LogLine)]
        return lines[after].t if len(lines) > after else None

    found = timeline.wait_for(arrived, timeline.now() + timeout)
    if found is None:
        raise RuntimeError("no serial output from the stand-in guest")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
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
                seen = len(timeline.lines())
                connections = reader.connections
                started = timeline.now()
                vm.revert(paused=True)
                reader.wait_connected(connections + 1, 30)
                vm.resume()
                revert.append(next_line(timeline, seen) - started)
        finally:
            vm.close()

    def summary(values: list[float]) -> str:
        return f"median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"

    print(f"stand-in VM cold boot to serial-ready: {summary(cold)}")
    print(f"stand-in VM snapshot revert to serial-ready: {summary(revert)}")
    print(f"scenario overhead, revert vs cold boot: {statistics.median(revert):.2f} s vs {statistics.median(cold):.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
