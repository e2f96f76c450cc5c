"""The x64 stack walker on synthetic images and stacks: every way a frame is unwound, and every way a walk stops.

(The walker against real stacks: tests/integration/test_triage_wine.py re-walks a real crash and must find
the frames Wine's own RtlVirtualUnwind found.)
"""

from __future__ import annotations

import struct

import pytest

from harness.kernel.stacks import StackFrame
from harness.triage.pe import (
    UNW_FLAG_CHAININFO,
    UWOP_ALLOC_LARGE,
    UWOP_ALLOC_SMALL,
    UWOP_PUSH_MACHFRAME,
    UWOP_PUSH_NONVOL,
    UWOP_SAVE_NONVOL,
    UWOP_SET_FPREG,
    RuntimeFunction,
    UnwindTable,
)
from harness.triage.unwind import CodeModule, ImagesMemory, LayeredMemory, SnapshotMemory, walk_stack

BASE = 0x140000000
OTHER = 0x7B000000  # a second module (the "caller"), with no unwind data of its own needed
STACK = 0x2000000
RBX, RBP, RSI = 3, 5, 6


def slot(offset: int, op: int, info: int = 0) -> int:
    return offset | op << 8 | info << 12


class Image:
    """A synthetic image: code from RVA 0x1000, unwind info from 0x3000, functions added one by one."""

    def __init__(self) -> None:
        self.data = bytearray(0x4000)
        self.functions: list[RuntimeFunction] = []
        self._xdata = 0x3000

    def read_rva(self, rva: int, size: int) -> bytes:
        return bytes(self.data[rva : rva + size]) if 0 <= rva < len(self.data) else b""

    def function(self, begin: int, code: bytes, slots: list[int], *, prolog: int, flags: int = 0, frame: int = 0, scaled: int = 0,
                 chained: RuntimeFunction | None = None) -> RuntimeFunction:  # fmt: skip
        self.data[begin : begin + len(code)] = code
        padded = slots + [0] * (len(slots) % 2)
        info = bytes([1 | flags << 3, prolog, len(slots), frame | scaled << 4]) + struct.pack(f"<{len(padded)}H", *padded)
        if chained is not None:
            info += struct.pack("<3I", chained.begin, chained.end, chained.unwind)
        self.data[self._xdata : self._xdata + len(info)] = info
        entry = RuntimeFunction(begin, begin + len(code), self._xdata)
        self._xdata += (len(info) + 3) & ~3
        self.functions.append(entry)
        return entry

    def module(self, name: str = "drv.sys", base: int = BASE) -> CodeModule:
        return CodeModule(name, base, len(self.data), UnwindTable(sorted(self.functions, key=lambda f: f.begin), self.read_rva))


def stack(values: dict[int, int]) -> SnapshotMemory:
    """Qwords at STACK + offset."""
    size = max(values) + 8
    data = bytearray(size)
    for offset, value in values.items():
        data[offset : offset + 8] = struct.pack("<Q", value)
    return SnapshotMemory([(STACK, bytes(data))])


def memory(image: Image, values: dict[int, int]) -> LayeredMemory:
    return LayeredMemory([stack(values), ImagesMemory([(BASE, len(image.data), image)])])


# push rbx; sub rsp, 0x20; <body: nop x8>; add rsp, 0x20; pop rbx; ret
PROLOG = bytes.fromhex("534883ec20")
BODY = bytes.fromhex("90" * 8)
EPILOG = bytes.fromhex("4883c4205bc3")
SIMPLE = [slot(5, UWOP_ALLOC_SMALL, 3), slot(1, UWOP_PUSH_NONVOL, RBX)]
CALLER = OTHER + 0x1234


def simple_image() -> Image:
    image = Image()
    image.function(0x1000, PROLOG + BODY + EPILOG, SIMPLE, prolog=5)
    return image


def test_a_frame_is_unwound_with_its_codes_and_the_return_address_popped() -> None:
    image = simple_image()
    # In the body: [rsp+0x00..0x1f] locals, [rsp+0x20] saved rbx, [rsp+0x28] return address; the caller returns to 0.
    mem = memory(image, {0x20: 0xB0B, 0x28: CALLER, 0x30: 0})
    caller = CodeModule("caller.dll", OTHER, 0x10000, Image().module("caller.dll", OTHER).table)
    walk = walk_stack({"rip": BASE + 0x1007, "rsp": STACK, "rbx": 1}, [image.module(), caller], mem)
    assert walk.frames[:2] == (StackFrame(BASE + 0x1007, STACK, "context"), StackFrame(CALLER, STACK + 0x30, "unwind"))
    assert walk.end == "no-unwind-data"  # the caller module has no entry for its code


