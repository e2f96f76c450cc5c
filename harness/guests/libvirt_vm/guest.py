"""The real guest: a libvirt Windows VM, reverted to a running snapshot before every scenario.

Once per harness run (``VmSession.prepare``): stale VMs of dead harness runs
are removed, the VM boots paused on an overlay of the golden image, the KD
reader (COM1) and the text reader (COM2) attach, the guest runs, the transport
waits until Windows answers, and the running snapshot is taken. Every boot the
harness reads goes this way (the Driver Verifier reboot keeps the readers
attached; a restart after a crash happens while the scenario's readers are
attached): a kernel that finds no debugger gives up on it, and a snapshot of
it would print nothing. Each attach of the KD reader breaks in (``KdHost.attached``).
Per scenario (``LibvirtGuest``): revert (paused), attach the KD reader on COM1 and the
text reader on COM2, resume, reconnect the transport; install drivers with
sc.exe and their Parameters; load/unload; lifecycle crash events (and a
reset the guest asked for) become GuestCrash events, with the Hyper-V
bugcheck code when libvirt logged it; after a crash, the minidump Windows
wrote before restarting is pulled into the scenario's folder.
Windows-only parts need a real image: they run in the ``windows_vm`` tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

from harness.errors import ConfigError, GuestError
from harness.guests.base import ControlResult, CrashEvidence, DriverInstall, Guest, ProgramResult
from harness.guests.libvirt_vm.config import HarnessConfig
from harness.guests.libvirt_vm.domain_xml import PortForward
from harness.guests.libvirt_vm.dumps import collect_dumps, dump_names, with_headers
from harness.guests.libvirt_vm.events import LifecycleEvent, crash_from_lifecycle
from harness.guests.libvirt_vm.handoff import KdHandoff, wait_released
from harness.guests.libvirt_vm.host import LocalHost, VmHost, free_port, parse_remote_uri, remote_port, vm_host
from harness.guests.libvirt_vm.shell import GuestShell, StandinShell, WindowsShell
from harness.guests.libvirt_vm.spec import vm_spec
from harness.guests.libvirt_vm.vm import VirtualMachine, Watchdog, detect_accel, new_name, remove_stale
from harness.image.manifest import check_manifest
from harness.kd.serial import Endpoint, KdSerialReader, SerialReader, TextSerialReader
from harness.kd.session import MANUALLY_INITIATED_CRASH
from harness.kernel.events import DebugEvent, Event, GuestCrash, GuestHang, LogLine, program_source
from harness.timeline import Cancelled, Timeline
from harness.transports.base import Transport, TransportError, connect_with_retries
from harness.transports.commands import (
    parse_run_output,
    powershell,
    sc_error,
    verifier_script,
)

log = logging.getLogger(__name__)

#: How long a program's upload may take, and how much longer than the program's timeout its report may take.
PROGRAM_UPLOAD_TIMEOUT = 120.0
PROGRAM_REPORT_GRACE = 60.0
IMAGE_HELP = "prepare one from a Windows ISO as vm-images/README.md describes, and point vm.image at it"
NMI_HARDWARE_FAILURE = 0x80  # the bugcheck of an NMI with CrashControl\NMICrashDump set
_DRIVER_ENTRY = re.compile(r"DriverEntry status:\(0x([0-9A-Fa-f]{8})\)")
#: Win32 errors sc.exe reports, back to the NTSTATUS that most often causes them (lossy: used only
#: when the driver does not log its own status).
WIN32_TO_STATUS = {
    2: 0xC0000034,
    3: 0xC000003A,
    5: 0xC0000022,
    31: 0xC0000001,
    127: 0xC000007A,
    193: 0xC000007B,
    577: 0xC0000428,
    1275: 0xC000036C,
}


def _event_text(event: Event) -> str:
    """A serial event as ``harness kd replay`` prints it: log lines as they are, debugger events after ``#kd``."""
    if isinstance(event, LogLine):
        return event.text
    if isinstance(event, DebugEvent):
        return f"#kd {event.summary}"
    if isinstance(event, GuestCrash | GuestHang):
        return f"# {event.summary}"
    return repr(event)


