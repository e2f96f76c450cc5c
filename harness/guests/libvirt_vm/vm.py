"""The test VM's lifecycle with libvirt-python: boot, running snapshot, revert, crash events, cleanup.

The running snapshot is a libvirt *save image* (memory and device state)
plus the disk overlay frozen at that moment, which becomes the read-only base
of a fresh overlay for every revert. Internal snapshots would be simpler,
but libvirt 9 (Debian 12) refuses them for VMs with UEFI pflash firmware.
A revert restores the save image paused, so serial readers can connect
before the guest runs again, and nothing it prints is lost.

Domains are transient and carry harness metadata (owner pid, files); a
harness that died leaves them behind, and the next one removes them
(``remove_stale``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from harness.errors import GuestError
from harness.guests.libvirt_vm.access import check_reachable
from harness.guests.libvirt_vm.domain_xml import DomainSpec, domain_xml, owner_of
from harness.guests.libvirt_vm.events import DomainEvents, LifecycleEvent, libvirt_module, start_event_loop
from harness.guests.libvirt_vm.host import LocalHost, VmHost, vm_host

log = logging.getLogger(__name__)


def detect_accel(host: VmHost | None = None, setting: Literal["auto", "kvm", "tcg"] = "auto") -> Literal["kvm", "qemu"]:
    """The libvirt domain type for ``setting``: with ``auto``, ``kvm`` when the VM host has /dev/kvm and a CPU with
    vmx or svm, else ``qemu`` (TCG).

    libvirt may advertise KVM where 64-bit guests do not boot (nested PVM), so the CPU flags decide.
    """
    if setting != "auto":
        return "kvm" if setting == "kvm" else "qemu"
    host = host or LocalHost()
    flags = host.read_text(Path("/proc/cpuinfo"))
    has_virt = re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.MULTILINE) is not None
    return "kvm" if has_virt and host.exists(Path("/dev/kvm")) else "qemu"


class Watchdog:
    """Declares the VM hung when its serial ports stay silent for ``silence`` seconds *and* its CPU time stands still.

    Silence alone proves nothing (a guest may have nothing to print); a VM whose
    vCPUs consume no time is paused, halted or wedged in the hypervisor.
    """

    def __init__(self, vm: VirtualMachine, last_output: Callable[[], float], silence: float, on_hang: Callable[[str], None]) -> None:
        self.vm = vm
        self.last_output = last_output
        self.silence = silence
        self.on_hang = on_hang
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="vm-watchdog")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _cpu_time(self) -> int | None:
        libvirt = libvirt_module()
        try:
            return int(self.vm.conn.lookupByName(self.vm.spec.name).info()[4])
        except libvirt.libvirtError:
            return None

    def _run(self) -> None:
        interval = min(1.0, self.silence / 4)
        cpu = self._cpu_time()
        while not self._stop.wait(interval):
            silent_for = time.monotonic() - self.last_output()
            now_cpu = self._cpu_time()
            if silent_for >= self.silence and (now_cpu is None or now_cpu == cpu):
                self.on_hang(f"no serial output for {silent_for:.0f}s and the VM's CPU time did not advance (state {self.vm.state()})")
                return
            cpu = now_cpu


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class VirtualMachine:
    """One VM of this harness run."""

    def __init__(self, uri: str, spec: DomainSpec, image: Path, work_dir: Path, host: VmHost | None = None) -> None:
        self.uri = uri
        self._host = host
        self.image = image
        self.work_dir = work_dir
        self.spec = spec
        self._vars_template = spec.nvram  # spec.nvram becomes the running VM's copy; every boot starts from this
        self.lifecycle = DomainEvents(lambda: self.spec.name)
        self._conn: Any = None
        self._dom: Any = None
        self._generation = 0

    @property
    def events(self) -> list[LifecycleEvent]:
        """The domain's lifecycle events so far (a copy)."""
        return self.lifecycle.history()

    # -- connection ----------------------------------------------------------------------------

    @property
    def host(self) -> VmHost:
        """Where the VM's files and ports are (this machine, or the host of a qemu+ssh:// URI)."""
        if self._host is None:
            self._host = vm_host(self.uri)
        return self._host

    def connect(self) -> None:
        libvirt = libvirt_module()
        start_event_loop()
        self.host  # noqa: B018 - a remote VM host is reached (and its key checked) before libvirt is
        try:
            self._conn = libvirt.open(self.uri)
        except libvirt.libvirtError as error:
            raise GuestError(f"cannot connect to libvirt at {self.uri}: {error.get_error_message()}") from None
        self.lifecycle.register(self._conn)

    @property
    def conn(self) -> Any:
        if self._conn is None:
            raise GuestError("not connected to libvirt")
        return self._conn

    # -- lifecycle ----------------------------------------------------------------------------------

    def boot(self, overlay: bool = True, paused: bool = False) -> None:
        """Start the VM on a fresh overlay over the golden image (``overlay=False``: on the image itself, to build it).

        With ``paused`` the vCPUs do not run until ``resume()``: serial readers attach first, so the kernel
        debugger is there before the kernel first talks (libvirt's ``mode='bind'`` sockets do not hold
        the guest until a client connects; what the guest writes before that is lost).

        Raises:
            ConfigError: QEMU's user could not reach the VM's files.
            GuestError: libvirt refused the domain.
        """
        libvirt = libvirt_module()
        spec = self.spec
        check_reachable(self.host, self.uri, [self.image, self.work_dir, *spec.cdroms, *(p for p in (spec.kernel, spec.initrd) if p)])
        self.host.make_dir(self.work_dir)
        disk = self._next_overlay(self.image) if overlay else self.image
        nvram = self._fresh_nvram()
        self.spec = replace(
            self.spec, disk=disk, nvram=nvram, run_dir=self.work_dir, owner_pid=self.spec.owner_pid or os.getpid(),
            owner_host=self.spec.owner_host or socket.gethostname(),
        )  # fmt: skip
        xml = domain_xml(self.spec)
        log.debug("domain XML:\n%s", xml)
        try:
            self._dom = self.conn.createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED if paused else 0)
        except libvirt.libvirtError as error:
            raise GuestError(f"libvirt could not start {self.spec.name}: {error.get_error_message()}") from None

    def _snapshot(self, name: str) -> tuple[Path, Path, Path]:
        """(saved state, frozen disk, NVRAM copy) of the running snapshot ``name``."""
        if not re.fullmatch(r"[a-z0-9-]{1,40}", name):
            raise ValueError(f"snapshot name {name!r}")
        return self.work_dir / f"{name}.state", self.work_dir / f"{name}.qcow2", self.work_dir / f"{name}-vars.fd"

    def has_snapshot(self, name: str = "ready") -> bool:
        return self.host.is_file(self._snapshot(name)[0])

    def take_ready_snapshot(self, name: str = "ready") -> None:
        """Freeze the running guest as a state scenarios start from (``name``), then carry on from it.

        Raises:
            GuestError: libvirt could not save the domain.
        """
        libvirt = libvirt_module()
        state, frozen, vars_copy = self._snapshot(name)
        for stale in (state, frozen, vars_copy):
            self.host.remove(stale)
        try:
            self._dom.save(str(state))  # the domain stops here
        except libvirt.libvirtError as error:
            raise GuestError(f"could not save {self.spec.name}: {error.get_error_message()}") from None
        self.host.rename(self.spec.disk, frozen)  # becomes the read-only base of every revert to it
        if self.spec.nvram is not None:
            self.host.copy(self.spec.nvram, vars_copy)
        self.revert(paused=False, name=name)

    def revert(self, paused: bool = True, name: str = "ready") -> None:
        """Back to the running snapshot ``name``, on a fresh overlay. With ``paused``, call ``resume()`` once readers are attached.

        Raises:
            GuestError: no such snapshot, or libvirt could not restore it.
        """
        libvirt = libvirt_module()
        state, frozen, vars_copy = self._snapshot(name)
        if not self.host.is_file(state):
            raise GuestError(f"no running snapshot {name!r} to revert to")
        self.destroy_domain()
        disk = self._next_overlay(frozen)
        nvram = None
        if self.spec.nvram is not None:
            nvram = self.work_dir / f"vars-{self._generation}.fd"
            self.host.copy(vars_copy, nvram)
            self.host.remove(self.work_dir / f"vars-{self._generation - 1}.fd")
        saved = self.conn.saveImageGetXMLDesc(str(state), 0)
        xml = retarget_saved_xml(saved, disk, nvram)
        flags = libvirt.VIR_DOMAIN_SAVE_PAUSED if paused else 0
        try:
            self.conn.restoreFlags(str(state), xml, flags)
        except libvirt.libvirtError as error:
            raise GuestError(f"could not restore {self.spec.name}: {error.get_error_message()}") from None
        self._dom = self.conn.lookupByName(self.spec.name)
        self.spec = replace(self.spec, disk=disk, nvram=nvram or self.spec.nvram)

    def press_key(self, keycode: int, seconds: float) -> None:
        """Press a key (Linux keycode) once a second for ``seconds`` while the VM runs (boot-menu prompts)."""
        libvirt = libvirt_module()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.state() == "running":
            try:
                self._dom.sendKey(libvirt.VIR_KEYCODE_SET_LINUX, 50, [keycode], 1, 0)
            except libvirt.libvirtError:
                return
            time.sleep(1.0)

    def wait_stopped(self, timeout: float) -> bool:
        """True once the guest has powered itself off, False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(event.event in ("stopped", "shutdown") for event in self.events) or self.state() in ("shutoff", "gone"):
                return True
            time.sleep(1.0)
        return False

    def screenshot(self, path: Path) -> Path | None:
        """The VM's screen as a PPM file, or None when libvirt cannot take one."""
        libvirt = libvirt_module()
        try:
            stream = self.conn.newStream(0)
            self._dom.screenshot(stream, 0, 0)
            with open(path, "wb") as handle:
                stream.recvAll(lambda _stream, data, out: out.write(data), handle)
            stream.finish()
            return path
        except libvirt.libvirtError:
            return None

    def inject_nmi(self) -> bool:
        """Send the guest a non-maskable interrupt (libvirt injectNMI); False when libvirt refused."""
        libvirt = libvirt_module()
        if self._dom is None:
            return False
        try:
            self._dom.injectNMI(0)
        except libvirt.libvirtError as error:
            log.warning("could not inject an NMI into %s: %s", self.spec.name, error.get_error_message())
            return False
        return True

    def pause(self) -> None:
        """Stop the vCPUs (``resume`` goes on)."""
        if self._dom is not None and self._dom.info()[0] == libvirt_module().VIR_DOMAIN_RUNNING:
            self._dom.suspend()

    def resume(self) -> None:
        if self._dom is not None and self._dom.info()[0] == libvirt_module().VIR_DOMAIN_PAUSED:
            self._dom.resume()

    def state(self) -> str:
        libvirt = libvirt_module()
        if self._dom is None:
            return "none"
        try:
            state = self._dom.state()[0]
        except libvirt.libvirtError:
            return "gone"
        return {
            libvirt.VIR_DOMAIN_RUNNING: "running",
            libvirt.VIR_DOMAIN_PAUSED: "paused",
            libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
            libvirt.VIR_DOMAIN_CRASHED: "crashed",
        }.get(state, str(state))

    def domain_log(self) -> str:
        """libvirt's log of this domain (QEMU's stderr, panic lines), when readable here."""
        return self.host.read_text(Path("/var/log/libvirt/qemu") / f"{self.spec.name}.log")

    def destroy_domain(self) -> None:
        libvirt = libvirt_module()
        if self._dom is None:
            return
        with contextlib.suppress(libvirt.libvirtError):
            self._dom.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            if self._dom.isPersistent():
                self._dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        self._dom = None

    def close(self) -> None:
        """Destroy the domain and remove every file of this run; safe to call twice."""
        self.destroy_domain()
        if self._conn is not None:
            self.lifecycle.deregister()
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        try:
            self.host.remove_tree(self.work_dir)
            for path in self.spec.owned_files:
                self.host.remove(path)
        except GuestError as error:  # a remote VM host that went away: its next run's remove_stale cleans up
            log.warning("could not remove the files of %s: %s", self.spec.name, error)
        finally:
            if self._host is not None:
                self._host.close()
                self._host = None

    # -- helpers ------------------------------------------------------------------------------------

    def _next_overlay(self, base: Path) -> Path:
        self._generation += 1
        target = self.work_dir / f"disk-{self._generation}.qcow2"
        try:
            self.host.overlay(base, target)
        except GuestError as error:
            raise GuestError(f"could not create an overlay over {base}: {error}") from None
        self.host.remove(self.work_dir / f"disk-{self._generation - 1}.qcow2")
        return target

    def _fresh_nvram(self) -> Path | None:
        if self.spec.firmware != "uefi":
            return None
        if self._vars_template is None:
            raise GuestError("UEFI needs an OVMF variables template")
        target = self.work_dir / "vars-0.fd"
        self.host.copy(self._vars_template, target)
        return target


