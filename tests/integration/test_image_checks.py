"""The embedded guest refuses driver images it cannot run, before it loads anything: real images built for the
purpose (guest-drivers/refused/, `make refused-drivers`), the real Wine 8 DLLs and the harness's ntoskrnl."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import Settings
from harness.guests import GuestFactory
from harness.guests.wine.exports import load_inventory, module_exports
from harness.guests.wine.guest import WineGuest
from harness.guests.wine.prefix import WinePrefix
from harness.runner import run_scenario
from harness.scenario.loader import load_scenario
from harness.timeline import Timeline
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


def test_the_real_drivers_pass_the_check(settings: Settings, wine_prefix: WinePrefix, tmp_path: Path) -> None:
    guest = WineGuest(Timeline(), tmp_path, wine_prefix)
    images = [*sorted(settings.drivers_dir.glob("*.sys")), *sorted((settings.build_dir / "drivers-seeded-bug").glob("*.sys"))]
    assert {image.name for image in images} >= {"sender.sys", "receiver.sys", "cbprobe.sys", "stall.sys"}
    assert guest.check_images([*images, settings.build_dir / "wine" / "kcbanchor.sys"]) == []


def test_a_file_that_is_no_pe_image_is_refused(wine_prefix: WinePrefix, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.sys"
    bogus.write_bytes(b"MZ not really")
    [line] = WineGuest(Timeline(), tmp_path, wine_prefix).check_images([bogus])
    assert line.startswith("bogus.sys is not a PE image (")


@pytest.mark.parametrize("module", ["ntoskrnl.exe", "hal.dll", "ndis.sys", "fltmgr.sys"])
def test_stubs_found_in_the_code_are_the_stubs_wine_built(module: str, wine_prefix: WinePrefix) -> None:
    """The code pattern finds exactly the exports whose symbol is winebuild's __wine_stub_<name> (Debian keeps the symbols)."""
    path = wine_prefix.tools.dll_dir() / module
    exports, _ = module_exports(path)
    symbols = subprocess.run(["x86_64-w64-mingw32-objdump", "-t", str(path)], capture_output=True, text=True, check=True).stdout
    built = {line.rsplit(" ", 1)[1][len("__wine_stub_") :] for line in symbols.splitlines() if " __wine_stub_" in line}
    assert exports.stubs == built
    assert exports.stubs and not exports.stubs & exports.implemented


def test_the_shims_exports_resolve_through_wines(wine_prefix: WinePrefix) -> None:
    ntoskrnl = wine_prefix.kernel_inventory().modules["ntoskrnl.exe"]
    assert {"ExCreateCallback", "ExRegisterCallback", "ExNotifyCallback", "ExUnregisterCallback"} <= ntoskrnl.implemented  # the shim's
    assert "KeWaitForSingleObject" in ntoskrnl.implemented  # forwarded to Wine's, which implements it
    assert "ExAcquireRundownProtection" in ntoskrnl.stubs  # forwarded to Wine's stub
    assert "KeLowerIrql" in wine_prefix.kernel_inventory().modules["hal.dll"].implemented  # hal.dll forwards it to ntoskrnl.exe


def test_the_inventory_is_computed_once_and_again_when_a_file_changes(wine_prefix: WinePrefix, tmp_path: Path) -> None:
    shim = tmp_path / "ntoskrnl.exe"
    shutil.copy(wine_prefix.files.ntoskrnl, shim)
    cache = tmp_path / "kernel-exports.json"
    wine_dir, wine = wine_prefix.tools.dll_dir(), wine_prefix.tools.wine
    first = load_inventory(cache, shim, wine_prefix.files.ntoskwine, wine_dir, wine)
    written = cache.stat().st_mtime_ns
    assert load_inventory(cache, shim, wine_prefix.files.ntoskwine, wine_dir, wine) == first
    assert cache.stat().st_mtime_ns == written  # read, not recomputed
    os.utime(shim, ns=(written + 10**9, written + 10**9))
    assert load_inventory(cache, shim, wine_prefix.files.ntoskwine, wine_dir, wine) == first
    assert cache.stat().st_mtime_ns != written  # the shim changed: computed again
