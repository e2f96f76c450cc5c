"""Naming code addresses: module + offset -> function and source line, from the build's symbol files.

Where the names come from, best first, for an image X.sys:
  - X.debug (or X.sys.debug): the same link kept unstripped, with DWARF (what guest-drivers/Makefile
    keeps next to each image; any mingw-w64 or clang build can do the same). Read with binutils'
    ``addr2line`` for PE (``x86_64-w64-mingw32-addr2line``), the one I/O step here. It is used only when
    its code is byte for byte the image's (``PeImage.code_digest``), so a stale debug copy never names
    the wrong function. An image that was never stripped is read the same way (Debian's Wine DLLs are).
  - X.map (GNU ld ``-Map``): global function names only (static functions are not in a map), no lines.
  - the image's own exports: the nearest exported function before the address (for system DLLs).
MSVC's .pdb files cannot be read on this host (no PDB reader here): such a driver is named by module
and offset, and the report says so.
"""

from __future__ import annotations

import bisect
import logging
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness.triage.pe import ImageError, PeImage

log = logging.getLogger(__name__)

ADDR2LINE_CANDIDATES = ("x86_64-w64-mingw32-addr2line", "addr2line")
ADDR2LINE_TIMEOUT = 30.0
_MAP_SYMBOL = re.compile(r"^\s+0x([0-9a-fA-F]{8,16})\s+([A-Za-z_.$?@][\w.$?@]*)\s*$")
_FILE_LINE = re.compile(r"^(.*):(\d+|\?)(?: \(discriminator \d+\))?$")

Quality = Literal["debug", "map", "export"]


@dataclass(frozen=True)
class SourceLocation:
    """What the symbols say about one address."""

    function: str | None
    file: str | None = None
    line: int | None = None
    displacement: int | None = None  # bytes from the function's start, when the symbol source gives its start
    inlined_into: tuple[str, ...] = ()  # callers the function was inlined into, innermost first
    quality: Quality = "debug"


@dataclass(frozen=True)
class SymbolFiles:
    """The symbol files found for one image."""

    debug: Path | None = None
    map: Path | None = None
    pdb: Path | None = None
    stale_debug: Path | None = None  # a debug copy whose code is not the image's


def find_symbol_files(image: Path, dirs: Sequence[Path]) -> SymbolFiles:
    """The symbol files for ``image`` in its own folder, then in ``dirs`` (first match of each kind wins)."""
    folders = [image.parent, *[folder for folder in dirs if folder.resolve() != image.parent.resolve()]]
    stem, name = image.stem, image.name
    debug: Path | None = None
    stale: Path | None = None
    mapfile: Path | None = None
    pdb: Path | None = None
    wanted: str | None = None
    for folder in folders:
        for candidate in (folder / f"{stem}.debug", folder / f"{name}.debug"):
            if debug is None and candidate.is_file():
                if wanted is None:
                    wanted = _digest(image)
                if wanted is not None and _digest(candidate) == wanted:
                    debug = candidate
                elif stale is None:
                    stale = candidate
        if mapfile is None and (folder / f"{stem}.map").is_file():
            mapfile = folder / f"{stem}.map"
        if pdb is None and (folder / f"{stem}.pdb").is_file():
            pdb = folder / f"{stem}.pdb"
    return SymbolFiles(debug=debug, map=mapfile, pdb=pdb, stale_debug=stale if debug is None else None)


def _digest(path: Path) -> str | None:
    try:
        return PeImage(path).code_digest()
    except ImageError:
        return None


