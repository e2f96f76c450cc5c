"""The Linux stand-in guest: the same VM plumbing as the Windows VM, with a tiny guest that boots in seconds.

Built by `make standin` (standin-guest/): Debian's kernel and busybox in an
initramfs, booted directly (no disk content needed; the golden "image" is an
empty qcow2). ``mode`` picks what its /init does: ``text`` prints
``kcb-standin: ready`` and a tick line every 0.2 s on COM1, ``panic`` crashes
the kernel through pvpanic, ``kd`` runs the KD target emulator on COM1, ``kdticks`` runs it printing
``kdticks: line N`` every 0.2 s for ever (its reports on COM2: when it gives up on the debugger, and
when a break-in brings it back),
``ssh`` is a reachable guest: sshd (key login with build/standin/ssh/client_ed25519)
on the user network behind ``ssh_port``, and crash dumps (``/kcb-crash MARKER``
writes one to the raw disk and resets; the next boot moves it to /dumps).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from harness.config import project_root
from harness.errors import GuestError
from harness.guests.libvirt_vm.config import VmSettings
from harness.guests.libvirt_vm.domain_xml import PortForward
from harness.guests.libvirt_vm.host import LocalHost, parse_remote_uri, remote_port, vm_host
from harness.guests.libvirt_vm.spec import vm_spec
from harness.guests.libvirt_vm.vm import VirtualMachine, detect_accel, new_name
from harness.transports.base import Transport, connect_with_retries
from harness.transports.ssh import SshTransport

Mode = Literal["text", "panic", "kd", "kdticks", "ssh"]
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


def standin_files(into: Path | None = None) -> tuple[Path, Path]:
    """(kernel, initramfs); with ``into``, copies there (a folder QEMU can reach: the project may be in /root).

    Raises:
        GuestError: not built.
    """
    folder = project_root() / "build" / "standin"
    kernel, initrd = folder / "vmlinuz", folder / "initramfs.cpio.gz"
    if not kernel.is_file() or not initrd.is_file():
        raise GuestError(f"the stand-in guest is not built ({folder}): run `make standin`")
    if into is None:
        return kernel, initrd
    into.mkdir(parents=True, exist_ok=True)
    copies = into / kernel.name, into / initrd.name
    for source, target in zip((kernel, initrd), copies, strict=True):
        shutil.copyfile(source, target)
    return copies


def standin_ssh_keys() -> tuple[Path, Path]:
    """(the stand-in's public host key, the private key its root accepts), made by `make standin`."""
    folder = project_root() / "build" / "standin" / "ssh"
    return folder / "host_ed25519.pub", folder / "client_ed25519"


def standin_connector(port: int, known_hosts: Path, pause: float = 1.0) -> Callable[[float], Transport]:
    """``connect(timeout)`` for the stand-in's sshd behind ``port`` (mode ssh), retrying until it answers.

    Its host key is written to ``known_hosts`` under the alias ``kcb-guest`` (as the VM guest's key is filed).
    """
    host_key, client_key = standin_ssh_keys()
    known_hosts.write_text("kcb-guest " + " ".join(host_key.read_text().split()[:2]) + "\n")

    def open_transport() -> Transport:
        return SshTransport("127.0.0.1", port, "root", private_key=client_key, known_hosts=known_hosts,
                            host_key_alias="kcb-guest", remote="posix", timeout=10, attempts=1)  # fmt: skip

    return lambda timeout: connect_with_retries(open_transport, timeout, "the stand-in's sshd", pause=pause)


def standin_settings(
    uri: str, image: Path, kernel: Path, initrd: Path, arguments: str, firmware: Literal["uefi", "bios"] = "uefi", **more: object
) -> VmSettings:
    """The VM settings of the stand-in guest (256 MiB, one vCPU, its kernel booted directly with ``arguments``)."""
    return VmSettings.model_validate(
        {
            "uri": uri, "image": image, "memory_mib": 256, "vcpus": 1, "firmware": firmware, "ovmf_code": OVMF_CODE,
            "ovmf_vars": OVMF_VARS, "hyperv": False, "guest_os": "standin", "kernel": kernel, "initrd": initrd,
            "cmdline": f"console=ttyS1 quiet panic=0 {arguments}", **more,
        }
    )  # fmt: skip


def standin_vm(
    uri: str,
    work_dir: Path,
    mode: Mode = "text",
    prefix: str = "kcb",
    firmware: Literal["uefi", "bios"] = "uefi",
    ssh_port: int = 0,
) -> VirtualMachine:
    """A VM (not yet booted) running the stand-in guest in ``mode``, with COM1 (and COM2) as sockets.

    ``ssh_port``: a port of the VM host's loopback forwarded to the guest's port 22 (mode ``ssh``).
    With a remote URI (qemu+ssh://) the serial ports are TCP ports of the VM host's loopback, and the
    kernel and initramfs must be at the same paths there (the tests use the loopback, one file system).
    The kernel and initramfs are copied into the VM's own folder (QEMU can reach it; the project may be in /root).
    """
    built = standin_files()
    host = vm_host(uri)
    remote = parse_remote_uri(uri) is not None
    run = work_dir / "run"
    host.make_dir(run)
    kernel, initrd = run / built[0].name, run / built[1].name
    for source, target in zip(built, (kernel, initrd), strict=True):
        host.copy(source, target)
    golden = work_dir.parent / f"{work_dir.name}-golden.qcow2"
    if not host.exists(golden):
        host.run(["qemu-img", "create", "-q", "-f", "qcow2", str(golden), "16M"])
    settings = standin_settings(uri, golden, kernel, initrd, f"kcb.mode={mode}", firmware)
    com1, com2 = (remote_port(), remote_port()) if remote else (run / "com1.sock", run / "com2.sock")
    accel = detect_accel(host)
    spec = vm_spec(
        settings, new_name(prefix), run, accel, com1=com1, com2=com2, forwards=(PortForward(ssh_port, 22),) if ssh_port else (),
        owner_pid=os.getpid(), owned_files=(golden,),
    )  # fmt: skip
    return VirtualMachine(uri, spec, golden, run, host=host)


def standin_config(
    folder: Path,
    images: tuple[str, ...] = (),
    hosts: tuple[tuple[str, int], ...] = (),
    name_prefix: str = "kcbsuite",
    uri: str = "qemu:///system",
) -> Path:
    """A harness.yaml with which `--guest libvirt` runs on the stand-in, through the very code a Windows VM gets.

    ``folder`` must be where QEMU can reach (the state folder): the kernel, initramfs and golden images go there.
    ``images``: named golden images (an image matrix; each an empty disk, the stand-in boots its kernel); none: one
    ``vm.image``. ``hosts``: a VM host pool of (libvirt URI, slots). The guest is reached over SSH with the stand-in's
    test key; its host key is in the known_hosts file written here, under the alias the harness files it by.
    """
    folder.mkdir(parents=True, exist_ok=True)
    kernel, initrd = standin_files(into=folder)
    names = images or ("standin",)
    disks = {name: folder / f"{name}.qcow2" for name in names}
    for disk in disks.values():
        if not disk.exists():
            LocalHost().run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"])
    host_key, client_key = standin_ssh_keys()
    known_hosts = folder / "known_hosts"
    known_hosts.write_text("kcb-guest " + " ".join(host_key.read_text().split()[:2]) + "\n")
    vm: dict[str, object] = {
        "uri": uri, "name_prefix": name_prefix, "memory_mib": 256, "vcpus": 1, "hyperv": False, "guest_os": "standin",
        "kernel": str(kernel), "initrd": str(initrd), "cmdline": "console=ttyS1 quiet panic=0 kcb.mode=ssh",
        "work_dir": str(folder / "vm"), "ready_timeout": "180s", "watchdog": "60s", "dump_timeout": "180s",
    }  # fmt: skip
    if hosts:
        vm["hosts"] = [{"uri": host, "slots": slots} for host, slots in hosts]
    config: dict[str, object] = {
        "vm": vm,
        "transport": {"type": "ssh", "username": "root", "private_key": str(client_key), "known_hosts": str(known_hosts)},
    }
    if images:
        config["images"] = {name: str(disk) for name, disk in disks.items()}
    else:
        vm["image"] = str(disks["standin"])
    path = folder / "harness.yaml"
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")  # JSON is YAML
    return path
