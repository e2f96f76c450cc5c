"""What the embedded guest's kernel really implements: the exports of the harness's ntoskrnl.exe and of Wine's
kernel-mode DLLs, minus Wine's stubs.

A Wine builtin DLL lists the functions of its .spec file marked ``stub`` in its export table too, each pointing
at a few instructions that winebuild generated (``__wine_stub_<name>`` in tools/winebuild/spec32.c): load the
DLL's name and the function's name and call ``__wine_spec_unimplemented_stub`` (dlls/winecrt0/stub.c), which
raises a non-continuable EXCEPTION_WINE_STUB. On x86-64 that is always

    48 83 ec 28          sub  $0x28,%rsp
    48 8d 0d <rel32>     lea  <dll name>(%rip),%rcx
    48 8d 15 <rel32>     lea  <function name>(%rip),%rdx
    e8 <rel32>           call __wine_spec_unimplemented_stub

so an export is a stub when its code is that and the second string is its own name. (Debian's Wine 8 DLLs keep
their symbol tables, where these are the ``__wine_stub_*`` symbols: the tests check that both agree.)

The result is computed once per Wine installation and shim build and cached as JSON next to the Wine guest's
build output; the cache is keyed by the size and modification time of every file it was computed from.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pefile

log = logging.getLogger(__name__)

#: The guest's kernel: the harness's ntoskrnl.exe (its forwarders name Wine's, installed as ntoskwine.dll).
KERNEL = "ntoskrnl.exe"
FORWARD_MODULE = "ntoskwine.dll"
#: Kernel-mode modules a driver may import from besides ntoskrnl.exe: Wine's hal.dll and its *.sys.
HAL = "hal.dll"
CACHE_FORMAT = 1

_STUB = re.compile(rb"\x48\x83\xec\x28\x48\x8d\x0d(....)\x48\x8d\x15(....)\xe8", re.DOTALL)
_STUB_LENGTH = 23


@dataclass(frozen=True)
class ModuleExports:
    """One module's exported names: those that work, and Wine's stubs."""

    implemented: frozenset[str]
    stubs: frozenset[str]


@dataclass(frozen=True)
class KernelInventory:
    """The guest's kernel-mode modules (lower-case file name -> exports) and the Wine version they come from."""

    wine: str
    modules: Mapping[str, ModuleExports]

    def to_json(self, fingerprint: list[list[object]]) -> str:
        modules = {name: {"implemented": sorted(m.implemented), "stubs": sorted(m.stubs)} for name, m in self.modules.items()}
        return json.dumps({"format": CACHE_FORMAT, "fingerprint": fingerprint, "wine": self.wine, "modules": modules})

    @classmethod
    def from_json(cls, text: str, fingerprint: list[list[object]]) -> KernelInventory | None:
        """The inventory in ``text`` when it was computed from files with this ``fingerprint``, else None."""
        try:
            data = json.loads(text)
            if data.get("format") != CACHE_FORMAT or data.get("fingerprint") != fingerprint:
                return None
            modules = {
                name: ModuleExports(frozenset(entry["implemented"]), frozenset(entry["stubs"])) for name, entry in data["modules"].items()
            }
            return cls(wine=str(data["wine"]), modules=modules)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


def stub_name(code: bytes, rva: int, read_string: Callable[[int], bytes]) -> bytes | None:
    """The function name a winebuild stub at ``rva`` reports, or None when ``code`` (its first bytes) is no stub."""
    match = _STUB.match(code)
    if match is None:
        return None
    (displacement,) = struct.unpack("<i", match.group(2))
    # The displacement counts from the end of the second lea (14 + 4 bytes into the stub).
    return read_string(rva + 18 + displacement)


