"""Guests by name. Each is imported only when chosen, so optional dependencies stay optional."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from harness.config import Settings
from harness.errors import ConfigError
from harness.guests.base import Guest
from harness.timeline import Timeline

GuestFactory = Callable[[Timeline, Path], Guest]

GUESTS = ("wine", "libvirt")


@contextlib.contextmanager
def open_guests(settings: Settings) -> Iterator[GuestFactory]:
    """A function that makes a fresh guest of ``settings.guest`` for one scenario, for as long as the block runs.

    Does the once-per-run set-up first (the Wine prefix; the VM session, whose VM it closes again on every way
    out of the block: an error, Ctrl-C, SIGTERM).

    Raises:
        ConfigError: unknown guest name, or a missing configuration.
        GuestError: the guest cannot be prepared.
    """
    if settings.guest == "wine":
        from harness.guests.wine.guest import WineGuest
        from harness.guests.wine.prefix import GuestFiles, WinePrefix, WineTools

        prefix = WinePrefix(settings.cache_dir / "wine-prefix", WineTools.find(), GuestFiles.in_dir(settings.build_dir / "wine"))
        prefix.ensure()
        yield lambda timeline, run_dir: WineGuest(timeline, run_dir, prefix)
        return
    if settings.guest == "libvirt":
        from harness.guests.libvirt_vm.config import load_config
        from harness.guests.libvirt_vm.guest import LibvirtGuest, VmSession

        if settings.config is None or not settings.config.is_file():
            raise ConfigError(
                "the libvirt guest needs a configuration: copy harness.example.yaml to harness.yaml, "
                f"or pass --config (looked for {settings.config})"
            )
        session = VmSession(load_config(settings.config))
        try:
            yield lambda timeline, run_dir: LibvirtGuest(timeline, run_dir, session)
        finally:
            session.close()
        return
    raise ConfigError(f"unknown guest {settings.guest!r} (known: {', '.join(GUESTS)})")