def retarget_saved_xml(xml: str, disk: Path, nvram: Path | None) -> str:
    """The saved domain XML with the disk (and NVRAM) moved to this revert's copies."""
    root = ET.fromstring(xml)
    source = root.find("devices/disk/source")
    if source is not None:
        source.set("file", str(disk))
    node = root.find("os/nvram")
    if node is not None and nvram is not None:
        node.text = str(nvram)
    return ET.tostring(root, encoding="unicode")


def new_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def remove_stale(uri: str, prefix: str, host: VmHost | None = None) -> list[str]:
    """Destroy domains of this harness whose owner process (on this machine) is gone, and delete their files.

    Returns:
        the names removed.
    """
    libvirt = libvirt_module()
    host = host or LocalHost()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as error:
        raise GuestError(f"cannot connect to libvirt at {uri}: {error.get_error_message()}") from None
    removed = []
    try:
        for dom in conn.listAllDomains(0):
            if not dom.name().startswith(f"{prefix}-"):
                continue
            try:
                owner = owner_of(dom.XMLDesc(0))
            except libvirt.libvirtError:
                continue  # gone since the listing (another lane's revert or close): nothing to remove
            if owner is None or owner[2] != socket.gethostname() or _pid_alive(owner[0]):
                continue  # not ours, started from another machine (its pid means nothing here), or alive
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                if dom.isPersistent():
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
            with contextlib.suppress(GuestError):
                for path in owner[1]:
                    host.remove_tree(path)
            removed.append(dom.name())
    finally:
        conn.close()
    return removed
