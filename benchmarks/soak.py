"""False failures of the harness itself, per 1,000 scenario runs (run with `make soak`; long).

The shipped scenarios all pass on a healthy harness, so every run that does not pass is a false failure.
They run again and again on the embedded guest, first on an idle machine, then with every core kept busy
by spinning processes; then come stand-in VM revert cycles (real libvirtd + QEMU) and runs of the KD test
over a real QEMU serial port. Prints each false failure with its reason and keeps its reports and raw logs
under --out; the reports of passing runs are deleted as it goes.

    .venv/bin/python benchmarks/soak.py [--idle-runs 500] [--busy-runs 500] [--vm-cycles 20] [--kd-runs 20]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.config import Settings, default_state_dir  # noqa: E402
from harness.guests import open_lanes  # noqa: E402
from harness.guests.libvirt_vm.standin import standin_vm  # noqa: E402
from harness.kd.serial import Endpoint, TextSerialReader  # noqa: E402
from harness.scenario.loader import discover, load_scenario  # noqa: E402
from harness.suite import ATTEMPT, Suite, expand  # noqa: E402
from harness.timeline import Timeline  # noqa: E402

TICK = re.compile(r"^kcb-standin: tick (\d+)$")


@dataclass(frozen=True)
class Failure:
    what: str
    reason: str
    evidence: Path | None = None


@contextlib.contextmanager
def busy_cores(count: int) -> Iterator[None]:
    """``count`` processes that spin on a core each, for as long as the block runs."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def scenario_runs(runs: int, out: Path, label: str, jobs: int) -> tuple[int, list[Failure]]:
    """Run the shipped scenarios as `harness run -j JOBS` does (the suite runner, warm pool) until ``runs`` scenario runs
    are done; the false failures (infra retries count: a retried run is a false failure that a user would not see)."""
    settings = Settings.defaults(out_dir=out)
    scenarios = [load_scenario(path) for path in discover([ROOT / "scenarios"])]
    failures: list[Failure] = []
    done = 0
    with open_lanes(settings) as lanes:
        while done < runs:
            items = expand(scenarios[: runs - done], {None: settings.drivers_dir})
            folder = out / f"{label}-{done + 1:04d}"
            results = Suite(items, lanes, folder, jobs=jobs, warm=True).run().results
            done += len(results)
            for result in results:
                retried = (result.run_dir / ATTEMPT).exists()
                if not result.passed or retried:
                    reason = f"{result.outcome}: {result.message}" + (" (after an infra retry)" if retried else "")
                    failures.append(Failure(f"{label} {result.id}", reason, result.run_dir))
                    print(f"  false failure: {failures[-1].what}: {failures[-1].reason}", flush=True)
            if all(result.passed for result in results):
                shutil.rmtree(folder, ignore_errors=True)
            print(f"  {label}: {done}/{runs} scenario runs, {len(failures)} false failures", flush=True)
    return done, failures


def vm_revert_cycles(cycles: int, out: Path) -> list[Failure]:
    """Boot the stand-in, take its running snapshot, revert ``cycles`` times: each time the reader re-attaches and
    the guest's ticks go on from the snapshot, none repeated or lost."""
    subprocess.run([str(ROOT / "scripts" / "start-libvirtd.sh")], check=True, stdout=subprocess.DEVNULL)
    work = default_state_dir() / "soak" / f"vm-{os.getpid()}"
    vm = standin_vm("qemu:///system", work / "vm", mode="text", prefix="kcbsoak")
    failures: list[Failure] = []
    timeline = Timeline()

    def ticks(since: int) -> list[int]:
        return [int(m.group(1)) for line in timeline.lines()[since:] if (m := TICK.match(line.text))]

    vm.connect()
    try:
        vm.boot()
        assert vm.spec.com1 is not None
        with TextSerialReader(Endpoint.parse(f"unix:{vm.spec.com1}"), timeline, out / "vm-com1.log") as reader:
            timeline.wait_for(lambda events: True if len(ticks(0)) >= 3 else None, timeline.now() + 120)
            vm.take_ready_snapshot()
            for cycle in range(1, cycles + 1):
                try:
                    connections = reader.connections
                    vm.revert(paused=True)
                    if not reader.wait_connected(connections + 1, timeout=30):
                        raise RuntimeError("the serial reader did not re-attach")
                    mark = len(timeline.lines())
                    vm.resume()
                    timeline.wait_for(lambda events: True if len(ticks(mark)) >= 3 else None, timeline.now() + 60)  # noqa: B023
                    seen = ticks(mark)
                    if len(seen) < 3 or seen != list(range(seen[0], seen[0] + len(seen))) or seen[0] < 3:
                        raise RuntimeError(f"ticks after the revert: {seen[:10]}")
                except Exception as error:  # noqa: BLE001 - every way a cycle can fail is counted and shown
                    failures.append(Failure(f"revert cycle {cycle}", f"{type(error).__name__}: {error}"))
                    print(f"  failure: {failures[-1].what}: {failures[-1].reason}", flush=True)
        print(f"  VM: {cycles} revert cycles, {len(failures)} failures", flush=True)
    finally:
        vm.close()
        shutil.rmtree(work, ignore_errors=True)
    return failures


