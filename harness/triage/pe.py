"""PE32+ images and their x64 unwind data (.pdata/.xdata).

The unwind data format is Microsoft's ("x64 exception handling", Microsoft
Learn): a sorted table of RUNTIME_FUNCTION entries (begin, end, unwind-info
RVAs, 12 bytes each) in the exception data directory; each UNWIND_INFO holds
version (3 bits), flags (5 bits), prolog size, count of 16-bit code slots,
frame register and scaled frame offset (4 bits each), the code slots (padded
to an even count), then an exception handler RVA or a chained
RUNTIME_FUNCTION. Decoding works on bytes read by RVA, so the same code reads
an image file on the host (``PeImage``, through pefile) or an image in a
guest's memory (``MemoryImage``, for a kernel debugger).
"""

from __future__ import annotations

import bisect
import hashlib
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pefile

from harness.errors import HarnessError

IMAGE_FILE_MACHINE_AMD64 = 0x8664
IMAGE_DIRECTORY_ENTRY_EXCEPTION = 3
IMAGE_SCN_MEM_EXECUTE = 0x20000000

UNW_FLAG_EHANDLER = 0x1
UNW_FLAG_UHANDLER = 0x2
UNW_FLAG_CHAININFO = 0x4

UWOP_PUSH_NONVOL = 0
UWOP_ALLOC_LARGE = 1
UWOP_ALLOC_SMALL = 2
UWOP_SET_FPREG = 3
UWOP_SAVE_NONVOL = 4
UWOP_SAVE_NONVOL_FAR = 5
UWOP_EPILOG = 6  # version 2: describes an epilog (version 1: SAVE_XMM); nothing for an unwind to undo
UWOP_SPARE = 7  # version 2: spare (version 1: SAVE_XMM_FAR)
UWOP_SAVE_XMM128 = 8
UWOP_SAVE_XMM128_FAR = 9
UWOP_PUSH_MACHFRAME = 10

#: Register numbers of UNWIND_CODE operation info and of the frame register.
REGISTERS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")

#: A RUNTIME_FUNCTION whose unwind-data RVA has bit 0 set points at another RUNTIME_FUNCTION (as Wine's
#: RtlLookupFunctionEntry follows it, dlls/ntdll/signal_x86_64.c find_function_info).
RUNTIME_FUNCTION_INDIRECT = 0x1
MAX_CHAIN = 32


class ImageError(HarnessError):
    """A file or memory range that is not a usable PE32+ x64 image, or unwind data that does not decode."""


@dataclass(frozen=True)
class Section:
    name: str
    rva: int
    size: int  # virtual size
    executable: bool

    def holds(self, rva: int) -> bool:
        return self.rva <= rva < self.rva + self.size


@dataclass(frozen=True)
class RuntimeFunction:
    """One .pdata entry: a function (or part of one) and its unwind info, as RVAs."""

    begin: int
    end: int
    unwind: int

    def holds(self, rva: int) -> bool:
        return self.begin <= rva < self.end


@dataclass(frozen=True)
class UnwindCode:
    """One unwind operation, with its operand decoded (a size or offset in bytes, already scaled)."""

    prolog_offset: int  # offset of the end of the prolog instruction (the start of the next one)
    op: int
    info: int
    operand: int = 0


@dataclass(frozen=True)
class UnwindInfo:
    version: int
    flags: int
    prolog_size: int
    frame_register: int  # 0: none
    frame_offset: int  # bytes (the scaled field times 16)
    codes: tuple[UnwindCode, ...]
    chained: RuntimeFunction | None = None
    handler: int | None = None  # RVA of the language-specific handler


def _slots(op: int, info: int) -> int:
    """How many 16-bit slots an operation takes (6 and 7: version 2's EPILOG and spare code, as LLVM and LLDB read
    them; in version 1 they were SAVE_XMM and SAVE_XMM_FAR, of the same sizes)."""
    if op == UWOP_ALLOC_LARGE:
        return 2 if info == 0 else 3
    if op in (UWOP_SAVE_NONVOL, UWOP_SAVE_XMM128, UWOP_EPILOG):
        return 2
    if op in (UWOP_SAVE_NONVOL_FAR, UWOP_SAVE_XMM128_FAR, UWOP_SPARE):
        return 3
    return 1