def parse_addr2line(output: str) -> dict[int, list[tuple[str | None, str | None, int | None]]]:
    """``addr2line -a -f -i`` output -> address: [(function, file, line), innermost first]. Pure."""
    result: dict[int, list[tuple[str | None, str | None, int | None]]] = {}
    current: list[tuple[str | None, str | None, int | None]] | None = None
    lines = output.splitlines()
    index = 0
    while index < len(lines):
        text = lines[index].strip()
        if text.startswith("0x"):
            try:
                current = result.setdefault(int(text, 16), [])
            except ValueError:
                current = None
            index += 1
            continue
        if current is None or index + 1 >= len(lines):
            index += 1
            continue
        function = None if text in ("??", "") else text
        place = _FILE_LINE.match(lines[index + 1].strip())
        file = place.group(1) if place and place.group(1) not in ("??", "") else None
        line = int(place.group(2)) if place and place.group(2).isdigit() and place.group(2) != "0" else None
        current.append((function, file, line))
        index += 2
    return result


def parse_map(text: str) -> list[tuple[int, str]]:
    """A GNU ld map file's symbol lines -> sorted (address, name). Pure."""
    found = {}
    for line in text.splitlines():
        match = _MAP_SYMBOL.match(line)
        if match and "=" not in line:
            found[int(match.group(1), 16)] = match.group(2)
    return sorted(found.items())


def nearest(symbols: Sequence[tuple[int, str]], address: int) -> tuple[int, str] | None:
    """The last symbol at or before ``address`` in a sorted list."""
    index = bisect.bisect_right([start for start, _ in symbols], address) - 1
    return symbols[index] if index >= 0 else None


def addr2line_tool() -> str | None:
    return next((tool for tool in ADDR2LINE_CANDIDATES if shutil.which(tool)), None)