def test_a_leaf_first_frame_returns_through_rsp() -> None:
    image = simple_image()
    mem = memory(image, {0x0: BASE + 0x1007, 0x28: 0xB0B, 0x30: 0})
    # RIP in the module but outside any function (or unmapped code): a leaf; [rsp] is the return address.
    walk = walk_stack({"rip": BASE + 0x1800, "rsp": STACK}, [image.module()], mem)
    assert [(frame.pc, frame.how) for frame in walk.frames] == [(BASE + 0x1800, "context"), (BASE + 0x1007, "leaf")]
    # The second frame is in the body of the function: 0x20 of locals + pushed rbx, then the return address (0).
    assert walk.end == "thread-start"


def test_unmapped_code_of_an_unloaded_driver_is_a_leaf_too() -> None:
    image = simple_image()
    mem = memory(image, {0x0: BASE + 0x1007, 0x28: 0xB0B, 0x30: 0})
    walk = walk_stack({"rip": 0x24C1020, "rsp": STACK}, [image.module()], mem)
    assert [frame.pc for frame in walk.frames] == [0x24C1020, BASE + 0x1007]


def test_inside_the_prolog_only_what_was_done_is_undone() -> None:
    image = simple_image()
    # At offset 1: rbx pushed, nothing allocated yet: [rsp] = saved rbx, [rsp+8] = return address.
    mem = memory(image, {0x0: 0xB0B, 0x8: 0})
    walk = walk_stack({"rip": BASE + 0x1001, "rsp": STACK}, [image.module()], mem)
    assert walk.end == "thread-start" and len(walk.frames) == 1
    mem = memory(image, {0x0: 0xB0B, 0x8: BASE + 0x1007, 0x10: 0, 0x38: 0})
    walk = walk_stack({"rip": BASE + 0x1001, "rsp": STACK}, [image.module()], mem)
    assert walk.frames[1] == StackFrame(BASE + 0x1007, STACK + 0x10, "unwind")


def test_inside_an_epilog_the_rest_of_it_is_simulated() -> None:
    image = simple_image()
    epilog = 0x1000 + len(PROLOG + BODY)
    # At "pop rbx": rsp already back at the saved rbx.
    mem = memory(image, {0x0: 0xB0B, 0x8: BASE + 0x1007, 0x10: 0, 0x38: 0})
    walk = walk_stack({"rip": BASE + epilog + 4, "rsp": STACK}, [image.module()], mem)
    assert walk.frames[1] == StackFrame(BASE + 0x1007, STACK + 0x10, "unwind")
    # At "ret": only the return address is left.
    mem = memory(image, {0x0: BASE + 0x1007, 0x8: 0, 0x30: 0})
    walk = walk_stack({"rip": BASE + epilog + 5, "rsp": STACK}, [image.module()], mem)
    assert walk.frames[1] == StackFrame(BASE + 0x1007, STACK + 0x8, "unwind")


def test_a_jump_back_into_the_function_is_no_epilog() -> None:
    image = Image()
    # push rbx; sub rsp,0x20; nop; pop rbx (a look-alike); jmp back to the nop; ...
    code = PROLOG + bytes.fromhex("905bebfc") + EPILOG
    image.function(0x1000, code, SIMPLE, prolog=5)
    mem = memory(image, {0x20: 0xB0B, 0x28: 0})
    walk = walk_stack({"rip": BASE + 0x1006, "rsp": STACK}, [image.module()], mem)
    assert walk.end == "thread-start" and walk.frames[0].sp == STACK  # unwound by its codes (0x20 + rbx), not as an epilog


def test_a_tail_call_jump_ends_an_epilog() -> None:
    image = Image()
    code = PROLOG + BODY + bytes.fromhex("4883c4205be900100000")  # ...; pop rbx; jmp far away
    image.function(0x1000, code, SIMPLE, prolog=5)
    mem = memory(image, {0x0: 0xB0B, 0x8: 0})
    walk = walk_stack({"rip": BASE + 0x1000 + len(PROLOG + BODY) + 4, "rsp": STACK}, [image.module()], mem)
    assert walk.end == "thread-start" and len(walk.frames) == 1


