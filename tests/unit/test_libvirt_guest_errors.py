"""How the VM guest classes a transport's failures: by exception type, never by the words of a message."""

from __future__ import annotations

import base64
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from harness.errors import GuestError, GuestHung
from harness.guests.base import DriverInstall
from harness.guests.libvirt_vm.guest import LibvirtGuest, VmSession
from harness.guests.libvirt_vm.shell import WindowsShell
from harness.timeline import Timeline
from harness.transports.base import CommandResult, CommandTimeout, Transport, TransportError


class FailingTransport(Transport):
    def __init__(self, error: Exception) -> None:
        self.error = error

    def run(self, command: str, timeout: float) -> CommandResult:
        raise self.error

    def upload(self, local: Path, remote: str, timeout: float) -> str:
        raise self.error

    def download(self, remote: str, local: Path, timeout: float) -> str:
        raise self.error

    def close(self) -> None:
        pass


def guest_with(transport: Transport, tmp_path: Path) -> LibvirtGuest:
    guest = LibvirtGuest(Timeline(), tmp_path, cast(VmSession, SimpleNamespace(shell=WindowsShell("C:\\kcb"))))
    guest.transport = transport
    return guest


@pytest.mark.parametrize("words", ["command did not finish within 30s", "Timeout opening channel.", ""])
def test_a_stuck_sc_start_is_a_hang_whatever_the_transport_says(words: str, tmp_path: Path) -> None:
    guest = guest_with(FailingTransport(CommandTimeout(words)), tmp_path)
    with pytest.raises(GuestHung):
        guest.load("sysTest", 30)


def test_a_broken_transport_is_not_a_hang(tmp_path: Path) -> None:
    # Even when its message happens to contain the words a timeout would use.
    guest = guest_with(FailingTransport(TransportError("connection reset; the command did not finish")), tmp_path)
    with pytest.raises(GuestError) as caught:
        guest.load("sysTest", 30)
    assert not isinstance(caught.value, GuestHung)


class RecordingTransport(Transport):
    """Records the scripts it is asked to run (decoded from -EncodedCommand) and the uploads, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def run(self, command: str, timeout: float) -> CommandResult:
        encoded = command.rsplit(" ", 1)[-1]
        self.calls.append(("run", base64.b64decode(encoded).decode("utf-16-le")))
        return CommandResult(0, "", "", 0.0)

    def upload(self, local: Path, remote: str, timeout: float) -> str:
        self.calls.append(("upload", remote))
        return ""

    def download(self, remote: str, local: Path, timeout: float) -> str:
        raise AssertionError("not expected")

    def close(self) -> None:
        pass


def test_the_upload_folder_is_created_before_the_first_upload(tmp_path: Path) -> None:
    # SFTP does not create the folder it writes into (an image prepared by hand may lack it).
    transport = RecordingTransport()
    session = SimpleNamespace(shell=WindowsShell("C:\\kcb tests"))
    guest = LibvirtGuest(Timeline(), tmp_path, cast(VmSession, session))
    guest.transport = transport
    image = tmp_path / "receiver.sys"
    image.write_bytes(b"MZ")
    for service in ("sysRecv1", "sysTest"):
        guest.install(DriverInstall(service=service, image=image), 30)
    uploads = [i for i, (kind, _) in enumerate(transport.calls) if kind == "upload"]
    folder = [i for i, (kind, script) in enumerate(transport.calls) if kind == "run" and "New-Item -ItemType Directory" in script]
    assert len(folder) == 1 and folder[0] < uploads[0]  # once per scenario, before anything is written into it
    assert "-Path 'C:\\kcb tests'" in transport.calls[folder[0]][1]
    assert [transport.calls[i][1] for i in uploads] == ["C:\\kcb tests\\sysRecv1.sys", "C:\\kcb tests\\sysTest.sys"]
