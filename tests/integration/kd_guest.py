"""A guest whose kernel is the KD target emulator on the far end of a unix socket, read by the harness's own
KdSerialReader: the VM guest's debugger path (bugcheck, break-in, stacks) end to end without a VM.

The emulator holds a synthetic kernel (harness.kd.synthetic) with the drivers of the scenario mapped in it. Loading
a driver reports its module load and prints its DriverEntry line; loading ``crash_on`` bugchecks with the machine's
bugcheck; loading ``stall_on`` never returns (a GuestHung after the step's timeout).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from harness.errors import GuestError, GuestHung
from harness.guests.base import ControlResult, CrashEvidence, DriverInstall, Guest, ProgramResult
from harness.kd.emulator import KdTarget, TargetLog
from harness.kd.serial import Endpoint, KdSerialReader
from harness.kd.synthetic import Machine
from harness.timeline import Timeline


class EmulatedTarget:
    """A KdTarget served on a unix socket by a thread: a byte timeout is a try, a quiet line a clock tick."""

    def __init__(self, path: Path, machine: Machine) -> None:
        self.target = KdTarget(machine=machine)
        self.lock = threading.Lock()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="kd-emulator")
        self._thread.start()

    def _serve(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(0.05)
                quiet = 0.0
                while not self._stop.is_set():
                    with self.lock:
                        data = self.target.take()
                    if data:
                        conn.sendall(data)
                    try:
                        reply = conn.recv(65536)
                    except TimeoutError:
                        quiet += 0.05
                        with self.lock:
                            if self.target.idle:
                                self.target.poll()  # the clock tick
                            elif quiet >= 0.3:
                                quiet = 0.0
                                self.target.timeout()
                        continue
                    if not reply:
                        break
                    quiet = 0.0
                    with self.lock:
                        self.target.receive(reply)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._listener.close()


class KdEmulatorGuest(Guest):
    name = "kd-emulator"

    def __init__(self, timeline: Timeline, run_dir: Path, machine: Machine, system: Path, crash_on: str = "", stall_on: str = "") -> None:
        super().__init__(timeline, run_dir)
        self.machine = machine
        self.system = system
        self.crash_on = crash_on
        self.stall_on = stall_on
        self.server: EmulatedTarget | None = None
        self.reader: KdSerialReader | None = None
        self.log: TargetLog | None = None  # the target's record, kept when the guest stops

    @property
    def raw_log(self) -> Path:
        return self.run_dir / "kd-raw.log"

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / "kd.sock"
        self.server = EmulatedTarget(path, self.machine)
        self.reader = KdSerialReader(Endpoint("unix", str(path)), self.timeline, self.raw_log)
        self.reader.start()
        assert self.reader.wait_connected(1, 10)

    def module_name(self, driver: DriverInstall) -> str:
        return f"{driver.service}.sys"  # as the VM guest installs it: C:\\kcb\\<service>.sys

    def system_images(self) -> tuple[Path, ...]:
        return (self.system,)

    def install(self, driver: DriverInstall, timeout: float) -> None:
        assert self.reader is not None
        self.reader.add_image(self.module_name(driver), driver.image)

    def load(self, service: str, timeout: float) -> ControlResult:
        assert self.server is not None
        with self.server.lock:
            target = self.server.target
            for path, base, size in self.machine.modules:
                if path.lower().endswith(f"\\{service.lower()}.sys"):
                    target.load_module(path, base, size)
            if service == self.stall_on:
                target.print(f"[{service}] DriverEntry stalls.\n")
            else:
                target.print(f"[{service}] DriverEntry status:(0x00000000).\n")
            if service == self.crash_on:
                target.crash()
        if service == self.stall_on:
            time.sleep(timeout)
            raise GuestHung(f"loading {service} did not finish within {timeout:g}s")
        return ControlResult(ok=True, status=0, win32=None, detail="started")

    def unload(self, service: str, timeout: float) -> ControlResult:
        return ControlResult(ok=True, status=0, win32=None, detail="stopped")

    def report_stacks(self, timeout: float) -> None:
        assert self.reader is not None
        self.reader.report_stacks(timeout)

    def run_program(self, program: Path, args: Sequence[str], timeout: float) -> ProgramResult:
        raise GuestError("the KD emulator guest runs no user-mode programs")

    def collect_crash_evidence(self, dest: Path) -> CrashEvidence:
        assert self.reader is not None
        done = self.reader.wait_inspected(30)
        return CrashEvidence((), "stacks read at the bugcheck" if done else "the bugcheck's stacks did not come")

    def stop(self) -> None:
        if self.reader is not None:
            self.reader.stop()
            self.reader = None
        if self.server is not None:
            self.server.close()
            self.log = self.server.target.log
            self.server = None
