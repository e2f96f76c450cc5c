"""What reading a stopped kernel over KD costs (run with `make bench`, or alone: .venv/bin/python benchmarks/kd_triage.py).

Prints, as the median (and max) of several runs:
  1. in process (the KD host against the emulator, no I/O): from the bugcheck's break to the stacks read, in
     requests and CPU seconds, with the drivers' unwind data from their files and from the kernel's memory;
  2. over a real serial port (QEMU TCG boots the stand-in guest, whose kdtarget serves the same synthetic kernel
     through the emulated 16550 at 115200 baud): from the bugcheck on the timeline to the stacks on the timeline;
  3. naming them on the host (addr2line on the debug copies, the synthetic kernel's exports): to the signature.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.kd.emulator import KdTarget  # noqa: E402
from harness.kd.serial import Endpoint, KdSerialReader  # noqa: E402
from harness.kd.session import KdHost, KdStacks  # noqa: E402
from harness.kd.synthetic import STANDIN_RECEIVER, STANDIN_SENDER, DriverFile, locate_null_deref_sites, null_deref_machine  # noqa: E402
from harness.kernel.events import GuestCrash, StackReport  # noqa: E402
from harness.timeline import Timeline  # noqa: E402
from harness.triage.analyse import DriverModule, analyse  # noqa: E402
from harness.triage.pe import PeImage  # noqa: E402
from harness.triage.symbols import Symbolizer  # noqa: E402
from tests.unit.test_kd_link import pump  # noqa: E402

NULL_DEREF = ROOT / "build" / "drivers-null-deref"
STANDIN = ROOT / "build" / "standin"
DRIVERS = [DriverModule("sysRecv1.sys", "receiver.sys", "sysRecv1"), DriverModule("sysTest.sys", "sender.sys", "sysTest")]


def figure(name: str, values: list[float], unit: str = "s", scale: float = 1.0) -> None:
    sys.stdout.write(
        f"{name}: median {statistics.median(values) * scale:.3f} {unit}, max {max(values) * scale:.3f} {unit} ({len(values)} runs)\n"
    )


def in_process(runs: int) -> None:
    sites = locate_null_deref_sites(NULL_DEREF / "receiver.debug", NULL_DEREF / "sender.debug")
    receiver = DriverFile(STANDIN_RECEIVER.name, (NULL_DEREF / "receiver.sys").read_bytes(), STANDIN_RECEIVER.base)
    sender = DriverFile(STANDIN_SENDER.name, (NULL_DEREF / "sender.sys").read_bytes(), STANDIN_SENDER.base)
    machine = null_deref_machine(receiver, sender, sites)
    for with_files in (True, False):
        seconds, requests = [], []
        for _ in range(runs):
            host, target = KdHost(), KdTarget(machine=machine)
            if with_files:
                host.images = {"sysrecv1.sys": PeImage(NULL_DEREF / "receiver.sys"), "systest.sys": PeImage(NULL_DEREF / "sender.sys")}
            target.load_machine_modules()
            pump(host, target)
            target.crash()
            started = time.process_time()
            [found] = [event for event in pump(host, target, rounds=5000) if isinstance(event, KdStacks)]
            seconds.append(time.process_time() - started)
            requests.append(found.requests)
        where = "from the drivers' files" if with_files else "from the kernel's memory"
        figure(f"in process, driver unwind data {where}: requests {statistics.median(requests):.0f}; CPU", seconds, "ms", 1000)


def over_qemu(runs: int, tmp: Path) -> list[StackReport]:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None or not (STANDIN / "kd" / "kdmachine.bin").is_file():
        sys.stdout.write("over QEMU: skipped (qemu-system-x86_64 or the stand-in's kd machine is missing: make standin)\n")
        return []
    waits, reports = [], []
    for run in range(runs):
        folder = tmp / f"qemu{run}"
        folder.mkdir()
        kd_sock = folder / "kd.sock"
        command = [
            qemu, "-accel", "tcg", "-m", "256", "-nodefaults", "-display", "none", "-no-reboot",
            "-kernel", str(STANDIN / "vmlinuz"), "-initrd", str(STANDIN / "initramfs.cpio.gz"),
            "-append", "console=ttyS1 quiet kcb.mode=kd kcb.notifies=1",
            "-chardev", f"socket,id=kd,path={kd_sock},server=on,wait=on", "-serial", "chardev:kd", "-serial", "null",
        ]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not kd_sock.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            timeline = Timeline()
            with KdSerialReader(Endpoint("unix", str(kd_sock)), timeline, folder / "kd-raw.log", reconnect=False):
                report = timeline.wait_for(
                    lambda events: next((event for event in events if isinstance(event, StackReport)), None), timeline.now() + 120
                )
                crash = next(event for event in timeline.events() if isinstance(event, GuestCrash))
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        if report is not None:
            waits.append(report.t - crash.t)
            reports.append(report)
    if waits:
        figure("over QEMU's serial port (115200 baud): bugcheck on the timeline -> stacks on the timeline", waits)
    return reports


def naming(reports: list[StackReport]) -> None:
    if not reports:
        return
    seconds = []
    for report in reports:
        started = time.monotonic()
        images = {name: NULL_DEREF / name for name in ("receiver.sys", "sender.sys")}
        triage = analyse(report, DRIVERS, Symbolizer(images, (), [STANDIN / "kd"]))
        seconds.append(time.monotonic() - started)
    figure(f"naming on the host ({triage.signature})", seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    in_process(args.runs)
    with tempfile.TemporaryDirectory() as tmp:
        naming(over_qemu(args.runs, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