def decode_unwind_info(data: bytes) -> UnwindInfo:
    """An UNWIND_INFO from its bytes (header, code slots, then a handler or chained entry when flagged).

    Raises:
        ImageError: too short, an unknown version or operation.
    """
    if len(data) < 4:
        raise ImageError("UNWIND_INFO is shorter than its 4-byte header")
    version, flags = data[0] & 0x7, data[0] >> 3
    if version not in (1, 2):
        raise ImageError(f"UNWIND_INFO version {version} (1 and 2 are known)")
    prolog_size, count = data[1], data[2]
    frame_register, frame_offset = data[3] & 0xF, (data[3] >> 4) * 16
    end = 4 + 2 * count
    if len(data) < end:
        raise ImageError(f"UNWIND_INFO has {count} code slots but only {len(data)} bytes")
    slots = struct.unpack_from(f"<{count}H", data, 4)
    codes: list[UnwindCode] = []
    index = 0
    while index < count:
        slot = slots[index]
        prolog_offset, op, info = slot & 0xFF, (slot >> 8) & 0xF, slot >> 12
        if op > UWOP_PUSH_MACHFRAME:
            raise ImageError(f"unknown unwind operation {op}")
        width = _slots(op, info)
        if index + width > count:
            raise ImageError(f"unwind operation {op} runs past the code array")
        operand = 0
        if op == UWOP_ALLOC_SMALL:
            operand = info * 8 + 8
        elif op == UWOP_ALLOC_LARGE:
            operand = slots[index + 1] * 8 if info == 0 else slots[index + 1] | slots[index + 2] << 16
        elif op == UWOP_SAVE_NONVOL:
            operand = slots[index + 1] * 8
        elif op == UWOP_SAVE_XMM128:
            operand = slots[index + 1] * 16
        elif op in (UWOP_SAVE_NONVOL_FAR, UWOP_SAVE_XMM128_FAR):
            operand = slots[index + 1] | slots[index + 2] << 16
        if op not in (UWOP_EPILOG, UWOP_SPARE):  # nothing for an unwind to undo
            codes.append(UnwindCode(prolog_offset=prolog_offset, op=op, info=info, operand=operand))
        index += width
    tail = 4 + 2 * ((count + 1) & ~1)
    chained: RuntimeFunction | None = None
    handler: int | None = None
    if flags & UNW_FLAG_CHAININFO:
        if len(data) < tail + 12:
            raise ImageError("UNWIND_INFO is chained but the chained entry is missing")
        chained = RuntimeFunction(*struct.unpack_from("<3I", data, tail))
    elif flags & (UNW_FLAG_EHANDLER | UNW_FLAG_UHANDLER) and len(data) >= tail + 4:
        handler = struct.unpack_from("<I", data, tail)[0]
    return UnwindInfo(
        version=version,
        flags=flags,
        prolog_size=prolog_size,
        frame_register=frame_register,
        frame_offset=frame_offset,
        codes=tuple(codes),
        chained=chained,
        handler=handler,
    )


def decode_runtime_functions(data: bytes) -> tuple[RuntimeFunction, ...]:
    """The .pdata table (12 bytes per entry), sorted by begin; empty entries are dropped."""
    count = len(data) // 12
    entries = [RuntimeFunction(*struct.unpack_from("<3I", data, 12 * index)) for index in range(count)]
    return tuple(sorted((entry for entry in entries if entry.end > entry.begin), key=lambda entry: entry.begin))


ReadRva = Callable[[int, int], bytes]


class UnwindTable:
    """A module's function table with its unwind info, read on demand by RVA."""

    def __init__(self, functions: Sequence[RuntimeFunction], read_rva: ReadRva) -> None:
        self.functions = tuple(functions)
        self._begins = [function.begin for function in self.functions]
        self._read = read_rva
        self._infos: dict[int, UnwindInfo] = {}

    def lookup(self, rva: int) -> RuntimeFunction | None:
        """The entry covering ``rva`` (indirect entries followed), or None (a leaf function or no code)."""
        index = bisect.bisect_right(self._begins, rva) - 1
        if index < 0 or not self.functions[index].holds(rva):
            return None
        return self._direct(self.functions[index])

    def _direct(self, function: RuntimeFunction) -> RuntimeFunction | None:
        """The entry itself, or the one an indirect entry points at."""
        for _ in range(8):
            if not function.unwind & RUNTIME_FUNCTION_INDIRECT:
                return function
            data = self._read(function.unwind & ~RUNTIME_FUNCTION_INDIRECT, 12)
            if len(data) < 12:
                return None
            function = RuntimeFunction(*struct.unpack("<3I", data))
        return None

    def function_start(self, rva: int) -> int | None:
        """Where the function holding ``rva`` begins (a chained part leads to its primary entry); None: no entry."""
        function = self.lookup(rva)
        for _ in range(MAX_CHAIN):
            if function is None:
                return None
            try:
                info = self.info(function)
            except ImageError:
                return function.begin
            if not info.flags & UNW_FLAG_CHAININFO or info.chained is None:
                return function.begin
            function = info.chained
        return None

    def info(self, function: RuntimeFunction) -> UnwindInfo:
        """The decoded UNWIND_INFO of an entry.

        Raises:
            ImageError: the unwind info cannot be read or decoded.
        """
        cached = self._infos.get(function.unwind)
        if cached is not None:
            return cached
        head = self._read(function.unwind, 4)
        if len(head) < 4:
            raise ImageError(f"cannot read UNWIND_INFO at RVA 0x{function.unwind:x}")
        size = 4 + 2 * ((head[2] + 1) & ~1) + 12
        info = decode_unwind_info(self._read(function.unwind, size))
        self._infos[function.unwind] = info
        return info