class VmSession:
    """The VM of one harness run, shared by the scenarios' guests."""

    def __init__(self, config: HarnessConfig, log_dir: Path, host: VmHost | None = None) -> None:
        """``log_dir``: where the serial captures of the boots outside scenarios go (a folder per VM, on this machine).

        Raises:
            ConfigError: the image or firmware is missing, or the transport has no password.
        """
        settings = config.vm
        self.config = config
        self.host = host or vm_host(settings.uri)  # a remote VM host is reached (host key checked) now
        try:
            self._check_files()
            self.password = config.transport.password()  # fails now, not after a 10-minute boot
        except BaseException:
            self.host.close()
            raise
        remote = parse_remote_uri(settings.uri) is not None
        # The VM's ports listen on the VM host's loopback; a remote host's are forwarded here over SSH.
        self.host_port = config.transport.host_port or (remote_port() if remote else free_port())
        self._local_ports: dict[int, int] = {}
        work = settings.vm_dir / new_name(settings.name_prefix)  # the VM's files, all of them: close() removes it
        com1: Path | int = remote_port() if remote else work / "com1.sock"
        com2: Path | int = remote_port() if remote else work / "com2.sock"
        accel = detect_accel(self.host, settings.accel)
        spec = vm_spec(
            settings, work.name, work, accel, com1=com1, com2=com2, forwards=(PortForward(self.host_port, config.transport.port),),
            owner_pid=os.getpid(),
        )  # fmt: skip
        self.vm = VirtualMachine(settings.uri, spec, settings.golden, work, host=self.host)
        # The serial captures of the boots outside scenarios (prepare, Driver Verifier): the evidence when such a
        # boot fails, kept with the run's reports.
        self.log_dir = log_dir / work.name
        self.prepared = False
        self.keep_failed = False  # --keep-failed: hold a failed VM for a debugger (LibvirtGuest.hold_failed)
        self.shell: GuestShell = StandinShell() if settings.guest_os == "standin" else WindowsShell(config.guest_dir)
        self.dump_listing = self.shell.list_dumps()
        self.known_dumps: tuple[str, ...] = ()  # in the ready snapshot already: not this scenario's

    def _check_files(self) -> None:
        settings = self.config.vm
        where = "" if isinstance(self.host, LocalHost) else f" on {self.host.name}"
        if not self.host.is_file(settings.golden):
            raise ConfigError(f"the Windows golden image {settings.golden} does not exist{where}: {IMAGE_HELP}")
        if settings.guest_os == "windows" and check_manifest(settings.golden, self.host, self.config.transport.type) is None:
            log.warning("%s has no manifest (prepared by hand?): its settings are not checked", settings.golden)
        if settings.firmware == "uefi" and not self.host.is_file(settings.ovmf_code):
            raise ConfigError(f"UEFI firmware {settings.ovmf_code} not found{where}: apt-get install ovmf (or set vm.ovmf_code)")

    def local_port(self, port: int) -> int:
        """Where this machine reaches ``port`` of the VM host's loopback (the same port when libvirt is local)."""
        if port not in self._local_ports:
            self._local_ports[port] = self.host.forward(port)
        return self._local_ports[port]

    def serial_endpoint(self, port: Path | int) -> Endpoint:
        """The endpoint a serial reader attaches to for COM1/COM2 of the domain spec."""
        if isinstance(port, int):
            return Endpoint.opened_by(partial(self.host.open_port, port), f"{self.host.name}:127.0.0.1:{port}")
        return Endpoint("unix", str(port))

    def attach_readers(self, timeline: Timeline, folder: Path) -> list[SerialReader]:
        """Attach the KD reader to COM1 (it breaks in on every connection) and the text reader to COM2.

        Returns the started readers, each connected once; their raw captures go to ``folder``.

        Raises:
            GuestError: a port could not be attached (the readers are stopped again).
        """
        spec = self.vm.spec
        assert spec.com1 is not None
        com1 = self.serial_endpoint(spec.com1)
        readers: list[SerialReader] = [
            # The stand-in writes its kernel log on COM1 as plain text; Windows speaks KDCOM there.
            TextSerialReader(com1, timeline, folder / "kd-raw.log", source="kernel")
            if self.config.vm.guest_os == "standin"
            else KdSerialReader(com1, timeline, folder / "kd-raw.log")
        ]
        if spec.com2 is not None:
            readers.append(TextSerialReader(self.serial_endpoint(spec.com2), timeline, folder / "com2.log", source="com2"))
        try:
            for reader in readers:
                reader.start()
                if not reader.wait_connected(1, timeout=30):
                    raise GuestError(f"could not attach to the VM's serial port {reader.endpoint.address}")
        except BaseException:
            for reader in readers:
                reader.stop()
            raise
        return readers

    @contextlib.contextmanager
    def attached_readers(self, timeline: Timeline, folder: Path) -> Iterator[None]:
        """The serial readers attached for a boot outside a scenario; what they decoded is written to ``folder``/kd.txt.

        Raises:
            GuestError: a port could not be attached.
        """
        readers = self.attach_readers(timeline, folder)
        try:
            yield
        finally:
            for reader in readers:
                reader.stop()
            text = "".join(f"+{event.t:9.3f}s {_event_text(event)}\n" for event in timeline.events())
            (folder / "kd.txt").write_text(text, encoding="utf-8")

    def _phase(self, name: str) -> contextlib.AbstractContextManager[None]:
        folder = self.log_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        return self.attached_readers(Timeline(), folder)

    def connect_transport(self, timeout: float) -> Transport:
        """Connect to the guest, retrying until ``timeout`` (Windows may still be starting).

        Raises:
            GuestHung: nothing answered in time.
        """
        return connect_with_retries(self._transport, timeout, f"the guest's {self.config.transport.type}")

    def _transport(self) -> Transport:
        settings = self.config.transport
        if settings.type == "ssh":
            from harness.transports.ssh import SshTransport

            return SshTransport(
                "127.0.0.1", self.local_port(self.host_port), settings.username, password=self.password, private_key=settings.private_key,
                known_hosts=settings.known_hosts, accept_new_host_key=settings.accept_new_host_key,
                host_key_alias=settings.host_key_alias, timeout=settings.timeout, remote=self.shell.remote,
            )  # fmt: skip
        from harness.transports.winrm import WinRmTransport

        if self.password is None:
            raise ConfigError("WinRM needs a password (password_env or password_file)")
        return WinRmTransport(
            "127.0.0.1", self.local_port(self.host_port), settings.username, self.password, scheme=settings.scheme, auth=settings.auth,
            message_encryption=settings.message_encryption, server_cert_validation=settings.server_cert_validation,
            timeout=settings.timeout,
        )  # fmt: skip

    def prepare(self) -> None:
        """Boot, wait until the guest answers, take the running snapshot (once per run)."""
        if self.prepared:
            return
        settings = self.config.vm
        removed = remove_stale(settings.uri, settings.name_prefix, self.host)
        if removed:
            log.warning("removed VMs left by a harness that died: %s", ", ".join(removed))
        self.vm.connect()
        self.vm.boot(paused=True)  # the debugger is attached before the kernel first talks
        with self._phase("prepare"):
            self.vm.resume()
            with self.connect_transport(settings.ready_timeout) as transport:
                if settings.crash_dumps:
                    self.known_dumps = tuple(dump_names(transport.run(self.dump_listing, 120).stdout))
            self.vm.take_ready_snapshot()  # the readers re-attach to the restored guest (and break in)
        self.prepared = True

    def prepare_verifier(self, name: str, setting: str | int, images: tuple[str, ...]) -> None:
        """A running snapshot ``name`` with Driver Verifier on for ``images``: set, reboot, wait, freeze.

        Raises:
            GuestError: verifier.exe refused, or the guest did not come back.
        """
        if self.config.vm.guest_os != "windows":
            raise GuestError("Driver Verifier needs a Windows guest")
        timeout = self.config.vm.ready_timeout
        self.vm.revert(paused=True)
        with self._phase(name):  # attached across the reboot: the new kernel finds its debugger
            self.vm.resume()
            with self.connect_transport(timeout) as transport:
                result = transport.run(powershell(verifier_script(setting, images)), 120)
                if not result.ok:
                    raise GuestError(f"verifier.exe failed ({result.exit_code}): {(result.stdout + result.stderr).strip()[:300]}")
                with contextlib.suppress(TransportError):  # the connection may go down with the guest
                    transport.run(powershell("Restart-Computer -Force"), 60)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:  # until the old instance stops answering
                try:
                    self._transport().close()
                except TransportError:
                    break
                time.sleep(5)
            self.connect_transport(timeout).close()
            self.vm.take_ready_snapshot(name)

    def close(self) -> None:
        """Destroy the VM and remove its folder."""
        self.vm.close()


