"""The order of a VM's boots that the harness reads: paused, readers attached, resumed (VmSession, its VM recorded).

A kernel booted with nobody on its debug port gives up on the debugger before anyone attaches; the
running snapshot would keep that kernel. Every boot therefore starts paused, and the KD reader (which
breaks in) and the COM2 reader are attached before the guest runs, across the Driver Verifier reboot too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.guests.libvirt_vm import guest as guest_module
from harness.guests.libvirt_vm.config import load_config
from harness.guests.libvirt_vm.guest import VmSession
from harness.timeline import Timeline
from harness.transports.base import CommandResult, Transport, TransportError


class RecordingVm:
    """Stands in for VirtualMachine: records the lifecycle calls, in order, into ``calls``."""

    def __init__(self, calls: list[str], real: Any) -> None:
        self.calls = calls
        self.spec = real.spec
        self.work_dir = real.work_dir

    def connect(self) -> None:
        self.calls.append("connect")

    def boot(self, overlay: bool = True, paused: bool = False) -> None:
        self.calls.append(f"boot paused={paused}")
        self.work_dir.mkdir(parents=True, exist_ok=True)  # as VirtualMachine.boot makes its run folder

    def revert(self, paused: bool = True, name: str = "ready") -> None:
        self.calls.append(f"revert paused={paused}")

    def resume(self) -> None:
        self.calls.append("resume")

    def take_ready_snapshot(self, name: str = "ready") -> None:
        self.calls.append(f"snapshot {name}")

    def has_snapshot(self, name: str = "ready") -> bool:
        return False

    def close(self) -> None:
        self.calls.append("close")


class RecordingTransport(Transport):
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def run(self, command: str, timeout: float) -> CommandResult:
        self.calls.append("run")
        return CommandResult(0, "", "", 0.0)

    def upload(self, local: Path, remote: str, timeout: float) -> str:
        return ""

    def download(self, remote: str, local: Path, timeout: float) -> str:
        return ""

    def close(self) -> None:
        pass


@pytest.fixture
def session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[VmSession, list[str]]]:
    monkeypatch.setenv("KCB_TEST_PASSWORD", "pw")
    (tmp_path / "win.qcow2").write_bytes(b"")
    (tmp_path / "code.fd").write_bytes(b"")
    config = tmp_path / "harness.yaml"
    config.write_text(
        "vm:\n  image: win.qcow2\n  ovmf_code: code.fd\n  accel: tcg\n  work_dir: vms\ntransport:\n  password_env: KCB_TEST_PASSWORD\n"
    )
    session = VmSession(load_config(config), log_dir=tmp_path / "reports" / "vm")
    calls: list[str] = []
    session.vm = RecordingVm(calls, session.vm)  # type: ignore[assignment]
    monkeypatch.setattr(guest_module, "remove_stale", lambda uri, prefix, host=None: [])

    class Readers:
        def __init__(self, timeline: Timeline, folder: Path) -> None:
            self.folder = folder

        def __enter__(self) -> None:
            calls.append(f"attach {self.folder.name}")

        def __exit__(self, *exc: object) -> None:
            calls.append(f"detach {self.folder.name}")

    monkeypatch.setattr(session, "attached_readers", Readers, raising=False)
    transports = iter([RecordingTransport(calls) for _ in range(3)])

    def connect(timeout: float) -> Transport:
        calls.append("transport")
        return next(transports)

    def old_instance_gone() -> Transport:
        raise TransportError("connection refused")

    monkeypatch.setattr(session, "connect_transport", connect)
    monkeypatch.setattr(session, "_transport", old_instance_gone)
    yield session, calls
    session.host.close()


def test_prepare_boots_paused_and_attaches_the_debugger_before_the_guest_runs(session: tuple[VmSession, list[str]]) -> None:
    vm_session, calls = session
    vm_session.prepare()
    assert calls == ["connect", "boot paused=True", "attach prepare", "resume", "transport", "run", "snapshot ready",
                     "detach prepare"]  # fmt: skip


def test_the_driver_verifier_reboot_happens_with_the_readers_attached(session: tuple[VmSession, list[str]]) -> None:
    vm_session, calls = session
    vm_session.prepare_verifier("verifier-1", "standard", ("sysTest.sys",))
    assert calls == ["revert paused=True", "attach verifier-1", "resume", "transport", "run", "run", "transport",
                     "snapshot verifier-1", "detach verifier-1"]  # fmt: skip


def test_the_boot_captures_stay_with_the_reports_not_in_the_vms_folder(session: tuple[VmSession, list[str]], tmp_path: Path) -> None:
    # They are the evidence of a boot that failed; the VM's own folder in the state folder is its files only.
    vm_session, calls = session
    vm_session.prepare()
    vm_session.prepare_verifier("verifier-1", "standard", ("sysTest.sys",))
    captures = tmp_path / "reports" / "vm" / vm_session.vm.spec.name
    assert (captures / "prepare").is_dir() and (captures / "verifier-1").is_dir()
    assert vm_session.vm.work_dir == tmp_path / "vms" / vm_session.vm.spec.name  # what VirtualMachine.close() removes
    assert list((tmp_path / "vms").iterdir()) == [vm_session.vm.work_dir]  # nothing else of the VM's
