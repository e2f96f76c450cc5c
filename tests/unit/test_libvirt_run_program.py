"""The VM guest's run step: the exact command it sends, and what it makes of the answer (a recording transport)."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from harness.errors import GuestError
from harness.guests.base import ProgramResult
from harness.guests.libvirt_vm.guest import LibvirtGuest, VmSession
from harness.guests.libvirt_vm.shell import StandinShell, WindowsShell
from harness.kernel.events import LogLine
from harness.timeline import Timeline
from harness.transports.base import CommandResult, Transport
from harness.transports.commands import powershell, run_script


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Recording(Transport):
    """Records every call (commands as sent, uploads) and answers the run command with ``answer``."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.calls: list[tuple[str, str, float]] = []

    def run(self, command: str, timeout: float) -> CommandResult:
        self.calls.append(("run", command, timeout))
        return CommandResult(0, self.answer if "ProcessStartInfo" in _script(command) else "", "", 0.1)

    def upload(self, local: Path, remote: str, timeout: float) -> str:
        self.calls.append(("upload", remote, timeout))
        return ""

    def download(self, remote: str, local: Path, timeout: float) -> str:
        raise AssertionError("not expected")

    def close(self) -> None:
        pass


def _script(command: str) -> str:
    return base64.b64decode(command.rsplit(" ", 1)[-1]).decode("utf-16-le")


def guest_with(transport: Transport, tmp_path: Path) -> tuple[LibvirtGuest, Path]:
    session = SimpleNamespace(shell=WindowsShell("C:\\kcb tests"))
    guest = LibvirtGuest(Timeline(), tmp_path, cast(VmSession, session))
    guest.transport = transport
    program = tmp_path / "ioctl-client.exe"
    program.write_bytes(b"MZ")
    return guest, program


def test_the_run_command_is_exactly_the_run_script_after_the_upload(tmp_path: Path) -> None:
    transport = Recording(f"kcb-run exit 0 {b64('client: sent 5 bytes')} \r\n")
    guest, program = guest_with(transport, tmp_path)
    assert guest.run_program(program, ["hello", "a b"], 10) == ProgramResult(exit_code=0)
    runs = [call for call in transport.calls if call[0] == "run"]
    uploads = [call for call in transport.calls if call[0] == "upload"]
    assert [call[1] for call in uploads] == ["C:\\kcb tests\\ioctl-client.exe"]
    assert transport.calls.index(uploads[0]) < transport.calls.index(runs[-1])
    command, timeout = runs[-1][1], runs[-1][2]
    assert command == powershell(run_script("C:\\kcb tests\\ioctl-client.exe", ["hello", "a b"], 10))
    assert "'C:\\kcb tests\\ioctl-client.exe', 'hello \"a b\"'" in _script(command)
    assert timeout > 10  # the script ends the program at 10 s; the transport waits a little longer for its report


def test_output_lines_join_the_timeline_with_their_source(tmp_path: Path) -> None:
    transport = Recording("kcb-run exit 3 " + b64("first\r\nsecond\r\n") + " " + b64("oops") + "\r\n")
    guest, program = guest_with(transport, tmp_path)
    assert guest.run_program(program, [], 10) == ProgramResult(exit_code=3)
    lines = guest.timeline.lines()
    assert [(line.text, line.source) for line in lines] == [
        ("first", "ioctl-client.exe:stdout"),
        ("second", "ioctl-client.exe:stdout"),
        ("oops", "ioctl-client.exe:stderr"),
    ]
    assert all(isinstance(line, LogLine) for line in lines)


def test_the_upload_folder_is_created_once(tmp_path: Path) -> None:
    transport = Recording("kcb-run exit 0  \r\n")
    guest, program = guest_with(transport, tmp_path)
    guest.run_program(program, [], 10)
    guest.run_program(program, [], 10)
    folders = [call for call in transport.calls if call[0] == "run" and "New-Item -ItemType Directory" in _script(call[1])]
    assert len(folders) == 1 and "'C:\\kcb tests'" in _script(folders[0][1])


@pytest.mark.parametrize(
    ("answer", "result"),
    [
        (f"kcb-run timeout 1 {b64('hanging')} \r\n", ProgramResult(exit_code=None, timed_out=True)),
        (
            f"kcb-run error 193 {b64('not a valid Win32 application')}\r\n",
            ProgramResult(None, False, "not a valid Win32 application (Win32 error 193)"),
        ),
    ],
)
def test_timeouts_and_start_failures(tmp_path: Path, answer: str, result: ProgramResult) -> None:
    guest, program = guest_with(Recording(answer), tmp_path)
    assert guest.run_program(program, [], 10) == result


def test_an_answer_without_a_report_is_a_guest_error(tmp_path: Path) -> None:
    guest, program = guest_with(Recording("The command line is too long.\r\n"), tmp_path)
    with pytest.raises(GuestError, match="ioctl-client.exe"):
        guest.run_program(program, [], 10)


def test_the_linux_stand_in_runs_no_programs_and_says_so(tmp_path: Path) -> None:
    command = StandinShell().run_program("/kcb/ioctl-client.exe", ["hello"], 10)
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout
    guest, program = guest_with(Recording(output), tmp_path)
    assert guest.run_program(program, [], 10) == ProgramResult(
        None, False, "the Linux stand-in guest runs no user-mode programs (Win32 error 50)"
    )
