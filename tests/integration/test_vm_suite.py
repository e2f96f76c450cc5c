"""`harness run --guest libvirt` end to end, with the Linux stand-in in Windows' place: the same session code, VM pool,
image matrix and signal handling a Windows VM gets (real libvirtd, real QEMU, the stand-in's sshd and its sc.exe double)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from harness.config import default_state_dir
from harness.guests.libvirt_vm.standin import standin_config
from harness.reports.store import load_dir
from tests.integration.conftest import DATA, ROOT, VmHostSshd

pytestmark = pytest.mark.libvirt

SCENARIOS = DATA / "standin"
DRIVERS = SCENARIOS / "drivers"


@pytest.fixture
def folder() -> Iterator[Path]:
    """The configuration's folder: VM files go there, so it is in the state folder QEMU can reach."""
    path = default_state_dir() / "test-vms" / f"suite-{uuid.uuid4().hex[:8]}"
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


def harness(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(config: Path, out: Path, *args: str, timeout: float = 600) -> tuple[int, str]:
    process = harness("run", "--guest", "libvirt", "--config", str(config), "--drivers", str(DRIVERS), "--out", str(out), *args)
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, stdout + stderr


def domains(uri: str, prefix: str) -> list[str]:
    conn = libvirt.open(uri)
    try:
        return [dom.name() for dom in conn.listAllDomains(0) if dom.name().startswith(prefix)]
    finally:
        conn.close()


def vm_files(folder: Path) -> list[Path]:
    """What a VM of the run would leave on disk: overlays, saved states, NVRAM copies, serial sockets."""
    return [path for path in (folder / "vm").rglob("*") if path.suffix in (".qcow2", ".state", ".fd", ".sock")]


def qemu_processes(prefix: str) -> list[str]:
    found = subprocess.run(["pgrep", "-af", f"guest={prefix}-"], capture_output=True, text=True, check=False).stdout
    return [line for line in found.splitlines() if "qemu-system" in line]


def test_scenarios_run_on_the_vm_path(libvirt_uri: str, folder: Path, tmp_path: Path) -> None:
    config = standin_config(folder, name_prefix="kcbvmrun")
    code, output = run(config, tmp_path, "-j", "1", str(SCENARIOS))
    assert code == 0, output
    cases = list(ET.parse(tmp_path / "junit.xml").getroot().iter("testcase"))
    assert sorted(case.get("classname", "") for case in cases) == [
        "scenarios.01-ticks", "scenarios.02-refused", "scenarios.03-two-drivers",
    ]  # fmt: skip
    # The kernel log came over the VM's COM1, as the raw capture shows; the refused driver reported its own status.
    assert "[ticker] tick 3" in (tmp_path / "scenarios" / "01-ticks" / "kd-raw.log").read_text()
    assert "STATUS_OBJECT_NAME_NOT_FOUND" in (tmp_path / "scenarios" / "02-refused" / "timeline.txt").read_text()
    assert domains(libvirt_uri, "kcbvmrun") == []
    assert vm_files(folder) == []  # the VM's overlays, saved states and sockets are gone
    assert list((folder / "vm").iterdir()) == []  # and its folder: nothing of a run stays in the state folder
    # The capture of the VM's first boot (before any scenario) is with the reports: the stand-in's kernel log.
    (prepare,) = (tmp_path / "vm").glob("kcbvmrun-*/prepare")
    assert "kcb-standin: ready" in (prepare / "kd-raw.log").read_text(errors="replace") and (prepare / "kd.txt").stat().st_size > 0


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_leaves_no_vm_behind_and_every_log_on_disk(libvirt_uri: str, folder: Path, tmp_path: Path, number: int) -> None:
    """The VM a `--guest libvirt` run holds is destroyed and its files removed on Ctrl-C or SIGTERM; the reports of the
    interrupted scenario and its raw serial log are on disk."""
    config = standin_config(folder, name_prefix="kcbsignal")
    raw = tmp_path / "scenarios" / "long-run" / "kd-raw.log"
    process = harness(
        "run", "--guest", "libvirt", "--config", str(config), "--drivers", str(DRIVERS), "--out", str(tmp_path), "-j", "1",
        str(DATA / "standin-long" / "long-run.yaml"),
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not (raw.is_file() and "[long] tick 5" in raw.read_text(errors="replace")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    assert domains(libvirt_uri, "kcbsignal"), "the run's VM is up"
    process.send_signal(number)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stdout + stderr
    assert "interrupted after 0 of 1 scenarios" in stderr and "Traceback" not in stdout + stderr
    assert domains(libvirt_uri, "kcbsignal") == [] and qemu_processes("kcbsignal") == []
    assert vm_files(folder) == []
    text = raw.read_text()
    assert text.endswith("\n") and "[long] tick 5" in text
    results = load_dir(tmp_path)
    assert [(r.id, r.outcome) for r in results] == [("long-run", "error")] and results[0].message.startswith("interrupted")


def test_an_image_matrix_is_one_report_item_per_scenario_and_image(libvirt_uri: str, folder: Path, tmp_path: Path) -> None:
    config = standin_config(folder, images=("win10-standin", "win11-standin"), name_prefix="kcbmatrix")
    code, output = run(config, tmp_path, "-j", "1", str(SCENARIOS))
    assert code == 0, output
    cases = list(ET.parse(tmp_path / "junit.xml").getroot().iter("testcase"))
    assert len(cases) == 6
    names = sorted(case.get("name", "") for case in cases)
    assert sum("[win10-standin]" in name for name in names) == 3 and sum("[win11-standin]" in name for name in names) == 3
    assert sorted(r.key for r in load_dir(tmp_path)) == sorted(
        f"{scenario}@{image}" for scenario in ("01-ticks", "02-refused", "03-two-drivers") for image in ("win10-standin", "win11-standin")
    )
    html = (tmp_path / "report.html").read_text()
    assert '<table class="grid">' in html and html.count("<th>win10-standin</th>") == 1
    # Only the named images can be chosen.
    code, output = run(config, tmp_path / "again", "--image", "win12", str(SCENARIOS / "01-ticks.yaml"))
    assert code == 2 and "--image win12: no such image (images: win10-standin, win11-standin)" in output


def test_two_vm_hosts_run_a_stand_in_each_at_once(libvirt_uri: str, vm_host_sshd: VmHostSshd, folder: Path, tmp_path: Path) -> None:
    """A pool of two VM hosts (this machine's libvirtd, and the same through qemu+ssh:// as a remote host), one slot
    each: -j 2 runs two VMs at once, one on each."""
    config = standin_config(folder, hosts=((libvirt_uri, 1), (vm_host_sshd.uri, 1)), name_prefix="kcbpool")
    code, output = run(config, tmp_path, "-j", "2", str(SCENARIOS))
    assert code == 0, output
    results = load_dir(tmp_path)
    assert {r.host for r in results} == {libvirt_uri, vm_host_sshd.uri}
    spans: dict[str, list[tuple[float, float]]] = {r.host: [] for r in results}
    for r in results:
        spans[r.host].append((r.started_at, r.started_at + r.duration))
    local, remote = spans[libvirt_uri], spans[vm_host_sshd.uri]
    assert any(a < d and c < b for a, b in local for c, d in remote), spans  # the two VMs ran at the same time
    assert domains(libvirt_uri, "kcbpool") == []