def test_a_frame_pointer_function_unwinds_from_the_frame_register_after_alloca() -> None:
    image = Image()
    # push rbp; sub rsp,0x40; lea rbp,[rsp+0x20]; mov [rbp+0x18],rsi (save rsi at frame+0x38); body
    code = bytes.fromhex("554883ec40488d6c242048897518") + BODY
    slots = [slot(14, UWOP_SAVE_NONVOL, RSI), 7, slot(10, UWOP_SET_FPREG), slot(5, UWOP_ALLOC_SMALL, 7), slot(1, UWOP_PUSH_NONVOL, RBP)]
    image.function(0x1000, code, slots, prolog=14, frame=RBP, scaled=2)
    frame_base = 0x100  # where rsp was when rbp was set up; the body has since pushed 0x100 more (alloca)
    mem = memory(image, {frame_base + 0x38: 0x5151, frame_base + 0x40: 0xB9, frame_base + 0x48: 0, frame_base + 0x100: 0})
    walk = walk_stack({"rip": BASE + 0x1010, "rsp": STACK, "rbp": STACK + frame_base + 0x20}, [image.module()], mem)
    assert walk.end == "thread-start"
    assert walk.frames == (StackFrame(BASE + 0x1010, STACK, "context"),)


def test_registers_restored_by_one_frame_serve_the_next() -> None:
    outer, inner = Image(), None
    # outer: push rbp; mov rbp,rsp (frame rbp+0); sub rsp,0x20; body -- unwinds through rbp, so it needs the right rbp
    outer.function(0x1000, bytes.fromhex("55" "4889e5" "4883ec20") + BODY, [slot(8, UWOP_ALLOC_SMALL, 3), slot(4, UWOP_SET_FPREG),
                   slot(1, UWOP_PUSH_NONVOL, RBP)], prolog=8, frame=RBP)  # fmt: skip
    # inner: push rbp; sub rsp,0x20: saves the caller's rbp, which the walk must restore before unwinding outer.
    outer.function(0x1100, bytes.fromhex("554883ec20") + BODY, [slot(5, UWOP_ALLOC_SMALL, 3), slot(1, UWOP_PUSH_NONVOL, RBP)], prolog=5)
    inner = outer
    outer_rbp = STACK + 0x100
    mem = memory(inner, {0x20: outer_rbp, 0x28: BASE + 0x100B, 0x100: 0x1111, 0x108: 0})
    walk = walk_stack({"rip": BASE + 0x1107, "rsp": STACK, "rbp": 0xDEAD}, [inner.module()], mem)
    assert [frame.pc for frame in walk.frames] == [BASE + 0x1107, BASE + 0x100B]
    assert walk.frames[1].sp == STACK + 0x30 and walk.end == "thread-start"


def test_chained_unwind_info_applies_the_primary_entrys_codes() -> None:
    image = Image()
    primary = image.function(0x1000, PROLOG + BODY + EPILOG, SIMPLE, prolog=5)
    # A cold block elsewhere, with no prolog of its own: its unwind info chains to the primary entry.
    image.function(0x1200, BODY, [], prolog=0, flags=UNW_FLAG_CHAININFO, chained=primary)
    mem = memory(image, {0x20: 0xB0B, 0x28: 0})
    walk = walk_stack({"rip": BASE + 0x1203, "rsp": STACK}, [image.module()], mem)
    assert walk.end == "thread-start" and len(walk.frames) == 1
    table = image.module().table
    assert table is not None and table.function_start(0x1203) == 0x1000


def test_a_machine_frame_restores_rip_and_rsp_from_it() -> None:
    image = Image()
    image.function(0x1000, BODY, [slot(0, UWOP_PUSH_MACHFRAME, 1)], prolog=0)
    # error code, RIP, CS, EFLAGS, old RSP, SS
    mem = memory(image, {0x0: 0xE, 0x8: BASE + 0x1003, 0x10: 0x33, 0x18: 0x246, 0x20: STACK + 0x800, 0x28: 0x2B, 0x800: 0})
    image.function(0x1100, PROLOG + BODY, SIMPLE, prolog=5)
    walk = walk_stack({"rip": BASE + 0x1002, "rsp": STACK}, [image.module()], mem)
    # The machine frame's RIP is the interrupted instruction itself, not a return address.
    assert walk.frames[1] == StackFrame(BASE + 0x1003, STACK + 0x800, "trap")
    assert not walk.frames[1].is_return_address


