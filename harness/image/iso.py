"""ISO 9660 images with xorriso (Debian's): the answer ISO, and reading one back."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from harness.errors import ConfigError, HarnessError


class IsoError(HarnessError):
    """xorriso failed."""


def _xorriso() -> str:
    path = shutil.which("xorriso")
    if path is None:
        raise ConfigError("xorriso is not installed: run `make setup` (apt-get install xorriso)")
    return path


def make_iso(files: dict[str, bytes], out: Path, label: str = "KCB_ANSWERS") -> None:
    """An ISO (Joliet + Rock Ridge) holding ``files`` (name -> content) at its root.

    Raises:
        IsoError: xorriso failed.
    """
    with tempfile.TemporaryDirectory() as folder:
        for name, content in files.items():
            (Path(folder) / name).write_bytes(content)
        result = subprocess.run(
            [_xorriso(), "-as", "mkisofs", "-quiet", "-J", "-R", "-V", label, "-o", str(out), folder],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        raise IsoError(f"xorriso could not make {out.name}: {result.stderr.strip()[-300:]}")


def read_iso(iso: Path) -> dict[str, bytes]:
    """Every file at the root of ``iso`` (name -> content).

    Raises:
        IsoError: not readable as an ISO.
    """
    with tempfile.TemporaryDirectory() as folder:
        result = subprocess.run(
            [_xorriso(), "-osirrox", "on", "-indev", str(iso), "-extract", "/", folder], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise IsoError(f"xorriso could not read {iso.name}: {result.stderr.strip()[-300:]}")
        return {path.name: path.read_bytes() for path in Path(folder).iterdir() if path.is_file()}
