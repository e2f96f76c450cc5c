"""Figures for the embedded guest, measured on this machine (run with `make bench`).

Prints:
  1. wall time of the whole scenario suite (scenarios/, one fresh guest each);
  2. median guest start + teardown time (a fresh Wine session with the anchor driver, nothing else);
  3. latency from a DbgPrint in the guest to the expectation that waits for it matching,
     using Wine's +timestamp (its CLOCK_MONOTONIC_RAW tick, 1 ms resolution) on the guest side.
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

from stats import latency_summary  # noqa: E402

from harness.config import Settings  # noqa: E402
from harness.expect.engine import check_presence  # noqa: E402
from harness.guests import open_guests  # noqa: E402
from harness.guests.base import DriverInstall  # noqa: E402
from harness.guests.wine.guest import SESSION_DEBUG, WineGuest  # noqa: E402
from harness.guests.wine.log import guest_timestamp, parse_line  # noqa: E402
from harness.guests.wine.prefix import GuestFiles, WinePrefix, WineTools  # noqa: E402
from harness.kernel.events import Event, LogLine  # noqa: E402
from harness.runner import run_scenario  # noqa: E402
from harness.scenario.loader import discover, load_scenario  # noqa: E402
from harness.scenario.model import Count, Presence  # noqa: E402
from harness.timeline import Timeline  # noqa: E402

NOTIFY = "[sysRecv1]:get notify ulType:(1)\tulValue:(hello)"


def raw_clock() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC_RAW)


class TimestampedGuest(WineGuest):
    session_debug = SESSION_DEBUG + ",+timestamp"


def suite_wall_time(settings: Settings, out: Path) -> tuple[float, int, int]:
    scenarios = [load_scenario(path) for path in discover([ROOT / "scenarios"])]
    with open_guests(settings) as factory:
        started = time.monotonic()
        passed = sum(run_scenario(s, factory, settings.drivers_dir, out).passed for s in scenarios)
        return time.monotonic() - started, passed, len(scenarios)


def guest_overhead(prefix: WinePrefix, out: Path, rounds: int) -> list[float]:
    times = []
    for index in range(rounds):
        started = time.monotonic()
        with WineGuest(Timeline(), out / f"overhead-{index}", prefix):
            pass
        times.append(time.monotonic() - started)
    return times


def dbgprint_to_match(prefix: WinePrefix, settings: Settings, out: Path, samples: int) -> list[float]:
    timeline = Timeline(clock=raw_clock)
    guest = TimestampedGuest(timeline, out / "latency", prefix)
    latencies: list[float] = []
    with guest:
        guest.install(DriverInstall("sysTest", settings.drivers_dir / "sender.sys", {"PeriodMs": 50}), 30)
        guest.install(DriverInstall("sysRecv1", settings.drivers_dir / "receiver.sys"), 30)
        guest.load("sysTest", 30)
        guest.load("sysRecv1", 30)
        matched: list[float] = []
        for count in range(1, samples + 1):
            spec = Presence(line=NOTIFY, count=Count(min=count))

            def decided(events: list[Event], spec: Presence = spec) -> bool | None:
                lines = [event for event in events if isinstance(event, LogLine)]
                return True if check_presence(spec, lines, 0.0, timeline.now(), 1e9).state == "pass" else None

            timeline.wait_for(decided, timeline.now() + 10)
            matched.append(raw_clock())
    # Pair the n-th notify line's guest timestamp (from the raw log) with the n-th match.
    printed = []
    for raw in guest.raw_log.read_text(errors="replace").splitlines():
        event = parse_line(raw, 0.0)
        stamp = guest_timestamp(raw)
        if isinstance(event, LogLine) and event.text == NOTIFY and stamp is not None:
            printed.append(stamp)
    for when_printed, when_matched in zip(printed, matched, strict=False):
        latencies.append(when_matched - when_printed)
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="guest start+teardown rounds")
    parser.add_argument("--samples", type=int, default=100, help="DbgPrint-to-match samples")
    args = parser.parse_args()
    settings = Settings.defaults()
    prefix = WinePrefix(settings.cache_dir / "wine-prefix", WineTools.find(), GuestFiles.in_dir(settings.build_dir / "wine"))
    prefix.ensure()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        wall, passed, total = suite_wall_time(settings, out)
        print(f"scenario suite: {total} scenarios, {passed} passed, wall time {wall:.1f} s")
        overhead = guest_overhead(prefix, out, args.rounds)
        print(
            f"guest start+teardown: median {statistics.median(overhead):.3f} s "
            f"(min {min(overhead):.3f}, max {max(overhead):.3f}, n={len(overhead)})"
        )
        latency = dbgprint_to_match(prefix, settings, out, args.samples)
        if latency:
            print(f"DbgPrint -> expectation match: {latency_summary(latency, digits=1)}, guest clock 1 ms resolution")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
