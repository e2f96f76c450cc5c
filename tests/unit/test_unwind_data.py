"""Decoding x64 unwind data: synthetic UNWIND_INFO of every kind, and the real compiled images against binutils."""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path

import pytest

from harness.triage.pe import (
    REGISTERS,
    UNW_FLAG_CHAININFO,
    UNW_FLAG_EHANDLER,
    UWOP_ALLOC_LARGE,
    UWOP_ALLOC_SMALL,
    UWOP_PUSH_MACHFRAME,
    UWOP_PUSH_NONVOL,
    UWOP_SAVE_NONVOL,
    UWOP_SAVE_NONVOL_FAR,
    UWOP_SAVE_XMM128,
    UWOP_SAVE_XMM128_FAR,
    UWOP_SET_FPREG,
    ImageError,
    PeImage,
    RuntimeFunction,
    UnwindCode,
    UnwindTable,
    decode_runtime_functions,
    decode_unwind_info,
)
from tests.integration.conftest import ROOT

BUILD = ROOT / "build"
WINE_NTDLL = Path("/usr/lib/x86_64-linux-gnu/wine/x86_64-windows/ntdll.dll")


def slot(offset: int, op: int, info: int = 0) -> int:
    return offset | op << 8 | info << 12


def unwind_info(slots: list[int], *, prolog: int = 0, flags: int = 0, version: int = 1, frame: int = 0, scaled: int = 0) -> bytes:
    padded = slots + [0] * (len(slots) % 2)
    return bytes([version | flags << 3, prolog, len(slots), frame | scaled << 4]) + struct.pack(f"<{len(padded)}H", *padded)


def test_every_operation_with_its_operand() -> None:
    data = unwind_info(
        [
            slot(0x20, UWOP_SAVE_XMM128_FAR, 6), 0x0000, 0x0002,  # xmm6 at 0x20000
            slot(0x1C, UWOP_SAVE_XMM128, 7), 3,  # xmm7 at 3*16
            slot(0x18, UWOP_SAVE_NONVOL_FAR, 12), 0x1234, 0x0001,  # r12 at 0x11234
            slot(0x14, UWOP_SAVE_NONVOL, 6), 5,  # rsi at 5*8
            slot(0x10, UWOP_SET_FPREG),
            slot(0x0C, UWOP_ALLOC_LARGE, 1), 0x0008, 0x0010,  # 0x100008 bytes
            slot(0x08, UWOP_ALLOC_LARGE, 0), 0x0100,  # 0x100*8
            slot(0x04, UWOP_ALLOC_SMALL, 15),  # 15*8+8
            slot(0x02, UWOP_PUSH_NONVOL, 5),
            slot(0x01, UWOP_PUSH_MACHFRAME, 1),
        ],
        prolog=0x20, frame=5, scaled=2,
    )  # fmt: skip
    info = decode_unwind_info(data)
    assert (info.version, info.prolog_size, info.frame_register, info.frame_offset) == (1, 0x20, 5, 32)
    assert info.codes == (
        UnwindCode(0x20, UWOP_SAVE_XMM128_FAR, 6, 0x20000),
        UnwindCode(0x1C, UWOP_SAVE_XMM128, 7, 48),
        UnwindCode(0x18, UWOP_SAVE_NONVOL_FAR, 12, 0x11234),
        UnwindCode(0x14, UWOP_SAVE_NONVOL, 6, 40),
        UnwindCode(0x10, UWOP_SET_FPREG, 0, 0),
        UnwindCode(0x0C, UWOP_ALLOC_LARGE, 1, 0x100008),
        UnwindCode(0x08, UWOP_ALLOC_LARGE, 0, 0x800),
        UnwindCode(0x04, UWOP_ALLOC_SMALL, 15, 128),
        UnwindCode(0x02, UWOP_PUSH_NONVOL, 5, 0),
        UnwindCode(0x01, UWOP_PUSH_MACHFRAME, 1, 0),
    )
    assert REGISTERS[info.frame_register] == "rbp"


def test_chained_info_follows_the_padded_code_array() -> None:
    data = unwind_info([slot(4, UWOP_SAVE_NONVOL, 3), 2, slot(1, UWOP_PUSH_NONVOL, 6)], prolog=4, flags=UNW_FLAG_CHAININFO)
    data += struct.pack("<3I", 0x1000, 0x1080, 0x2000)
    info = decode_unwind_info(data)
    assert info.chained == RuntimeFunction(0x1000, 0x1080, 0x2000)
    assert [code.op for code in info.codes] == [UWOP_SAVE_NONVOL, UWOP_PUSH_NONVOL]


def test_handler_address() -> None:
    data = unwind_info([slot(1, UWOP_PUSH_NONVOL, 3)], prolog=1, flags=UNW_FLAG_EHANDLER) + struct.pack("<I", 0x1234) + b"lsda"
    assert decode_unwind_info(data).handler == 0x1234


def test_version_2_epilog_codes_take_two_slots_and_undo_nothing() -> None:
    data = unwind_info([slot(1, 6, 1), 0, slot(4, UWOP_ALLOC_SMALL, 3), slot(1, UWOP_PUSH_NONVOL, 3)], prolog=4, version=2)
    info = decode_unwind_info(data)
    assert [(code.op, code.operand) for code in info.codes] == [(UWOP_ALLOC_SMALL, 32), (UWOP_PUSH_NONVOL, 0)]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x01\x00", "shorter than its 4-byte header"),
        (bytes([3, 0, 0, 0]), "version 3"),
        (bytes([1, 0, 4, 0, 0, 0]), "4 code slots"),
        (unwind_info([slot(1, 11)]), "unknown unwind operation 11"),
        (unwind_info([slot(1, UWOP_SAVE_NONVOL_FAR, 3), 1]), "runs past the code array"),
        (unwind_info([], flags=UNW_FLAG_CHAININFO), "chained entry is missing"),
    ],
)
def test_bad_unwind_info_is_an_error_not_a_guess(data: bytes, why: str) -> None:
    with pytest.raises(ImageError, match=why):
        decode_unwind_info(data)


