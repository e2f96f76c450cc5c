"""What the KD host reads from a stopped kernel to say where it crashed or hung. Pure: requests out, replies in.

At the bugcheck's first break (crash) or at a break-in the harness asked for (hang) the host reads, through the
state-manipulation requests of the protocol (DBGKD_MANIPULATE_STATE64; docs/windows-facts.md): the version block
(``DbgKdGetVersionApi``: KernBase, PsLoadedModuleList), each processor's context (``DbgKdGetContextApi`` with
that processor's number: the stopped one's own, the others' as they were frozen), and memory
(``DbgKdReadVirtualMemoryApi``, in aligned chunks, each chunk read once). It walks every stack with the images'
unwind data (harness.triage.unwind): a driver's from its file when the user gave it, any other image's from the
kernel's memory (headers, then a binary search of its exception directory). Module bases come from the
load-symbols state changes the host has seen, the kernel's from the version block; an address in none of them is
looked up in PsLoadedModuleList (bounded).

At a bugcheck whose parameters carry the faulting thread's context record (0x7E and 0x1000007E: parameter 4;
0x3B: parameter 3, as ``.cxr`` uses them) that context is walked first: it is where the exception happened. The
stopped processor's own stack (from KeBugCheckEx) follows; it reaches the faulting code through the trap handler's
machine frame when the fault bugchecked from a trap (0xD1, 0x0A, 0x50, 0x1E).

The walk is a plan that is run again from the start after every reply, with everything read so far kept: a read
that is not there yet stops the run with the request to send (``Need``). A run never waits; the host bounds the
number of requests and the time, and when either is spent (or the target does not answer) the plan runs a last
time with nothing more to read, and reports what it has.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from harness.kd import packets as kd
from harness.kernel.stacks import ModuleRange, ReportKind, StackReport, ThreadStack
from harness.triage.pe import ImageError, MemoryImage, PeImage, RuntimeFunction, UnwindInfo, UnwindTable
from harness.triage.unwind import CodeModule, ImagesMemory, LayeredMemory, Walk, walk_stack

CHUNK = 0x400  # memory is read in aligned chunks of this size (never across a page: a chunk is all there or not)
MAX_REQUESTS = 400
MAX_PROCESSORS = 64
MAX_LIST_ENTRIES = 512  # PsLoadedModuleList entries followed at most
MAX_LOOKUPS = 8  # modules looked up in the list per walk
MAX_NAME = 520  # bytes of a module name read at most
KERNEL_NAME = "ntoskrnl.exe"
#: Bugchecks whose parameters give the faulting thread's context record, and which parameter (0-based).
CONTEXT_RECORD_PARAMETER = {0x7E: 3, 0x1000007E: 3, 0x3B: 2}

Kind = ReportKind
MASK64 = (1 << 64) - 1


class Need(Exception):
    """The plan needs a reply the host does not have yet: ``request`` is the manipulate packet to send."""

    def __init__(self, key: tuple[str, int], request: kd.Manipulate) -> None:
        super().__init__(f"need {key}")
        self.key = key
        self.request = request


@dataclass(frozen=True)
class Stop:
    """The stop being inspected, as its state change gave it."""

    kind: Kind
    processor: int
    processors: int
    thread: int
    pc: int
    code: int | None = None  # bugcheck code (crash)
    parameters: tuple[int, ...] = ()


@dataclass
class Answers:
    """What the target has answered so far (a failed request is kept as None: it is not asked again)."""

    version: bytes | None = None
    version_asked: bool = False
    contexts: dict[int, dict[str, int] | None] = field(default_factory=dict)
    chunks: dict[int, bytes] = field(default_factory=dict)
    final: bool = False  # no more requests: what is missing reads as unreadable


class TargetMemory:
    """The kernel's memory as read through the link, chunk by chunk."""

    def __init__(self, answers: Answers, processor: int) -> None:
        self.answers = answers
        self.processor = processor

    def chunk(self, index: int) -> bytes:
        data = self.answers.chunks.get(index)
        if data is None:
            if self.answers.final:
                return b""
            body = kd.READ_MEMORY.pack((index * CHUNK) & MASK64, CHUNK, 0)
            raise Need(("read", index), kd.Manipulate(kd.API_READ_VIRTUAL_MEMORY, self.processor, body=body))
        return data

    def read(self, address: int, size: int) -> bytes:
        out = bytearray()
        address &= MASK64
        while len(out) < size:
            at = address + len(out)
            index, offset = divmod(at, CHUNK)
            data = self.chunk(index)
            piece = data[offset : offset + size - len(out)]
            out += piece
            if offset + len(piece) < CHUNK:  # this chunk ended short: nothing readable beyond
                break
        return bytes(out)


