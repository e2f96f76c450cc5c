"""KDCOM (serial kernel debugger) packets: constants, encoding, and a byte-stream framer. Pure.

Wire format (all little-endian): a 16-byte header ``leader u32, type u16,
byte_count u16, id u32, checksum u32``; data packets (leader ``0000``) then
carry ``byte_count`` payload bytes and a trailer byte 0xAA; control packets
(leader ``iiii``) are the bare header. The checksum is the plain byte sum of
the payload. See shared notes "kd-serial-protocol" §1.2-1.3.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

DATA_LEADER = 0x30303030
CONTROL_LEADER = 0x69696969
DATA_LEADER_BYTE = 0x30
CONTROL_LEADER_BYTE = 0x69
BREAKIN_BYTE = 0x62
TRAILER = 0xAA
HEADER = struct.Struct("<IHHII")
HEADER_SIZE = HEADER.size
MAX_PAYLOAD = 4000

INITIAL_ID = 0x80800000
SYNC_BIT = 0x00000800

TYPE_STATE_MANIPULATE = 2
TYPE_DEBUG_IO = 3
TYPE_ACKNOWLEDGE = 4
TYPE_RESEND = 5
TYPE_RESET = 6
TYPE_STATE_CHANGE64 = 7
TYPE_TRACE_IO = 9
TYPE_CONTROL_REQUEST = 10
TYPE_FILE_IO = 11
TYPE_MAX = 12
CONTROL_TYPES = (TYPE_ACKNOWLEDGE, TYPE_RESEND, TYPE_RESET)

# DBGKD_DEBUG_IO
API_PRINT_STRING = 0x3230
API_GET_STRING = 0x3231
DEBUG_IO = struct.Struct("<IHHII")  # api, processor level, processor, length, length-read

# DBGKD_WAIT_STATE_CHANGE64
STATE_EXCEPTION = 0x3030
STATE_LOAD_SYMBOLS = 0x3031
STATE_COMMAND_STRING = 0x3032

# DBGKD_MANIPULATE_STATE64 (56 bytes)
API_CONTINUE = 0x3136
API_CONTINUE2 = 0x313C
MANIPULATE_SIZE = 56
DBG_CONTINUE = 0x00010002  # handled: the stopped code goes on (a faulting instruction runs again)
DBG_EXCEPTION_NOT_HANDLED = 0x80010001  # not NT_SUCCESS: the kernel's own exception handling runs
SYMBOL_RANGE_UNCHANGED = 1  # CurrentSymbolStart == 1: the kernel keeps its symbol range (KdpGetStateChange)
# DBGKD_MANIPULATE_STATE64 header, then DBGKD_CONTINUE2 (4-byte packing) with AMD64_DBGKD_CONTROL_SET:
# ContinueStatus at 16, TraceFlag 20, Dr7 24, CurrentSymbolStart 32, CurrentSymbolEnd 40.
CONTINUE2 = struct.Struct("<IHHI4xIIQQQ")

# State manipulation (DBGKD_MANIPULATE_STATE64, windbgkd.h): the 16-byte head (ApiNumber, ProcessorLevel, Processor,
# ReturnStatus), a union at 16 (the packet's first 56 bytes in all), then the request's or reply's data.
API_READ_VIRTUAL_MEMORY = 0x3130
API_GET_CONTEXT = 0x3132
API_GET_VERSION = 0x3146
API_CAUSE_BUGCHECK = 0x3149
MANIPULATE_HEAD = struct.Struct("<IHHI4x")
READ_MEMORY = struct.Struct("<QII")  # DBGKD_READ_MEMORY64 at 16: TargetBaseAddress, TransferCount, ActualBytesRead
MAX_READ = MAX_PAYLOAD - MANIPULATE_SIZE  # KdpReadVirtualMemory caps a read at PACKET_MAX_SIZE - sizeof(DBGKD_MANIPULATE_STATE64)
# DBGKD_GET_VERSION64 at 16: MajorVersion, MinorVersion, ProtocolVersion, KdSecondaryVersion, Flags, MachineType,
# MaxPacketType, MaxStateChange, MaxManipulate, Simulation, Unused, KernBase, PsLoadedModuleList, DebuggerDataList.
GET_VERSION = struct.Struct("<HHBBHHBBBBHQQQ")
STATUS_SUCCESS = 0
STATUS_UNSUCCESSFUL = 0xC0000001
IMAGE_FILE_MACHINE_AMD64 = 0x8664
# The AMD64 CONTEXT (0x4D0 bytes): the integer registers from Rax at 0x78, 8 bytes each in this order, Rip at 0xF8.
CONTEXT_SIZE = 0x4D0
CONTEXT_REGISTERS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip")
CONTEXT_RAX = 0x78

# Exception codes the host continues as handled
STATUS_BREAKPOINT = 0x80000003
STATUS_SINGLE_STEP = 0x80000004

# DBGKD_FILE_IO (64 bytes)
FILE_IO_SIZE = 64
STATUS_NO_SUCH_FILE = 0xC000000F

TYPE_NAMES = {
    TYPE_STATE_MANIPULATE: "STATE_MANIPULATE",
    TYPE_DEBUG_IO: "DEBUG_IO",
    TYPE_ACKNOWLEDGE: "ACK",
    TYPE_RESEND: "RESEND",
    TYPE_RESET: "RESET",
    TYPE_STATE_CHANGE64: "STATE_CHANGE64",
    TYPE_TRACE_IO: "TRACE_IO",
    TYPE_CONTROL_REQUEST: "CONTROL_REQUEST",
    TYPE_FILE_IO: "FILE_IO",
}


@dataclass(frozen=True)
class Packet:
    """One framed packet. ``payload`` is empty for control packets."""

    leader: int
    type: int
    id: int
    payload: bytes = b""

    @property
    def is_control(self) -> bool:
        return self.leader == CONTROL_LEADER


@dataclass(frozen=True)
class Damaged:
    """A data packet that framed but failed its checks: ask for a resend."""

    reason: str
    type: int
    id: int


def checksum(payload: bytes) -> int:
    """The KD checksum: the unsigned 32-bit sum of the payload bytes."""
    return sum(payload) & 0xFFFFFFFF


def encode_data(packet_type: int, packet_id: int, payload: bytes) -> bytes:
    """A data packet on the wire.

    Raises:
        ValueError: payload longer than PACKET_MAX_SIZE.
    """
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"KD payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(DATA_LEADER, packet_type, len(payload), packet_id, checksum(payload)) + payload + bytes([TRAILER])


def encode_control(packet_type: int, packet_id: int = 0) -> bytes:
    """A control packet (ACK, RESEND, RESET) on the wire."""
    return HEADER.pack(CONTROL_LEADER, packet_type, 0, packet_id, 0)


def encode_continue2(level: int, processor: int, status: int) -> bytes:
    """A DbgKdContinueApi2 manipulate payload (AMD64 layout): no trace flag, Dr7 0, symbol range unchanged."""
    return CONTINUE2.pack(API_CONTINUE2, level, processor, 0, status, 0, 0, SYMBOL_RANGE_UNCHANGED, 0).ljust(MANIPULATE_SIZE, b"\0")


@dataclass(frozen=True)
class Manipulate:
    """A DBGKD_MANIPULATE_STATE64 packet: the head, the 40-byte union (``body``) and the data after the 56 bytes."""

    api: int
    processor: int
    status: int = STATUS_SUCCESS
    body: bytes = b""
    data: bytes = b""
    level: int = 0

    def encode(self) -> bytes:
        head = MANIPULATE_HEAD.pack(self.api, self.level, self.processor, self.status)
        return (head + self.body).ljust(MANIPULATE_SIZE, b"\0")[:MANIPULATE_SIZE] + self.data

    @classmethod
    def decode(cls, payload: bytes) -> Manipulate:
        """Raises:
        ValueError: shorter than the 56-byte structure.
        """
        if len(payload) < MANIPULATE_SIZE:
            raise ValueError(f"a manipulate packet of {len(payload)} bytes (at least {MANIPULATE_SIZE})")
        api, level, processor, status = MANIPULATE_HEAD.unpack_from(payload)
        return cls(api, processor, status, payload[16:MANIPULATE_SIZE], payload[MANIPULATE_SIZE:], level)


def context_registers(data: bytes) -> dict[str, int]:
    """The integer registers and RIP of an AMD64 CONTEXT.

    Raises:
        ValueError: too short to hold them.
    """
    if len(data) < CONTEXT_RAX + 8 * len(CONTEXT_REGISTERS):
        raise ValueError(f"a CONTEXT of {len(data)} bytes")
    values = struct.unpack_from(f"<{len(CONTEXT_REGISTERS)}Q", data, CONTEXT_RAX)
    return dict(zip(CONTEXT_REGISTERS, values, strict=True))


def encode_context(registers: dict[str, int]) -> bytes:
    """An AMD64 CONTEXT holding ``registers`` (the rest zero)."""
    data = bytearray(CONTEXT_SIZE)
    struct.pack_into(f"<{len(CONTEXT_REGISTERS)}Q", data, CONTEXT_RAX, *(registers.get(name, 0) for name in CONTEXT_REGISTERS))
    return bytes(data)


def encode(packet: Packet) -> bytes:
    return encode_control(packet.type, packet.id) if packet.is_control else encode_data(packet.type, packet.id, packet.payload)


_DATA_MARK = bytes([DATA_LEADER_BYTE] * 4)
_CONTROL_MARK = bytes([CONTROL_LEADER_BYTE] * 4)


class Framer:
    """Turns a byte stream into packets, surviving garbage, truncation and corruption.

    Feed bytes as they arrive; each call returns the packets (and damaged data
    packets) completed so far. A frame that fails a check is reported (when it
    was a data packet with a plausible header) and scanning resumes one byte
    after its leader, so no valid packet hidden behind garbage is lost. Call
    ``flush()`` when the line has been idle: a frame that can never complete
    (a garbage header claiming a long payload) is then abandoned the same way.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pos = 0
        self.discarded = 0  # bytes thrown away as garbage

    def feed(self, data: bytes) -> list[Packet | Damaged]:
        self._buffer += data
        return self._drain(final=False)

    def flush(self) -> list[Packet | Damaged]:
        """Give up on a frame still waiting for bytes, and decode what follows it."""
        return self._drain(final=True)

    @property
    def pending(self) -> int:
        return len(self._buffer) - self._pos

    def _next_leader(self) -> int:
        """Index of the next 4 identical leader bytes, or of a partial leader at the end."""
        buffer, pos = self._buffer, self._pos
        head = buffer[pos : pos + 4]
        if head in (_DATA_MARK, _CONTROL_MARK):
            return pos  # the usual case: packets back to back
        data, control = buffer.find(_DATA_MARK, pos), buffer.find(_CONTROL_MARK, pos)
        if data >= 0 or control >= 0:
            return data if control < 0 or 0 <= data < control else control
        tail = max(pos, len(buffer) - 3)
        while tail < len(buffer) and buffer[tail] not in (DATA_LEADER_BYTE, CONTROL_LEADER_BYTE):
            tail += 1
        return tail

    def _drain(self, final: bool) -> list[Packet | Damaged]:
        out: list[Packet | Damaged] = []
        buffer = self._buffer
        while True:
            start = self._next_leader()
            self.discarded += start - self._pos
            self._pos = start
            available = len(buffer) - start
            if available < HEADER_SIZE:
                if final and available:
                    if available >= 4:
                        self._skip_one()
                        continue
                    self.discarded += available
                    self._pos = len(buffer)
                break
            leader, packet_type, count, packet_id, total = HEADER.unpack_from(buffer, start)
            if leader == CONTROL_LEADER:
                if packet_type in CONTROL_TYPES and count == 0:
                    self._pos = start + HEADER_SIZE
                    out.append(Packet(CONTROL_LEADER, packet_type, packet_id))
                else:
                    self._skip_one()
                continue
            if not 0 < packet_type < TYPE_MAX or packet_type in CONTROL_TYPES or count > MAX_PAYLOAD:
                self._skip_one()
                continue
            end = start + HEADER_SIZE + count + 1
            if len(buffer) < end:
                if final:
                    self._skip_one()
                    continue
                break
            payload = bytes(buffer[start + HEADER_SIZE : end - 1])
            if buffer[end - 1] != TRAILER:
                out.append(Damaged("missing 0xAA trailer", packet_type, packet_id))
                self._skip_one()
            elif checksum(payload) != total:
                out.append(Damaged("bad checksum", packet_type, packet_id))
                self._skip_one()
            else:
                self._pos = end
                out.append(Packet(DATA_LEADER, packet_type, packet_id, payload))
        if self._pos > 65536 or self._pos == len(buffer):
            del buffer[: self._pos]
            self._pos = 0
        return out

    def _skip_one(self) -> None:
        self._pos += 1
        self.discarded += 1
