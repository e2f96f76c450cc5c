"""The embedded guest refuses driver images it cannot run, before it loads anything: real images built for the
purpose (guest-drivers/refused/, `make refused-drivers`), the real Wine 8 DLLs and the harness's ntoskrnl."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import Settings
from harness.guests import GuestFactory
from harness.guests.wine.prefix import WinePrefix
from harness.runner import run_scenario
from harness.scenario.loader import load_scenario
from tests.integration.conftest import DATA, ROOT, session_processes

pytestmark = pytest.mark.wine

LIBVIRT = "run it on a Windows VM: --guest libvirt"
EXPECTED = {
    "unimplemented": "unimplemented.sys imports functions the embedded guest does not implement: "
    "ntoskrnl.exe!ExAcquireRundownProtection (a stub in Wine 8.0), ntoskrnl.exe!ExAllocatePool2 (not in Wine 8.0); " + LIBVIRT,
    "wdfclient": "wdfclient.sys imports from DLLs the embedded guest does not provide: WDFLDR.SYS (WdfVersionBind); " + LIBVIRT,
    "x86": "x86.sys is built for 32-bit x86 (machine 0x14c), not x64: the embedded guest runs x64 drivers only; "
    "run it on a 32-bit Windows VM: --guest libvirt",
    "gui": "gui.sys is not a kernel driver: its subsystem is 2 (Windows GUI), a driver's is 1 (native)",
}


@pytest.fixture(scope="module")
def refused(settings: Settings) -> Path:
    return settings.build_dir / "drivers-refused"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_refused_image_ends_the_scenario_as_error_with_one_line(
    name: str, refused: Path, wine_factory: GuestFactory, wine_prefix: WinePrefix, tmp_path: Path
) -> None:
    result = run_scenario(load_scenario(DATA / "refused" / f"{name}.yaml"), wine_factory, refused, tmp_path)
    assert result.outcome == "error"
    assert result.message == EXPECTED[name]
    assert all(step.state == "skipped" for step in result.steps)
    assert not result.raw_log.exists()  # no Wine session was started
    assert session_processes(wine_prefix) == []


def test_one_refused_image_refuses_the_whole_scenario(
    refused: Path, settings: Settings, wine_factory: GuestFactory, tmp_path: Path
) -> None:
    drivers = tmp_path / "drivers"
    drivers.mkdir()
    shutil.copy(settings.drivers_dir / "sender.sys", drivers)
    shutil.copy(refused / "unimplemented.sys", drivers)
    result = run_scenario(load_scenario(DATA / "refused" / "two.yaml"), wine_factory, drivers, tmp_path / "out")
    assert result.outcome == "error" and result.message == EXPECTED["unimplemented"]


def test_harness_run_prints_the_refusal_and_fails(refused: Path, wine_prefix: WinePrefix, tmp_path: Path) -> None:
    scenario = DATA / "refused" / "unimplemented.yaml"
    process = subprocess.run(
        [sys.executable, "-m", "harness", "run", str(scenario), "--drivers", str(refused), "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert process.returncode == 1, process.stdout + process.stderr
    assert f"ERROR unimplemented (0.00s): {EXPECTED['unimplemented']}\n" in process.stdout
    assert "Traceback" not in process.stderr
    assert session_processes(wine_prefix) == []
