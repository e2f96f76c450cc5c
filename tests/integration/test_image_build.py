"""The image-build flow for real, as far as it goes without Windows: libvirtd + QEMU run the stand-in
guest in the installer's place, with the installer ISO, the answer ISO and a TPM attached, and the
Windows clock and Hyper-V settings of the build domain; like the first-logon script it reports each
checked setting ("ok NAME" / "FAILED NAME: detail") on every serial port it has and powers off; the
manifest records only what was verified, and the harness refuses an image that lacks what it needs."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.config import default_state_dir
from harness.errors import ConfigError
from harness.guests.libvirt_vm.standin import standin_files
from harness.image.answer import ImageOptions, expected_settings
from harness.image.build import BuildRequest, ImageBuildError, build_image
from harness.image.iso import make_iso, read_iso
from harness.image.manifest import Manifest, check_manifest, manifest_path
from harness.secrets import Secret

pytestmark = pytest.mark.libvirt


@pytest.fixture
def folder() -> Iterator[Path]:
    path = default_state_dir() / "test-vms" / f"image-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


OPTIONS = ImageOptions(edition="Windows 11 Pro")


def request(folder: Path, uri: str, mode: str, timeout: float, fail: tuple[str, ...] = ()) -> BuildRequest:
    iso = folder / "fake-installer.iso"
    make_iso({"README.TXT": b"not windows: the stand-in guest boots instead\n"}, iso, label="FAKE_INSTALLER")
    kernel, initrd = standin_files(into=folder / "standin")
    # The stand-in reports "ok" for what a real script would verify, "FAILED" for what it is told to fail.
    verified = ",".join(name for name in expected_settings(OPTIONS) if name not in fail)
    cmdline = f"console=ttyS1 quiet kcb.mode={mode} kcb.settings={verified}" + (f" kcb.fail={','.join(fail)}" if fail else "")
    return BuildRequest(
        iso=iso, out=folder / "images" / "win11.qcow2", options=OPTIONS, password=Secret("Sup3r-secret"),
        uri=uri, disk_size="64M", memory_mib=256, vcpus=1, timeout=timeout, work_dir=folder / "work",
        kernel=(kernel, initrd, cmdline),
    )  # fmt: skip


def test_build_flow_writes_a_checked_manifest(libvirt_uri: str, folder: Path) -> None:
    seen: list[str] = []
    build = request(folder, libvirt_uri, "installer", timeout=180)
    manifest = build_image(build, progress=seen.append)
    assert manifest.windows_build == "0 (linux stand-in)"
    assert manifest.settings == list(expected_settings(OPTIONS))
    assert manifest.progress == ["build 0 (linux stand-in)", *(f"ok {name}" for name in expected_settings(OPTIONS)), "done"]
    assert manifest.failures == []
    assert any("ok winrm-firewall" in line for line in seen)
    assert build.out.is_file() and check_manifest(build.out) == manifest
    on_disk = json.loads(manifest_path(build.out).read_text())
    assert on_disk["edition"] == "Windows 11 Pro" and len(on_disk["sha256"]) == 64
    assert not list((folder / "work").rglob("answers.iso"))  # it held the password
    assert "Sup3r-secret" not in manifest_path(build.out).read_text()


def test_a_setting_whose_check_failed_is_not_claimed_and_the_image_is_refused(libvirt_uri: str, folder: Path) -> None:
    seen: list[str] = []
    build = request(folder, libvirt_uri, "installer", timeout=180, fail=("winrm-firewall", "sample-submission-off"))
    with pytest.raises(ImageBuildError, match=r"not verified: winrm-firewall \(the stand-in was told to fail this check\)"):
        build_image(build, progress=seen.append)
    manifest = Manifest(**json.loads(manifest_path(build.out).read_text()))
    assert "winrm-firewall" not in manifest.settings and "sample-submission-off" not in manifest.settings
    assert "winrm" in manifest.settings
    assert manifest.failures == [
        "winrm-firewall: the stand-in was told to fail this check",
        "sample-submission-off: the stand-in was told to fail this check",
    ]
    assert "warning: sample-submission-off not verified (the stand-in was told to fail this check)" in seen  # optional: only warned
    with pytest.raises(ConfigError, match=r"without winrm-firewall \(the stand-in was told to fail this check\), which the harness needs"):
        check_manifest(build.out)


def test_the_answer_iso_carries_the_script_the_installer_runs(folder: Path) -> None:
    # The medium the build VM gets (made the same way; the build deletes its copy, which holds the password).
    from harness.image.build import answer_media

    iso = folder / "answers.iso"
    make_iso(answer_media(OPTIONS, "pw", None), iso)
    files = read_iso(iso)
    assert sorted(files) == ["autounattend.xml", "kcb-firstlogon.ps1"]
    assert b"Test-Setting 'winrm-firewall'" in files["kcb-firstlogon.ps1"]


def test_an_install_that_never_finishes_times_out_with_a_reason(libvirt_uri: str, folder: Path) -> None:
    build = request(folder, libvirt_uri, "text", timeout=20)
    with pytest.raises(ImageBuildError, match="did not finish within 20s; last progress: \\(none\\)"):
        build_image(build, progress=lambda line: None)
    assert not build.out.exists()


def test_a_changed_image_fails_its_manifest_check(libvirt_uri: str, folder: Path) -> None:
    build = build_image(request(folder, libvirt_uri, "installer", timeout=180), progress=lambda line: None)
    image = folder / "images" / "win11.qcow2"
    with open(image, "ab") as handle:
        handle.write(b"\0" * 4096)
    with pytest.raises(ConfigError, match="changed since it was built"):
        check_manifest(image)
    assert build.size != image.stat().st_size


def test_missing_iso_is_a_config_error(folder: Path) -> None:
    build = request(folder, "qemu:///system", "installer", timeout=10)
    (folder / "fake-installer.iso").unlink()
    with pytest.raises(ConfigError, match="installer ISO"):
        build_image(build)


def test_a_remote_uri_is_refused_with_what_to_do(folder: Path) -> None:
    build = request(folder, "qemu+ssh://root@lab-3/system", "installer", timeout=10)
    with pytest.raises(ConfigError, match="run it on the VM host itself"):
        build_image(build)
