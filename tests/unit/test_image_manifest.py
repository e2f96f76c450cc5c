"""What an image's manifest may claim (only verified settings), what the harness refuses, the OpenSSH installer
the user gives, and the answer folder `image answer` writes."""

from __future__ import annotations

import json
import stat
import zipfile
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.image.answer import ImageOptions, OpenSshInstaller, expected_settings
from harness.image.build import answer_media, progress_results, write_answers
from harness.image.manifest import REQUIRED_SETTINGS, Manifest, check_manifest, manifest_path, required_settings
from harness.image.openssh import inspect_installer


def test_only_settings_whose_check_said_ok_are_verified() -> None:
    lines = [
        "build 22631",
        "ok upload-folder",
        "ok winrm",
        "FAILED winrm-firewall: rule kcb-winrm-in covers only the profiles Private",
        "ok bogus-setting",
        "ok testsigning",
        "FAILED testsigning: bcdedit /enum {current} does not show testsigning Yes",
        "done",
    ]
    verified, failed = progress_results(lines)
    assert verified == ["upload-folder", "winrm"]
    assert failed == {
        "winrm-firewall": "rule kcb-winrm-in covers only the profiles Private",
        "testsigning": "bcdedit /enum {current} does not show testsigning Yes",
    }


def test_the_harness_needs_the_new_settings_too() -> None:
    for needed in ("winrm", "winrm-firewall", "upload-folder", "device-encryption-off", "testsigning", "kernel-debug-serial",
                   "debug-print-filter", "crash-dump"):  # fmt: skip
        assert needed in REQUIRED_SETTINGS
    assert set(required_settings("ssh")) - set(REQUIRED_SETTINGS) == {"openssh", "ssh-firewall"}
    # Every required setting is one the script verifies.
    assert set(required_settings("ssh")) <= set(expected_settings(ImageOptions(edition="Windows 10 Pro", ssh=True,
                                                                               openssh=OpenSshInstaller("msi"))))  # fmt: skip


def manifest(image: Path, settings: list[str], failures: tuple[str, ...] = ()) -> None:
    image.write_bytes(b"qcow2")
    Manifest(image=image.name, sha256="0" * 64, size=5, edition="Windows 10 Pro", locale="en-US", windows_build="19045",
             settings=settings, created="2026-01-01T00:00:00+00:00", failures=list(failures)).write(manifest_path(image))  # fmt: skip


def test_an_image_lacking_a_needed_setting_is_refused_naming_it_and_why(tmp_path: Path) -> None:
    image = tmp_path / "win10.qcow2"
    manifest(image, [s for s in REQUIRED_SETTINGS if s != "winrm-firewall"], ("winrm-firewall: rule kcb-winrm-in is disabled",))
    with pytest.raises(ConfigError, match=r"without winrm-firewall \(rule kcb-winrm-in is disabled\), which the harness needs"):
        check_manifest(image)
    manifest(image, list(REQUIRED_SETTINGS))
    assert check_manifest(image) is not None
    with pytest.raises(ConfigError, match="without openssh, ssh-firewall"):
        check_manifest(image, transport="ssh")


def test_an_old_manifest_without_the_new_settings_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "old.qcow2"
    manifest(image, ["winrm", "testsigning", "kernel-debug-serial", "debug-print-filter", "crash-dump", "updates-off"])
    raw = json.loads(manifest_path(image).read_text())
    del raw["failures"]  # written before failures were recorded
    manifest_path(image).write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="without winrm-firewall, upload-folder, device-encryption-off, which"):
        check_manifest(image)


def test_the_openssh_installer_is_recognised(tmp_path: Path) -> None:
    msi = tmp_path / "OpenSSH-Win64-v9.5.0.0.msi"
    msi.write_bytes(bytes.fromhex("d0cf11e0a1b11ae1") + b"\0" * 504)
    assert inspect_installer(msi) == OpenSshInstaller("msi")
    release = tmp_path / "OpenSSH-Win64.zip"
    with zipfile.ZipFile(release, "w") as archive:
        for name in ("OpenSSH-Win64/install-sshd.ps1", "OpenSSH-Win64/sshd.exe", "OpenSSH-Win64/sftp-server.exe"):
            archive.writestr(name, b"x")
    assert inspect_installer(release) == OpenSshInstaller("zip", "OpenSSH-Win64")
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("readme.txt", b"x")
    for bad in (other, tmp_path / "missing.msi"):
        with pytest.raises(ConfigError, match="Win32-OpenSSH/releases"):
            inspect_installer(bad)


def test_the_answer_medium_carries_the_installer_and_the_answer_file_is_private(tmp_path: Path) -> None:
    installer = tmp_path / "OpenSSH-Win64.msi"
    installer.write_bytes(b"msi bytes")
    options = ImageOptions(edition="Windows 10 Pro", ssh=True, openssh=OpenSshInstaller("msi"))
    files = answer_media(options, "pw", installer)
    assert files["OpenSSH-Win64.msi"] == b"msi bytes"
    with pytest.raises(ConfigError, match="OpenSSH installer"):
        answer_media(options, "pw", None)
    folder = tmp_path / "answers"
    folder.mkdir()
    (folder / "autounattend.xml").write_text("old")
    (folder / "autounattend.xml").chmod(0o644)
    written = write_answers(files, folder)
    assert sorted(p.name for p in written) == sorted(files)
    assert stat.S_IMODE((folder / "autounattend.xml").stat().st_mode) == 0o600
    assert b"<Value>pw</Value>" in (folder / "autounattend.xml").read_bytes()