def kd_runs(runs: int, out: Path) -> list[Failure]:
    """The KD-over-a-real-QEMU-serial-port test, ``runs`` times (pytest, as CI runs it)."""
    failures: list[Failure] = []
    for run in range(1, runs + 1):
        report = out / f"kd-{run:03d}.xml"
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", "tests/integration/test_kd_qemu.py"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        cases = list(ET.parse(report).getroot().iter("testcase")) if report.is_file() else []
        bad = [case for case in cases if case.find("failure") is not None or case.find("error") is not None]
        if not cases or bad:
            reason = "no test ran" if not cases else "; ".join((c.find("failure") or c.find("error")).get("message", "")[:300] for c in bad)  # type: ignore[union-attr]
            failures.append(Failure(f"KD run {run}", reason, report))
            print(f"  failure: {failures[-1].what}: {reason}", flush=True)
        else:
            report.unlink()
    print(f"  KD: {runs} runs, {len(failures)} failures", flush=True)
    return failures


def per_thousand(failures: int, runs: int) -> str:
    return f"{1000 * failures / runs:.1f}" if runs else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle-runs", type=int, default=500, help="scenario runs on an idle machine (default 500)")
    parser.add_argument("--busy-runs", type=int, default=500, help="scenario runs with every core busy (default 500)")
    parser.add_argument("--vm-cycles", type=int, default=20, help="stand-in VM revert cycles (default 20)")
    parser.add_argument("--kd-runs", type=int, default=20, help="runs of the KD test over a real QEMU serial port (default 20)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "soak", help="where failures' reports are kept")
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="scenarios at once (default: the CPU cores)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    cores = os.cpu_count() or 1
    print(f"soak: {args.idle_runs} idle + {args.busy_runs} busy scenario runs at -j {args.jobs}, {args.vm_cycles} VM revert cycles, "
          f"{args.kd_runs} KD runs")  # fmt: skip
    idle, idle_failures = scenario_runs(args.idle_runs, args.out, "idle", args.jobs)
    with busy_cores(cores):
        busy, busy_failures = scenario_runs(args.busy_runs, args.out, "busy", args.jobs)
    vm_failures = vm_revert_cycles(args.vm_cycles, args.out) if args.vm_cycles else []
    kd_failures = kd_runs(args.kd_runs, args.out) if args.kd_runs else []
    print(f"\nsoak results ({time.monotonic() - started:.0f}s, {cores} cores):")
    for label, runs, failures in (("idle", idle, idle_failures), (f"{cores} cores busy", busy, busy_failures)):
        rate = per_thousand(len(failures), runs)
        print(f"  embedded guest, {label + ':':<16} {runs} scenario runs, {len(failures)} false failures = {rate} per 1,000")
    print(f"  stand-in VM revert cycles:        {args.vm_cycles}, {len(vm_failures)} failures")
    print(f"  KD over a real QEMU serial port:  {args.kd_runs} runs, {len(kd_failures)} failures")
    for failure in idle_failures + busy_failures + vm_failures + kd_failures:
        print(f"  - {failure.what}: {failure.reason}" + (f" ({failure.evidence})" if failure.evidence else ""))


if __name__ == "__main__":
    main()
