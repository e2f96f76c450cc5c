"""A KD *target* (the Windows side of KDCOM) for tests and benchmarks. Pure.

Written from the same protocol facts as the host (shared notes §1), following
the target-side rules of ReactOS kddll: one data packet in flight, resent on
RESEND or timeout; a RESET from the host is answered with RESET, both ids go
back to INITIAL and the pending packet is sent again; a host packet with an
unexpected id is ACKed and ignored. After a state change, a prompt or a file
request the target waits for the host's reply before it goes on.

It can misbehave on purpose: ``duplicate_next``, ``corrupt_next``,
``garbage`` and ``reset()`` (a target-initiated reset mid-stream).
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field

from harness.kd import packets as kd


@dataclass
class _Message:
    type: int
    payload: bytes
    waits_for: int | None = None  # host packet type the target then waits for
    sent: bool = False
    acked: bool = False


@dataclass
class TargetLog:
    """What the target saw from the host."""

    continues: list[int] = field(default_factory=list)  # ContinueStatus of each Continue
    prompt_replies: list[str] = field(default_factory=list)
    file_replies: list[int] = field(default_factory=list)  # status of each FILE_IO reply
    acks: int = 0
    resends_received: int = 0
    resets_received: int = 0
    ignored: int = 0


class KdTarget:
    """The target end of a KD link. ``outbox`` holds bytes for the host; feed its answers to ``receive``."""

    def __init__(self, sync_first: bool = True) -> None:
        self.current_id = kd.INITIAL_ID
        self.remote_id = kd.INITIAL_ID
        self.sync_first = sync_first
        self.framer = kd.Framer()
        self.queue: deque[_Message] = deque()
        self.outbox = bytearray()
        self.log = TargetLog()
        self.duplicate_next = False
        self.corrupt_next = False

    # -- what the kernel does ---------------------------------------------------------------------

    def print(self, text: str | bytes, processor: int = 0) -> None:
        data = text.encode() if isinstance(text, str) else text
        payload = kd.DEBUG_IO.pack(kd.API_PRINT_STRING, 0, processor, len(data), 0) + data
        self._enqueue(_Message(kd.TYPE_DEBUG_IO, payload))

    def prompt(self, text: str, processor: int = 0, max_reply: int = 16) -> None:
        data = text.encode()
        payload = kd.DEBUG_IO.pack(kd.API_GET_STRING, 0, processor, len(data), max_reply) + data
        self._enqueue(_Message(kd.TYPE_DEBUG_IO, payload, waits_for=kd.TYPE_DEBUG_IO))

    def exception(
        self,
        code: int = 0x80000003,
        address: int = 0xFFFFF80000001000,
        processor: int = 0,
        first_chance: bool = True,
        parameters: tuple[int, ...] = (),
    ) -> None:
        head = struct.pack("<IHHI4xQQ", kd.STATE_EXCEPTION, 0, processor, 1, 0xFFFFF80000AB0000, address)
        record = struct.pack("<IIQQI4x", code, 0, 0, address, len(parameters)) + struct.pack(
            "<15Q", *(list(parameters) + [0] * (15 - len(parameters)))
        )
        payload = (head + record + struct.pack("<I", int(first_chance))).ljust(192, b"\0") + bytes(48)
        self._enqueue(_Message(kd.TYPE_STATE_CHANGE64, payload, waits_for=kd.TYPE_STATE_MANIPULATE))

    def load_module(self, path: str, base: int, size: int, unload: bool = False, processor: int = 0) -> None:
        name = path.encode() + b"\0"
        head = struct.pack("<IHHI4xQQ", kd.STATE_LOAD_SYMBOLS, 0, processor, 1, 0xFFFFF80000AB0000, base)
        symbols = struct.pack("<I4xQQII?", len(name), base, 4, 0, size, unload)
        payload = (head + symbols).ljust(192, b"\0") + bytes(48) + name
        self._enqueue(_Message(kd.TYPE_STATE_CHANGE64, payload, waits_for=kd.TYPE_STATE_MANIPULATE))

    def bugcheck(self, code: int, parameters: tuple[int, int, int, int]) -> None:
        """KeBugCheck2 as seen on the link: the Fatal System Error print, then a breakpoint stop."""
        self.print(f"\n*** Fatal System Error: 0x{code:08x}\n                       ({','.join(f'0x{p:016X}' for p in parameters)})\n\n")
        self.exception(0x80000003, first_chance=True)

    def file_request(self, path: str) -> None:
        payload = struct.pack("<II", 0x3430, 0).ljust(kd.FILE_IO_SIZE, b"\0") + (path + "\0").encode("utf-16-le")
        self._enqueue(_Message(kd.TYPE_FILE_IO, payload, waits_for=kd.TYPE_FILE_IO))

    def reset(self) -> None:
        """Misbehaviour: the target resets the link in the middle of things."""
        self.outbox += kd.encode_control(kd.TYPE_RESET)
        self.current_id = self.remote_id = kd.INITIAL_ID
        if self.queue and self.queue[0].sent and not self.queue[0].acked:
            self._transmit(self.queue[0])

    def garbage(self, data: bytes) -> None:
        """Misbehaviour: bytes that are no packet at all (line noise)."""
        self.outbox += data

    # -- the link ---------------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """Nothing left to send or wait for."""
        return not self.queue

    def take(self) -> bytes:
        data = bytes(self.outbox)
        self.outbox.clear()
        return data

    def timeout(self) -> None:
        """No answer for a while: send the packet in flight again."""
        if self.queue and self.queue[0].sent and not self.queue[0].acked:
            self._transmit(self.queue[0])

    def receive(self, data: bytes) -> None:
        for item in self.framer.feed(data):
            if isinstance(item, kd.Damaged):
                self.outbox += kd.encode_control(kd.TYPE_RESEND)
            elif item.is_control:
                self._control(item)
            else:
                self._data(item)

    def _enqueue(self, message: _Message) -> None:
        self.queue.append(message)
        if len(self.queue) == 1:
            self._transmit(message)

    def _transmit(self, message: _Message) -> None:
        packet_id = self.current_id
        if self.sync_first:
            packet_id |= kd.SYNC_BIT
            self.sync_first = False
        wire = bytearray(kd.encode_data(message.type, packet_id, message.payload))
        if self.corrupt_next:
            self.corrupt_next = False
            wire[kd.HEADER_SIZE] ^= 0xFF
        message.sent = True
        self.outbox += wire
        if self.duplicate_next:
            self.duplicate_next = False
            self.outbox += kd.encode_data(message.type, packet_id, message.payload)

    def _advance(self) -> None:
        self.queue.popleft()
        if self.queue:
            self._transmit(self.queue[0])

    def _control(self, packet: kd.Packet) -> None:
        head = self.queue[0] if self.queue else None
        if packet.type == kd.TYPE_ACKNOWLEDGE:
            if head is not None and head.sent and not head.acked and (packet.id & ~kd.SYNC_BIT) == self.current_id:
                self.log.acks += 1
                head.acked = True
                self.current_id ^= 1
                if head.waits_for is None:
                    self._advance()
        elif packet.type == kd.TYPE_RESEND:
            self.log.resends_received += 1
            if head is not None and head.sent and not head.acked:
                self._transmit(head)
        elif packet.type == kd.TYPE_RESET:
            self.log.resets_received += 1
            self.outbox += kd.encode_control(kd.TYPE_RESET)
            self.current_id = self.remote_id = kd.INITIAL_ID
            if head is not None:
                head.acked = False
                self._transmit(head)

    def _data(self, packet: kd.Packet) -> None:
        self.outbox += kd.encode_control(kd.TYPE_ACKNOWLEDGE, packet.id & ~kd.SYNC_BIT)
        if (packet.id & ~kd.SYNC_BIT) != self.remote_id:
            self.log.ignored += 1
            return
        self.remote_id ^= 1
        head = self.queue[0] if self.queue else None
        if head is None or not head.acked or head.waits_for != packet.type:
            self.log.ignored += 1
            return
        if packet.type == kd.TYPE_STATE_MANIPULATE:
            api = struct.unpack_from("<I", packet.payload)[0]
            status = struct.unpack_from("<I", packet.payload, 16)[0]
            if api not in (kd.API_CONTINUE, kd.API_CONTINUE2):
                self.log.ignored += 1
                return
            self.log.continues.append(status)
        elif packet.type == kd.TYPE_DEBUG_IO:
            length = struct.unpack_from("<I", packet.payload, 12)[0]
            self.log.prompt_replies.append(packet.payload[kd.DEBUG_IO.size : kd.DEBUG_IO.size + length].decode("utf-8", "replace"))
        elif packet.type == kd.TYPE_FILE_IO:
            self.log.file_replies.append(struct.unpack_from("<I", packet.payload, 4)[0])
        self._advance()
