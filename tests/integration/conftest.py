"""Shared set-up for tests on the real embedded guest (Wine, real compiled drivers)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.config import Settings, default_state_dir, project_root
from harness.guests import GuestFactory, open_guests
from harness.guests.libvirt_vm.host import free_port
from harness.guests.wine.prefix import GuestFiles, WinePrefix, WineTools

ROOT = project_root()
DATA = ROOT / "tests" / "data"


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.defaults()


@pytest.fixture(scope="session")
def wine_factory(settings: Settings) -> Iterator[GuestFactory]:
    """The real Wine guest; `make test` has built the drivers and installed Wine before pytest starts."""
    with open_guests(settings) as factory:
        yield factory


@pytest.fixture(scope="session")
def wine_prefix(settings: Settings, wine_factory: GuestFactory) -> WinePrefix:
    return WinePrefix(settings.cache_dir / "wine-prefix", WineTools.find(), GuestFiles.in_dir(settings.build_dir / "wine"))


def session_processes(prefix: WinePrefix) -> list[int]:
    """Pids of live processes that belong to the prefix's Wine session."""
    return prefix.session_pids()


@pytest.fixture
def no_session_left(wine_prefix: WinePrefix) -> Iterator[None]:
    """Fails the test if it leaves any process of the Wine session behind."""
    yield
    assert session_processes(wine_prefix) == []


@pytest.fixture(scope="session")
def libvirt_uri() -> Iterator[str]:
    """A real libvirtd answering qemu:///system, started by the project's own script when none runs."""
    result = subprocess.run([str(ROOT / "scripts" / "start-libvirtd.sh")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    yield "qemu:///system"
    for daemon in ("libvirtd", "virtlogd"):  # leave no daemon behind that the tests started
        if f"started {daemon}" in result.stdout:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(Path(f"/run/{daemon}.pid").read_text().strip()), signal.SIGTERM)


@pytest.fixture
def vm_dir() -> Iterator[Path]:
    """A work folder QEMU (running as libvirt-qemu) can reach, wherever the project lives (pytest's tmp_path is private)."""
    folder = default_state_dir() / "test-vms" / uuid.uuid4().hex[:8]
    folder.mkdir(parents=True)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def running_sshd(config: Path, port: int) -> Iterator[None]:
    """Debian's sshd with ``config`` in the foreground until the block ends, once it accepts on 127.0.0.1:``port``."""
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # its privilege-separation folder
    process = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert process.poll() is None and time.monotonic() < deadline, "sshd did not start"
            time.sleep(0.05)
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass(frozen=True)
class VmHostSshd:
    uri: str
    folder: Path


@pytest.fixture(scope="session")
def vm_host_sshd(libvirt_uri: str) -> Iterator[VmHostSshd]:
    folder = Path(tempfile.mkdtemp(prefix="kcb-vmhost-", dir="/var/tmp"))
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / key)], check=True)
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\nPidFile {folder / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nAllowUsers root\nStrictModes no\nAllowTcpForwarding local\n"
    )
    known_hosts = folder / "known_hosts"
    host_key = (folder / "host_key.pub").read_text().split()
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    # libvirt's ssh transport runs the ssh program, which ignores the URI's known_hosts: give it ours.
    ssh = folder / "ssh"
    ssh.write_text(f'#!/bin/sh\nexec ssh -o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes "$@"\n')
    ssh.chmod(0o755)
    uri = f"qemu+ssh://root@127.0.0.1:{port}/system?keyfile={folder / 'client_key'}&known_hosts={known_hosts}&no_tty=1&command={ssh}"
    try:
        with running_sshd(config, port):
            yield VmHostSshd(uri, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