def test_a_fault_at_the_first_instruction_of_a_function_is_unwound_from_that_function() -> None:
    """A trap at a function's first byte: looking the function up at RIP - 1 (as for a return address) would find
    the function before it, or none."""
    image = Image()
    image.function(0x1000, BODY, [slot(0, UWOP_PUSH_MACHFRAME, 1)], prolog=0)
    image.function(0x1100, PROLOG + BODY + EPILOG, SIMPLE, prolog=5)
    # The trap interrupted 0x1100 before its push: [old rsp] is its return address.
    mem = memory(image, {0x0: 0xE, 0x8: BASE + 0x1100, 0x10: 0x33, 0x18: 0x246, 0x20: STACK + 0x800, 0x28: 0x2B, 0x800: CALLER})
    walk = walk_stack({"rip": BASE + 0x1002, "rsp": STACK}, [image.module()], mem)
    assert [(frame.pc, frame.how) for frame in walk.frames[:3]] == [
        (BASE + 0x1002, "context"),
        (BASE + 0x1100, "trap"),
        (CALLER, "unwind"),
    ]


def test_large_allocations() -> None:
    image = Image()
    image.function(0x1000, bytes.fromhex("4881ec00100000") + BODY, [slot(7, UWOP_ALLOC_LARGE, 0), 0x200], prolog=7)
    mem = memory(image, {0x1000: 0})
    walk = walk_stack({"rip": BASE + 0x1008, "rsp": STACK}, [image.module()], mem)
    assert walk.end == "thread-start"


@pytest.mark.parametrize(
    ("registers", "values", "bounds", "end"),
    [
        ({"rip": BASE + 0x1007, "rsp": STACK + 4}, {0x30: 0}, None, "stack-pointer-outside-stack"),  # misaligned
        ({"rip": BASE + 0x1007, "rsp": STACK}, {0x30: 0}, (STACK + 0x10, STACK + 0x100), "stack-pointer-outside-stack"),
        ({"rip": BASE + 0x1007, "rsp": STACK}, {0x8: 0}, None, "unreadable-stack"),  # the return address is past what is known
        ({"rip": BASE + 0x1007, "rsp": STACK}, {0x20: 0, 0x28: BASE + 0x1900, 0x30: 0}, None, "no-unwind-data"),
    ],
    ids=["misaligned", "outside-bounds", "unreadable", "no-unwind-data"],
)
def test_a_walk_stops_and_says_why(registers: dict[str, int], values: dict[int, int], bounds: tuple[int, int] | None, end: str) -> None:
    image = simple_image()
    walk = walk_stack(registers, [image.module()], memory(image, values), stack=bounds)
    assert walk.end == end


def test_a_walk_that_goes_down_the_stack_stops() -> None:
    image = Image()
    image.function(0x1000, BODY, [slot(0, UWOP_PUSH_MACHFRAME, 0)], prolog=0)
    mem = LayeredMemory([stack({0x0: BASE + 0x1003, 0x18: STACK - 0x100}), SnapshotMemory([(STACK - 0x100, bytes(0x200))])])
    walk = walk_stack({"rip": BASE + 0x1002, "rsp": STACK}, [image.module()], mem)
    assert walk.end == "no-progress"


def test_a_walk_stops_at_the_frame_limit() -> None:
    image = Image()
    # A function that returns to itself forever: each frame pops 8 bytes of a long chain of return addresses.
    image.function(0x1000, bytes.fromhex("4883ec08") + BODY, [slot(4, UWOP_ALLOC_SMALL, 0)], prolog=4)
    values = {offset: BASE + 0x1005 for offset in range(8, 16 * 10, 16)}
    walk = walk_stack({"rip": BASE + 0x1005, "rsp": STACK}, [image.module()], memory(image, {**values, 16 * 10: 0}), max_frames=4)
    assert len(walk.frames) == 4 and walk.end == "frame-limit"
