"""A remote VM host: libvirt over qemu+ssh:// to an sshd on 127.0.0.1 started here, as root with its own keys.

The harness reaches the VM host's files (overlays, saved state, NVRAM), its
loopback ports (serial, the guest's forwarded SSH port) and libvirtd only
through SSH: the loopback shares this machine's file system, so what this
proves is the remote code path and its commands, not a second machine.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from harness.guests.libvirt_vm.guest import VmSession
from harness.guests.libvirt_vm.host import SshHost, parse_remote_uri, remote_port
from harness.guests.libvirt_vm.standin import standin_ssh_keys, standin_vm
from harness.kd.serial import Endpoint, TextSerialReader
from harness.timeline import Timeline
from harness.transports.ssh import SshTransport
from tests.integration.conftest import ROOT, VmHostSshd

pytestmark = [pytest.mark.libvirt, pytest.mark.sshd]

PREFIX = "kcbremote"
TICK = re.compile(r"kcb-standin: tick (\d+)$")


def ticks(timeline: Timeline, since: int = 0) -> list[int]:
    return [int(m.group(1)) for line in timeline.lines()[since:] if (m := TICK.search(line.text))]


def wait_ticks(timeline: Timeline, since: int, count: int, timeout: float = 120.0) -> list[int]:
    timeline.wait_for(lambda events: True if len(ticks(timeline, since)) >= count else None, timeline.now() + timeout)
    return ticks(timeline, since)


def test_the_vm_host_is_reached_only_over_ssh(vm_host_sshd: VmHostSshd, vm_dir: Path, tmp_path: Path) -> None:
    guest_ssh = remote_port()
    machine = standin_vm(vm_host_sshd.uri, vm_dir / "vm", mode="ssh", prefix=PREFIX, ssh_port=guest_ssh)
    assert isinstance(machine.host, SshHost)
    assert isinstance(machine.spec.com1, int) and isinstance(machine.spec.com2, int)  # TCP on the VM host's loopback
    machine.connect()
    try:
        machine.boot()
        assert machine.host.is_file(machine.spec.disk) and machine.host.size(machine.spec.disk) > 0
        com1 = machine.spec.com1
        endpoint = Endpoint.opened_by(lambda timeout: machine.host.open_port(com1, timeout), f"vm-host:{com1}")
        timeline = Timeline()
        with TextSerialReader(endpoint, timeline, tmp_path / "com1.log") as reader:
            assert len(wait_ticks(timeline, 0, 2)) >= 2, [line.text for line in timeline.lines()]
            machine.take_ready_snapshot()
            assert machine.host.is_file(vm_dir / "vm" / "run" / "ready.state")
            connections = reader.connections
            machine.revert(paused=True)
            # Over an SSH channel a connection exists only once QEMU listens again: the count is honest.
            assert reader.wait_connected(connections + 1, timeout=60)
            mark = len(timeline.lines())  # all the old QEMU printed is in; the restored guest is still paused
            machine.resume()
            after = wait_ticks(timeline, mark, 3)
            assert after[0] == after[-1] - len(after) + 1 and after[0] > 1

        # The guest's sshd through the VM host's port forward, forwarded again to this machine.
        host_key, client_key = standin_ssh_keys()
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text("kcb-guest " + " ".join(host_key.read_text().split()[:2]) + "\n")
        local = machine.host.forward(guest_ssh)
        deadline = time.monotonic() + 120
        while True:
            try:
                transport = SshTransport(
                    "127.0.0.1", local, "root", private_key=client_key, known_hosts=known_hosts, host_key_alias="kcb-guest",
                    remote="posix", timeout=10, attempts=1,
                )  # fmt: skip
                break
            except Exception:
                assert time.monotonic() < deadline, "the guest's sshd did not answer through the forwards"
                time.sleep(1)
        with transport:
            assert transport.run("cat /proc/cmdline", 30).stdout.count("kcb.mode=ssh") == 1
            driver = ROOT / "build" / "drivers" / "sender.sys"
            transport.upload(driver, "/tmp/sender.sys", 60)
    finally:
        machine.close()
    assert not (vm_dir / "vm" / "run").exists(), "the VM host's files of the run are removed"
    assert parse_remote_uri(vm_host_sshd.uri) is not None


def test_a_missing_image_on_the_vm_host_is_said_with_the_host(
    vm_host_sshd: VmHostSshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.errors import ConfigError
    from harness.guests.libvirt_vm.config import load_config

    monkeypatch.setenv("KCB_TEST_PASSWORD", "pw")
    config = tmp_path / "harness.yaml"
    config.write_text(f"vm:\n  uri: {vm_host_sshd.uri}\n  image: /nowhere/win10.qcow2\ntransport:\n  password_env: KCB_TEST_PASSWORD\n")
    with pytest.raises(ConfigError, match=r"/nowhere/win10.qcow2 does not exist on 127.0.0.1: prepare one"):
        VmSession(load_config(config), tmp_path / "vm-boots")
