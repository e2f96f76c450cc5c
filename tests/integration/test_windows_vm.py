"""On a real Windows VM (deselected unless KCB_WINDOWS_CONFIG names a harness.yaml with an image).

make sign && KCB_WINDOWS_CONFIG=harness.yaml KCB_GUEST_PASSWORD=... .venv/bin/python -m pytest -m windows_vm
"""

from __future__ import annotations

import os
import shutil
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


def test_a_bugcheck_is_crashed_with_its_minidump(tmp_path: Path) -> None:
    """The seeded bug (receiver unloads without ExUnregisterCallback): the next notification runs unloaded code."""
    config = os.environ["KCB_WINDOWS_CONFIG"]
    drivers = tmp_path / "drivers"
    shutil.copytree(ROOT / "build" / "drivers-seeded-bug", drivers)
    run = [sys.executable, "-m", "harness"]
    subprocess.run([*run, "sign", *map(str, drivers.glob("*.sys"))], cwd=ROOT, check=True, timeout=300)
    process = subprocess.run(
        [*run, "run", "--guest", "libvirt", "--config", config, "--drivers", str(drivers), "--out", str(tmp_path / "out"),
         str(ROOT / "scenarios" / "04-receiver-unloads.yaml")],
        cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False,
    )  # fmt: skip
    assert process.returncode == 1, process.stdout + process.stderr
    case = ET.parse(tmp_path / "out" / "junit.xml").getroot().find("testsuite/testcase")
    assert case is not None
    properties = {node.get("name"): node.get("value") for node in case.iter("property")}
    assert properties["outcome"] == "crashed" and (properties["crash_evidence"] or "").startswith("1 crash dump(s) pulled")
    dumps = list((tmp_path / "out" / "scenarios" / "04-receiver-unloads" / "crash").glob("*.dmp"))
    assert len(dumps) == 1 and dumps[0].read_bytes()[:8] in (b"PAGEDU64", b"PAGEDUMP")
    assert f"[[ATTACHMENT|{dumps[0].resolve()}]]" in (case.findtext("system-out") or "")


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
    from harness.image.manifest import check_manifest

    assert check_manifest(out) is not None  # every setting the harness needs was verified by the first-logon script
