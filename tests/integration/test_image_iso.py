"""The answer ISO for real (xorriso): what goes in can be read back."""

from __future__ import annotations

from pathlib import Path

from harness.image.answer import FIRST_LOGON, ImageOptions, OpenSshInstaller
from harness.image.build import answer_media
from harness.image.iso import make_iso, read_iso


def test_answer_iso_really_contains_the_files(tmp_path: Path) -> None:
    installer = tmp_path / "OpenSSH-Win64.msi"
    installer.write_bytes(bytes.fromhex("d0cf11e0a1b11ae1") + b"\0" * 4096)
    options = ImageOptions(edition="Windows 11 Pro", ssh=True, openssh=OpenSshInstaller("msi"))
    files = answer_media(options, "secret", installer)
    assert sorted(files) == ["OpenSSH-Win64.msi", "autounattend.xml", FIRST_LOGON]
    iso = tmp_path / "answers.iso"
    make_iso(files, iso)
    assert iso.stat().st_size > 0
    assert read_iso(iso) == files
