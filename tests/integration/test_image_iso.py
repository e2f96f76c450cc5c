"""The answer ISO for real (xorriso): what goes in can be read back."""

from __future__ import annotations

from pathlib import Path

from harness.image.answer import FIRST_LOGON, ImageOptions, autounattend_xml, first_logon_script
from harness.image.iso import make_iso, read_iso


def test_answer_iso_really_contains_the_files(tmp_path: Path) -> None:
    options = ImageOptions(edition="Windows 11 Pro", ssh=True)
    files = {"autounattend.xml": autounattend_xml(options, "secret").encode(), FIRST_LOGON: first_logon_script(options).encode()}
    iso = tmp_path / "answers.iso"
    make_iso(files, iso)
    assert iso.stat().st_size > 0
    assert read_iso(iso) == files
