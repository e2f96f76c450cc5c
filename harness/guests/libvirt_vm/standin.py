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

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from harness.config import project_root
from harness.errors import GuestError
from harness.guests.libvirt_vm.domain_xml import DomainSpec, PortForward
from harness.guests.libvirt_vm.host import parse_remote_uri, remote_port, vm_host
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
    spec = DomainSpec(
        name=new_name(prefix),
        memory_mib=256,
        vcpus=1,
        disk=golden,
        domain_type="kvm" if detect_accel(host) == "kvm" else "qemu",
        firmware=firmware,
        ovmf_code=OVMF_CODE if firmware == "uefi" else None,
        nvram=OVMF_VARS if firmware == "uefi" else None,
        kernel=kernel,
        initrd=initrd,
        cmdline=f"console=ttyS1 quiet panic=0 kcb.mode={mode}",
        com1=remote_port() if remote else run / "com1.sock",
        com1_log=run / "com1.log",
        com2=remote_port() if remote else run / "com2.sock",
        panic="isa",
        hyperv=False,
        owner_pid=os.getpid(),
        owned_files=(golden,),
        forwards=(PortForward(ssh_port, 22),) if ssh_port else (),
    )
    return VirtualMachine(uri, spec, golden, run, host=host)
