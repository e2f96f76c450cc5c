"""The Windows VM's hardware as libvirtd + QEMU really run it here (TCG): the stand-in guest boots in a domain
with the Windows clock and Hyper-V settings, and its CPU has what Windows 11 24H2 needs (SSE4.2, POPCNT)."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path

import pytest

from harness.guests.libvirt_vm.domain_xml import domain_xml
from harness.guests.libvirt_vm.standin import standin_vm
from harness.guests.libvirt_vm.vm import VirtualMachine
from harness.kd.serial import Endpoint, TextSerialReader
from harness.timeline import Timeline

pytestmark = pytest.mark.libvirt

CPU = re.compile(r"kcb-standin: cpu (.*)$")


def test_the_windows_domain_boots_and_its_cpu_has_sse42_and_popcnt(libvirt_uri: str, vm_dir: Path) -> None:
    standin = standin_vm(libvirt_uri, vm_dir / "vm", mode="text", prefix="kcbhw")
    spec = replace(standin.spec, hyperv=True)  # as the Windows test VM and the image build get it
    xml = domain_xml(spec)
    assert "hypervclock" in xml and "catchup" in xml and "Nehalem" in xml
    vm = VirtualMachine(libvirt_uri, spec, spec.disk, vm_dir / "vm" / "run")
    vm.connect()
    try:
        vm.boot()
        timeline = Timeline()
        assert spec.com1 is not None
        with TextSerialReader(Endpoint.parse(f"unix:{spec.com1}"), timeline, vm_dir / "com1.log"):
            deadline = time.monotonic() + 120
            flags: list[str] = []
            while time.monotonic() < deadline and not flags:
                flags = [m.group(1) for line in timeline.lines() if (m := CPU.search(line.text))]
                time.sleep(0.2)
        assert flags, "the stand-in did not report its CPU"
        features = flags[0].split()
        assert "sse4_2" in features and "popcnt" in features, features
    finally:
        vm.close()
