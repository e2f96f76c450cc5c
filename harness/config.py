"""Where things are: driver images, build outputs, reports, caches."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def project_root() -> Path:
    """The checkout this package lives in (or the working directory for an installed copy)."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "guest-drivers").is_dir() else Path.cwd()


def default_cache_dir() -> Path:
    if "KCB_CACHE_DIR" in os.environ:
        return Path(os.environ["KCB_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "kcb-harness"


def default_state_dir() -> Path:
    """Where VM files live (overlays, saved states, serial sockets, test VMs): a folder QEMU can reach.

    libvirt's QEMU runs as its own user and cannot pass through /root or a home folder, so VM files never go
    under the project. ``KCB_STATE_DIR`` moves it; default /var/lib/kcb-harness as root, else
    $XDG_STATE_HOME/kcb-harness (libvirt's session instance runs QEMU as the user itself).
    """
    if "KCB_STATE_DIR" in os.environ:
        return Path(os.environ["KCB_STATE_DIR"])
    if os.geteuid() == 0:
        return Path("/var/lib/kcb-harness")
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "kcb-harness"


@dataclass(frozen=True)
class Settings:
    """One harness run's settings."""

    drivers_dir: Path
    out_dir: Path
    build_dir: Path
    cache_dir: Path
    guest: str = "wine"
    config: Path | None = None  # harness.yaml (libvirt guest)
    symbol_dirs: tuple[Path, ...] = ()  # more folders with the drivers' symbol files (the drivers' own folder comes first)
    keep_failed: bool = False  # hold a failed VM for a kernel debugger until released (--keep-failed)

    @classmethod
    def defaults(cls, **overrides: object) -> Settings:
        root = project_root()
        values: dict[str, object] = {
            "drivers_dir": root / "build" / "drivers",
            "out_dir": root / "build" / "reports",
            "build_dir": root / "build",
            "cache_dir": default_cache_dir(),
            "config": root / "harness.yaml",
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)  # type: ignore[arg-type]