class RemoteUnwindTable(UnwindTable):
    """A function table searched where it lies: a binary search of the exception directory through ``read_rva``.

    For an image in a guest's memory read through a debugger, where reading a kernel's whole table (tens of
    thousands of entries) would cost more than the few entries a lookup touches.
    """

    def __init__(self, read_rva: ReadRva, directory_rva: int, directory_size: int) -> None:
        super().__init__((), read_rva)
        self._directory = directory_rva
        self._count = directory_size // 12

    def _entry(self, index: int) -> RuntimeFunction | None:
        data = self._read(self._directory + 12 * index, 12)
        return RuntimeFunction(*struct.unpack("<3I", data)) if len(data) == 12 else None

    def lookup(self, rva: int) -> RuntimeFunction | None:
        low, high = 0, self._count
        while low < high:  # the first entry that begins after rva
            middle = (low + high) // 2
            entry = self._entry(middle)
            if entry is None:
                return None
            if entry.begin <= rva:
                low = middle + 1
            else:
                high = middle
        function = self._entry(low - 1) if low else None
        if function is None or not function.holds(rva):
            return None
        return self._direct(function)


class ImageView(Protocol):
    """An image read by RVA (a file on the host, or an image in a guest's memory)."""

    def read_rva(self, rva: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``rva``; b"" outside the image."""
        ...


class Memory(Protocol):
    """A guest's address space as a debugger reads it."""

    def read(self, address: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``address``: fewer (or none) where memory cannot be read."""
        ...


class PeImage:
    """An image file on the host: headers, sections, exports, unwind data, code identity."""

    def __init__(self, path: Path) -> None:
        """Raises:
        ImageError: not a readable PE32+ x64 image.
        """
        self.path = path
        try:
            self._pe: Any = pefile.PE(str(path), fast_load=True)
        except (OSError, pefile.PEFormatError) as error:
            raise ImageError(f"{path}: not a PE image ({error})") from None
        if self._pe.FILE_HEADER.Machine != IMAGE_FILE_MACHINE_AMD64:
            raise ImageError(f"{path}: machine 0x{self._pe.FILE_HEADER.Machine:04x} is not x64")
        optional = self._pe.OPTIONAL_HEADER
        self.image_base: int = optional.ImageBase
        self.size_of_image: int = optional.SizeOfImage
        self.entry_point: int = optional.AddressOfEntryPoint
        self.sections = tuple(
            Section(
                name=section.Name.rstrip(b"\0").decode("ascii", "replace"),
                rva=section.VirtualAddress,
                size=max(section.Misc_VirtualSize, section.SizeOfRawData),
                executable=bool(section.Characteristics & IMAGE_SCN_MEM_EXECUTE),
            )
            for section in self._pe.sections
        )
        #: Whether the file itself names its code (a COFF symbol table or DWARF): not stripped.
        self.has_symbols = bool(self._pe.FILE_HEADER.NumberOfSymbols) or any(
            section.name.startswith((".debug_", "/")) for section in self.sections
        )
        self._table: UnwindTable | None = None
        self._exports: tuple[tuple[int, str], ...] | None = None

    def read_rva(self, rva: int, size: int) -> bytes:
        """Bytes of the mapped image at ``rva`` (zeros where the section has no file data; b"" outside the image)."""
        if rva < 0 or rva >= self.size_of_image:
            return b""
        size = min(size, self.size_of_image - rva)
        try:
            data: bytes = self._pe.get_data(rva, size)
        except pefile.PEFormatError:
            return b""
        return data

    def section_at(self, rva: int) -> Section | None:
        return next((section for section in self.sections if section.holds(rva)), None)

    def unwind_table(self) -> UnwindTable:
        """The exception directory's function table (empty when the image has no unwind data)."""
        if self._table is None:
            directory = self._pe.OPTIONAL_HEADER.DATA_DIRECTORY[IMAGE_DIRECTORY_ENTRY_EXCEPTION]
            data = self.read_rva(directory.VirtualAddress, directory.Size) if directory.Size else b""
            self._table = UnwindTable(decode_runtime_functions(data), self.read_rva)
        return self._table

    def exports(self) -> tuple[tuple[int, str], ...]:
        """(RVA, name) of named exports that are code, sorted by RVA."""
        if self._exports is None:
            found: list[tuple[int, str]] = []
            try:
                self._pe.parse_data_directories(directories=[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_EXPORT"]])
            except pefile.PEFormatError:
                self._exports = ()
                return self._exports
            for symbol in getattr(getattr(self._pe, "DIRECTORY_ENTRY_EXPORT", None), "symbols", []):
                section = self.section_at(symbol.address)
                if symbol.name and section is not None and section.executable and not symbol.forwarder:
                    found.append((symbol.address, symbol.name.decode("ascii", "replace")))
            self._exports = tuple(sorted(found))
        return self._exports

    def pdb_name(self) -> str | None:
        """The PDB an MSVC-style build names in its CodeView debug record, if any."""
        try:
            self._pe.parse_data_directories(directories=[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_DEBUG"]])
        except pefile.PEFormatError:
            return None
        for entry in getattr(self._pe, "DIRECTORY_ENTRY_DEBUG", []):
            name = getattr(getattr(entry, "entry", None), "PdbFileName", None)
            if isinstance(name, bytes) and name.rstrip(b"\0"):
                return name.rstrip(b"\0").decode("utf-8", "replace")
        return None

    def code_digest(self) -> str:
        """SHA-256 over the executable sections (name, RVA, bytes): equal for an image and its unstripped copy."""
        digest = hashlib.sha256()
        for section in self.sections:
            if section.executable:
                digest.update(f"{section.name}@{section.rva:x}:".encode())
                digest.update(self.read_rva(section.rva, section.size).rstrip(b"\0"))
        return digest.hexdigest()


class MemoryImage:
    """An image mapped in a guest's memory at ``base``, read through a debugger: headers and unwind data."""

    def __init__(self, memory: Memory, base: int) -> None:
        """Raises:
        ImageError: no PE32+ x64 headers at ``base``.
        """
        self.memory = memory
        self.base = base
        dos = memory.read(base, 0x40)
        if len(dos) < 0x40 or dos[:2] != b"MZ":
            raise ImageError(f"no image at 0x{base:x} (no MZ header)")
        nt = base + struct.unpack_from("<I", dos, 0x3C)[0]
        headers = memory.read(nt, 24 + 112 + 16 * 8)
        if len(headers) < 24 + 112 + 16 * 8 or headers[:4] != b"PE\0\0":
            raise ImageError(f"no PE header for the image at 0x{base:x}")
        machine = struct.unpack_from("<H", headers, 4)[0]
        if machine != IMAGE_FILE_MACHINE_AMD64 or struct.unpack_from("<H", headers, 24)[0] != 0x20B:
            raise ImageError(f"the image at 0x{base:x} is not PE32+ x64")
        self.size_of_image: int = struct.unpack_from("<I", headers, 24 + 56)[0]
        self._exception = struct.unpack_from("<II", headers, 24 + 112 + 8 * IMAGE_DIRECTORY_ENTRY_EXCEPTION)

    def read_rva(self, rva: int, size: int) -> bytes:
        if rva < 0 or rva >= self.size_of_image:
            return b""
        return self.memory.read(self.base + rva, min(size, self.size_of_image - rva))

    def unwind_table(self) -> UnwindTable:
        rva, size = self._exception
        data = self.read_rva(rva, size) if size else b""
        return UnwindTable(decode_runtime_functions(data), self.read_rva)

    def remote_unwind_table(self) -> RemoteUnwindTable:
        """The function table searched in place (a few reads per lookup instead of the whole table)."""
        rva, size = self._exception
        return RemoteUnwindTable(self.read_rva, rva, size)
