"""The one place where a domain's description (DomainSpec) is put together from the VM settings. Pure.

Used for the test VM (Windows, or the Linux stand-in that doubles for it in
the project's tests), and for the image build's install VM.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from harness.guests.libvirt_vm.config import VmSettings
from harness.guests.libvirt_vm.domain_xml import DomainSpec, PortForward

Serial = Path | int | None  # a unix socket, a TCP port on the VM host's loopback (remote hosts), or none


def vm_spec(
    settings: VmSettings,
    name: str,
    run: Path,
    accel: Literal["kvm", "qemu"],
    *,
    com1: Serial,
    com2: Serial,
    disk: Path | None = None,
    forwards: Sequence[PortForward] = (),
    cdroms: Sequence[Path] = (),
    tpm: bool = False,
    owner_pid: int = 0,
    owned_files: Sequence[Path] = (),
) -> DomainSpec:
    """The domain for ``settings``: its hardware, firmware, direct kernel boot (the stand-in), serial ports, panic device.

    The panic device: the stand-in reports its kernel panics through an ISA pvpanic device; Windows gets the Hyper-V
    crash MSRs only when crash dumps are off (QEMU stops the guest when Windows writes them, before its dump).
    """
    standin = settings.guest_os == "standin"
    panic: Literal["hyperv", "isa", "none"] = "isa" if standin else ("hyperv" if settings.hyperv and not settings.crash_dumps else "none")
    uefi = settings.firmware == "uefi"
    return DomainSpec(
        name=name,
        memory_mib=settings.memory_mib,
        vcpus=settings.vcpus,
        disk=disk or settings.golden,
        domain_type=accel,
        firmware=settings.firmware,
        ovmf_code=settings.ovmf_code if uefi else None,
        nvram=settings.ovmf_vars if uefi else None,
        kernel=settings.kernel,
        initrd=settings.initrd,
        cmdline=settings.cmdline,
        com1=com1,
        com1_log=run / "com1.log" if com1 is not None else None,
        com2=com2 if settings.text_serial else None,
        com2_log=run / "com2.log" if com2 is not None and settings.text_serial else None,
        panic=panic,
        hyperv=settings.hyperv,
        forwards=tuple(forwards),
        cdroms=tuple(cdroms),
        tpm=tpm,
        owner_pid=owner_pid,
        owned_files=tuple(owned_files),
    )
