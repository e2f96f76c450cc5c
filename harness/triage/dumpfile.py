"""The header of a Windows kernel crash dump (``DUMP_HEADER64``), read on Linux. Pure (bytes in, values out).

A 64-bit kernel dump (small, kernel, complete or bitmap) begins with a 0x2000-byte header: ``PAGE`` then ``DU64``,
MajorVersion (0xF: a free build) and MinorVersion (the build number) at 0x8 and 0xC, MachineImageType at 0x30,
NumberProcessors at 0x34, BugCheckCode at 0x38, the four parameters at 0x40-0x58, the bugcheck processor's CONTEXT
at 0x348, an EXCEPTION_RECORD64 at 0xF00, DumpType at 0xF98 and SystemTime at 0xFA8 (docs/windows-facts.md, "Crash
dumps and bugchecks"). This is a second source beside what the kernel debugger saw at the bugcheck, and it does not
depend on it; the two are compared (``compare``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError

HEADER_SIZE = 0x2000
SIGNATURE = b"PAGE"
VALID_DUMP_64 = b"DU64"
_HEAD = struct.Struct("<4s4sII")  # Signature, ValidDump, MajorVersion, MinorVersion
_MACHINE = struct.Struct("<III4x4Q")  # MachineImageType, NumberProcessors, BugCheckCode, BugCheckParameter1-4 (at 0x30)
CONTEXT_OFFSET = 0x348
CONTEXT_RIP = CONTEXT_OFFSET + 0xF8
EXCEPTION_OFFSET = 0xF00
DUMP_TYPE_OFFSET = 0xF98
SYSTEM_TIME_OFFSET = 0xFA8
#: DumpType values (kdmp-parser's DumpType_t and rizin's DMP_DUMPTYPE_*).
DUMP_TYPES = {
    1: "full",
    2: "kernel (summary)",
    3: "header only",
    4: "small (triage)",
    5: "bitmap full",
    6: "bitmap kernel",
    8: "kernel memory",
    9: "kernel and user memory",
    10: "complete memory",
}


class DumpError(HarnessError):
    """A file that is not a 64-bit Windows kernel dump."""


@dataclass(frozen=True)
class DumpHeader:
    """What the dump's own header says about the crash."""

    path: str
    major: int
    build: int
    machine: int
    processors: int
    code: int
    parameters: tuple[int, int, int, int]
    context_rip: int
    exception_code: int
    exception_address: int
    dump_type: int
    system_time: int  # FILETIME (100 ns since 1601), 0 when not written

    @property
    def dump_kind(self) -> str:
        return DUMP_TYPES.get(self.dump_type, f"type {self.dump_type}")

    def describe(self) -> str:
        params = ", ".join(f"0x{p:x}" for p in self.parameters)
        return (
            f"dump header of {Path(self.path).name}: bugcheck 0x{self.code:08X} ({params}), build {self.build}, "
            f"{self.processors} processor(s), {self.dump_kind} dump, bugcheck context RIP 0x{self.context_rip:x}"
        )

    def compare(self, code: int | None, parameters: tuple[int, ...]) -> str:
        """One line on whether the kernel debugger's view (``code``, ``parameters``) agrees with this header."""
        if code is None:
            return "the kernel debugger saw no bugcheck to compare with"
        if code == self.code and tuple(parameters) == self.parameters:
            return "matches the kernel debugger's bugcheck"
        params = ", ".join(f"0x{p:x}" for p in parameters)
        return f"MISMATCH: the kernel debugger saw bugcheck 0x{code:08X} ({params})"


def parse_header(data: bytes, path: str = "") -> DumpHeader:
    """The DUMP_HEADER64 at the start of ``data``.

    Raises:
        DumpError: not a 64-bit kernel dump (a user-mode ``MDMP`` minidump, a 32-bit ``DUMP``, or too short).
    """
    if len(data) < DUMP_TYPE_OFFSET + 4:
        raise DumpError(f"{path or 'dump'}: {len(data)} bytes, shorter than a DUMP_HEADER64")
    signature, valid, major, minor = _HEAD.unpack_from(data)
    if signature != SIGNATURE or valid != VALID_DUMP_64:
        found = (signature + valid).decode("ascii", "replace")
        raise DumpError(f"{path or 'dump'}: not a 64-bit kernel dump (starts {found!r}, expected 'PAGEDU64')")
    machine, processors, code, *params = _MACHINE.unpack_from(data, 0x30)
    exception_code, _, _, exception_address = struct.unpack_from("<IIQQ", data, EXCEPTION_OFFSET)
    dump_type = struct.unpack_from("<I", data, DUMP_TYPE_OFFSET)[0]
    system_time = struct.unpack_from("<Q", data, SYSTEM_TIME_OFFSET)[0] if len(data) >= SYSTEM_TIME_OFFSET + 8 else 0
    return DumpHeader(
        path=path,
        major=major,
        build=minor,
        machine=machine,
        processors=processors,
        code=code,
        parameters=(params[0], params[1], params[2], params[3]),
        context_rip=struct.unpack_from("<Q", data, CONTEXT_RIP)[0],
        exception_code=exception_code,
        exception_address=exception_address,
        dump_type=dump_type,
        system_time=system_time,
    )


def read_header(path: Path) -> DumpHeader:
    """The header of the dump file at ``path`` (only its first 8 KiB are read).

    Raises:
        DumpError: unreadable, or not a 64-bit kernel dump.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(HEADER_SIZE)
    except OSError as error:
        raise DumpError(f"{path}: {error.strerror}") from None
    return parse_header(data, str(path))
