"""A kernel crash dump's DUMP_HEADER64, from a file built here to the documented layout."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from harness.triage.dumpfile import DumpError, parse_header, read_header

PARAMS = (0xFFFFFFFFC0000005, 0xFFFFF80000401000, 0xFFFFF80000F00200, 0xFFFFF80000F00300)


def dump_file(path: Path, code: int = 0x7E, params: tuple[int, int, int, int] = PARAMS, dump_type: int = 4) -> Path:
    """A small-dump header at the offsets of windows-facts.md (kdmp-parser's HEADER64, Volatility's _DMP_HEADER64)."""
    header = bytearray(0x2000)
    header[0:8] = b"PAGEDU64"
    struct.pack_into("<II", header, 0x08, 0xF, 19041)  # MajorVersion (free build), MinorVersion (the build)
    struct.pack_into("<QQQQ", header, 0x10, 0x1AD000, 0xFFFFFA8000000000, 0xFFFFF80000F00010, 0xFFFFF80000F00020)
    struct.pack_into("<III", header, 0x30, 0x8664, 2, code)  # MachineImageType, NumberProcessors, BugCheckCode
    struct.pack_into("<4Q", header, 0x40, *params)
    struct.pack_into("<Q", header, 0x348 + 0xF8, 0xFFFFF80000001006)  # ContextRecord.Rip
    struct.pack_into("<IIQQI", header, 0xF00, 0xC0000005, 0, 0, 0xFFFFF80000401000, 2)  # Exception
    struct.pack_into("<I", header, 0xF98, dump_type)
    struct.pack_into("<Q", header, 0xFA8, 133_000_000_000_000_000)
    path.write_bytes(bytes(header) + b"\0" * 0x1000)  # the rest of a small dump
    return path


def test_the_header_gives_code_parameters_build_and_type(tmp_path: Path) -> None:
    header = read_header(dump_file(tmp_path / "Mini.dmp"))
    assert (header.code, header.parameters, header.build, header.major) == (0x7E, PARAMS, 19041, 0xF)
    assert (header.machine, header.processors, header.dump_kind) == (0x8664, 2, "small (triage)")
    assert (header.exception_code, header.exception_address, header.context_rip) == (0xC0000005, 0xFFFFF80000401000, 0xFFFFF80000001006)
    assert header.describe().startswith("dump header of Mini.dmp: bugcheck 0x0000007E (0xffffffffc0000005, ")


def test_the_header_is_compared_with_what_the_debugger_saw(tmp_path: Path) -> None:
    header = read_header(dump_file(tmp_path / "Mini.dmp"))
    assert header.compare(0x7E, PARAMS) == "matches the kernel debugger's bugcheck"
    assert header.compare(0xD1, (1, 2, 0, 3)).startswith("MISMATCH: the kernel debugger saw bugcheck 0x000000D1")
    assert header.compare(None, ()) == "the kernel debugger saw no bugcheck to compare with"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"MDMP" + bytes(0x2000), "not a 64-bit kernel dump"),  # a user-mode minidump
        (b"PAGEDUMP" + bytes(0x2000), "not a 64-bit kernel dump"),  # a 32-bit kernel dump
        (b"PAGEDU64" + bytes(0x100), "shorter than a DUMP_HEADER64"),
    ],
)
def test_what_is_not_a_64_bit_kernel_dump_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(DumpError, match=message):
        parse_header(data, "x.dmp")


def test_a_missing_file_is_a_dump_error(tmp_path: Path) -> None:
    with pytest.raises(DumpError, match="No such file"):
        read_header(tmp_path / "gone.dmp")


def test_pulled_dumps_carry_their_headers_beside_the_debuggers_view(tmp_path: Path) -> None:
    from harness.guests.base import CrashEvidence
    from harness.guests.libvirt_vm.dumps import with_headers

    good = dump_file(tmp_path / "061524-01.dmp")
    other = dump_file(tmp_path / "061524-02.dmp", code=0xD1, params=(0x10, 2, 0, 0xFFFFF80000401020))
    junk = tmp_path / "user.dmp"
    junk.write_bytes(b"MDMP" + bytes(0x3000))
    evidence = with_headers(CrashEvidence((good, other, junk), "3 crash dump(s) pulled after 40s"), 0x7E, PARAMS)
    assert [header.code for header in evidence.headers] == [0x7E, 0xD1]
    parts = evidence.note.split("; ")
    assert parts[0] == "3 crash dump(s) pulled after 40s"
    assert parts[1].startswith("dump header of 061524-01.dmp: bugcheck 0x0000007E") and parts[2] == "matches the kernel debugger's bugcheck"
    assert parts[4].startswith("MISMATCH: the kernel debugger saw bugcheck 0x0000007E")
    assert parts[5].startswith("user.dmp: ") and "not a 64-bit kernel dump" in parts[5]
