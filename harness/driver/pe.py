"""What a driver image is built for and what it imports, read from its PE headers (pefile).

Only the facts a guest needs to decide whether it can load the image: the
machine type, the subsystem, and the imports by DLL (names, or ordinals for
imports by number).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pefile

from harness.errors import HarnessError

#: IMAGE_FILE_HEADER.Machine values (winnt.h) and how a report names them.
MACHINE_AMD64 = 0x8664
MACHINES = {
    0x014C: "32-bit x86",
    0x8664: "x64",
    0xAA64: "ARM64",
    0x01C4: "32-bit ARM",
    0x0200: "Itanium",
}
#: IMAGE_OPTIONAL_HEADER.Subsystem values (winnt.h); kernel drivers are native.
SUBSYSTEM_NATIVE = 1
SUBSYSTEMS = {
    0: "unknown",
    1: "native",
    2: "Windows GUI",
    3: "Windows console",
    9: "Windows CE GUI",
    10: "EFI application",
    11: "EFI boot service driver",
    12: "EFI runtime driver",
    16: "Windows boot application",
}


class ImageUnreadable(HarnessError):
    """The file is not a PE image pefile can read."""


@dataclass(frozen=True)
class ImportedDll:
    """One DLL an image imports from, with the functions: names, or ordinals (int) for imports by number."""

    name: str
    functions: tuple[str | int, ...]


@dataclass(frozen=True)
class ImageFacts:
    """A driver image's machine, subsystem and imports (one entry per DLL, in the image's order)."""

    machine: int
    subsystem: int
    imports: tuple[ImportedDll, ...]

    @property
    def machine_name(self) -> str:
        return MACHINES.get(self.machine, "an unknown machine")

    @property
    def subsystem_name(self) -> str:
        return SUBSYSTEMS.get(self.subsystem, "unknown")


def read_image(path: Path) -> ImageFacts:
    """The facts of the image at ``path``.

    Raises:
        ImageUnreadable: not a PE image (or a damaged one).
    """
    try:
        pe = pefile.PE(str(path), fast_load=True)
    except (pefile.PEFormatError, OSError) as error:
        raise ImageUnreadable(f"{path.name} is not a PE image ({error})") from None
    try:
        pe.parse_data_directories(directories=[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_IMPORT"]])
        by_dll: dict[str, tuple[str, list[str | int]]] = {}
        for entry in getattr(pe, "DIRECTORY_ENTRY_IMPORT", []):
            dll = entry.dll.decode("ascii", "replace")
            _, functions = by_dll.setdefault(dll.lower(), (dll, []))
            for symbol in entry.imports:
                functions.append(symbol.name.decode("ascii", "replace") if symbol.name is not None else int(symbol.ordinal))
        return ImageFacts(
            machine=int(pe.FILE_HEADER.Machine),
            subsystem=int(pe.OPTIONAL_HEADER.Subsystem),
            imports=tuple(ImportedDll(name, tuple(functions)) for name, functions in by_dll.values()),
        )
    except pefile.PEFormatError as error:
        raise ImageUnreadable(f"{path.name} is a damaged PE image ({error})") from None
    finally:
        pe.close()
