"""The OpenSSH Server installer the user provides for ``image build --ssh``: which kind of file it is.

Windows' own way (``Add-WindowsCapability -Name OpenSSH.Server~~~~0.0.1.0``)
downloads the feature from Windows Update, which the build VM, having no
network, cannot reach. The Win32-OpenSSH releases (PowerShell/Win32-OpenSSH)
install offline: the MSI with ``msiexec``, or the zip with its
``install-sshd.ps1``. The file goes onto the answer ISO.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from harness.errors import ConfigError
from harness.image.answer import OpenSshInstaller

RELEASES = "https://github.com/PowerShell/Win32-OpenSSH/releases"
_OLE_MAGIC = bytes.fromhex("d0cf11e0a1b11ae1")  # an MSI is an OLE compound file


def inspect_installer(path: Path) -> OpenSshInstaller:
    """What ``path`` is: the OpenSSH-Win64 MSI, or its zip (and the folder in it that holds install-sshd.ps1).

    Raises:
        ConfigError: not a file, or neither of the two.
    """
    if not path.is_file():
        raise ConfigError(f"OpenSSH installer {path} not found (get OpenSSH-Win64 .msi or .zip from {RELEASES})")
    with open(path, "rb") as handle:
        head = handle.read(len(_OLE_MAGIC))
    if head == _OLE_MAGIC:
        return OpenSshInstaller(kind="msi")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
        for name in sorted(names):
            folder, _, base = name.rpartition("/")
            if base == "install-sshd.ps1" and "/" not in folder and (f"{folder}/sshd.exe" if folder else "sshd.exe") in names:
                try:
                    return OpenSshInstaller(kind="zip", folder=folder)
                except ValueError as error:
                    raise ConfigError(f"{path}: {error}") from None
    raise ConfigError(f"{path} is neither the OpenSSH-Win64 .msi nor its .zip (with install-sshd.ps1 and sshd.exe); see {RELEASES}")
