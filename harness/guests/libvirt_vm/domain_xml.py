"""Libvirt domain XML for the test VM, built from data in one function. Pure.

The Windows VM: q35, UEFI without Secure Boot (test-signing and kernel
debugging need it off), a SATA disk (no virtio-win drivers), an e1000e NIC on
user-mode networking restricted to the host, with one loopback port forward
for WinRM or SSH, COM1 as a unix socket for the kernel debugger with a
``<log>`` copy on disk, optional COM2 for plain text, Hyper-V
enlightenments with the clock libvirt recommends for Windows, and the
Hyper-V crash MSRs (``<panic model='hyperv'/>``), so a bugcheck reaches
libvirt with its code. Under TCG the CPU is a named model with SSE4.2 and
POPCNT (Windows 11 24H2 needs them). The Linux stand-in guest uses the
same function with a direct kernel boot and an ISA pvpanic device.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

METADATA_NS = "urn:kcb-harness:vm:1"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
CPU_MODEL_TCG = "Nehalem"
CPU_FEATURES_REQUIRED = ("sse4.2", "popcnt")


@dataclass(frozen=True)
class PortForward:
    """A loopback port on the host forwarded to a port of the guest (user-mode networking)."""

    host_port: int
    guest_port: int


@dataclass(frozen=True)
class DomainSpec:
    """Everything the domain XML says, resolved (paths absolute, ports chosen)."""

    name: str
    memory_mib: int
    vcpus: int
    disk: Path
    domain_type: Literal["kvm", "qemu", "test"] = "qemu"
    firmware: Literal["uefi", "bios"] = "uefi"
    ovmf_code: Path | None = None
    nvram: Path | None = None
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str = ""
    com1: Path | int | None = None  # a unix socket, or a TCP port on the VM host's loopback (remote VM hosts)
    com1_log: Path | None = None
    com2: Path | int | None = None
    com2_log: Path | None = None
    panic: Literal["hyperv", "isa", "none"] = "hyperv"
    hyperv: bool = True
    forwards: tuple[PortForward, ...] = ()
    cdroms: tuple[Path, ...] = ()  # SATA CD-ROMs, booted from first when present (installation)
    tpm: bool = False  # TPM 2.0 (swtpm), for Windows 11
    owner_pid: int = 0
    owner_host: str = ""  # the machine the harness runs on (its pid means something only there)
    run_dir: Path | None = None
    owned_files: tuple[Path, ...] = field(default_factory=tuple)  # removed with the run (never the golden image)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attributes)
    if text is not None:
        element.text = text
    return element


def _serial(devices: ET.Element, port: int, socket: Path | int, log: Path | None) -> None:
    if isinstance(socket, int):
        serial = _sub(devices, "serial", type="tcp")
        _sub(serial, "source", mode="bind", host="127.0.0.1", service=str(socket))
        _sub(serial, "protocol", type="raw")
    else:
        serial = _sub(devices, "serial", type="unix")
        _sub(serial, "source", mode="bind", path=str(socket))
    if log is not None:
        _sub(serial, "log", file=str(log), append="on")
    _sub(serial, "target", type="isa-serial", port=str(port))


def domain_xml(spec: DomainSpec) -> str:
    """The domain definition for ``spec``."""
    ET.register_namespace("qemu", QEMU_NS)
    domain = ET.Element("domain", type=spec.domain_type)
    _sub(domain, "name", spec.name)
    metadata = _sub(domain, "metadata")
    owner = ET.SubElement(metadata, f"{{{METADATA_NS}}}owner", {"pid": str(spec.owner_pid), "host": spec.owner_host})
    if spec.run_dir is not None:
        owner.set("run_dir", str(spec.run_dir))
    for path in (spec.disk, *spec.owned_files):
        _sub(owner, f"{{{METADATA_NS}}}file", path=str(path))
    _sub(domain, "memory", str(spec.memory_mib), unit="MiB")
    _sub(domain, "vcpu", str(spec.vcpus))

    os_element = _sub(domain, "os")
    _sub(os_element, "type", "hvm", arch="x86_64", machine="q35")
    if spec.firmware == "uefi":
        if spec.ovmf_code is None or spec.nvram is None:
            raise ValueError("UEFI needs ovmf_code and nvram")
        _sub(os_element, "loader", str(spec.ovmf_code), readonly="yes", type="pflash", secure="no")
        _sub(os_element, "nvram", str(spec.nvram))
    if spec.kernel is not None:
        _sub(os_element, "kernel", str(spec.kernel))
        if spec.initrd is not None:
            _sub(os_element, "initrd", str(spec.initrd))
        _sub(os_element, "cmdline", spec.cmdline)
    else:
        if spec.cdroms:
            _sub(os_element, "boot", dev="cdrom")
        _sub(os_element, "boot", dev="hd")

    features = _sub(domain, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if spec.hyperv:
        hyperv = _sub(features, "hyperv", mode="custom")
        _sub(hyperv, "relaxed", state="on")
        _sub(hyperv, "vapic", state="on")
        _sub(hyperv, "spinlocks", state="on", retries="8191")
        if spec.domain_type != "qemu":
            # QEMU's hyperv.rst: synic needs vpindex; stimer needs vpindex, synic and hv-time (the hypervclock timer
            # below). QEMU 7.2 refuses hv-vpindex without KVM ("kernel doesn't allow setting HyperV VP_INDEX"), and
            # under TCG no enlightenment reaches the guest anyway: these three only with KVM.
            for enlightenment in ("vpindex", "synic", "stimer"):
                _sub(hyperv, enlightenment, state="on")
    if spec.firmware == "uefi":
        _sub(features, "smm", state="on")
    if spec.domain_type == "kvm":
        _sub(domain, "cpu", mode="host-passthrough")
    else:
        # Windows 11 24H2 does not boot without SSE4.2 and POPCNT (qemu64 has neither). Nehalem is QEMU's oldest
        # model with both and runs under TCG; fallback=forbid and the required features: never silently less.
        cpu = _sub(domain, "cpu", mode="custom", match="exact")
        _sub(cpu, "model", CPU_MODEL_TCG, fallback="forbid")
        for feature in CPU_FEATURES_REQUIRED:
            _sub(cpu, "feature", policy="require", name=feature)
    clock = _sub(domain, "clock", offset="utc")
    if spec.hyperv:
        # What libvirt and virt-manager set for Windows guests: RTC ticks caught up, PIT ticks delayed, no HPET,
        # and the Hyper-V reference clock.
        _sub(clock, "timer", name="rtc", tickpolicy="catchup")
        _sub(clock, "timer", name="pit", tickpolicy="delay")
        _sub(clock, "timer", name="hpet", present="no")
        _sub(clock, "timer", name="hypervclock", present="yes")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "preserve")

    devices = _sub(domain, "devices")
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2")
    _sub(disk, "source", file=str(spec.disk))
    _sub(disk, "target", dev="sda", bus="sata")
    for index, image in enumerate(spec.cdroms):
        cdrom = _sub(devices, "disk", type="file", device="cdrom")
        _sub(cdrom, "driver", name="qemu", type="raw")
        _sub(cdrom, "source", file=str(image))
        _sub(cdrom, "target", dev=f"sd{chr(ord('b') + index)}", bus="sata")
        _sub(cdrom, "readonly")
    if spec.com1 is not None:
        _serial(devices, 0, spec.com1, spec.com1_log)
    if spec.com2 is not None:
        _serial(devices, 1, spec.com2, spec.com2_log)
    if spec.panic == "hyperv":
        _sub(devices, "panic", model="hyperv")
    elif spec.panic == "isa":
        panic = _sub(devices, "panic", model="isa")
        _sub(panic, "address", type="isa", iobase="0x505")
    if spec.tpm:
        tpm = _sub(devices, "tpm", model="tpm-crb")
        _sub(tpm, "backend", type="emulator", version="2.0")
    _sub(devices, "memballoon", model="none")

    if spec.forwards:
        commandline = ET.SubElement(domain, f"{{{QEMU_NS}}}commandline")
        # restrict=on: the guest reaches nothing but the forwarded host loopback ports. The NIC gets a fixed
        # slot on the root bus: auto-placed, QEMU would take slot 1, which libvirt gives its PCIe root ports.
        hostfwd = ",".join(f"hostfwd=tcp:127.0.0.1:{f.host_port}-:{f.guest_port}" for f in spec.forwards)
        for argument in ("-netdev", f"user,id=kcbnet0,restrict=on,{hostfwd}", "-device", "e1000e,netdev=kcbnet0,bus=pcie.0,addr=0x10"):
            ET.SubElement(commandline, f"{{{QEMU_NS}}}arg", value=argument)
    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode")


def owner_of(xml: str) -> tuple[int, list[Path], str] | None:
    """(pid, files, host) from the harness metadata of a domain's XML, or None when it is not ours."""
    root = ET.fromstring(xml)
    owner = root.find(f"metadata/{{{METADATA_NS}}}owner")
    if owner is None:
        return None
    files = [Path(node.get("path", "")) for node in owner.findall(f"{{{METADATA_NS}}}file")]
    run_dir = owner.get("run_dir")
    if run_dir:
        files.append(Path(run_dir))
    return int(owner.get("pid", "0")), files, owner.get("host", "")
