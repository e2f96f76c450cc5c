"""Guests by name, as *lanes* (places where one guest runs at a time). Each kind is imported only when chosen."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from harness.config import Settings
from harness.errors import ConfigError
from harness.guests.base import Guest
from harness.timeline import Timeline

if TYPE_CHECKING:
    from harness.guests.libvirt_vm.config import HarnessConfig
    from harness.guests.libvirt_vm.guest import VmSession
    from harness.guests.wine.prefix import WinePrefix

GuestFactory = Callable[[Timeline, Path], Guest]

GUESTS = ("wine", "libvirt")


class WineLanes:
    """Embedded-guest lanes: lane 0 is the prepared prefix, lane n a clone of it (made once, kept in the cache)."""

    capacity: int | None = None  # as many as wanted: a clone costs ~0.1 s and hard links
    images: list[str | None] = [None]  # noqa: RUF012 - the embedded guest has no images

    def __init__(self, prefix: WinePrefix) -> None:
        self.prefix = prefix
        self._clones: dict[int, WinePrefix] = {}
        self._lock = threading.Lock()

    def factory(self, lane: int, image: str | None) -> GuestFactory:
        from harness.guests.wine.guest import WineGuest

        if image is not None:
            raise ConfigError(f"image {image!r}: the embedded guest has no images (--image is for --guest libvirt)")
        with self._lock:
            if lane not in self._clones:
                self._clones[lane] = self.prefix if lane == 0 else self.prefix.clone(lane)
            prefix = self._clones[lane]
        return lambda timeline, run_dir: WineGuest(timeline, run_dir, prefix)


class VmLanes:
    """The VM guest's lanes: the slots of the VM host pool (``vm.hosts``), one VM each at a time.

    Lane n is the n-th slot, on its host. A lane keeps its VM (its session: booted, prepared, reverted per
    scenario) for as long as its items are on the same image, and makes a new one from another image's golden
    image when needed. Every VM is closed when the lanes are.
    """

    def __init__(self, config: HarnessConfig, log_dir: Path, keep_failed: bool = False) -> None:
        self.config = config
        self.log_dir = log_dir  # the serial captures of each VM's boots outside scenarios (VmSession)
        self.keep_failed = keep_failed  # --keep-failed: a failed scenario's VM is held for a debugger
        self.slots = [host.uri for host in config.vm.pool for _ in range(host.slots)]
        self.capacity: int | None = len(self.slots)
        self.images: list[str | None] = config.image_names
        self._sessions: dict[int, tuple[str | None, VmSession]] = {}
        self._lock = threading.Lock()

    def factory(self, lane: int, image: str | None) -> GuestFactory:
        from harness.guests.libvirt_vm.guest import LibvirtGuest, VmSession

        if not 0 <= lane < len(self.slots):
            raise ConfigError(f"lane {lane}: the VM host pool has {len(self.slots)} slots (vm.hosts)")
        config = self.config.on(self.slots[lane], image)  # ConfigError for an unknown image, before anything starts
        with self._lock:
            current = self._sessions.pop(lane, None)
        if current is not None and current[0] == image:
            session = current[1]
        else:
            if current is not None:
                current[1].close()
            session = VmSession(config, self.log_dir)
            session.keep_failed = self.keep_failed
        with self._lock:
            self._sessions[lane] = (image, session)
        return lambda timeline, run_dir: LibvirtGuest(timeline, run_dir, session)

    def close(self) -> None:
        with self._lock:
            sessions = [session for _, session in self._sessions.values()]
            self._sessions.clear()
        for session in sessions:
            session.close()


@contextlib.contextmanager
def open_lanes(settings: Settings) -> Iterator[WineLanes | VmLanes]:
    """The lanes of ``settings.guest`` for as long as the block runs.

    Does the once-per-run set-up first (the Wine prefix; the VM session, whose VM it closes again on every way
    out of the block: an error, Ctrl-C, SIGTERM).

    Raises:
        ConfigError: unknown guest name, or a missing configuration.
        GuestError: the guest cannot be prepared.
    """
    if settings.guest == "wine":
        from harness.guests.wine.prefix import GuestFiles, WinePrefix, WineTools

        prefix = WinePrefix(settings.cache_dir / "wine-prefix", WineTools.find(), GuestFiles.in_dir(settings.build_dir / "wine"))
        prefix.ensure()
        yield WineLanes(prefix)
        return
    if settings.guest == "libvirt":
        from harness.guests.libvirt_vm.config import load_config

        if settings.config is None or not settings.config.is_file():
            raise ConfigError(
                "the libvirt guest needs a configuration: copy harness.example.yaml to harness.yaml, "
                f"or pass --config (looked for {settings.config})"
            )
        lanes = VmLanes(load_config(settings.config), settings.out_dir / "vm", keep_failed=settings.keep_failed)
        try:
            yield lanes
        finally:
            lanes.close()
        return
    raise ConfigError(f"unknown guest {settings.guest!r} (known: {', '.join(GUESTS)})")


@contextlib.contextmanager
def open_guests(settings: Settings) -> Iterator[GuestFactory]:
    """A function that makes a fresh guest of ``settings.guest`` for one scenario (lane 0), for as long as the block runs.

    Raises:
        ConfigError: unknown guest name, or a missing configuration.
        GuestError: the guest cannot be prepared.
    """
    with open_lanes(settings) as lanes:
        yield lanes.factory(0, None)
