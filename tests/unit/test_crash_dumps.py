"""After a crash: which crash a lifecycle event means, and pulling dumps (with an in-memory transport)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.errors import GuestError
from harness.guests.base import CrashEvidence
from harness.guests.libvirt_vm.config import load_config
from harness.guests.libvirt_vm.dumps import collect_dumps, dump_names, local_name
from harness.guests.libvirt_vm.events import LifecycleEvent, crash_from_lifecycle
from harness.guests.libvirt_vm.guest import VmSession
from harness.transports.base import CommandResult, Transport, TransportError
from harness.transports.commands import MINIDUMP_DIR, list_files, posix_list_files

PANIC_LOG = "panic hyper-v: arg1='0xd1', arg2='0x0', arg3='0x2', arg4='0x0', arg5='0xfffff80312345678'\n"


class MemoryGuest(Transport):
    """A guest's files in memory; ``broken`` names downloads that fail."""

    def __init__(self, files: dict[str, bytes], broken: tuple[str, ...] = ()) -> None:
        self.files = files
        self.broken = broken
        self.closed = False

    def run(self, command: str, timeout: float) -> CommandResult:
        assert command == "LIST"
        return CommandResult(0, "\r\n".join(self.files) + "\r\n\r\n", "", 0.0)

    def upload(self, local: Path, remote: str, timeout: float) -> str:
        raise AssertionError("no uploads after a crash")

    def download(self, remote: str, local: Path, timeout: float) -> str:
        if remote in self.broken:
            local.write_bytes(b"half")
            raise TransportError(f"download of {remote} failed: connection reset")
        local.write_bytes(self.files[remote])
        return "hash"

    def close(self) -> None:
        self.closed = True


def test_lifecycle_events_that_mean_a_crash() -> None:
    crash = crash_from_lifecycle(LifecycleEvent(1.0, "crashed", 0), 5.0, lambda: PANIC_LOG)
    assert crash is not None and crash.code == 0xD1 and crash.parameters == (0, 2, 0, 0xFFFFF80312345678) and crash.t == 5.0
    reboot = crash_from_lifecycle(LifecycleEvent(1.0, "rebooted", 0), 6.0, lambda: "")
    assert reboot is not None and reboot.code is None and "restarted on its own" in reboot.summary
    assert crash_from_lifecycle(LifecycleEvent(1.0, "resumed", 0), 6.0, lambda: PANIC_LOG) is None


def test_new_dumps_are_pulled_and_the_snapshots_own_are_not(tmp_path: Path) -> None:
    old, new = f"{MINIDUMP_DIR}\\112426-01.dmp", f"{MINIDUMP_DIR}\\112526-02.dmp"
    guest = MemoryGuest({old: b"old", new: b"new"})
    waited: list[float] = []

    def connect(timeout: float) -> Transport:
        waited.append(timeout)
        return guest

    evidence = collect_dumps(connect, "LIST", tmp_path / "crash", 900, known=(old,))
    assert evidence.files == (tmp_path / "crash" / "112526-02.dmp",)
    assert evidence.files[0].read_bytes() == b"new" and evidence.note.startswith("1 crash dump(s) pulled after")
    assert waited == [900] and guest.closed


def test_a_guest_that_does_not_come_back(tmp_path: Path) -> None:
    def connect(timeout: float) -> Transport:
        raise GuestError("the guest's winrm did not answer within 5s")

    evidence = collect_dumps(connect, "LIST", tmp_path, 5)
    assert evidence == CrashEvidence(
        (), "no crash dump: the guest did not come back within 5s (the guest's winrm did not answer within 5s)"
    )


def test_a_stopped_vm_is_not_waited_for(tmp_path: Path) -> None:
    def connect(timeout: float) -> Transport:
        raise AssertionError("must not wait")

    evidence = collect_dumps(connect, "LIST", tmp_path, 900, stopped=lambda: "the VM is crashed")
    assert evidence == CrashEvidence((), "no crash dump: the VM is crashed")


def test_no_new_dump_and_a_failed_download_are_said(tmp_path: Path) -> None:
    empty = collect_dumps(lambda t: MemoryGuest({}), "LIST", tmp_path, 9, settle=0.05)
    assert re.fullmatch(r"no crash dump: the guest came back after 0s and had none 0s later", empty.note), empty.note
    guest = MemoryGuest({"/dumps/a.dmp": b"a", "/dumps/b.dmp": b"b"}, broken=("/dumps/a.dmp",))
    evidence = collect_dumps(lambda t: guest, "LIST", tmp_path / "crash", 9)
    assert evidence.files == (tmp_path / "crash" / "b.dmp",) and not (tmp_path / "crash" / "a.dmp").exists()
    assert "failed: /dumps/a.dmp: download of /dumps/a.dmp failed: connection reset" in evidence.note


@pytest.mark.parametrize(
    ("remote", "name"),
    [("C:\\Windows\\Minidump\\112526-01.dmp", "112526-01.dmp"), ("/dumps/x-1.dmp", "x-1.dmp"), ("C:\\a\\..\\b c$.dmp", "b_c_.dmp")],
)
def test_local_names_are_safe(remote: str, name: str) -> None:
    assert local_name(remote) == name


def test_listing_commands() -> None:
    assert dump_names(" a \r\n\r\nb\n") == ["a", "b"]
    assert list_files(MINIDUMP_DIR, "*.dmp") == (
        "Get-ChildItem -LiteralPath 'C:\\Windows\\Minidump' -Filter '*.dmp' -File -ErrorAction SilentlyContinue"
        " | Sort-Object LastWriteTime | ForEach-Object { $_.FullName }"
    )
    assert list_files("C:\\it's", "*").startswith("Get-ChildItem -LiteralPath 'C:\\it''s'")
    assert posix_list_files("/dumps/", ".dmp") == "for f in '/dumps'/*'.dmp'; do [ -f \"$f\" ] && echo \"$f\"; done; true"


@pytest.mark.parametrize(("crash_dumps", "panic"), [(True, "none"), (False, "hyperv")])
def test_crash_dumps_decide_the_hyperv_crash_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_dumps: bool, panic: str) -> None:
    # Windows cannot write a dump when the Hyper-V crash MSR stops the VM first.
    monkeypatch.setenv("KCB_TEST_PASSWORD", "pw")
    (tmp_path / "win.qcow2").write_bytes(b"")
    (tmp_path / "code.fd").write_bytes(b"")
    config = tmp_path / "harness.yaml"
    config.write_text(
        f"vm:\n  image: win.qcow2\n  crash_dumps: {str(crash_dumps).lower()}\n  ovmf_code: code.fd\n"
        "transport:\n  password_env: KCB_TEST_PASSWORD\n"
    )
    session = VmSession(load_config(config), tmp_path / "vm-boots")
    assert session.vm.spec.panic == panic and session.vm.spec.hyperv


def test_a_dump_that_appears_late_in_the_boot_is_waited_for(tmp_path: Path) -> None:
    class LateGuest(MemoryGuest):
        listings = 0

        def run(self, command: str, timeout: float) -> CommandResult:
            self.listings += 1
            if self.listings == 3:
                self.files["C:\\Windows\\Minidump\\late.dmp"] = b"dump"
            return super().run(command, timeout)

    guest = LateGuest({})
    evidence = collect_dumps(lambda t: guest, "LIST", tmp_path / "crash", 60, settle=1.0)
    assert evidence.files == (tmp_path / "crash" / "late.dmp",) and guest.listings == 3
