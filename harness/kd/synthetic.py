"""A small synthetic Windows kernel for the KD target doubles (the emulator and the stand-in's kdtarget). Pure.

What a debugger reads from a stopped Windows kernel, laid out as Windows lays it out (docs/windows-facts.md,
"Kernel debugger: reading a stopped kernel"): a kernel image at ``KernBase`` with x64 unwind data and exports
(``ntoskrnl.exe``, built here: a handful of functions with the prologs their unwind codes describe, two of them
trap handlers with a machine frame), real driver images (the project's own builds) mapped section by section at
their bases, the loaded-module list (``PsLoadedModuleList``: LIST_ENTRY head, ``KLDR_DATA_TABLE_ENTRY`` entries with
``DllBase`` at 0x30, ``SizeOfImage`` at 0x40, ``BaseDllName`` at 0x58), and each processor stopped inside a call
chain whose stack is laid out so that unwinding it with the images' unwind data gives that chain back. A machine
is written to a file (``encode``) for kdtarget, which answers memory reads, contexts and the version from it.

``locate_*`` functions read a driver's debug copy with binutils' objdump (I/O) to find the call sites the
scenarios' chains go through; everything else maps bytes to bytes.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.kd import packets as kd
from harness.triage.pe import (
    UWOP_ALLOC_LARGE,
    UWOP_ALLOC_SMALL,
    UWOP_PUSH_MACHFRAME,
    UWOP_PUSH_NONVOL,
    UWOP_SET_FPREG,
    ImageError,
    MemoryImage,
    UnwindTable,
)
from harness.triage.unwind import SnapshotMemory

KERNEL = "ntoskrnl.exe"
KERNEL_BASE = 0xFFFFF80000000000
DATA_BASE = 0xFFFFF80000F00000  # the module list, names, exception and context records
DATA_SIZE = 0x3000
STACK_BASE = 0xFFFFD00000000000  # processor n's stack at STACK_BASE + n * STACK_STRIDE
STACK_STRIDE = 0x10000
STACK_SIZE = 0x2000
THREAD_BASE = 0xFFFFE00000001000  # a KTHREAD address per processor, for the state change's Thread (never read)
BUILD = 19041
MACHINE_MAGIC = b"KCBMACH1"

# The kernel's functions: (name, kind). "frame": push rbx; sub rsp,20h; body; call; epilog. "trap" / "interrupt":
# push rbp; sub rsp,20h under a machine frame (with and without an error code). "leaf": int 3; ret, no unwind data.
KERNEL_FUNCTIONS = (
    ("KeBugCheckEx", "frame"),
    ("KiBugCheckDispatch", "frame"),
    ("KiPageFault", "trap"),
    ("ExNotifyCallback", "frame"),
    ("IopLoadDriver", "frame"),
    ("PspSystemThreadStartup", "frame"),
    ("DbgBreakPointWithStatus", "leaf"),
    ("KeUpdateSystemTime", "frame"),
    ("KiTimerInterrupt", "interrupt"),
    ("KiIdleLoop", "frame"),
    ("KiSystemStartup", "frame"),
)
_FRAME_CODE = bytes.fromhex("534883ec2090909090e800000000904883c4205bc3")
_TRAP_CODE = bytes.fromhex("554883ec2090909090e800000000904883c4205d48cf")
_LEAF_CODE = bytes.fromhex("ccc3")
BODY_PC = 6  # an instruction of the body, after the prolog (where a stopped processor is)
CALL_SITE = 14  # the instruction after the call (a return address)
_FUNCTION_STRIDE = 0x40
_TEXT, _PDATA, _XDATA, _EDATA = 0x1000, 0x2000, 0x3000, 0x4000
_KERNEL_SIZE = 0x5000
_RBX, _RBP = 3, 5


def _slot(offset: int, op: int, info: int) -> int:
    return offset | op << 8 | info << 12


def _unwind_info(kind: str) -> bytes:
    if kind == "frame":  # push rbx (ends at 1); sub rsp, 20h (ends at 5)
        slots = [_slot(5, UWOP_ALLOC_SMALL, 3), _slot(1, UWOP_PUSH_NONVOL, _RBX)]
    else:  # the machine frame was pushed by the processor before the first instruction
        slots = [_slot(5, UWOP_ALLOC_SMALL, 3), _slot(1, UWOP_PUSH_NONVOL, _RBP), _slot(0, UWOP_PUSH_MACHFRAME, int(kind == "trap"))]
    padded = slots + [0] * (len(slots) % 2)
    return bytes([1, 5, len(slots), 0]) + struct.pack(f"<{len(padded)}H", *padded)


def build_pe(
    sections: Sequence[tuple[str, int, bytes, int]], size_of_image: int, directories: Mapping[int, tuple[int, int]], image_base: int
) -> bytes:
    """A PE32+ x64 native image file: (name, RVA, data, characteristics) per section, data directories by index."""
    file_align, header_size = 0x200, 0x400
    raw: list[tuple[int, bytes]] = []
    offset = header_size
    for _, _, data, _ in sections:
        size = (len(data) + file_align - 1) // file_align * file_align
        raw.append((offset, data.ljust(size, b"\0")))
        offset += size
    dos = bytearray(0x80)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 0x80)
    coff = struct.pack("<HHIIIHH", kd.IMAGE_FILE_MACHINE_AMD64, len(sections), 0, 0, 0, 240, 0x0022)
    code_size = sum(len(data) for _, _, data, flags in sections if flags & 0x20)
    optional = struct.pack(
        "<HBBIIIIIQIIHHHHHHIIIIHHQQQQII", 0x20B, 2, 40, code_size, 0, 0, 0, _TEXT, image_base, 0x1000, file_align, 10, 0, 10, 0,
        10, 0, 0, size_of_image, header_size, 0, 1, 0x160, 0x40000, 0x1000, 0x100000, 0x1000, 0, 16,
    )  # fmt: skip
    dirs = bytearray(16 * 8)
    for index, (rva, size) in directories.items():
        struct.pack_into("<II", dirs, 8 * index, rva, size)
    table = b"".join(
        struct.pack("<8sIIIIIIHHI", name.encode(), len(data), rva, len(chunk), file_offset, 0, 0, 0, 0, flags)
        for (name, rva, data, flags), (file_offset, chunk) in zip(sections, raw, strict=True)
    )
    headers = (bytes(dos) + b"PE\0\0" + coff + optional + bytes(dirs) + table).ljust(header_size, b"\0")
    return headers + b"".join(chunk for _, chunk in raw)


@dataclass(frozen=True)
class KernelImage:
    """The synthetic kernel: its file and where each function begins (RVA) and of what kind it is."""

    file: bytes
    functions: Mapping[str, tuple[int, str]]


def build_kernel() -> KernelImage:
    """ntoskrnl.exe: the functions of KERNEL_FUNCTIONS with their .pdata/.xdata (leaves have none) and exports."""
    text = bytearray()
    pdata = bytearray()
    xdata = bytearray()
    functions: dict[str, tuple[int, str]] = {}
    for name, kind in KERNEL_FUNCTIONS:
        begin = _TEXT + len(text)
        code = {"frame": _FRAME_CODE, "leaf": _LEAF_CODE}.get(kind, _TRAP_CODE)
        text += code.ljust(_FUNCTION_STRIDE, b"\xcc")
        functions[name] = (begin, kind)
        if kind != "leaf":
            info = _unwind_info(kind)
            pdata += struct.pack("<3I", begin, begin + len(code), _XDATA + len(xdata))
            xdata += info.ljust((len(info) + 3) & ~3, b"\0")
    names = sorted(functions)
    strings = bytearray(b"ntoskrnl.exe\0")
    name_rvas = []
    head, count = 40, len(names)
    functions_at = _EDATA + head
    names_at = functions_at + 4 * count
    ordinals_at = names_at + 4 * count
    strings_at = ordinals_at + 2 * count
    for name in names:
        name_rvas.append(strings_at + len(strings))
        strings += name.encode() + b"\0"
    edata = struct.pack("<IIHHIIIIIII", 0, 0, 0, 0, strings_at, 1, count, count, functions_at, names_at, ordinals_at)
    edata += struct.pack(f"<{count}I", *(functions[name][0] for name in names))
    edata += struct.pack(f"<{count}I", *name_rvas)
    edata += struct.pack(f"<{count}H", *range(count))
    edata += bytes(strings)
    sections = [
        (".text", _TEXT, bytes(text), 0x60000020),
        (".pdata", _PDATA, bytes(pdata), 0x40000040),
        (".rdata", _XDATA, bytes(xdata), 0x40000040),
        (".edata", _EDATA, edata, 0x40000040),
    ]
    directories = {0: (_EDATA, len(edata)), 3: (_PDATA, len(pdata))}
    return KernelImage(build_pe(sections, _KERNEL_SIZE, directories, KERNEL_BASE), functions)


def map_image(file: bytes) -> bytes:
    """An image file as the loader maps it: headers, then each section's data at its RVA (unrelocated).

    Raises:
        ImageError: not a PE32+ image.
    """
    if file[:2] != b"MZ" or len(file) < 0x40:
        raise ImageError("not an MZ image")
    nt = struct.unpack_from("<I", file, 0x3C)[0]
    if file[nt : nt + 4] != b"PE\0\0":
        raise ImageError("no PE header")
    sections, optional_size = struct.unpack_from("<HxxxxxxxxxxxxH", file, nt + 6)
    optional = nt + 24
    size_of_image, size_of_headers = struct.unpack_from("<II", file, optional + 56)
    image = bytearray(size_of_image)
    image[:size_of_headers] = file[:size_of_headers]
    for index in range(sections):
        header = optional + optional_size + 40 * index
        virtual_size, rva, raw_size, raw_offset = struct.unpack_from("<IIII", file, header + 8)
        data = file[raw_offset : raw_offset + min(raw_size, virtual_size or raw_size)]
        image[rva : rva + len(data)] = data
    return bytes(image)


@dataclass(frozen=True)
class Site:
    """A frame of a chain: a kernel function by name (its body or call site, as the chain needs), or an RVA in a
    driver: the interrupted instruction for the first frame and after a trap, else a return address."""

    module: str
    at: int | str


@dataclass(frozen=True)
class Machine:
    """A stopped synthetic kernel: what its memory holds, each processor's context and the version block."""

    memory: tuple[tuple[int, bytes], ...]
    contexts: tuple[bytes, ...]
    version: bytes  # DBGKD_GET_VERSION64
    modules: tuple[tuple[str, int, int], ...]  # (path, base, size) of the drivers, for load-symbols state changes
    stop_processor: int = 0
    bugcheck: tuple[int, tuple[int, int, int, int]] | None = None

    def read(self, address: int, size: int) -> bytes:
        """What a debugger's read gets: the bytes up to the first address nothing is mapped at."""
        return SnapshotMemory(self.memory).read(address, size)

    def pc(self, processor: int) -> int:
        return kd.context_registers(self.contexts[processor])["rip"]

    def thread(self, processor: int) -> int:
        return THREAD_BASE + 0x1000 * processor

    def encode(self) -> bytes:
        """The file kdtarget reads (little-endian): magic, counts, stop processor, bugcheck, version, contexts,
        modules (base, size, path length, path), memory ranges (address, length, bytes)."""
        code, params = self.bugcheck or (0, (0, 0, 0, 0))
        out = bytearray(MACHINE_MAGIC)
        out += struct.pack("<IIIII4Q", len(self.contexts), len(self.memory), len(self.modules), self.stop_processor,
                           int(self.bugcheck is not None), *params) + struct.pack("<I", code)  # fmt: skip
        out += self.version
        for context in self.contexts:
            out += context
        for path, base, size in self.modules:
            name = path.encode()
            out += struct.pack("<QII", base, size, len(name)) + name
        for address, data in self.memory:
            out += struct.pack("<QI", address, len(data)) + data
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> Machine:
        """Raises:
        ValueError: not a machine file.
        """
        if not data.startswith(MACHINE_MAGIC):
            raise ValueError("not a machine file")
        at = len(MACHINE_MAGIC)
        processors, ranges, modules, stop, has_bugcheck, *params = struct.unpack_from("<IIIII4Q", data, at)
        at += struct.calcsize("<IIIII4Q")
        code = struct.unpack_from("<I", data, at)[0]
        at += 4
        version = data[at : at + kd.GET_VERSION.size]
        at += kd.GET_VERSION.size
        contexts = tuple(data[at + kd.CONTEXT_SIZE * index : at + kd.CONTEXT_SIZE * (index + 1)] for index in range(processors))
        at += kd.CONTEXT_SIZE * processors
        module_list = []
        for _ in range(modules):
            base, size, length = struct.unpack_from("<QII", data, at)
            at += 16
            module_list.append((data[at : at + length].decode(), base, size))
            at += length
        memory = []
        for _ in range(ranges):
            address, length = struct.unpack_from("<QI", data, at)
            at += 12
            memory.append((address, data[at : at + length]))
            at += length
        bugcheck = (code, (params[0], params[1], params[2], params[3])) if has_bugcheck else None
        return cls(tuple(memory), contexts, version, tuple(module_list), stop, bugcheck)


