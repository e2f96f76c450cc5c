"""Scale-out figures on this machine (run with `make bench`), measured in one run so the ratios compare like with like.

Prints, for the shipped scenarios on the embedded guest (median of --rounds rounds):
  1. suite wall time at -j 1 and -j N (default 2), and their ratio;
  2. the per-scenario overhead with and without the warm pool at -j 1: wall time minus the time the scenarios'
     steps themselves took, divided by the number of scenarios (guest start and teardown, installs, reports);
  3. what bounds the parallel run: the steps' own time summed over the scenarios, and the CPU-seconds the whole
     machine spent during each run (/proc/stat; run it on a quiet machine);
  4. what a worker's own Wine prefix costs: a clone of the prepared prefix (hard links) against a full copy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.config import Settings  # noqa: E402
from harness.guests import open_lanes  # noqa: E402
from harness.guests.wine.prefix import GuestFiles, WinePrefix, WineTools  # noqa: E402
from harness.runner import ScenarioResult  # noqa: E402
from harness.scenario.loader import discover, load_scenario  # noqa: E402
from harness.suite import Suite, expand  # noqa: E402


def steps_time(result: ScenarioResult) -> float:
    """How long the scenario's steps ran: from its first step's start to its last step's end."""
    ran = [step for step in result.steps if step.state != "skipped"]
    return ran[-1].end - ran[0].start if ran else 0.0


class Round(NamedTuple):
    wall: float  # seconds
    overhead: float  # seconds a scenario, beyond its steps
    passed: int
    steps: float  # the scenarios' steps' own seconds, summed
    cpu: float  # CPU-seconds the machine spent (user, nice, system) during the run


def cpu_seconds() -> float:
    """CPU-seconds this machine has spent so far (user, nice, system; every process, not only our children)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return sum(int(value) for value in fields[1:4]) / os.sysconf("SC_CLK_TCK")


def suite_round(jobs: int, warm: bool, out: Path, history: dict[str, float]) -> Round:
    """One run of the shipped scenarios, as `harness run` does it (the longest items first, by the durations in
    ``history``, which it updates)."""
    settings = Settings.defaults(out_dir=out)
    scenarios = [load_scenario(path) for path in discover([ROOT / "scenarios"])]
    with open_lanes(settings) as lanes:
        items = expand(scenarios, {None: settings.drivers_dir})
        started, cpu = time.monotonic(), cpu_seconds()
        results = Suite(items, lanes, out, jobs=jobs, warm=warm, history=history).run().results
        wall, cpu = time.monotonic() - started, cpu_seconds() - cpu
    history.update({result.key: result.duration for result in results})
    steps = sum(steps_time(result) for result in results)
    return Round(wall, (wall * jobs - steps) / len(results), sum(result.passed for result in results), steps, cpu)


def clone_cost(out: Path) -> tuple[float, float]:
    """(seconds for a hard-link clone of the prepared Wine prefix, seconds for a full copy of it)."""
    settings = Settings.defaults()
    prefix = WinePrefix(settings.cache_dir / "wine-prefix", WineTools.find(), GuestFiles.in_dir(settings.build_dir / "wine"))
    prefix.ensure()
    index = 99  # far above any worker's index, so no worker's clone is touched
    clone = prefix.root.with_name(f"{prefix.root.name}-{index}")
    shutil.rmtree(clone, ignore_errors=True)
    started = time.monotonic()
    prefix.clone(index)
    cloned = time.monotonic() - started
    shutil.rmtree(clone, ignore_errors=True)
    started = time.monotonic()
    shutil.copytree(prefix.root, out / "full-copy", symlinks=True)
    copied = time.monotonic() - started
    shutil.rmtree(out / "full-copy", ignore_errors=True)
    return cloned, copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="the parallel run's -j (default 2)")
    args = parser.parse_args()
    runs: dict[tuple[str, bool], list[Round]] = {("j1", True): [], ("jN", True): [], ("j1", False): []}
    with tempfile.TemporaryDirectory() as folder:
        history: dict[str, float] = {}
        suite_round(1, True, Path(folder) / "warm-up", history)  # prefixes and clones made, caches warm, durations known
        for index in range(args.rounds):  # interleaved: a slow moment of the machine hits every variant alike
            for (label, warm), samples in runs.items():
                jobs = 1 if label == "j1" else args.jobs
                samples.append(suite_round(jobs, warm, Path(folder) / f"{label}-{warm}-{index}", history))
        cloned, copied = clone_cost(Path(folder))
    wall = {key: statistics.median(sample.wall for sample in samples) for key, samples in runs.items()}
    overhead = {key: statistics.median(sample.overhead for sample in samples) for key, samples in runs.items()}
    passed = {key: min(sample.passed for sample in samples) for key, samples in runs.items()}
    steps = statistics.median(sample.steps for sample in runs[("j1", True)])
    cpu = {key: statistics.median(sample.cpu for sample in samples) for key, samples in runs.items()}
    n = len(discover([ROOT / "scenarios"]))
    print(f"shipped scenarios: {n}; medians of {args.rounds} rounds; passed in every round: {passed}")
    print(f"suite wall time  -j 1: {wall[('j1', True)]:.1f} s   -j {args.jobs}: {wall[('jN', True)]:.1f} s   "
          f"ratio -j {args.jobs} / -j 1: {wall[('jN', True)] / wall[('j1', True)]:.2f}")  # fmt: skip
    cold, hot = overhead[("j1", False)], overhead[("j1", True)]
    print(f"per-scenario overhead at -j 1   without warm pool: {cold:.2f} s   with warm pool: {hot:.2f} s")
    print(f"  (suite wall time at -j 1 without warm pool {wall[('j1', False)]:.1f} s, with {wall[('j1', True)]:.1f} s)")
    print(f"what bounds -j {args.jobs}: the steps add up to {steps:.1f} s ({steps / args.jobs:.1f} s a worker); CPU-seconds "
          f"spent at -j 1: {cpu[('j1', True)]:.1f}, at -j {args.jobs}: {cpu[('jN', True)]:.1f} "
          f"(of {wall[('jN', True)] * (os.cpu_count() or 1):.1f} there were)")  # fmt: skip
    print(f"a worker's Wine prefix: clone (hard links) {cloned:.2f} s   full copy {copied:.2f} s")


if __name__ == "__main__":
    main()
