"""What triage costs on the embedded guest (run with `make bench`, or alone: .venv/bin/python benchmarks/triage.py).

Prints, each as the median (and max) of several runs:
  1. the crash report inside the driver host: from its first to its last kcb-triage line (Wine's +timestamp,
     1 ms resolution), for the seeded bug (unloaded receiver called from the sender's thread);
  2. naming that report on the host (addr2line on the debug copies, exports of Wine's DLLs);
  3. a hang's stack report: from the harness asking (a one-shot kcbagent.exe in the session) until the report
     of every thread of the driver host is in the timeline, for the stall driver.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.config import Settings  # noqa: E402
from harness.guests import open_guests  # noqa: E402
from harness.guests.wine.guest import SESSION_DEBUG, WineGuest  # noqa: E402
from harness.guests.wine.log import guest_timestamp  # noqa: E402
from harness.guests.wine.prefix import GuestFiles, WinePrefix, WineTools  # noqa: E402
from harness.kernel.stacks import StackReport  # noqa: E402
from harness.runner import run_scenario  # noqa: E402
from harness.scenario.loader import load_scenario  # noqa: E402
from harness.timeline import Timeline  # noqa: E402
from harness.triage.analyse import DriverModule, analyse  # noqa: E402
from harness.triage.symbols import Symbolizer  # noqa: E402

FAILING = ROOT / "tests" / "data" / "failing"


class TimestampedGuest(WineGuest):
    session_debug = SESSION_DEBUG + ",+timestamp"


class TimedGuest(WineGuest):
    """Records how long each stack report took."""

    report_times: list[float] = []

    def report_stacks(self, timeout: float) -> None:
        started = time.monotonic()
        super().report_stacks(timeout)
        self.report_times.append(time.monotonic() - started)


def summary(values: list[float]) -> str:
    def ms(value: float) -> str:
        return f"{value * 1000:.0f} ms" if value >= 0.001 else "< 1 ms"

    return f"median {ms(statistics.median(values))}, max {ms(max(values))}, n={len(values)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    settings = Settings.defaults()
    seeded = settings.build_dir / "drivers-seeded-bug"
    walk_times: list[float] = []
    naming_times: list[float] = []
    with open_guests(settings), tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        prefix = WinePrefix(settings.cache_dir / "wine-prefix", WineTools.find(), GuestFiles.in_dir(settings.build_dir / "wine"))
        crash = load_scenario(FAILING / "unload-without-unregister.yaml")
        for index in range(args.rounds):
            result = run_scenario(crash, lambda timeline, run_dir: TimestampedGuest(timeline, run_dir, prefix), seeded, out / f"c{index}")
            lines = result.raw_log.read_text(errors="replace").splitlines()
            begin = next(guest_timestamp(line) for line in lines if "kcb-triage: crash begin" in line)
            end = next(guest_timestamp(line) for line in lines if "kcb-triage: crash end" in line)
            assert begin is not None and end is not None, "no timestamps"
            walk_times.append(end - begin)
            report = next(event for event in result.events if isinstance(event, StackReport))
            drivers = [DriverModule("sysTest.sys", "sender.sys", "sysTest"), DriverModule("sysRecv1.sys", "receiver.sys", "sysRecv1")]
            started = time.monotonic()
            names = Symbolizer({"sender.sys": seeded / "sender.sys", "receiver.sys": seeded / "receiver.sys"}, [],
                               WineGuest(Timeline(), out, prefix).system_images())  # fmt: skip
            triage = analyse(report, drivers, names, {"sysRecv1": 4})
            naming_times.append(time.monotonic() - started)
            assert triage.signature == "0xC0000005 receiver.sys!OnNotify (unloaded)", triage.signature
        stall = load_scenario(FAILING / "stalled-driver-entry.yaml")
        for index in range(args.rounds):
            result = run_scenario(
                stall, lambda timeline, run_dir: TimedGuest(timeline, run_dir, prefix), settings.drivers_dir, out / f"h{index}"
            )
            assert result.signature == "hang stall.sys!DriverEntry", result.signature
    print(f"crash report inside the driver host (guest clock): {summary(walk_times)}")
    print(f"naming the crash report on the host:               {summary(naming_times)}")
    print(f"hang: asking for and receiving every thread's stack: {summary(TimedGuest.report_times)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
