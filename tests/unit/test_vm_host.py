"""The VM host: remote libvirt URIs, command lines built from argument lists, local file operations."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ConfigError, GuestError
from harness.guests.libvirt_vm.host import LocalHost, RemoteUri, command_line, overlay_command, parse_remote_uri


@pytest.mark.parametrize(
    ("uri", "remote"),
    [
        ("qemu:///system", None),
        ("test:///default", None),
        ("qemu+ssh://lab-3/system", RemoteUri("lab-3", 22, None, None, None)),
        (
            "qemu+ssh://ci%40x@10.0.0.5:2222/system?keyfile=/k/id%20key&known_hosts=/k/hosts&no_tty=1",
            RemoteUri("10.0.0.5", 2222, "ci@x", Path("/k/id key"), Path("/k/hosts")),
        ),
        ("qemu+libssh2://root@h/system", RemoteUri("h", 22, "root", None, None)),
    ],
)
def test_remote_uris(uri: str, remote: RemoteUri | None) -> None:
    assert parse_remote_uri(uri) == remote


def test_a_remote_uri_needs_a_host() -> None:
    with pytest.raises(ConfigError, match="names no host"):
        parse_remote_uri("qemu+ssh:///system")


@pytest.mark.parametrize("attack", ["x; rm -rf /", "$(reboot)", "`id`", "a'b", "a\nb", "-rf", "*"])
def test_command_lines_keep_each_argument_whole(attack: str) -> None:
    import shlex

    line = command_line(["rm", "-f", "--", f"/vm/{attack}"])
    assert shlex.split(line) == ["rm", "-f", "--", f"/vm/{attack}"]
    assert line.startswith("'rm' '-f' '--' '")


def test_overlay_command_exact() -> None:
    assert command_line(overlay_command(Path("/img/w 10.qcow2"), Path("/vm/disk-1.qcow2"))) == (
        "'qemu-img' 'create' '-q' '-f' 'qcow2' '-b' '/img/w 10.qcow2' '-F' 'qcow2' '/vm/disk-1.qcow2'"
    )


def test_local_host_file_operations(tmp_path: Path) -> None:
    host = LocalHost()
    folder = tmp_path / "a" / "b"
    host.make_dir(folder)
    (folder / "x").write_text("hello")
    host.copy(folder / "x", folder / "y")
    host.rename(folder / "y", folder / "z")
    assert host.is_file(folder / "z") and not host.exists(folder / "y") and host.size(folder / "z") == 5
    assert host.read_text(folder / "z") == "hello" and host.read_text(folder / "missing") == ""
    assert host.run(["cat", str(folder / "z")]) == "hello"
    with pytest.raises(GuestError, match="cat failed"):
        host.run(["cat", str(folder / "missing")])
    host.remove(folder / "z")
    host.remove(folder / "z")
    (tmp_path / "file").write_text("x")
    host.remove_tree(tmp_path / "file")
    host.remove_tree(tmp_path / "a")
    assert not (tmp_path / "a").exists() and not (tmp_path / "file").exists() and host.forward(5985) == 5985