@dataclass
class _Loaded:
    name: str
    path: str
    base: int
    image: bytes  # mapped
    table: UnwindTable


@dataclass
class MachineBuilder:
    """Lays out a machine: the kernel, drivers at bases, processors stopped in chains, records in data memory."""

    kernel: KernelImage = field(default_factory=build_kernel)
    loaded: list[_Loaded] = field(default_factory=list)
    contexts: list[bytes] = field(default_factory=list)
    data: bytearray = field(default_factory=lambda: bytearray(DATA_SIZE))
    data_used: int = 0x100
    stacks: list[tuple[int, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._load(KERNEL, f"\\SystemRoot\\system32\\{KERNEL}", KERNEL_BASE, map_image(self.kernel.file))

    def _load(self, name: str, path: str, base: int, image: bytes) -> None:
        table = MemoryImage(SnapshotMemory([(base, image)]), base).unwind_table()
        self.loaded.append(_Loaded(name, path, base, image, table))

    def add_driver(self, name: str, file: bytes, base: int, path: str = "") -> None:
        """Map a driver image file at ``base`` (its module name ``name``, e.g. sysRecv1.sys)."""
        self._load(name, path or f"\\??\\C:\\kcb\\{name}", base, map_image(file))

    def module(self, name: str) -> _Loaded:
        return next(loaded for loaded in self.loaded if loaded.name.lower() == name.lower())

    def address(self, site: Site, exact: bool) -> int:
        """Where a site is: a kernel function's body (``exact``: a stopped or interrupted instruction) or call site."""
        if isinstance(site.at, str):
            begin, kind = self.kernel.functions[site.at]
            return KERNEL_BASE + begin + (0 if kind == "leaf" else BODY_PC if exact else CALL_SITE)
        return self.module(site.module).base + site.at

    def lay_stack(self, chain: Sequence[Site], processor: int) -> list[tuple[int, int]]:
        """Write the stack of a processor stopped in ``chain`` (innermost first; the outermost returns to 0).

        Returns (pc, rsp) of every frame.

        Raises:
            ValueError: a function the layout cannot describe (a frame register).
        """
        low = STACK_BASE + STACK_STRIDE * processor
        stack = bytearray(STACK_SIZE)
        sp = low + 0x100
        frames: list[tuple[int, int]] = []
        exact = True
        for index, site in enumerate(chain):
            pc = self.address(site, exact)
            frames.append((pc, sp))
            following = chain[index + 1] if index + 1 < len(chain) else None
            loaded = next(item for item in self.loaded if item.base <= pc < item.base + len(item.image))
            function = loaded.table.lookup(pc - loaded.base)
            rsp, trap = sp, False
            codes = loaded.table.info(function).codes if function is not None else ()
            next_sp = 0
            for code in codes:
                if code.op == UWOP_PUSH_NONVOL:
                    struct.pack_into("<Q", stack, rsp - low, 0xDEAD0000 + code.info)
                    rsp += 8
                elif code.op in (UWOP_ALLOC_SMALL, UWOP_ALLOC_LARGE):
                    rsp += code.operand
                elif code.op == UWOP_SET_FPREG:
                    raise ValueError(f"{loaded.name}+0x{pc - loaded.base:x}: a frame register cannot be laid out")
                elif code.op == UWOP_PUSH_MACHFRAME:
                    slot = rsp + (8 if code.info else 0)
                    trap, next_sp = True, slot + 40
                    target = self.address(following, True) if following is not None else 0
                    struct.pack_into("<5Q", stack, slot - low, target, 0x10, 0x246, next_sp, 0x18)
            if not trap:
                target = self.address(following, False) if following is not None else 0
                struct.pack_into("<Q", stack, rsp - low, target)
                next_sp = rsp + 8
            sp, exact = next_sp, trap
        self.stacks.append((low, bytes(stack)))
        return frames

    def processor(self, chain: Sequence[Site]) -> list[tuple[int, int]]:
        """The next processor, stopped in ``chain``; returns its frames' (pc, rsp)."""
        frames = self.lay_stack(chain, len(self.contexts))
        pc, sp = frames[0]
        self.contexts.append(kd.encode_context({"rip": pc, "rsp": sp, "rbx": 0xB0B, "rbp": 0xBEEF}))
        return frames

    def put(self, data: bytes, align: int = 16) -> int:
        """Copy ``data`` into the machine's data memory; returns its address."""
        at = (self.data_used + align - 1) // align * align
        if at + len(data) > DATA_SIZE:
            raise ValueError("the machine's data memory is full")
        self.data[at : at + len(data)] = data
        self.data_used = at + len(data)
        return DATA_BASE + at

    def context_record(self, pc: int, sp: int) -> int:
        """A CONTEXT (as KiDispatchException saves one) for a thread at ``pc`` with ``sp``; returns its address."""
        return self.put(kd.encode_context({"rip": pc, "rsp": sp, "rbx": 0xB0B, "rbp": 0xBEEF}))

    def exception_record(self, code: int, address: int, parameters: Sequence[int]) -> int:
        """An EXCEPTION_RECORD64; returns its address."""
        record = struct.pack("<IIQQI4x", code, 0, 0, address, len(parameters)) + struct.pack(
            "<15Q", *(list(parameters) + [0] * (15 - len(parameters)))
        )
        return self.put(record)

    def _module_list(self) -> int:
        """PsLoadedModuleList: a LIST_ENTRY head and one entry per loaded image, in load order."""
        head = self.put(bytes(16))
        entries = []
        for loaded in self.loaded:
            full = loaded.path.encode("utf-16-le")
            base_name = loaded.name.encode("utf-16-le")
            full_at, name_at = self.put(full + b"\0\0", 2), self.put(base_name + b"\0\0", 2)
            entry = bytearray(0xA0)
            struct.pack_into("<QQI", entry, 0x30, loaded.base, loaded.base, len(loaded.image))
            struct.pack_into("<HH4xQ", entry, 0x48, len(full), len(full) + 2, full_at)
            struct.pack_into("<HH4xQ", entry, 0x58, len(base_name), len(base_name) + 2, name_at)
            entries.append(self.put(bytes(entry)))
        links = [head, *entries, head]
        for index, at in enumerate(links[:-1]):
            offset = at - DATA_BASE
            blink = links[index - 1] if index else entries[-1] if entries else head
            struct.pack_into("<QQ", self.data, offset, links[index + 1], blink)
        return head

    def build(self, bugcheck: tuple[int, tuple[int, int, int, int]] | None = None, stop_processor: int = 0) -> Machine:
        module_list = self._module_list()
        version = kd.GET_VERSION.pack(
            0x0F, BUILD, 6, 2, 0x5, kd.IMAGE_FILE_MACHINE_AMD64, kd.TYPE_MAX, 3, 0x31, 0, 0, KERNEL_BASE, module_list, 0
        )
        memory = [(loaded.base, loaded.image) for loaded in self.loaded] + self.stacks + [(DATA_BASE, bytes(self.data))]
        drivers = tuple((loaded.path, loaded.base, len(loaded.image)) for loaded in self.loaded if loaded.name != KERNEL)
        return Machine(tuple(sorted(memory)), tuple(self.contexts), version, drivers, stop_processor, bugcheck)


# -- the scenarios the tests play --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriverFile:
    """A driver the machine maps: its module name in the guest, its image file's bytes and base."""

    name: str
    file: bytes
    base: int


@dataclass(frozen=True)
class NullDerefSites:
    """Where the seeded NULL write happens (RVAs in the receiver and sender built with -DKCB_SEEDED_BUG_NULL_DEREF)."""

    fault: int  # the receiver's faulting instruction (the first of CountNotification)
    on_notify_return: int  # in OnNotify, after its call of CountNotification
    notify_thread_return: int  # in the sender's NotifyThread, after its call of ExNotifyCallback


KMODE_EXCEPTION_NOT_HANDLED = 0x1E
SYSTEM_THREAD_EXCEPTION_NOT_HANDLED = 0x7E
STATUS_ACCESS_VIOLATION = 0xC0000005


def null_deref_machine(
    receiver: DriverFile, sender: DriverFile, sites: NullDerefSites, code: int = SYSTEM_THREAD_EXCEPTION_NOT_HANDLED
) -> Machine:
    """The sender's notify thread calls ExNotifyCallback, the receiver's routine writes through NULL; the page fault
    ends in a bugcheck: processor 0 stops in KeBugCheckEx under KiPageFault's trap frame, processor 1 idles.

    ``code`` 0x7E carries the exception and context records as parameters 3 and 4 (the system thread's exception
    filter), 0x1E the exception code, address and its two parameters (KiDispatchException).
    """
    builder = MachineBuilder()
    builder.add_driver(receiver.name, receiver.file, receiver.base)
    builder.add_driver(sender.name, sender.file, sender.base)
    chain = [
        Site(KERNEL, "KeBugCheckEx"),
        Site(KERNEL, "KiBugCheckDispatch"),
        Site(KERNEL, "KiPageFault"),
        Site(receiver.name, sites.fault),
        Site(receiver.name, sites.on_notify_return),
        Site(KERNEL, "ExNotifyCallback"),
        Site(sender.name, sites.notify_thread_return),
        Site(KERNEL, "PspSystemThreadStartup"),
    ]
    frames = builder.processor(chain)
    builder.processor([Site(KERNEL, "KiIdleLoop"), Site(KERNEL, "KiSystemStartup")])
    fault_pc, fault_sp = frames[3]
    exception = builder.exception_record(STATUS_ACCESS_VIOLATION, fault_pc, (1, 0))
    context = builder.context_record(fault_pc, fault_sp)
    if code == KMODE_EXCEPTION_NOT_HANDLED:
        params = (STATUS_ACCESS_VIOLATION, fault_pc, 1, 0)
    else:
        params = (STATUS_ACCESS_VIOLATION, fault_pc, exception, context)
    return builder.build(bugcheck=(code, params))


def stall_machine(stall: DriverFile, stalled_at: int) -> Machine:
    """A driver that never returns from DriverEntry, interrupted by the clock on processor 0 (where a break-in stops:
    DbgBreakPointWithStatus in KeUpdateSystemTime under KiTimerInterrupt's machine frame); processor 1 idles."""
    builder = MachineBuilder()
    builder.add_driver(stall.name, stall.file, stall.base)
    builder.processor([
        Site(KERNEL, "DbgBreakPointWithStatus"),
        Site(KERNEL, "KeUpdateSystemTime"),
        Site(KERNEL, "KiTimerInterrupt"),
        Site(stall.name, stalled_at),
        Site(KERNEL, "IopLoadDriver"),
        Site(KERNEL, "PspSystemThreadStartup"),
    ])  # fmt: skip
    builder.processor([Site(KERNEL, "KiIdleLoop"), Site(KERNEL, "KiSystemStartup")])
    return builder.build()


# -- finding call sites in a driver's debug copy (I/O: binutils' objdump) -----------------------------------------------

_INSTRUCTION = re.compile(r"^\s+([0-9a-f]+):\s+(.*)$")
_SYMBOL = re.compile(r"^([0-9a-f]+) [tT] (\S+)$")
OBJDUMP_CANDIDATES = ("x86_64-w64-mingw32-objdump", "objdump")
NM_CANDIDATES = ("x86_64-w64-mingw32-nm", "nm")


def _binutils(candidates: Sequence[str], arguments: list[str]) -> str:
    tool = next((name for name in candidates if shutil.which(name)), None)
    if tool is None:
        raise ImageError(f"{candidates[0]} (binutils-mingw-w64) is not installed")
    done = subprocess.run([tool, *arguments], capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        raise ImageError(f"{tool} {' '.join(arguments)}: {done.stderr.strip()[:200]}")
    return done.stdout


def disassemble(debug: Path) -> dict[str, list[tuple[int, str]]]:
    """Each code symbol of a debug copy (static functions too) with its instructions (address, text), up to the next
    symbol's address.

    Raises:
        ImageError: binutils is missing or failed.
    """
    symbols: dict[str, int] = {}
    for line in _binutils(NM_CANDIDATES, [str(debug)]).splitlines():
        if (match := _SYMBOL.match(line)) and not match.group(2).startswith("."):
            symbols[match.group(2)] = int(match.group(1), 16)
    instructions = [
        (int(match.group(1), 16), match.group(2).strip())
        for line in _binutils(OBJDUMP_CANDIDATES, ["-d", "--no-show-raw-insn", str(debug)]).splitlines()
        if (match := _INSTRUCTION.match(line))
    ]
    starts = sorted(set(symbols.values()))
    functions: dict[str, list[tuple[int, str]]] = {}
    for name, start in symbols.items():
        end = next((address for address in starts if address > start), 1 << 64)
        functions[name] = [(address, text) for address, text in instructions if start <= address < end]
    return functions


def _after(instructions: list[tuple[int, str]], index: int) -> int:
    return instructions[index + 1][0]


def locate_null_deref_sites(receiver_debug: Path, sender_debug: Path, image_base: int = 0x140000000) -> NullDerefSites:
    """The RVAs of NullDerefSites in the null-deref build's debug copies.

    Raises:
        ImageError: a function or call was not found.
    """
    receiver, sender = disassemble(receiver_debug), disassemble(sender_debug)
    try:
        count = receiver["CountNotification"][0][0]
        notify = receiver["OnNotify"]
        call = next(i for i, (_, text) in enumerate(notify) if re.match(rf"call\s+{count:x}\b", text))
        thread = sender["NotifyThread"]
        register = next(
            match.group(1) for _, text in thread if (match := re.match(r"mov\s+\S+,(%\w+)\s+#.*<__imp_ExNotifyCallback>", text)) is not None
        )
        notify_call = next(i for i, (_, text) in enumerate(thread) if text.replace(" ", "") == f"call*{register}")
    except (KeyError, IndexError, StopIteration):
        raise ImageError(f"{receiver_debug} / {sender_debug}: not the null-deref build's receiver and sender") from None
    return NullDerefSites(count - image_base, _after(notify, call) - image_base, _after(thread, notify_call) - image_base)


def locate_stall_site(stall_debug: Path, image_base: int = 0x140000000) -> int:
    """The RVA of stall.sys's call of KeWaitForSingleObject in DriverEntry (where it stays).

    Raises:
        ImageError: not found.
    """
    entry = disassemble(stall_debug).get("DriverEntry", [])
    for address, text in entry:
        if text.startswith("call") and "KeWaitForSingleObject" in text:
            return address - image_base
    raise ImageError(f"{stall_debug}: no call of KeWaitForSingleObject in DriverEntry")


# -- the stand-in's machine file (standin-guest/build.sh) ----------------------------------------------------------------

STANDIN_RECEIVER = DriverFile("sysRecv1.sys", b"", 0xFFFFF80000400000)
STANDIN_SENDER = DriverFile("sysTest.sys", b"", 0xFFFFF80000500000)


def write_standin_machine(out: Path, null_deref: Path) -> Machine:
    """The machine the stand-in's kdtarget serves (the null-deref crash, 0x7E) as ``out``/kdmachine.bin, with the
    synthetic ``out``/ntoskrnl.exe a test names kernel frames with.

    Raises:
        ImageError: the null-deref build or binutils is missing.
    """
    sites = locate_null_deref_sites(null_deref / "receiver.debug", null_deref / "sender.debug")
    receiver = DriverFile(STANDIN_RECEIVER.name, (null_deref / "receiver.sys").read_bytes(), STANDIN_RECEIVER.base)
    sender = DriverFile(STANDIN_SENDER.name, (null_deref / "sender.sys").read_bytes(), STANDIN_SENDER.base)
    machine = null_deref_machine(receiver, sender, sites)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kdmachine.bin").write_bytes(machine.encode())
    (out / KERNEL).write_bytes(build_kernel().file)
    return machine


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: python -m harness.kd.synthetic OUT_DIR NULL_DEREF_DRIVERS_DIR")
    write_standin_machine(Path(sys.argv[1]), Path(sys.argv[2]))
