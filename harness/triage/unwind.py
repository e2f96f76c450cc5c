"""Walking an x64 stack with the images' unwind data, from registers and a memory reader. Pure.

The procedure is Microsoft's ("x64 exception handling", "x64 prolog and
epilog", Microsoft Learn): find the RUNTIME_FUNCTION of RIP; without one the
function is a leaf and RSP addresses the return address; inside an epilog the
rest of the epilog is simulated; inside the prolog only the operations already
done are undone; otherwise all unwind codes are undone, then chained unwind info;
finally the return address is popped. It works on any address space a reader
can read: a stack captured by the embedded guest, or a kernel read through a
debugger, with each module's unwind table from its file or from memory.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from harness.kernel.stacks import FrameHow, StackFrame
from harness.triage.pe import (
    MAX_CHAIN,
    REGISTERS,
    UNW_FLAG_CHAININFO,
    UWOP_ALLOC_LARGE,
    UWOP_ALLOC_SMALL,
    UWOP_PUSH_MACHFRAME,
    UWOP_PUSH_NONVOL,
    UWOP_SAVE_NONVOL,
    UWOP_SAVE_NONVOL_FAR,
    UWOP_SET_FPREG,
    ImageError,
    ImageView,
    Memory,
    RuntimeFunction,
    UnwindTable,
)

MAX_FRAMES = 64
MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class CodeModule:
    """A module the walker can unwind through: where it is mapped and its function table (None: no unwind data)."""

    name: str
    base: int
    size: int
    table: UnwindTable | None = None

    def holds(self, address: int) -> bool:
        return self.base <= address < self.base + self.size


@dataclass(frozen=True)
class Walk:
    frames: tuple[StackFrame, ...]
    end: str  # why it stopped: thread-start, no-unwind-data, frame-limit, stack-pointer-outside-stack, unreadable-stack...


class SnapshotMemory:
    """Memory made of captured ranges (address, bytes); the rest cannot be read."""

    def __init__(self, ranges: Sequence[tuple[int, bytes]]) -> None:
        self._ranges = sorted(ranges)

    def read(self, address: int, size: int) -> bytes:
        out = b""
        for start, data in self._ranges:
            want = address + len(out)
            if start <= want < start + len(data):
                out += data[want - start : want - start + size - len(out)]
                if len(out) == size:
                    break
        return out


class LayeredMemory:
    """The first of several readers that can read an address."""

    def __init__(self, layers: Sequence[Memory]) -> None:
        self._layers = list(layers)

    def read(self, address: int, size: int) -> bytes:
        best = b""
        for layer in self._layers:
            data = layer.read(address, size)
            if len(data) == size:
                return data
            best = data if len(data) > len(best) else best
        return best


class ImagesMemory:
    """Code and data of images mapped at given bases, read from their files on the host (unrelocated)."""

    def __init__(self, images: Sequence[tuple[int, int, ImageView]]) -> None:
        """Args:
        images: (base, size, image) of each mapped image.
        """
        self._images = list(images)

    def read(self, address: int, size: int) -> bytes:
        for base, length, image in self._images:
            if base <= address < base + length:
                return image.read_rva(address - base, min(size, base + length - address))
        return b""


class _Stop(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _qword(memory: Memory, address: int) -> int:
    data = memory.read(address, 8)
    if len(data) < 8:
        raise _Stop("unreadable-stack")
    value: int = struct.unpack("<Q", data)[0]
    return value


def _in_epilog(code: bytes, pc: int, function: RuntimeFunction, base: int) -> list[tuple[str, int]] | None:
    """The operations left in an epilog starting at ``pc`` ('add' n, 'lea' reg+disp, 'pop' reg, 'ret'), or None.

    An epilog is ``add rsp, imm`` or ``lea rsp, [fpreg+disp]``, then pops of 64-bit registers, then ``ret`` or a
    ``jmp`` out of the function (x64 prolog and epilog rules).
    """
    ops: list[tuple[str, int]] = []
    i = 0

    def byte(at: int) -> int:
        if at >= len(code):
            raise IndexError
        return code[at]

    try:
        rex = byte(i)
        if rex & 0xF8 == 0x48 and byte(i + 1) in (0x83, 0x81) and byte(i + 2) == 0xC4:
            if byte(i + 1) == 0x83:
                ops.append(("add", struct.unpack("<b", bytes([byte(i + 3)]))[0] & MASK64))
                i += 4
            else:
                ops.append(("add", struct.unpack("<i", bytes(byte(i + k) for k in range(3, 7)))[0] & MASK64))
                i += 7
        elif rex & 0xF8 == 0x48 and byte(i + 1) == 0x8D and (byte(i + 2) >> 3) & 7 == 4 and not rex & 0x4:
            modrm = byte(i + 2)
            mod, rm = modrm >> 6, (modrm & 7) | (8 if rex & 1 else 0)
            if rm & 7 == 4:  # an SIB byte: not a frame-register form
                return None
            if mod == 1:
                ops.append(("lea", rm | (struct.unpack("<b", bytes([byte(i + 3)]))[0] << 8)))
                i += 4
            elif mod == 2:
                ops.append(("lea", rm | (struct.unpack("<i", bytes(byte(i + k) for k in range(3, 7)))[0] << 8)))
                i += 7
            else:
                return None
        while True:
            first = byte(i)
            if first & 0xF0 == 0x40 and 0x58 <= byte(i + 1) <= 0x5F:  # REX.B pop r8-r15
                ops.append(("pop", (byte(i + 1) - 0x58) | (8 if first & 1 else 0)))
                i += 2
            elif 0x58 <= first <= 0x5F:
                ops.append(("pop", first - 0x58))
                i += 1
            else:
                break
        first = byte(i)
        if first == 0xF3 and byte(i + 1) == 0xC3:
            first = 0xC3
        if first in (0xC3, 0xC2):
            ops.append(("ret", 0))
            return ops
        if first in (0xE9, 0xEB):
            length, size = (5, 4) if first == 0xE9 else (2, 1)
            displacement = struct.unpack("<i" if size == 4 else "<b", bytes(byte(i + 1 + k) for k in range(size)))[0]
            target = pc + i + length + displacement - base
            if function.holds(target):
                return None  # a jump inside the function: ordinary code
            ops.append(("ret", 0))
            return ops
        if first & 0xF0 == 0x40 and byte(i + 1) == 0xFF and (byte(i + 2) >> 3) & 7 == 4 and byte(i + 2) >> 6 == 0:
            ops.append(("ret", 0))  # rex jmp [mem], ModRM mod 00
            return ops
        if first == 0xFF and (byte(i + 1) >> 3) & 7 == 4 and byte(i + 1) >> 6 == 0:
            ops.append(("ret", 0))
            return ops
    except IndexError:
        return None
    return None


def _simulate_epilog(ops: list[tuple[str, int]], regs: dict[str, int], memory: Memory) -> None:
    for op, value in ops:
        if op == "add":
            regs["rsp"] = (regs["rsp"] + value) & MASK64
        elif op == "lea":
            register, displacement = REGISTERS[value & 0xFF], value >> 8
            regs["rsp"] = (regs[register] + displacement) & MASK64
        elif op == "pop":
            regs[REGISTERS[value]] = _qword(memory, regs["rsp"])
            regs["rsp"] += 8
        else:
            regs["rip"] = _qword(memory, regs["rsp"])
            regs["rsp"] += 8


def unwind_function(
    regs: dict[str, int], pc: int, module: CodeModule, function: RuntimeFunction, memory: Memory, *, epilog_check: bool = True
) -> bool:
    """Change ``regs`` from inside ``function`` at ``pc`` to its caller's (RIP = the return address).

    Returns True when a machine frame (a trap or interrupt) gave RIP: then it is the interrupted instruction
    itself, not a return address.

    Raises:
        _Stop: memory the unwind needs cannot be read.
        ImageError: the unwind info does not decode.
    """
    assert module.table is not None
    table = module.table
    rva = pc - module.base
    info = table.info(function)
    offset = rva - function.begin
    if epilog_check and offset > info.prolog_size:
        ops = _in_epilog(memory.read(pc, 32), pc, function, module.base)
        if ops is not None:
            _simulate_epilog(ops, regs, memory)
            return False
    machine_frame = False
    first = True
    for _ in range(MAX_CHAIN):
        done = [code for code in info.codes if not (first and offset < info.prolog_size and code.prolog_offset > offset)]
        frame_set = any(code.op == UWOP_SET_FPREG for code in done)
        frame = regs[REGISTERS[info.frame_register]] - info.frame_offset if info.frame_register and frame_set else regs["rsp"]
        for code in done:
            if code.op == UWOP_PUSH_NONVOL:
                regs[REGISTERS[code.info]] = _qword(memory, regs["rsp"])
                regs["rsp"] += 8
            elif code.op in (UWOP_ALLOC_SMALL, UWOP_ALLOC_LARGE):
                regs["rsp"] += code.operand
            elif code.op == UWOP_SET_FPREG:
                regs["rsp"] = (regs[REGISTERS[info.frame_register]] - info.frame_offset) & MASK64
            elif code.op in (UWOP_SAVE_NONVOL, UWOP_SAVE_NONVOL_FAR):
                regs[REGISTERS[code.info]] = _qword(memory, frame + code.operand)
            elif code.op == UWOP_PUSH_MACHFRAME:
                slot = regs["rsp"] + (8 if code.info else 0)
                regs["rip"] = _qword(memory, slot)
                regs["rsp"] = _qword(memory, slot + 24)
                machine_frame = True
            # XMM saves: no integer register to restore.
        if not info.flags & UNW_FLAG_CHAININFO or info.chained is None:
            break
        info = table.info(info.chained)
        first = False
    if not machine_frame:
        regs["rip"] = _qword(memory, regs["rsp"])
        regs["rsp"] += 8
    regs["rsp"] &= MASK64
    return machine_frame


def walk_stack(
    registers: Mapping[str, int],
    modules: Sequence[CodeModule],
    memory: Memory,
    *,
    stack: tuple[int, int] | None = None,
    max_frames: int = MAX_FRAMES,
) -> Walk:
    """The frames from ``registers`` (rip, rsp and the other general registers) outwards.

    Only the first frame may lack unwind data (a leaf function, or code that is no longer mapped): its return
    address is taken at [RSP]. Later frames are return addresses; their function is looked up at the address
    minus one (a call that never returns may be the last instruction of its function).

    Args:
        stack: (low, high) bounds of the thread's stack, when known: a stack pointer outside ends the walk.
    """
    regs = {name: registers.get(name, 0) & MASK64 for name in (*REGISTERS, "rip")}
    frames: list[StackFrame] = []
    how: FrameHow = "context"
    end = "frame-limit"
    while len(frames) < max_frames:
        pc, sp = regs["rip"], regs["rsp"]
        frames.append(StackFrame(pc=pc, sp=sp, how=how))
        if sp % 8 or (stack is not None and not stack[0] <= sp < stack[1]):
            end = "stack-pointer-outside-stack"
            break
        lookup = pc - 1 if frames[-1].is_return_address and pc else pc
        module = next((candidate for candidate in modules if candidate.holds(lookup)), None)
        function = module.table.lookup(lookup - module.base) if module is not None and module.table is not None else None
        try:
            if function is None or module is None:
                if len(frames) > 1:
                    end = "no-unwind-data"
                    break
                regs["rip"] = _qword(memory, sp)
                regs["rsp"] = sp + 8
                how = "leaf"
            else:
                control = pc if function.holds(pc - module.base) else lookup
                how = "trap" if unwind_function(regs, control, module, function, memory) else "unwind"
        except _Stop as stop:
            end = stop.reason
            break
        except ImageError:
            end = "bad-unwind-data"
            break
        if regs["rip"] == 0:
            end = "thread-start"
            break
        if regs["rsp"] <= sp:
            end = "no-progress"
            break
    return Walk(frames=tuple(frames), end=end)
