"""The command lines the VM guest sends, by guest OS: Windows (PowerShell around sc.exe), or the Linux stand-in. Pure.

The stand-in doubles for Windows in the project's own tests of the VM path: its
``/kcb-sc`` answers like sc.exe (``[SC] StartService FAILED n:`` with the Win32
error, ``STATE : 4 RUNNING``), runs a "driver" (a shell script the scenario
names as its image) for DriverEntry and DriverUnload, and the driver's lines go
to COM1 as the kernel log. Every value is a quoted literal (PowerShell
single-quoted, POSIX single-quoted): nothing is pasted into a command line.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Literal

from harness.transports import commands


class GuestShell(ABC):
    """What the VM guest asks the guest OS to do, as command lines for the transport."""

    #: The SSH transport's idea of the guest (how it checks an upload's hash).
    remote: Literal["windows", "posix"] = "windows"

    def __init__(self, folder: str) -> None:
        self.folder = folder

    @abstractmethod
    def path(self, name: str) -> str:
        """``name`` in the upload folder."""

    @abstractmethod
    def make_folder(self) -> str:
        """Create the upload folder (SFTP does not create the folder it writes into)."""

    @abstractmethod
    def create_service(self, service: str, image: str) -> str:
        """(Re)create a demand-start kernel-driver service for ``image``."""

    @abstractmethod
    def set_parameters(self, service: str, parameters: Mapping[str, int | str]) -> str:
        """Replace the service's Parameters with these values."""

    @abstractmethod
    def start(self, service: str) -> str:
        """Start the service (DriverEntry runs); sc.exe's output and exit code."""

    @abstractmethod
    def stop(self, service: str, timeout_s: int) -> str:
        """Stop the service and wait until it is stopped (DriverUnload ran)."""

    @abstractmethod
    def list_dumps(self) -> str:
        """Print the full path of each crash dump, oldest first."""


class WindowsShell(GuestShell):
    """Windows: PowerShell scripts (``powershell -EncodedCommand``) around sc.exe and the registry."""

    remote: Literal["windows", "posix"] = "windows"

    def path(self, name: str) -> str:
        return f"{self.folder}\\{name}"

    def make_folder(self) -> str:
        return commands.powershell(f"New-Item -ItemType Directory -Force -Path {commands.ps_literal(self.folder)} | Out-Null")

    def create_service(self, service: str, image: str) -> str:
        return commands.powershell(commands.create_service(service, image))

    def set_parameters(self, service: str, parameters: Mapping[str, int | str]) -> str:
        return commands.powershell(commands.set_parameters(service, dict(parameters)))

    def start(self, service: str) -> str:
        return commands.powershell(commands.sc_script("start", commands.plain_name(service, "service")))

    def stop(self, service: str, timeout_s: int) -> str:
        return commands.powershell(commands.stop_driver(service, timeout_s))

    def list_dumps(self) -> str:
        return commands.powershell(commands.list_files(commands.MINIDUMP_DIR, "*.dmp"))


STANDIN_SC = "/kcb-sc"
STANDIN_DUMPS = "/dumps"


class StandinShell(GuestShell):
    """The Linux stand-in: POSIX command lines around its ``/kcb-sc`` (see standin-guest/kcb-sc)."""

    remote: Literal["windows", "posix"] = "posix"

    def __init__(self, folder: str = "/kcb") -> None:
        super().__init__(folder)

    def _sc(self, *arguments: str) -> str:
        return " ".join(commands.posix_quote(argument) for argument in (STANDIN_SC, *arguments))

    def path(self, name: str) -> str:
        return f"{self.folder}/{name}"

    def make_folder(self) -> str:
        return f"mkdir -p -- {commands.posix_quote(self.folder)}"

    def create_service(self, service: str, image: str) -> str:
        return self._sc("create", commands.plain_name(service, "service"), image)

    def set_parameters(self, service: str, parameters: Mapping[str, int | str]) -> str:
        name = commands.plain_name(service, "service")
        lines = [self._sc("clearparams", name)]
        lines += [self._sc("param", name, commands.plain_name(key, "value name"), str(value)) for key, value in parameters.items()]
        return " && ".join(lines)

    def start(self, service: str) -> str:
        return self._sc("start", commands.plain_name(service, "service"))

    def stop(self, service: str, timeout_s: int) -> str:
        return self._sc("stop", commands.plain_name(service, "service"))

    def list_dumps(self) -> str:
        return commands.posix_list_files(STANDIN_DUMPS, ".dmp")
