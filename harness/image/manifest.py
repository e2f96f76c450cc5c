"""The golden image's manifest (``<image>.manifest.json``): what was verified in it, checked before the harness uses it.

Its own module, importable by the VM guest and by the image builder alike (the
builder imports the guest package; the guest must not import the builder).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from harness.errors import ConfigError

if TYPE_CHECKING:
    from harness.guests.libvirt_vm.host import VmHost

#: What the harness needs of every image, and of the transport it talks over (harness.yaml transport.type).
COMMON_SETTINGS = ("upload-folder", "device-encryption-off", "testsigning", "kernel-debug-serial", "debug-print-filter", "crash-dump")
TRANSPORT_SETTINGS = {"winrm": ("winrm", "winrm-firewall"), "ssh": ("openssh", "ssh-firewall")}


def required_settings(transport: Literal["winrm", "ssh"] = "winrm") -> tuple[str, ...]:
    """The verified settings an image must have for the harness to use it over ``transport``."""
    return TRANSPORT_SETTINGS[transport] + COMMON_SETTINGS


REQUIRED_SETTINGS = required_settings("winrm")


@dataclass
class Manifest:
    """What the image is and what was applied to it."""

    image: str
    sha256: str
    size: int
    edition: str
    locale: str
    windows_build: str
    settings: list[str]  # only those whose check reported "ok"
    created: str
    progress: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # "NAME: what its check found"

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__, indent=2) + "\n", encoding="utf-8")


def manifest_path(image: Path) -> Path:
    return image.with_name(image.name + ".manifest.json")


def check_manifest(image: Path, host: VmHost | None = None, transport: Literal["winrm", "ssh"] = "winrm") -> Manifest | None:
    """The image's manifest after checking it still describes the file (None when there is none).

    ``host``: the machine the image is on (default: this one); ``transport``: how the harness will talk to it.

    Raises:
        ConfigError: the image changed since it was built, or lacks a setting the harness needs (named).
    """
    if host is None:
        from harness.guests.libvirt_vm.host import LocalHost

        host = LocalHost()
    path = manifest_path(image)
    if not host.is_file(path):
        return None
    try:
        manifest = Manifest(**json.loads(host.read_text(path)))
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{path}: not a valid image manifest ({error})") from None
    if manifest.size != host.size(image):
        raise ConfigError(f"{image} changed since it was built ({path} says {manifest.size} bytes): rebuild it or remove the manifest")
    missing = [setting for setting in required_settings(transport) if setting not in manifest.settings]
    if missing:
        found = dict(failure.split(": ", 1) for failure in manifest.failures if ": " in failure)
        named = ", ".join(f"{name} ({found[name]})" if name in found else name for name in missing)
        raise ConfigError(f"{image} was built without {named}, which the harness needs (see {path}): rebuild it")
    return manifest
