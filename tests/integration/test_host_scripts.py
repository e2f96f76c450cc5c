"""The project's own set-up scripts, run as on a fresh machine (in private namespaces, so nothing of this machine is touched)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT

pytestmark = pytest.mark.libvirt

FAILING_LIBVIRTD = "#!/bin/sh\nexit 1\n"


def test_a_libvirtd_that_does_not_come_up_leaves_no_virtlogd_behind(tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("libvirtd", "virsh"):  # libvirtd fails to start; virsh never gets an answer
        (fake / name).write_text(FAILING_LIBVIRTD)
        (fake / name).chmod(0o755)
    # A new PID namespace with its own /proc and /run: the real virtlogd starts there (nothing else runs), and
    # whatever is left when the script returns is what it left behind.
    inside = (
        f"mount -t tmpfs tmpfs /run && PATH={fake}:$PATH {ROOT / 'scripts' / 'start-libvirtd.sh'}; echo rc=$?; "
        "pgrep -x virtlogd >/dev/null && echo left-running || echo clean"
    )
    result = subprocess.run(
        ["unshare", "-m", "-p", "--fork", "--mount-proc", "bash", "-c", inside], capture_output=True, text=True, timeout=120, check=False
    )
    assert "rc=1" in result.stdout and "libvirtd did not come up" in result.stderr, result.stdout + result.stderr
    assert result.stdout.strip().endswith("clean"), result.stdout + result.stderr


def test_a_virtlogd_socket_left_by_a_killed_daemon_is_not_taken_for_a_running_one(tmp_path: Path) -> None:
    # A machine whose processes were killed (a CI machine made from a used one, a crash) keeps /run's files: a socket
    # file with no daemon behind it. libvirt then starts no VM ("Failed to connect socket to virtlogd-sock").
    fake = tmp_path / "bin"
    fake.mkdir()
    up = tmp_path / "libvirtd-up"
    (fake / "libvirtd").write_text(f"#!/bin/sh\ntouch {up}\n")  # comes up at once
    (fake / "virsh").write_text(f"#!/bin/sh\ntest -e {up}\n")  # answers once it is up
    for name in ("libvirtd", "virsh"):
        (fake / name).chmod(0o755)
    stale = "import socket; s = socket.socket(socket.AF_UNIX); s.bind('/run/libvirt/virtlogd-sock')"  # never listened
    alive = (
        "import socket, sys; s = socket.socket(socket.AF_UNIX)\n"
        "try: s.connect('/run/libvirt/virtlogd-sock'); print('virtlogd answers')\n"
        "except OSError as error: print('virtlogd-sock:', error)"
    )
    inside = (
        f'mount -t tmpfs tmpfs /run && mkdir -p /run/libvirt && {sys.executable} -c "{stale}" && '
        f'PATH={fake}:$PATH {ROOT / "scripts" / "start-libvirtd.sh"}; echo rc=$?; {sys.executable} -c "{alive}"'
    )
    result = subprocess.run(
        ["unshare", "-m", "-p", "--fork", "--mount-proc", "bash", "-c", inside], capture_output=True, text=True, timeout=120, check=False
    )
    assert "rc=0" in result.stdout, result.stdout + result.stderr
    assert result.stdout.strip().endswith("virtlogd answers"), result.stdout + result.stderr
