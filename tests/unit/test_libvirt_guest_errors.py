"""How the VM guest classes a transport's failures: by exception type, never by the words of a message."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from harness.errors import GuestError, GuestHung
from harness.guests.libvirt_vm.guest import LibvirtGuest, VmSession
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
    guest = LibvirtGuest(Timeline(), tmp_path, cast(VmSession, None))
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