def test_table_lookup_is_by_range_and_follows_indirect_entries() -> None:
    entries = struct.pack("<3I", 0x1100, 0x1180, 0x3001) + struct.pack("<3I", 0x1000, 0x1040, 0x2000) + struct.pack("<3I", 0, 0, 0)
    memory = {0x3000: struct.pack("<3I", 0x1000, 0x1040, 0x2000)}
    table = UnwindTable(decode_runtime_functions(entries), lambda rva, size: memory.get(rva, b"")[:size])
    assert [entry.begin for entry in table.functions] == [0x1000, 0x1100]  # sorted, the empty entry dropped
    assert table.lookup(0x1000) == RuntimeFunction(0x1000, 0x1040, 0x2000)
    assert table.lookup(0x1040) is None and table.lookup(0xFFF) is None
    assert table.lookup(0x1150) == RuntimeFunction(0x1000, 0x1040, 0x2000)  # bit 0: another entry's address


# -- the real images, against binutils' own reading of them ---------------------------------------------------------

_OBJDUMP_FUNCTION = re.compile(r"^ [0-9a-f]+ \(rva: [0-9a-f]+\): ([0-9a-f]+) - ([0-9a-f]+)$")
_OBJDUMP_CODE = re.compile(r"^\s+pc\+0x([0-9a-f]+): (.*)$")


def objdump_unwind(path: Path) -> dict[int, list[tuple[int, str]]]:
    """Function start VA -> [(prolog offset, binutils' words for the operation)], from ``objdump -x``."""
    text = subprocess.run(["x86_64-w64-mingw32-objdump", "-x", str(path)], capture_output=True, text=True, check=True).stdout
    functions: dict[int, list[tuple[int, str]]] = {}
    current: list[tuple[int, str]] | None = None
    for line in text.splitlines():
        head = _OBJDUMP_FUNCTION.match(line)
        if head:
            current = functions.setdefault(int(head.group(1), 16), [])
            continue
        code = _OBJDUMP_CODE.match(line)
        if code and current is not None:
            current.append((int(code.group(1), 16), code.group(2).strip()))
        elif not line.startswith((" ", "\t")):
            current = None
    return functions


def words(code: UnwindCode, frame_register: int, frame_offset: int) -> str:
    """Our decoding in binutils' words (binutils 2.40, pei-x86_64)."""
    register = REGISTERS[code.info]
    if code.op == UWOP_PUSH_NONVOL:
        return f"push {register}"
    if code.op == UWOP_ALLOC_SMALL:
        return f"alloc small area: rsp = rsp - 0x{code.operand:x}"
    if code.op == UWOP_ALLOC_LARGE:
        return f"alloc large area: rsp = rsp - 0x{code.operand:x}"
    if code.op in (UWOP_SAVE_NONVOL, UWOP_SAVE_NONVOL_FAR):
        return f"save {register} at rsp + 0x{code.operand:x}"
    if code.op in (UWOP_SAVE_XMM128, UWOP_SAVE_XMM128_FAR):
        return f"save xmm{code.info} at rsp + 0x{code.operand:x}"
    if code.op == UWOP_SET_FPREG:
        return f"FPReg: {REGISTERS[frame_register]} = rsp + 0x{frame_offset:x} (info = 0x{code.info:x})"
    if code.op == UWOP_PUSH_MACHFRAME:
        return (
            "interrupt entry (SS, old RSP, EFLAGS, CS, RIP)"
            if code.info == 0
            else "interrupt entry (SS, old RSP, EFLAGS, CS, RIP, ErrorCode)"
        )
    return f"op {code.op}"


@pytest.mark.parametrize(
    "path",
    [
        BUILD / "drivers" / "sender.sys",
        BUILD / "drivers" / "receiver.sys",
        BUILD / "drivers" / "stall.sys",
        BUILD / "drivers" / "cbprobe.sys",
        BUILD / "wine" / "ntoskrnl.exe",
        WINE_NTDLL,
    ],
    ids=lambda path: path.name,
)
def test_real_unwind_data_decodes_as_binutils_reads_it(path: Path) -> None:
    image = PeImage(path)
    table = image.unwind_table()
    expected = objdump_unwind(path)
    assert table.functions, "the image has unwind data (.pdata)"
    assert sorted(image.image_base + function.begin for function in table.functions) == sorted(expected)
    for function in table.functions:
        info = table.info(function)
        ours = [(code.prolog_offset, words(code, info.frame_register, info.frame_offset)) for code in info.codes]
        assert ours == expected[image.image_base + function.begin], f"{path.name} function at 0x{function.begin:x}"


def test_the_drivers_functions_are_all_covered() -> None:
    image = PeImage(BUILD / "drivers" / "sender.sys")
    table = image.unwind_table()
    symbols = subprocess.run(
        ["x86_64-w64-mingw32-nm", str(BUILD / "drivers" / "sender.debug")], capture_output=True, text=True, check=True
    ).stdout
    starts = {
        name: int(address, 16) - image.image_base for address, kind, name in (line.split() for line in symbols.splitlines()) if kind in "tT"
    }
    for name in ("DriverEntry", "NotifyThread", "UnloadDriver"):
        function = table.lookup(starts[name])
        assert function is not None and function.begin == starts[name], name