def run_addr2line(debug: Path, addresses: Sequence[int], timeout: float = ADDR2LINE_TIMEOUT) -> str:
    """binutils addr2line on a PE debug copy; "" when it is missing, fails or takes too long."""
    tool = addr2line_tool()
    if tool is None or not addresses:
        return ""
    try:
        done = subprocess.run(
            [tool, "-a", "-f", "-i", "-e", str(debug), *(f"0x{address:x}" for address in addresses)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        log.warning("addr2line on %s failed: %s", debug, error)
        return ""
    if done.returncode != 0:
        log.warning("addr2line on %s exited %s: %s", debug, done.returncode, done.stderr.strip()[:200])
    return done.stdout


class Symbolizer:
    """Names addresses in the modules of a run: the drivers under test and the guest's own images."""

    def __init__(self, images: Mapping[str, Path], symbol_dirs: Sequence[Path] = (), system_dirs: Sequence[Path] = ()) -> None:
        """Args:
        images: image name (``receiver.sys``, case-insensitive) -> the image file the run used.
        symbol_dirs: more folders to look for symbol files in (after each image's own folder).
        system_dirs: host folders with the guest's own images (kernel, libraries), found by file name.
        """
        self._images = {name.lower(): path for name, path in images.items()}
        self._symbol_dirs = list(symbol_dirs)
        self._system_dirs = list(system_dirs)
        self._notes: dict[str, str] = {}
        self._pe: dict[Path, PeImage | None] = {}

    def notes(self) -> tuple[str, ...]:
        """What could not be named, and why (one line per image)."""
        return tuple(self._notes.values())

    def image_file(self, name: str) -> Path | None:
        """The host file of a module: a driver of the run, else the first system folder that has it."""
        path = self._images.get(name.lower())
        if path is not None:
            return path
        for folder in self._system_dirs:
            candidate = folder / name
            if candidate.is_file():
                return candidate
            if folder.is_dir():
                match = next((entry for entry in folder.iterdir() if entry.name.lower() == name.lower()), None)
                if match is not None:
                    return match
        return None

    def image(self, name: str) -> PeImage | None:
        path = self.image_file(name)
        if path is None:
            return None
        if path not in self._pe:
            try:
                self._pe[path] = PeImage(path)
            except ImageError as error:
                log.warning("%s", error)
                self._pe[path] = None
        return self._pe[path]

    def locate(self, name: str, rvas: Sequence[int]) -> dict[int, SourceLocation]:
        """What the best symbol source for module ``name`` says about each RVA (missing: nothing known)."""
        image_path = self.image_file(name)
        image = self.image(name)
        if image_path is None or image is None:
            return {}
        is_driver = name.lower() in self._images
        files = find_symbol_files(image_path, self._symbol_dirs if is_driver else [])
        # An image that was not stripped is its own debug copy (Debian's Wine DLLs keep symbols and DWARF).
        debug = files.debug or (image_path if image.has_symbols else None)
        if debug is not None:
            found = self._from_debug(debug, image, rvas)
            if found:
                return found
        if is_driver:
            self._note_missing(name, image_path, image, files)
        if files.map is not None:
            return self._from_map(files.map, image, rvas)
        return self._from_exports(image, rvas)

    def _from_debug(self, debug: Path, image: PeImage, rvas: Sequence[int]) -> dict[int, SourceLocation]:
        debug_image = self.image_of_path(debug)
        base = debug_image.image_base if debug_image is not None else image.image_base
        parsed = parse_addr2line(run_addr2line(debug, [base + rva for rva in rvas]))
        result = {}
        for rva in rvas:
            entries = parsed.get(base + rva) or []
            if not entries or entries[0][0] is None:
                continue
            function, file, line = entries[0]
            result[rva] = SourceLocation(
                function=function, file=file, line=line, inlined_into=tuple(entry[0] for entry in entries[1:] if entry[0])
            )
        return result

    def image_of_path(self, path: Path) -> PeImage | None:
        if path not in self._pe:
            try:
                self._pe[path] = PeImage(path)
            except ImageError:
                self._pe[path] = None
        return self._pe[path]

    def _from_map(self, mapfile: Path, image: PeImage, rvas: Sequence[int]) -> dict[int, SourceLocation]:
        try:
            symbols = parse_map(mapfile.read_text(errors="replace"))
        except OSError:
            return {}
        code = [(address - image.image_base, name) for address, name in symbols if _is_code(image, address - image.image_base)]
        return _by_nearest(image, code, rvas, "map")

    def _from_exports(self, image: PeImage, rvas: Sequence[int]) -> dict[int, SourceLocation]:
        return _by_nearest(image, list(image.exports()), rvas, "export")

    def _note_missing(self, name: str, image_path: Path, image: PeImage, files: SymbolFiles) -> None:
        stem = image_path.stem
        if files.stale_debug is not None:
            self._notes[name] = f"{name}: {files.stale_debug} is not this image's debug copy (its code differs): not used"
        elif files.pdb is not None or image.pdb_name():
            pdb = files.pdb or image.pdb_name()
            self._notes[name] = f"{name}: MSVC PDB symbols ({pdb}) cannot be read on this host: named by module and offset"
        elif files.map is not None:
            self._notes[name] = f"{name}: only a map file ({files.map.name}): global functions, no source lines"
        else:
            self._notes[name] = (
                f"{name}: no symbols ({stem}.debug or {stem}.map next to the image or in --symbols): named by module and offset"
            )


def _is_code(image: PeImage, rva: int) -> bool:
    section = image.section_at(rva)
    return section is not None and section.executable


#: A symbol names an address without unwind data (a leaf function) only this close to it.
LEAF_REACH = 0x100


def _by_nearest(image: PeImage, symbols: list[tuple[int, str]], rvas: Sequence[int], quality: Quality) -> dict[int, SourceLocation]:
    """Name each RVA after the nearest symbol before it, but only when that symbol is where the address's function
    begins (by the unwind data): a static function after an exported one is left unnamed rather than misnamed."""
    symbols.sort()
    table = image.unwind_table()
    result = {}
    for rva in rvas:
        found = nearest(symbols, rva)
        section = image.section_at(rva)
        if found is None or section is None or not section.executable or not section.holds(found[0]):
            continue
        start = table.function_start(rva)
        if start is not None and start != found[0]:
            continue  # the address is in a function that does not begin at this symbol
        if start is None and rva - found[0] >= LEAF_REACH:
            continue
        result[rva] = SourceLocation(function=found[1], displacement=rva - found[0], quality=quality)
    return result
