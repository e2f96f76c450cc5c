"""Guests by name. Each is imported only when chosen, so optional dependencies stay optional."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harness.config import Settings
from harness.errors import ConfigError
from harness.guests.base import Guest
from harness.timeline import Timeline

GuestFactory = Callable[[Timeline, Path], Guest]

GUESTS = ("wine", "libvirt")


def guest_factory(settings: Settings) -> GuestFactory:
    """A function that makes a fresh guest of ``settings.guest`` for one scenario.

    Does the once-per-run set-up (e.g. the Wine prefix) before returning.

    Raises:
        ConfigError: unknown guest name.
        GuestError: the guest cannot be prepared.
    """
    if settings.guest == "wine":
        from harness.guests.wine.guest import WineGuest
        from harness.guests.wine.prefix import GuestFiles, WinePrefix, WineTools

        prefix = WinePrefix(settings.cache_dir / "wine-prefix", WineTools.find(), GuestFiles.in_dir(settings.build_dir / "wine"))
        prefix.ensure()
        return lambda timeline, run_dir: WineGuest(timeline, run_dir, prefix)
    if settings.guest == "libvirt":
        from harness.guests.libvirt_vm.config import load_config
        from harness.guests.libvirt_vm.guest import LibvirtGuest, VmSession

        if settings.config is None or not settings.config.is_file():
            raise ConfigError(
                "the libvirt guest needs a configuration: copy harness.example.yaml to harness.yaml, "
                f"or pass --config (looked for {settings.config})"
            )
        session = VmSession(load_config(settings.config))
        return lambda timeline, run_dir: LibvirtGuest(timeline, run_dir, session)
    raise ConfigError(f"unknown guest {settings.guest!r} (known: {', '.join(GUESTS)})")