class _MemoryTable(UnwindTable):
    """The function table of an image in the target's memory, found when first needed (headers read then)."""

    def __init__(self, memory: TargetMemory, base: int) -> None:
        super().__init__((), self._read_rva)
        self._memory = memory
        self._base = base
        self._image: MemoryImage | None = None
        self._table: UnwindTable | None = None
        self._failed = False

    def _resolve(self) -> UnwindTable | None:
        if self._table is None and not self._failed:
            try:
                self._image = MemoryImage(self._memory, self._base)
            except ImageError:
                self._failed = True
                return None
            self._table = self._image.remote_unwind_table()
        return self._table

    def _read_rva(self, rva: int, size: int) -> bytes:
        return self._image.read_rva(rva, size) if self._image is not None else b""

    def lookup(self, rva: int) -> RuntimeFunction | None:
        table = self._resolve()
        return table.lookup(rva) if table is not None else None

    def info(self, function: RuntimeFunction) -> UnwindInfo:
        table = self._resolve()
        if table is None:
            raise ImageError(f"no image at 0x{self._base:x}")
        return table.info(function)


@dataclass(frozen=True)
class _Entry:
    path: str
    base: int
    size: int


class Inspection:
    """One stop's inspection: ``start()`` and ``answer()`` return the next request, or None when ``report`` is ready.

    Args:
        stop: the stop.
        seen: modules from the load-symbols state changes (path, base, size, unloaded), oldest first.
        images: module file name (lower case) -> the image file the user gave (unwind data read from it).
    """

    def __init__(self, stop: Stop, seen: Sequence[tuple[str, int, int, bool]], images: Mapping[str, PeImage]) -> None:
        self.stop = stop
        self.seen = list(seen)
        self.images = dict(images)
        self.answers = Answers()
        self.pending: Need | None = None
        self.requests = 0
        self.report: StackReport | None = None
        self._tables: dict[int, UnwindTable] = {}
        self._list: list[_Entry] | None = None

    @property
    def done(self) -> bool:
        return self.report is not None

    def start(self) -> kd.Manipulate | None:
        return self._advance()

    def answer(self, reply: kd.Manipulate) -> kd.Manipulate | None:
        """Take the target's reply to the pending request; the next request, or None when done."""
        need = self.pending
        if need is None or reply.api != need.request.api:
            return need.request if need is not None else None  # not ours (a stale reply): keep waiting
        kind, number = need.key
        ok = reply.status == kd.STATUS_SUCCESS
        if kind == "version":
            self.answers.version_asked = True
            self.answers.version = reply.body[: kd.GET_VERSION.size] if ok else None
        elif kind == "context":
            try:
                self.answers.contexts[number] = kd.context_registers(reply.data) if ok else None
            except ValueError:
                self.answers.contexts[number] = None
        else:
            actual = kd.READ_MEMORY.unpack_from(reply.body)[2] if len(reply.body) >= kd.READ_MEMORY.size else 0
            self.answers.chunks[number] = reply.data[: min(actual, CHUNK)]
        self.pending = None
        return self._advance()

    def finish(self) -> StackReport:
        """No more requests (time or count spent, or the target stopped answering): report what can be read."""
        self.answers.final = True
        self.pending = None
        self._advance()
        assert self.report is not None
        return self.report

    def _advance(self) -> kd.Manipulate | None:
        while True:
            try:
                self.report = self._plan()
                self.pending = None
                return None
            except Need as need:
                if self.requests >= MAX_REQUESTS:
                    self.answers.final = True
                    continue
                self.requests += 1
                self.pending = need
                return need.request

    # -- the plan -------------------------------------------------------------------------------------------------

    def _memory(self) -> TargetMemory:
        return TargetMemory(self.answers, self.stop.processor)

    def _version(self) -> tuple[int, int] | None:
        """(KernBase, PsLoadedModuleList), or None when the target would not say."""
        if not self.answers.version_asked:
            if self.answers.final:
                return None
            raise Need(("version", 0), kd.Manipulate(kd.API_GET_VERSION, self.stop.processor))
        if self.answers.version is None or len(self.answers.version) < kd.GET_VERSION.size:
            return None
        fields = kd.GET_VERSION.unpack(self.answers.version)
        return fields[11], fields[12]

    def _context(self, processor: int) -> dict[str, int] | None:
        if processor not in self.answers.contexts:
            if self.answers.final:
                return None
            raise Need(("context", processor), kd.Manipulate(kd.API_GET_CONTEXT, processor))
        return self.answers.contexts[processor]

    def _table(self, base: int, name: str, memory: TargetMemory) -> UnwindTable:
        if base not in self._tables:
            image = self.images.get(name.lower())
            self._tables[base] = image.unwind_table() if image is not None else _MemoryTable(memory, base)
        return self._tables[base]

    def _kernel(self, memory: TargetMemory) -> _Entry | None:
        version = self._version()
        if version is None or not version[0]:
            return None
        try:
            size = MemoryImage(memory, version[0]).size_of_image
        except ImageError:
            return None
        return _Entry(KERNEL_NAME, version[0], size)

    def _module_list(self, memory: TargetMemory, wanted: int) -> _Entry | None:
        """The entry of PsLoadedModuleList that holds ``wanted``, following the list (bounded) as far as needed."""
        version = self._version()
        if version is None or not version[1]:
            return None
        head = version[1]
        entries: list[_Entry] = []
        link = _qword(memory.read(head, 8))
        while link and link != head and len(entries) < MAX_LIST_ENTRIES:
            data = memory.read(link, 0x68)
            if len(data) < 0x68:
                break
            base, size = struct.unpack_from("<Q8xI", data, 0x30)
            length, buffer = struct.unpack_from("<H6xQ", data, 0x58)
            raw = memory.read(buffer, min(length, MAX_NAME)) if length else b""
            entry = _Entry(raw.decode("utf-16-le", "replace") or f"module@{base:x}", base, size)
            entries.append(entry)
            if base <= wanted < base + size:
                return entry
            link = _qword(data[:8])
        return None

    def _modules(self, memory: TargetMemory) -> tuple[list[ModuleRange], list[CodeModule]]:
        ranges: list[ModuleRange] = []
        for index, (path, base, size, unloaded) in enumerate(self.seen):
            ranges.append(ModuleRange(path=path, base=base, size=size, unloaded=unloaded, unload_sequence=index + 1 if unloaded else 0))
        kernel = self._kernel(memory)
        if kernel is not None and not any(item.base == kernel.base for item in ranges):
            ranges.insert(0, ModuleRange(path=kernel.path, base=kernel.base, size=kernel.size))
        code = [
            CodeModule(item.name, item.base, item.size, self._table(item.base, item.name, memory)) for item in ranges if not item.unloaded
        ]
        return ranges, code

    def _walk(self, registers: Mapping[str, int], ranges: list[ModuleRange], code: list[CodeModule], memory: TargetMemory) -> Walk:
        """Walk; when it ends at an address of no known module, find that module in PsLoadedModuleList and walk again."""
        files = ImagesMemory([(module.base, module.size, image) for module in ranges if (image := self.images.get(module.name.lower()))])
        layered = LayeredMemory([files, memory])
        walk = walk_stack(registers, code, layered)
        for _ in range(MAX_LOOKUPS):
            if walk.end != "no-unwind-data" or not walk.frames:
                break
            last = walk.frames[-1]
            lookup = last.pc - 1 if last.is_return_address else last.pc
            if any(module.holds(lookup) for module in ranges):
                break
            entry = self._module_list(memory, lookup)
            if entry is None:
                break
            ranges.append(ModuleRange(path=entry.path, base=entry.base, size=entry.size))
            code.append(CodeModule(ranges[-1].name, entry.base, entry.size, self._table(entry.base, ranges[-1].name, memory)))
            walk = walk_stack(registers, code, layered)
        return walk

    def _plan(self) -> StackReport:
        stop = self.stop
        memory = self._memory()
        ranges, code = self._modules(memory)
        threads: list[ThreadStack] = []
        record = _context_record(stop)
        if record is not None:
            data = memory.read(record, kd.CONTEXT_SIZE)
            try:
                registers = kd.context_registers(data)
            except ValueError:
                threads.append(ThreadStack(thread=stop.processor, frames=(), end="context-record-unreadable"))
            else:
                threads.append(_thread(stop.processor, registers, self._walk(registers, ranges, code, memory)))
        processors: Iterable[int] = [stop.processor]
        if stop.kind == "hang":
            count = min(max(stop.processors, 1), MAX_PROCESSORS)
            processors = [stop.processor, *(index for index in range(count) if index != stop.processor)]
        for processor in processors:
            registers_or_none = self._context(processor)
            if registers_or_none is None:
                threads.append(ThreadStack(thread=processor, frames=(), end="context-unavailable"))
                continue
            threads.append(_thread(processor, registers_or_none, self._walk(registers_or_none, ranges, code, memory)))
        return StackReport(
            t=0.0,
            kind=stop.kind,
            threads=tuple(threads),
            modules=tuple(ranges),
            code=stop.code,
            address=stop.pc,
            parameters=stop.parameters,
            thread=stop.processor,
        )


def _qword(data: bytes) -> int:
    return struct.unpack("<Q", data)[0] if len(data) == 8 else 0


def _context_record(stop: Stop) -> int | None:
    if stop.kind != "crash" or stop.code is None:
        return None
    index = CONTEXT_RECORD_PARAMETER.get(stop.code)
    if index is None or index >= len(stop.parameters) or not stop.parameters[index]:
        return None
    return stop.parameters[index]


def _thread(processor: int, registers: Mapping[str, int], walk: Walk) -> ThreadStack:
    return ThreadStack(
        thread=processor,
        frames=walk.frames,
        end=walk.end,
        registers=tuple((name, registers[name]) for name in ("rip", "rsp", "rbp") if name in registers),
    )
