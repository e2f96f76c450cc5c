"""On a real Windows VM (deselected unless KCB_WINDOWS_CONFIG names a harness.yaml with an image).

make sign && KCB_WINDOWS_CONFIG=harness.yaml KCB_GUEST_PASSWORD=... .venv/bin/python -m pytest -m windows_vm
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT

pytestmark = pytest.mark.windows_vm


def test_seed_scenarios_pass_on_windows(tmp_path: Path) -> None:
    config = os.environ["KCB_WINDOWS_CONFIG"]
    drivers = ROOT / "build" / "drivers-signed"
    assert drivers.is_dir(), "run `make sign` first: x64 Windows loads only signed drivers"
    process = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--guest", "libvirt", "--config", config,
         "--drivers", str(drivers), "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False,
    )  # fmt: skip
    assert process.returncode == 0, process.stdout + process.stderr
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite is not None and int(suite.get("tests", "0")) >= 6 and suite.get("failures") == "0"
    assert "get notify" in (tmp_path / "junit.xml").read_text()


@pytest.mark.skipif(
    not os.environ.get("KCB_WINDOWS_ISO"), reason="set KCB_WINDOWS_ISO (and KCB_WINDOWS_EDITION) to build an image for real"
)
def test_image_build_for_real(tmp_path: Path) -> None:
    out = tmp_path / "golden.qcow2"
    process = subprocess.run(
        [sys.executable, "-m", "harness", "image", "build", "--iso", os.environ["KCB_WINDOWS_ISO"],
         "--edition", os.environ.get("KCB_WINDOWS_EDITION", "Windows 10 Pro"), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=4 * 3600, check=False,
    )  # fmt: skip
    assert process.returncode == 0, process.stdout + process.stderr
    assert (tmp_path / "golden.qcow2.manifest.json").is_file()