class LibvirtGuest(Guest):
    """One scenario on the reverted VM."""

    name = "libvirt"
    supports_verifier = True

    def __init__(self, timeline: Timeline, run_dir: Path, session: VmSession) -> None:
        super().__init__(timeline, run_dir)
        self.session = session
        self.readers: list[SerialReader] = []
        self.transport: Transport | None = None
        self.watchdog: Watchdog | None = None
        self.upload_folder_ready = False
        self.forced_dump = ""  # "crash" or "nmi" once a dump was forced at a hang

    @property
    def raw_log(self) -> Path:
        return self.run_dir / "kd-raw.log"

    @property
    def location(self) -> str:
        return self.session.config.vm.uri

    def _on_lifecycle(self, event: LifecycleEvent) -> None:
        if self.forced_dump and event.event == "rebooted":
            return  # the restart after the dump the harness asked for at a hang: not a crash
        crash = crash_from_lifecycle(event, self.timeline.now(), self.session.vm.domain_log)
        if crash is not None:
            self.timeline.append(crash)

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        vm = self.session.vm
        self.session.prepare()
        vm.revert(paused=True, name=self._snapshot_name())  # may reboot the VM once (Driver Verifier): not a crash
        vm.lifecycle.add_listener(self._on_lifecycle)
        # Attached until stop(): through the restart after a crash too (collect_crash_evidence runs before stop()).
        self.readers = self.session.attach_readers(self.timeline, self.run_dir)
        vm.resume()
        self.watchdog = Watchdog(
            vm, lambda: max(reader.last_activity for reader in self.readers), self.session.config.vm.watchdog,
            lambda summary: self.timeline.append(GuestHang(self.timeline.now(), summary)),
        )  # fmt: skip
        self.watchdog.start()
        self.transport = self.session.connect_transport(self.session.config.transport.timeout * 3)

    # -- where it crashed or hung (the KD reader reads the stopped kernel; harness.kd.inspect) ------------------------

    def module_name(self, driver: DriverInstall) -> str:
        """Drivers are installed as C:\\kcb\\<service>.sys (``install``): the kernel's module list names them so."""
        return f"{driver.service}.sys"

    def _kd_reader(self) -> KdSerialReader | None:
        return next((reader for reader in self.readers if isinstance(reader, KdSerialReader)), None)

    def report_stacks(self, timeout: float) -> None:
        """Break in over KD, read every processor's stack, and continue; or, with ``vm.hang_dump``, make Windows write
        a dump (the debugger-initiated crash, or an NMI) that ``collect_hang_evidence`` pulls. Never raises."""
        reader = self._kd_reader()
        if reader is None:
            return
        settings = self.session.config.vm
        reader.report_stacks(max(timeout, settings.stacks_timeout), crash_after=settings.hang_dump == "crash")
        if settings.hang_dump == "crash":
            self.forced_dump = "crash"
        elif settings.hang_dump == "nmi":
            reader.expect_forced_bugcheck(NMI_HARDWARE_FAILURE)
            self.forced_dump = "nmi" if self.session.vm.inject_nmi() else ""

    def collect_hang_evidence(self, dest: Path) -> CrashEvidence:
        """The dump forced at a hang (``vm.hang_dump``), pulled as a crash's; nothing when none was asked for."""
        if not self.forced_dump:
            return CrashEvidence()
        code = MANUALLY_INITIATED_CRASH if self.forced_dump == "crash" else NMI_HARDWARE_FAILURE
        evidence = self._pull_dumps(dest)
        return (
            with_headers(evidence, None, ()) if evidence.files else replace(evidence, note=f"forced bugcheck 0x{code:X}: {evidence.note}")
        )

    def collect_crash_evidence(self, dest: Path) -> CrashEvidence:
        """Wait until the kernel debugger has read the bugcheck's stacks, then for Windows to restart, and pull the new
        minidumps with their headers compared with the debugger's view (harness.guests.libvirt_vm.dumps)."""
        reader = self._kd_reader()
        if reader is not None:
            reader.wait_inspected(self.session.config.vm.stacks_timeout)
        evidence = self._pull_dumps(dest)
        crash = next((event for event in self.timeline.of_type(GuestCrash) if event.code is not None), None)
        return with_headers(evidence, crash.code if crash else None, crash.parameters if crash else ())

    def hold_failed(self, why: str) -> None:
        """``--keep-failed``: pause the VM and serve its KD link (COM1) on a loopback TCP port for WinDbg or kd,
        printing how to attach, until the user presses Enter (or the run is cancelled). Never raises."""
        spec = self.session.vm.spec
        if not self.session.keep_failed or spec.com1 is None:
            return
        if isinstance(spec.com1, int):
            log.warning("--keep-failed: the VM's COM1 is on a remote VM host; attach there (port %s of its loopback)", spec.com1)
            return
        if self.watchdog is not None:  # a held VM is not hung
            self.watchdog.stop()
            self.watchdog = None
        for reader in [reader for reader in self.readers if isinstance(reader, KdSerialReader)]:
            reader.stop()  # the serial socket takes one client: the debugger's
            self.readers.remove(reader)
        try:
            with KdHandoff(self.session.vm.pause, self.session.vm.resume, self.session.serial_endpoint(spec.com1)) as handoff:
                lines = [
                    f"kept for debugging ({why}): the VM {spec.name} is paused; its kernel debugger link is on 127.0.0.1:{handoff.port}"
                ]
                lines += [f"  attach: {command}" for command in handoff.commands()]
                lines.append(f"  from another machine: ssh -L {handoff.port}:127.0.0.1:{handoff.port} <this host>, then attach there")
                lines.append("  press Enter here to release it")
                sys.stdout.write("\n".join(lines) + "\n")
                how = wait_released(sys.stdout, sys.stdin, self._cancelled)
                log.info("the held VM was released (%s) after %s debugger connection(s)", how, handoff.connections)
        except OSError as error:
            log.warning("--keep-failed: could not serve the VM's kernel debugger link: %s", error)

    def _cancelled(self) -> bool:
        try:
            self.timeline.check_cancelled()
        except Cancelled:
            return True
        return False

    def _pull_dumps(self, dest: Path) -> CrashEvidence:
        """Wait for Windows to restart after its bugcheck and pull the new minidumps (see harness.guests.libvirt_vm.dumps)."""
        if self.watchdog is not None:  # a guest writing its dump and restarting is not hung
            self.watchdog.stop()
            self.watchdog = None
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        settings = self.session.config.vm
        if not settings.crash_dumps:
            return CrashEvidence((), "no crash dump: vm.crash_dumps is off (the VM stops when Windows reports the crash)")

        def stopped() -> str | None:
            state = self.session.vm.state()
            return f"the VM is {state}" if state in ("crashed", "paused", "shutoff", "gone") else None

        return collect_dumps(self.session.connect_transport, self.session.dump_listing, dest, settings.dump_timeout,
                             known=self.session.known_dumps, stopped=stopped)  # fmt: skip

    def _snapshot_name(self) -> str:
        """The running snapshot for this scenario: "ready", or one per Driver Verifier configuration."""
        if self.verifier is None:
            return "ready"
        setting, images = self.verifier
        name = "verifier-" + hashlib.sha256(repr((setting, sorted(images))).encode()).hexdigest()[:12]
        if not self.session.vm.has_snapshot(name):
            self.session.prepare_verifier(name, setting, images)
        return name

    def stop(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        for reader in self.readers:
            reader.stop()
        self.readers.clear()
        self.session.vm.lifecycle.remove_listener(self._on_lifecycle)

    def _run(self, command: str, timeout: float) -> tuple[int, str]:
        if self.transport is None:
            raise GuestError("the VM guest is not started")
        result = self.transport.run(command, timeout)  # CommandTimeout is a GuestHung: a stuck command is a hang
        return result.exit_code, result.stdout + result.stderr

    def _upload_folder(self, timeout: float) -> None:
        """Create the upload folder once per scenario, before anything is written into it (SFTP does not create it)."""
        if self.upload_folder_ready:
            return
        shell = self.session.shell
        code, output = self._run(shell.make_folder(), timeout)
        if code != 0:
            raise GuestError(f"creating {shell.folder} failed: {output.strip()[:300]}")
        self.upload_folder_ready = True

    def install(self, driver: DriverInstall, timeout: float) -> None:
        if self.transport is None:
            raise GuestError("the VM guest is not started")
        shell = self.session.shell
        self._upload_folder(timeout)
        remote = shell.path(f"{driver.service}.sys")
        reader = self._kd_reader()
        if reader is not None:  # the kernel debugger unwinds through this driver with the file's unwind data
            reader.add_image(self.module_name(driver), driver.image)
        self.transport.upload(driver.image, remote, timeout)
        code, output = self._run(shell.create_service(driver.service, remote), timeout)
        if code != 0:
            raise GuestError(f"sc create {driver.service} failed: {output.strip()[:300]}")
        code, output = self._run(shell.set_parameters(driver.service, driver.parameters), timeout)
        if code != 0:
            raise GuestError(f"setting Parameters of {driver.service} failed: {output.strip()[:300]}")

    def _control(self, verb: str, service: str, timeout: float) -> ControlResult:
        started = self.timeline.now()
        shell = self.session.shell
        command = shell.start(service) if verb == "start" else shell.stop(service, max(int(timeout) - 5, 1))
        code, output = self._run(command, timeout)
        win32 = sc_error(output, code)
        status: int | None = None
        if verb == "start":
            # The driver's own "DriverEntry status:(0x...)" line is the NTSTATUS; sc only has the Win32 code.
            for line in reversed(self.timeline.lines()):
                if line.t < started:
                    break
                if match := _DRIVER_ENTRY.search(line.text):
                    status = int(match.group(1), 16)
                    break
            if status is None:
                status = 0 if win32 is None else WIN32_TO_STATUS.get(win32)
        else:
            status = 0 if win32 is None else None
        return ControlResult(ok=win32 is None, status=status, win32=win32, detail=output.strip().splitlines()[0] if output.strip() else "")

    def load(self, service: str, timeout: float) -> ControlResult:
        return self._control("start", service, timeout)

    def unload(self, service: str, timeout: float) -> ControlResult:
        return self._control("stop", service, timeout)

    def run_program(self, program: Path, args: Sequence[str], timeout: float) -> ProgramResult:
        """Upload the program next to the drivers and run it (``GuestShell.run_program``: on Windows
        ``commands.run_script``).

        The output comes back when the program has ended: its lines join the timeline then, all at that time (their
        order among themselves is kept; against the kernel log they follow everything logged while it ran).
        """
        if self.transport is None:
            raise GuestError("the VM guest is not started")
        shell = self.session.shell
        self._upload_folder(PROGRAM_UPLOAD_TIMEOUT)
        remote = shell.path(program.name)
        self.transport.upload(program, remote, PROGRAM_UPLOAD_TIMEOUT)
        result = self.transport.run(shell.run_program(remote, args, timeout), timeout + PROGRAM_REPORT_GRACE)
        report = parse_run_output(result.stdout)
        if report is None:
            output = (result.stdout + result.stderr).strip()[:300]
            raise GuestError(f"running {program.name} gave no report (exit {result.exit_code}): {output}")
        if report.state == "error":  # it never ran: the message is the guest's reason
            return ProgramResult(exit_code=None, detail=f"{' '.join(report.stderr).strip()} (Win32 error {report.code})")
        now = self.timeline.now()
        for stream, lines in (("stdout", report.stdout), ("stderr", report.stderr)):
            for line in lines:
                self.timeline.append(LogLine(now, line, program_source(program.name, stream)))
        if report.state == "timeout":
            return ProgramResult(exit_code=None, timed_out=True)
        return ProgramResult(exit_code=report.code)
