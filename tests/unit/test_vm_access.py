"""Which user QEMU runs as, and the folders on the way to a VM's files (pure parts of the reachability check)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.guests.libvirt_vm.access import folders_on_the_way, qemu_user


@pytest.mark.parametrize(
    ("conf", "user"),
    [
        ("", "libvirt-qemu"),
        ('#user = "qemu"\n', "libvirt-qemu"),
        ('# comment\nuser = "qemu"\ngroup = "kvm"\n', "qemu"),
        ('  user="+107"\n', "+107"),
    ],
)
def test_qemu_user_from_qemu_conf(conf: str, user: str) -> None:
    assert qemu_user(conf) == user


def test_folders_on_the_way_outermost_first_each_once() -> None:
    paths = [Path("/root/kcb/vm-images/win10.qcow2"), Path("/root/kcb/build/x"), Path("/var/lib/kcb-harness/vm")]
    assert folders_on_the_way(paths) == [
        "/",
        "/root",
        "/root/kcb",
        "/root/kcb/vm-images",
        "/root/kcb/build",
        "/var",
        "/var/lib",
        "/var/lib/kcb-harness",
    ]
