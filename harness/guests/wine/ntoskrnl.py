"""Module-definition files for the callback-object ntoskrnl shim of the Wine guest.

The shim (``ntoskrnl/callbacks.c``) implements a few exports itself and
forwards every other export of Wine's builtin ntoskrnl.exe to a copy of that
builtin installed in the prefix as ``ntoskwine.dll``. The export list is read
from the installed Wine at build time, so the shim always matches the Wine it
runs on.

Run as ``python3 -m harness.guests.wine.ntoskrnl WINE_NTOSKRNL OUTDIR`` from
the build (standard library only).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

#: The name the builtin is copied to; forwarders name it without ".dll".
FORWARD_MODULE = "ntoskwine"

#: Exports that callbacks.c defines; keep in step with that file.
IMPLEMENTED: tuple[str, ...] = (
    "ExCreateCallback",
    "ExRegisterCallback",
    "ExUnregisterCallback",
    "ExNotifyCallback",
    "ObfReferenceObject",
    "ObfDereferenceObject",
    "ObReferenceObjectByPointer",
    "ObMakeTemporaryObject",
    "ZwLoadDriver",
    "ZwUnloadDriver",
)

#: Wine's implementations that the shim calls for objects that are not its own.
WRAPPED: tuple[str, ...] = (
    "ObfReferenceObject",
    "ObfDereferenceObject",
    "ObReferenceObjectByPointer",
    "ObMakeTemporaryObject",
    "ZwLoadDriver",
    "ZwUnloadDriver",
)

_EXPORT_NAME = re.compile(r"^\t\[\s*\d+\] (\S+)$")


def parse_objdump_exports(text: str) -> list[str]:
    """Export names from ``objdump -p`` output, in the order listed.

    Raises:
        ValueError: the output has no export name table.
    """
    marker = "[Ordinal/Name Pointer] Table"
    if marker not in text:
        raise ValueError("no export name table in objdump output")
    names: list[str] = []
    for line in text.split(marker, 1)[1].splitlines()[1:]:
        match = _EXPORT_NAME.match(line)
        if not match:
            break
        names.append(match.group(1))
    return names


def shim_def(exports: list[str]) -> str:
    """The shim's own .def: implemented exports, then forwarders for the rest.

    Raises:
        ValueError: Wine's ntoskrnl lacks an export the shim implements.
    """
    missing = [name for name in IMPLEMENTED if name not in exports]
    if missing:
        raise ValueError(f"Wine's ntoskrnl.exe does not export {', '.join(missing)}")
    lines = ["LIBRARY ntoskrnl.exe", "EXPORTS"]
    lines += [f"    {name}" for name in IMPLEMENTED]
    lines += [f"    {name}={FORWARD_MODULE}.{name}" for name in exports if name not in IMPLEMENTED]
    return "\n".join(lines) + "\n"


def import_def(exports: list[str]) -> str:
    """A .def for an import library of ``ntoskwine.dll`` (with ``wine_`` aliases)."""
    lines = [f"LIBRARY {FORWARD_MODULE}.dll", "EXPORTS"]
    lines += [f"    {name}" for name in exports if name not in IMPLEMENTED]
    lines += [f"    wine_{name} == {name}" for name in WRAPPED]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python3 -m harness.guests.wine.ntoskrnl WINE_NTOSKRNL_EXE OUTDIR", file=sys.stderr)  # noqa: T201
        return 2
    objdump = subprocess.run(["x86_64-w64-mingw32-objdump", "-p", argv[1]], check=True, capture_output=True, text=True).stdout
    exports = parse_objdump_exports(objdump)
    out = Path(argv[2])
    out.mkdir(parents=True, exist_ok=True)
    (out / "ntoskrnl.def").write_text(shim_def(exports))
    (out / "ntoskwine.def").write_text(import_def(exports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
