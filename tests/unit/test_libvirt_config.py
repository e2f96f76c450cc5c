"""The harness configuration file: bad input names file, line and field; secrets stay secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import project_root
from harness.errors import ConfigError, ConfigFileError
from harness.guests.libvirt_vm.config import load_config
from harness.secrets import Secret, load_secret

GOOD = """\
vm:
  image: images/win10.qcow2
  memory_mib: 2048
  ready_timeout: 10m
transport:
  type: winrm
  username: Administrator
  password_env: KCB_TEST_PASSWORD
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "harness.yaml"
    path.write_text(text)
    return path


def test_example_configuration_is_valid() -> None:
    config = load_config(project_root() / "harness.example.yaml")
    assert config.transport.type == "winrm" and config.transport.port == 5985
    assert config.vm.firmware == "uefi"


def test_relative_paths_are_taken_from_the_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.vm.image == tmp_path / "images" / "win10.qcow2"
    assert config.vm.ready_timeout == 600.0


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "message"),
    [
        ("memory_mib: 2048", "memory_mib: lots", 3, "vm.memory_mib", "valid integer"),
        ("type: winrm", "type: telnet", 6, "transport.type", "'winrm' or 'ssh'"),
        ("  password_env: KCB_TEST_PASSWORD\n", "", 5, "transport", "password_env"),
        ("  image: images/win10.qcow2\n", "", 1, "", "give vm.image (the golden image) or images:"),
        ("  memory_mib: 2048", "  memory_mib: 2048\n  hosts: [{uri: 'http://x'}]", 4, "vm.hosts[0].uri", "libvirt URI"),
        ("  memory_mib: 2048", "  memory_mib: 2048\n  hosts: [{uri: 'qemu:///system', slots: 0}]", 4, "vm.hosts[0].slots", "greater"),
        ("  memory_mib: 2048", "  memory_mib: 2048\n  colour: blue", 4, "vm.colour", "unknown key"),
        ("type: winrm", "type: ssh", 5, "transport", "known_hosts"),
        ("type: winrm", "type: winrm\n  scheme: http\n  auth: basic", 5, "transport", "in clear"),
    ],
)
def test_bad_configuration(tmp_path: Path, old: str, new: str, line: int, field: str, message: str) -> None:
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(ConfigFileError) as caught:
        load_config(path)
    assert (caught.value.line, caught.value.field) == (line, field)
    assert message in caught.value.message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_password_comes_from_the_environment_and_never_prints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KCB_TEST_PASSWORD", "hunter2-very-secret")
    secret = load_config(write(tmp_path, GOOD)).transport.password()
    assert secret is not None and secret.reveal() == "hunter2-very-secret"
    assert "hunter2" not in repr(secret) + str(secret) + f"{secret}"
    assert secret.mask("login failed for hunter2-very-secret!") == "login failed for ***!"


def test_missing_password_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KCB_TEST_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="KCB_TEST_PASSWORD is not set"):
        load_config(write(tmp_path, GOOD)).transport.password()


def test_password_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    assert load_secret(None, tmp_path / "pw", "x") == Secret("s3cret")
    with pytest.raises(ConfigError, match="cannot read"):
        load_secret(None, tmp_path / "missing", "x")


def test_an_image_matrix_and_a_pool_of_vm_hosts(tmp_path: Path) -> None:
    text = GOOD.replace(
        "  image: images/win10.qcow2\n", "  hosts:\n    - {uri: 'qemu:///system', slots: 2}\n    - {uri: 'qemu+ssh://root@vmhost/system'}\n"
    )
    text += "images:\n  win10: images/win10.qcow2\n  win11: /srv/win11.qcow2\n"
    config = load_config(write(tmp_path, text))
    assert config.image_names == ["win10", "win11"]
    assert [(host.uri, host.slots) for host in config.vm.pool] == [("qemu:///system", 2), ("qemu+ssh://root@vmhost/system", 1)]
    lane = config.on("qemu+ssh://root@vmhost/system", "win10")
    assert lane.vm.uri == "qemu+ssh://root@vmhost/system" and lane.vm.golden == tmp_path / "images" / "win10.qcow2"
    assert config.on("qemu:///system", "win11").vm.golden == Path("/srv/win11.qcow2")
    with pytest.raises(ConfigError, match="no image named 'win12'.*win10, win11"):
        config.on("qemu:///system", "win12")
    single = load_config(write(tmp_path, GOOD))
    assert single.image_names == [None] and [host.uri for host in single.vm.pool] == [single.vm.uri]
