"""`python -m harness image answer`: what Windows will run, written without installing anything."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import ROOT


def harness(*args: str, password: str | None = "Sup3r-secret") -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "KCB_GUEST_PASSWORD"}
    if password is not None:
        env["KCB_GUEST_PASSWORD"] = password
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_help_lists_the_options_build_shares() -> None:
    out = harness("image", "answer", "--help").stdout
    for option in ("--edition", "--out", "--password-env", "--locale", "--timezone", "--product-key", "--evaluation", "--ssh",
                   "--openssh", "--certificate"):  # fmt: skip
        assert option in out, option
    assert "--iso" not in out
    for option in ("--openssh", "--evaluation"):
        assert option in harness("image", "build", "--help").stdout


def test_writes_the_answer_file_privately_and_says_what_it_holds(tmp_path: Path) -> None:
    out = tmp_path / "answers"
    process = harness("image", "answer", "--edition", "Windows 10 Pro", "--out", str(out), "--certificate", str(ROOT / "README.md"))
    assert process.returncode == 2 and "certificate" in process.stderr  # not a certificate: refused
    process = harness("image", "answer", "--edition", "Windows 10 Pro", "--out", str(out))
    assert process.returncode == 0, process.stderr
    answer = out / "autounattend.xml"
    assert stat.S_IMODE(answer.stat().st_mode) == 0o600
    assert "<Value>Sup3r-secret</Value>" in answer.read_text()
    assert "Sup3r-secret" not in process.stdout + process.stderr
    assert "holds the Administrator password in clear" in process.stdout
    assert "W269N-WFGWX-YVC9B-4J6C9-T83GX" in process.stdout and "W269N-WFGWX-YVC9B-4J6C9-T83GX" in answer.read_text()
    assert (out / "kcb-firstlogon.ps1").read_bytes().startswith(b"\xef\xbb\xbf")
    assert "winrm-firewall:" in process.stdout


def test_ssh_without_an_installer_is_refused_in_one_line(tmp_path: Path) -> None:
    process = harness("image", "answer", "--edition", "Windows 11 Pro", "--out", str(tmp_path), "--ssh")
    assert process.returncode == 2 and process.stderr.count("\n") == 1 and "--openssh" in process.stderr
    assert "Traceback" not in process.stderr and not list(tmp_path.iterdir())
    process = harness(
        "image", "answer", "--edition", "Windows 11 Pro", "--out", str(tmp_path), "--ssh", "--openssh", str(ROOT / "README.md")
    )
    assert process.returncode == 2 and "neither the OpenSSH-Win64 .msi nor its .zip" in process.stderr


def test_the_password_never_comes_from_the_command_line(tmp_path: Path) -> None:
    process = harness("image", "answer", "--out", str(tmp_path), password=None)
    assert process.returncode == 2 and "KCB_GUEST_PASSWORD is not set" in process.stderr
