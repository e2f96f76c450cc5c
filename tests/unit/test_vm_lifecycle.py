"""VM lifecycle logic against libvirt's in-process test driver (test:///default): no daemon, no QEMU."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from harness.errors import GuestError
from harness.guests.libvirt_vm.domain_xml import DomainSpec
from harness.guests.libvirt_vm.events import parse_panic_log
from harness.guests.libvirt_vm.vm import VirtualMachine, new_name, remove_stale, retarget_saved_xml

URI = "test:///default"


@pytest.fixture
def golden(tmp_path: Path) -> Path:
    path = tmp_path / "golden.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True)
    return path


def make_vm(tmp_path: Path, golden: Path, pid: int | None = None) -> VirtualMachine:
    spec = DomainSpec(
        name=new_name("kcbunit"), memory_mib=64, vcpus=1, disk=golden, domain_type="test", firmware="bios", panic="none", hyperv=False,
        owner_pid=os.getpid() if pid is None else pid,
    )  # fmt: skip
    return VirtualMachine(URI, spec, golden, tmp_path / "run")


@pytest.fixture
def vm(tmp_path: Path, golden: Path) -> Iterator[VirtualMachine]:
    machine = make_vm(tmp_path, golden)
    machine.connect()
    yield machine
    machine.close()


def test_boot_runs_on_an_overlay_of_the_golden_image(vm: VirtualMachine, golden: Path) -> None:
    vm.boot()
    assert vm.state() == "running"
    info = subprocess.run(["qemu-img", "info", str(vm.spec.disk)], capture_output=True, text=True, check=True).stdout
    assert f"backing file: {golden}" in info
    assert vm.conn.lookupByName(vm.spec.name).isActive()


def test_revert_retargets_the_saved_xml_to_fresh_copies() -> None:
    # (The test driver cannot restore with modified XML; the real revert runs in tests/integration.)
    saved = "<domain><os><nvram>/run/vars-1.fd</nvram></os><devices><disk><source file='/run/disk-1.qcow2'/></disk></devices></domain>"
    text = retarget_saved_xml(saved, Path("/run/disk-2.qcow2"), Path("/run/vars-2.fd"))
    assert "/run/disk-2.qcow2" in text and "/run/vars-2.fd" in text and "disk-1" not in text and "vars-1" not in text


def test_revert_without_snapshot_is_an_error(vm: VirtualMachine) -> None:
    vm.boot()
    with pytest.raises(GuestError, match="no running snapshot"):
        vm.revert()


def test_close_removes_domain_and_files(vm: VirtualMachine) -> None:
    vm.boot()
    name = vm.spec.name
    conn = libvirt.open(URI)
    vm.close()
    assert name not in [d.name() for d in vm_domains(conn)]
    assert not vm.work_dir.exists()
    vm.close()  # twice is fine


def vm_domains(conn: libvirt.virConnect) -> list[libvirt.virDomain]:
    return list(conn.listAllDomains(0))


def test_bad_uri_is_a_guest_error(tmp_path: Path, golden: Path) -> None:
    machine = VirtualMachine(
        "qemu+ssh://nonexistent.invalid/system?no_tty=1&command=/bin/false", make_vm(tmp_path, golden).spec, golden, tmp_path
    )
    with pytest.raises(GuestError, match="cannot connect"):
        machine.connect()


def test_parse_panic_log() -> None:
    text = (
        "2026-11-24 qemu: starting\n"
        "2026-11-24T10:00:00 panic hyper-v: arg1='0x1e', arg2='0xffffffffc0000005', "
        "arg3='0xfffff80000401020', arg4='0x0', arg5='0x8'\n"
    )
    assert parse_panic_log(text) == (0x1E, (0xFFFFFFFFC0000005, 0xFFFFF80000401020, 0, 8))
    assert parse_panic_log("nothing here") is None


def test_remove_stale_skips_live_owners(tmp_path: Path, golden: Path) -> None:
    # The test driver lives in this process: a domain owned by a dead pid is stale, ours is not.
    mine = make_vm(tmp_path / "a", golden)
    mine.connect()
    mine.boot()
    try:
        assert remove_stale(URI, "kcbunit") == []
        assert mine.state() == "running"
    finally:
        mine.close()


def test_a_domain_that_goes_away_while_stale_ones_are_looked_for_is_passed_over(
    tmp_path: Path, golden: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lanes share a libvirt: another lane's VM can vanish (a revert destroys it, a close removes it) between the
    # listing of the domains and the look at each one.
    other = make_vm(tmp_path / "b", golden)
    other.connect()
    other.boot()
    real_open = libvirt.open

    class Racing:
        def __init__(self, conn: libvirt.virConnect) -> None:
            self.conn = conn

        def listAllDomains(self, flags: int) -> list[libvirt.virDomain]:  # noqa: N802 - libvirt's name
            found = list(self.conn.listAllDomains(flags))
            other.destroy_domain()  # transient: gone at once
            return found

        def close(self) -> None:
            self.conn.close()

    monkeypatch.setattr(libvirt, "open", lambda uri: Racing(real_open(uri)))
    try:
        assert remove_stale(URI, "kcbunit") == []
    finally:
        other.close()


def test_a_second_boot_starts_from_the_variables_template_again(tmp_path: Path, golden: Path) -> None:
    # A boot that failed (libvirt refused the domain) is tried again on the same VM by the suite's infra retry;
    # that boot must copy the OVMF template again, not the first boot's copy onto itself.
    template = tmp_path / "OVMF_VARS.fd"
    template.write_bytes(b"template" * 512)
    code = tmp_path / "OVMF_CODE.fd"
    code.write_bytes(b"\0" * 4096)
    spec = DomainSpec(
        name=new_name("kcbunit"), memory_mib=64, vcpus=1, disk=golden, domain_type="test", firmware="uefi", panic="none", hyperv=False,
        ovmf_code=code, nvram=template, owner_pid=os.getpid(),
    )  # fmt: skip
    machine = VirtualMachine(URI, spec, golden, tmp_path / "run")
    machine.connect()
    try:
        machine.boot()
        (machine.work_dir / "vars-0.fd").write_bytes(b"changed by the first boot")
        machine.destroy_domain()
        machine.boot()
        assert machine.spec.nvram is not None and machine.spec.nvram.read_bytes() == template.read_bytes()
    finally:
        machine.close()
    assert template.read_bytes() == b"template" * 512
