"""The project's own set-up scripts, run as on a fresh machine (in private namespaces, so nothing of this machine is touched)."""

from __future__ import annotations

import subprocess
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
