"""--keep-failed's pieces that need no VM: the attach command lines and the wait for the user's release."""

from __future__ import annotations

import io
import os

from harness.guests.libvirt_vm.handoff import attach_commands, wait_released


def test_the_attach_commands_use_the_documented_serial_over_tcp_syntax() -> None:
    assert attach_commands(50123) == ["windbg -k com:ipport=50123,port=127.0.0.1", "kd -k com:ipport=50123,port=127.0.0.1"]


def test_enter_releases_the_hold_and_a_cancelled_run_does_too() -> None:
    read, write = os.pipe()
    with os.fdopen(read) as stdin, os.fdopen(write, "w") as keys:
        assert wait_released(io.StringIO(), stdin, lambda: True, poll=0.01) == "cancelled"
        keys.write("\n")
        keys.flush()
        assert wait_released(io.StringIO(), stdin, lambda: False, poll=0.01) == "released"
    assert wait_released(io.StringIO(), io.StringIO(), lambda: False) == "no input"  # not a real stdin: nothing to wait for