def module_exports(path: Path) -> tuple[ModuleExports, dict[str, str]]:
    """The exports of the PE file at ``path``, and its forwarders (name -> ``module.function``) kept apart.

    Raises:
        OSError, pefile.PEFormatError: the file cannot be read as a PE image.
    """
    pe = pefile.PE(str(path), fast_load=True)
    try:
        pe.parse_data_directories(directories=[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_EXPORT"]])
        implemented: set[str] = set()
        stubs: set[str] = set()
        forwards: dict[str, str] = {}
        directory = getattr(pe, "DIRECTORY_ENTRY_EXPORT", None)
        for symbol in directory.symbols if directory is not None else []:
            if symbol.name is None:
                continue  # exported by ordinal only: no driver can name it
            name = symbol.name.decode("ascii", "replace")
            if symbol.forwarder is not None:
                forwards[name] = symbol.forwarder.decode("ascii", "replace")
                continue
            try:
                code = pe.get_data(symbol.address, _STUB_LENGTH)
            except pefile.PEFormatError:
                code = b""
            reported = stub_name(code, symbol.address, pe.get_string_at_rva)
            (stubs if reported == symbol.name else implemented).add(name)
        return ModuleExports(frozenset(implemented), frozenset(stubs)), forwards
    finally:
        pe.close()


def forward_target(forwarder: str) -> tuple[str, str]:
    """``ntoskwine.ExFoo`` -> (``ntoskwine.dll``, ``ExFoo``); ``ntoskrnl.exe.KeBar`` -> (``ntoskrnl.exe``, ``KeBar``)."""
    module, _, function = forwarder.rpartition(".")
    module = module.lower()
    return (module if "." in module else f"{module}.dll"), function


def build_inventory(files: Mapping[str, Path], provided: Iterable[str], wine: str) -> KernelInventory:
    """The exports of the ``provided`` modules, forwarders resolved through ``files`` (lower-case name -> file).

    A forwarded export counts as implemented when its target is; a target module that is not in ``files`` is
    looked for next to Wine's DLLs (the folder of ``files[HAL]``).
    """
    wine_dir = files[HAL].parent
    cache: dict[str, tuple[ModuleExports, dict[str, str]]] = {}

    def load(module: str) -> tuple[ModuleExports, dict[str, str]] | None:
        if module not in cache:
            path = files.get(module, wine_dir / module)
            try:
                cache[module] = module_exports(path)
            except (OSError, pefile.PEFormatError):
                return None
        return cache[module]

    def works(module: str, function: str, depth: int = 0) -> bool:
        loaded = load(module)
        if loaded is None or depth > 8:
            return False
        exports, forwards = loaded
        if function in forwards:
            return works(*forward_target(forwards[function]), depth + 1)
        return function in exports.implemented

    modules: dict[str, ModuleExports] = {}
    for module in provided:
        loaded = load(module)
        if loaded is None:
            continue
        exports, forwards = loaded
        resolved = {name for name in forwards if works(*forward_target(forwards[name]))}
        modules[module] = ModuleExports(exports.implemented | resolved, exports.stubs | (set(forwards) - resolved))
    return KernelInventory(wine=wine, modules=modules)


def kernel_files(shim: Path, builtin: Path, wine_dir: Path) -> dict[str, Path]:
    """The files of the guest's kernel: the shim as ntoskrnl.exe, Wine's builtin as ntoskwine.dll, Wine's hal.dll and *.sys."""
    files = {KERNEL: shim, FORWARD_MODULE: builtin, HAL: wine_dir / HAL}
    for path in sorted(wine_dir.glob("*.sys")):
        files[path.name.lower()] = path
    return files


def wine_version(wine: Path) -> str:
    """``Wine 8.0`` from ``wine64 --version`` (``wine-8.0 (Debian 8.0~repack-4)``); ``Wine`` when it does not say."""
    try:
        output = subprocess.run([str(wine), "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "Wine"
    match = re.match(r"wine-(\S+)", output.strip())
    return f"Wine {match.group(1)}" if match else "Wine"


def fingerprint(files: Mapping[str, Path], wine: Path) -> list[list[object]]:
    """What a cached inventory depends on: each file's name, size and modification time, and the Wine loader."""
    rows: list[list[object]] = []
    for name, path in sorted({**files, "wine": wine}.items()):
        try:
            stat = path.stat()
            rows.append([name, str(path), stat.st_size, stat.st_mtime_ns])
        except OSError:
            rows.append([name, str(path), None, None])
    return rows


def load_inventory(cache: Path, shim: Path, builtin: Path, wine_dir: Path, wine: Path) -> KernelInventory:
    """The guest's kernel inventory, from ``cache`` when it still matches the files, else computed and cached."""
    files = kernel_files(shim, builtin, wine_dir)
    key = fingerprint(files, wine)
    try:
        cached = KernelInventory.from_json(cache.read_text(), key)
    except OSError:
        cached = None
    if cached is not None:
        return cached
    provided = [name for name in files if name != FORWARD_MODULE]
    inventory = build_inventory(files, provided, wine_version(wine))
    try:
        partial = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        partial.write_text(inventory.to_json(key))
        partial.replace(cache)
    except OSError as error:
        log.warning("cannot cache the Wine guest's kernel exports in %s: %s", cache, error)
    return inventory
