"""Domain XML generation, parsed and checked."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from harness.guests.libvirt_vm.domain_xml import METADATA_NS, QEMU_NS, DomainSpec, PortForward, domain_xml, owner_of

WINDOWS = DomainSpec(
    name="kcb-1234abcd",
    memory_mib=4096,
    vcpus=2,
    disk=Path("/vm/run/disk-1.qcow2"),
    domain_type="kvm",
    firmware="uefi",
    ovmf_code=Path("/usr/share/OVMF/OVMF_CODE_4M.fd"),
    nvram=Path("/vm/run/vars-0.fd"),
    com1=Path("/vm/run/com1.sock"),
    com1_log=Path("/vm/run/com1.log"),
    com2=Path("/vm/run/com2.sock"),
    forwards=(PortForward(45985, 5985),),
    owner_pid=4242,
    owner_host="ci-7",
    run_dir=Path("/vm/run"),
)


def parse(spec: DomainSpec) -> ET.Element:
    return ET.fromstring(domain_xml(spec))


def test_windows_vm_hardware() -> None:
    root = parse(WINDOWS)
    assert root.get("type") == "kvm" and root.findtext("name") == "kcb-1234abcd"
    assert root.findtext("memory") == "4096" and root.find("memory").get("unit") == "MiB"  # type: ignore[union-attr]
    assert root.find("os/type").get("machine") == "q35"  # type: ignore[union-attr]
    loader = root.find("os/loader")
    assert loader is not None and loader.text == "/usr/share/OVMF/OVMF_CODE_4M.fd" and loader.get("secure") == "no"
    assert root.findtext("os/nvram") == "/vm/run/vars-0.fd"
    disk = root.find("devices/disk")
    assert disk is not None and disk.find("target").get("bus") == "sata"  # type: ignore[union-attr]
    assert disk.find("driver").get("type") == "qcow2" and disk.find("source").get("file") == "/vm/run/disk-1.qcow2"  # type: ignore[union-attr]
    assert root.find("devices/panic").get("model") == "hyperv"  # type: ignore[union-attr]
    assert root.find("features/hyperv/relaxed") is not None
    assert root.find("cpu").get("mode") == "host-passthrough"  # type: ignore[union-attr]


def test_serial_ports_are_sockets_with_a_log_copy() -> None:
    serials = parse(WINDOWS).findall("devices/serial")
    assert [s.find("target").get("port") for s in serials] == ["0", "1"]  # type: ignore[union-attr]
    com1 = serials[0]
    assert com1.get("type") == "unix"
    assert com1.find("source").attrib == {"mode": "bind", "path": "/vm/run/com1.sock"}  # type: ignore[union-attr]
    assert com1.find("log").attrib == {"file": "/vm/run/com1.log", "append": "on"}  # type: ignore[union-attr]
    assert serials[1].find("log") is None


def test_network_is_user_mode_restricted_with_a_loopback_forward() -> None:
    args = [arg.get("value") for arg in parse(WINDOWS).iter(f"{{{QEMU_NS}}}arg")]
    assert args[:2] == ["-netdev", "user,id=kcbnet0,restrict=on,hostfwd=tcp:127.0.0.1:45985-:5985"]
    assert args[2:] == ["-device", "e1000e,netdev=kcbnet0,bus=pcie.0,addr=0x10"]  # a slot libvirt's root ports do not take
    assert "graphics" not in domain_xml(WINDOWS)


def test_standin_guest_direct_kernel_boot_with_isa_pvpanic() -> None:
    spec = DomainSpec(
        name="kcb-standin",
        memory_mib=256,
        vcpus=1,
        disk=Path("/d.qcow2"),
        firmware="bios",
        kernel=Path("/k/vmlinuz"),
        initrd=Path("/k/initrd"),
        cmdline="console=ttyS1 kcb.mode=text",
        panic="isa",
        hyperv=False,
    )
    root = parse(spec)
    assert root.get("type") == "qemu" and root.find("os/loader") is None
    assert root.findtext("os/kernel") == "/k/vmlinuz" and root.findtext("os/cmdline") == "console=ttyS1 kcb.mode=text"
    panic = root.find("devices/panic")
    assert panic is not None and panic.get("model") == "isa" and panic.find("address").get("iobase") == "0x505"  # type: ignore[union-attr]
    assert root.find("features/hyperv") is None and root.findtext("cpu/model") == "Nehalem"
    assert root.find(f"{{{QEMU_NS}}}commandline") is None


def test_uefi_needs_firmware_paths() -> None:
    with pytest.raises(ValueError, match="UEFI"):
        domain_xml(DomainSpec(name="x", memory_mib=1, vcpus=1, disk=Path("/d"), firmware="uefi"))


def test_owner_metadata_round_trip() -> None:
    xml = domain_xml(WINDOWS)
    assert f'xmlns:ns0="{METADATA_NS}"' in xml or METADATA_NS in xml
    assert owner_of(xml) == (4242, [Path("/vm/run/disk-1.qcow2"), Path("/vm/run")], "ci-7")
    assert owner_of("<domain><name>other</name></domain>") is None


def test_names_with_markup_are_escaped() -> None:
    spec = DomainSpec(name="kcb-<x>&", memory_mib=1, vcpus=1, disk=Path("/a'b\"c.qcow2"), firmware="bios")
    root = parse(spec)
    assert root.findtext("name") == "kcb-<x>&" and root.find("devices/disk/source").get("file") == "/a'b\"c.qcow2"  # type: ignore[union-attr]


def test_installation_media_and_tpm() -> None:
    from dataclasses import replace

    spec = replace(WINDOWS, cdroms=(Path("/isos/win11.iso"), Path("/run/answers.iso")), tpm=True)
    root = parse(spec)
    cdroms = [d for d in root.findall("devices/disk") if d.get("device") == "cdrom"]
    assert [(c.find("source").get("file"), c.find("target").get("dev")) for c in cdroms] == [  # type: ignore[union-attr]
        ("/isos/win11.iso", "sdb"),
        ("/run/answers.iso", "sdc"),
    ]
    assert all(c.find("readonly") is not None for c in cdroms)
    assert [b.get("dev") for b in root.findall("os/boot")] == ["cdrom", "hd"]
    tpm = root.find("devices/tpm")
    assert tpm is not None and tpm.find("backend").get("version") == "2.0"  # type: ignore[union-attr]


def test_serial_ports_on_a_remote_vm_host_are_loopback_tcp() -> None:
    root = parse(replace(WINDOWS, com1=41001, com2=41002))
    serials = root.findall("devices/serial")
    assert [serial.get("type") for serial in serials] == ["tcp", "tcp"]
    assert serials[0].find("source").attrib == {"mode": "bind", "host": "127.0.0.1", "service": "41001"}  # type: ignore[union-attr]
    assert serials[0].find("protocol").attrib == {"type": "raw"}  # type: ignore[union-attr]
    assert serials[0].find("log").attrib == {"file": "/vm/run/com1.log", "append": "on"}  # type: ignore[union-attr]
    assert serials[1].find("target").get("port") == "1"  # type: ignore[union-attr]


# -- CPU model, clock and Hyper-V enlightenments (docs/windows-facts.md, "Windows Setup, ...") ----------------


def test_tcg_cpu_model_has_what_windows_11_24h2_needs() -> None:
    # 24H2 does not boot without SSE4.2 and POPCNT; qemu64 has neither. Nehalem is the oldest QEMU model with both,
    # and TCG in QEMU 7.2 runs it (domcapabilities: usable). fallback=forbid: never silently another model.
    cpu = parse(replace(WINDOWS, domain_type="qemu")).find("cpu")
    assert cpu is not None and cpu.get("mode") == "custom" and cpu.get("match") == "exact"
    model = cpu.find("model")
    assert model is not None and model.text == "Nehalem" and model.get("fallback") == "forbid"
    required = {f.get("name") for f in cpu.findall("feature") if f.get("policy") == "require"}
    assert {"sse4.2", "popcnt"} <= required


def test_windows_clock_as_libvirt_and_qemu_recommend() -> None:
    clock = parse(WINDOWS).find("clock")
    assert clock is not None
    timers = {t.get("name"): t.attrib for t in clock.findall("timer")}
    assert timers["rtc"].get("tickpolicy") == "catchup"
    assert timers["pit"].get("tickpolicy") == "delay"
    assert timers["hpet"].get("present") == "no"
    assert timers["hypervclock"].get("present") == "yes"


def test_hyperv_enlightenments_with_their_prerequisites() -> None:
    hyperv = parse(WINDOWS).find("features/hyperv")
    assert hyperv is not None
    on = {child.tag for child in hyperv if child.get("state") == "on"}
    assert {"relaxed", "vapic", "spinlocks", "vpindex", "synic", "stimer"} <= on
    # QEMU's hyperv.rst: synic needs vpindex; stimer needs vpindex, synic and time (libvirt's hypervclock timer).
    timers = {t.get("name"): t.get("present") for t in parse(WINDOWS).findall("clock/timer")}
    assert timers.get("hypervclock") == "yes"


def test_without_hyperv_no_windows_timers() -> None:
    root = parse(replace(WINDOWS, hyperv=False))
    assert root.find("features/hyperv") is None
    assert [t.get("name") for t in root.findall("clock/timer")] == []


def test_under_tcg_no_enlightenment_that_needs_kvm() -> None:
    # QEMU 7.2 (Debian 12) refuses hv-vpindex without KVM, and synic and stimer need it (seen here: "kernel doesn't
    # allow setting HyperV VP_INDEX"); the clock is the same.
    root = parse(replace(WINDOWS, domain_type="qemu"))
    hyperv = root.find("features/hyperv")
    assert hyperv is not None and {child.tag for child in hyperv} == {"relaxed", "vapic", "spinlocks"}
    assert {t.get("name") for t in root.findall("clock/timer")} == {"rtc", "pit", "hpet", "hypervclock"}
