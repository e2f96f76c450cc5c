"""Figures for run: steps on the embedded guest (run with `make bench`).

Prints, over N runs of `ioctl-client.exe hello` against kcbioctl.sys in one Wine session:
  1. wall time of Guest.run_program (copy in, start the runner, run, end), median and p95;
  2. how often the program's line printed just *before* DeviceIoControl ("client: sending") arrived after the
     driver's line it causes ("got IOCTL"): the ordering race scenarios/README.md describes (program -> driver);
  3. how often the program's line printed *after* DeviceIoControl returned arrived before the driver's line
     (driver -> program; the design says never).
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
from harness.guests.base import DriverInstall  # noqa: E402
from harness.kernel.events import KERNEL, LogLine  # noqa: E402
from harness.timeline import Timeline  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50, help="runs (default 50)")
    options = parser.parse_args()
    settings = Settings.defaults()
    client = settings.drivers_dir / "ioctl-client.exe"
    durations: list[float] = []
    before_late = after_early = 0
    with open_guests(settings) as factory, tempfile.TemporaryDirectory() as folder:
        timeline = Timeline()
        guest = factory(timeline, Path(folder))
        with guest:
            guest.install(DriverInstall(service="kcbIoctl", image=settings.drivers_dir / "kcbioctl.sys"), 30)
            guest.load("kcbIoctl", 30)
            for index in range(options.n):
                first = len(timeline.lines())
                started = time.perf_counter()
                result = guest.run_program(client, [f"run{index}"], 30)
                durations.append(time.perf_counter() - started)
                assert result.exit_code == 0, result
                lines = timeline.lines()[first:]

                def position(kernel: bool, prefix: str, lines: list[LogLine] = lines) -> int:
                    return next(n for n, line in enumerate(lines) if (line.source == KERNEL) == kernel and line.text.startswith(prefix))

                got = position(True, "kcbioctl: got IOCTL")
                before_late += position(False, "client: sending") > got
                after_early += position(False, "client: sent") < got
    ordered = sorted(durations)
    print(f"run_program wall time over {options.n} runs: median {statistics.median(ordered) * 1000:.0f} ms, "
          f"p95 {ordered[int(len(ordered) * 0.95) - 1] * 1000:.0f} ms")  # fmt: skip
    print(f"program line printed before DeviceIoControl, seen after the driver's line: {before_late} of {options.n}")
    print(f"program line printed after DeviceIoControl returned, seen before the driver's line: {after_early} of {options.n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
