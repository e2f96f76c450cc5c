"""The SSH transport against a real sshd on 127.0.0.1, started here with its own keys and user."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.errors import GuestHung
from harness.guests.libvirt_vm.host import free_port
from harness.secrets import Secret
from harness.transports.base import AuthenticationError, CommandTimeout, HostKeyError, TransportError
from harness.transports.ssh import SshTransport
from tests.integration.conftest import running_sshd

pytestmark = pytest.mark.sshd

USER = "kcbssh"


@dataclass(frozen=True)
class Sshd:
    port: int
    folder: Path
    known_hosts: Path
    client_key: Path
    password: Secret
    upload_dir: Path


@pytest.fixture(scope="session")
def sshd() -> Iterator[Sshd]:
    # sshd reads authorized_keys as the user: pytest's tmp folders (0700, root) are out of its reach.
    folder = Path(tempfile.mkdtemp(prefix="kcb-sshd-", dir="/var/tmp"))
    folder.chmod(0o755)
    password = Secret(secrets.token_urlsafe(18))
    if subprocess.run(["id", USER], capture_output=True, check=False).returncode != 0:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", USER], check=True)
    subprocess.run(["chpasswd"], input=f"{USER}:{password.reveal()}\n", text=True, check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "host_key")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "client_key")], check=True)
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    (folder / "authorized_keys").chmod(0o644)
    upload_dir = folder / "uploads"
    upload_dir.mkdir()
    upload_dir.chmod(0o777)
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\nPidFile {folder / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nUsePAM no\nPasswordAuthentication yes\nPubkeyAuthentication yes\n"
        f"KbdInteractiveAuthentication no\nStrictModes no\nAllowUsers {USER}\nSubsystem sftp internal-sftp\n"
    )
    host_public = (folder / "host_key.pub").read_text().split()
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_public[0]} {host_public[1]}\n")
    try:
        with running_sshd(config, port):
            yield Sshd(port, folder, known_hosts, folder / "client_key", password, upload_dir)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def connect(server: Sshd, **overrides: object) -> SshTransport:
    options: dict[str, object] = {"private_key": server.client_key, "known_hosts": server.known_hosts, "remote": "posix", "timeout": 10.0}
    options.update(overrides)
    return SshTransport("127.0.0.1", server.port, USER, **options)  # type: ignore[arg-type]


def test_commands_and_exit_codes(sshd: Sshd) -> None:
    with connect(sshd) as transport:
        assert transport.run("echo hello", 10).stdout == "hello\n"
        result = transport.run("echo oops >&2; exit 7", 10)
        assert (result.exit_code, result.stderr) == (7, "oops\n")


def test_upload_is_verified_by_hash(sshd: Sshd, tmp_path: Path) -> None:
    local = tmp_path / "driver.sys"
    local.write_bytes(os.urandom(5 * 1024 * 1024))
    remote = str(sshd.upload_dir / 'it\'s a $(name) `with` "quotes".sys')
    with connect(sshd) as transport:
        digest = transport.upload(local, remote, 30)
    assert Path(remote).read_bytes() == local.read_bytes()
    assert len(digest) == 64


def test_password_authentication(sshd: Sshd) -> None:
    with connect(sshd, private_key=None, password=sshd.password) as transport:
        assert transport.run("id -un", 10).stdout.strip() == USER


def test_wrong_password_is_rejected_without_showing_it(sshd: Sshd) -> None:
    wrong = Secret("not-the-password-" + secrets.token_hex(4))
    with pytest.raises(AuthenticationError) as caught:
        connect(sshd, private_key=None, password=wrong)
    assert wrong.reveal() not in str(caught.value) and "rejected" in str(caught.value)


def test_wrong_host_key_is_rejected(sshd: Sshd, tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = (tmp_path / "other.pub").read_text().split()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    with pytest.raises(HostKeyError, match="does not match"):
        connect(sshd, known_hosts=known_hosts)


def test_unknown_host_key_is_rejected_unless_accepted(sshd: Sshd, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    with pytest.raises(HostKeyError, match="unknown host key"):
        connect(sshd, known_hosts=empty)
    with connect(sshd, known_hosts=empty, accept_new_host_key=True) as transport:
        assert transport.run("true", 10).ok
    assert f"[127.0.0.1]:{sshd.port}" in empty.read_text()
    with connect(sshd, known_hosts=empty) as transport:  # now known
        assert transport.run("true", 10).ok


def test_host_key_filed_under_an_alias(sshd: Sshd, tmp_path: Path) -> None:
    # The VM's forwarded port changes every run: the key is filed under a fixed name instead.
    known_hosts = tmp_path / "known_hosts"
    host_key = (sshd.folder / "host_key.pub").read_text().split()
    known_hosts.write_text(f"kcb-guest {host_key[0]} {host_key[1]}\n")
    with connect(sshd, known_hosts=known_hosts, host_key_alias="kcb-guest") as transport:
        assert transport.run("true", 10).ok
    with pytest.raises(HostKeyError, match="unknown host key"):
        connect(sshd, known_hosts=known_hosts, host_key_alias="other-guest")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = (tmp_path / "other.pub").read_text().split()
    wrong = tmp_path / "wrong"
    wrong.write_text(f"kcb-guest {other[0]} {other[1]}\n")
    with pytest.raises(HostKeyError, match="does not match"):
        connect(sshd, known_hosts=wrong, host_key_alias="kcb-guest")
    fresh = tmp_path / "fresh"
    with connect(sshd, known_hosts=fresh, host_key_alias="kcb-guest", accept_new_host_key=True) as transport:
        assert transport.run("true", 10).ok
    assert fresh.read_text().startswith(f"kcb-guest {host_key[0]} {host_key[1]}")
    with connect(sshd, known_hosts=fresh, host_key_alias="kcb-guest") as transport:
        assert transport.run("true", 10).ok


def test_download_is_verified(sshd: Sshd, tmp_path: Path) -> None:
    remote = sshd.upload_dir / "it's a dump.dmp"
    remote.write_bytes(os.urandom(300_000))
    remote.chmod(0o644)
    local = tmp_path / "copy.dmp"
    with connect(sshd) as transport:
        transport.download(str(remote), local, 30)
    assert local.read_bytes() == remote.read_bytes()


def test_a_command_that_outlasts_its_timeout_is_a_hang_not_a_broken_transport(sshd: Sshd) -> None:
    # A stuck `sc start` must end the step as hung (by exception type, whatever the transport's words).
    with connect(sshd) as transport, pytest.raises(CommandTimeout) as caught:
        transport.run("sleep 30", 1)
    assert isinstance(caught.value, GuestHung) and isinstance(caught.value, TransportError)


def test_a_command_line_cmd_exe_would_refuse_is_never_sent_to_windows(sshd: Sshd) -> None:
    from harness.transports.commands import CMD_MAX_CHARS, CommandLineTooLong

    line = "echo " + "x" * CMD_MAX_CHARS
    with connect(sshd, remote="windows") as transport, pytest.raises(CommandLineTooLong):
        transport.run(line, 10)  # Windows OpenSSH hands it to cmd.exe, which accepts 8191 characters
    with connect(sshd) as transport:
        assert transport.run(line, 10).ok  # a POSIX shell takes it
