"""A KD *target* (the Windows side of KDCOM) for tests and benchmarks. Pure.

It follows the target side of ReactOS's KDCOM (``drivers/base/kddll``, ``ntoskrnl/kd64``); each rule
has its row in docs/windows-facts.md:

* Sending (KdSendPacket): one data packet in flight. Every wait for its ACK that ends in silence
  (``timeout()``) is one try; after ``DEFAULT_RETRIES`` tries a print, a load-symbols report or a
  file-create request is given up: the debugger is then *absent*, both packet ids start over
  (the next packet carries the SYNC bit again) and later prints and module loads are not sent at
  all. Every other packet (a stop, a prompt) is sent again forever. The first packet after boot
  keeps its SYNC-bit id on every resend until it is ACKed.
* Receiving (KdReceivePacket), byte by byte: a packet leader is 4 equal leader bytes; a complete
  leader marks the debugger present. A break-in byte (0x62) in the leader scan followed by silence
  makes the packet go out again and leaves a break-in pending; followed by anything else it is
  forgotten. A data packet that arrives while the target waits for an ACK is answered with RESEND,
  and the target then takes its own packet as delivered. RESET is answered with RESET, both ids go
  back to INITIAL and the packet in flight is sent again. A host packet with an unexpected id is
  ACKed and ignored.
* Running (``poll()``, the clock tick; also once after every print): one byte is read; a 0x62 (or
  a pending break-in) stops the kernel with a breakpoint state change that waits for a Continue;
  any other byte is thrown away. Bytes that arrive while the kernel runs wait to be read.
* Continue: DBG_CONTINUE on a ``fault()`` runs the faulting instruction again; "not handled" lets
  the kernel dispatch it (``handled``), and a second chance nobody handles is a bugcheck 0x1E.
* In a stop, every other state-manipulation request is answered and the stop goes on waiting (KdpSendWaitContinue):
  DbgKdGetVersionApi with the version block, DbgKdGetContextApi with the asked processor's CONTEXT (beyond the
  processor count: STATUS_UNSUCCESSFUL), DbgKdReadVirtualMemoryApi with what is mapped (at most PACKET_MAX_SIZE - 56
  bytes; short: STATUS_UNSUCCESSFUL and the bytes read), DbgKdCauseBugCheckApi with a bugcheck 0xE2 and no reply;
  any other API with STATUS_UNSUCCESSFUL and no data. What is read comes from a synthetic kernel
  (``harness.kd.synthetic.Machine``); without one, memory reads find nothing.

It can misbehave on purpose: ``duplicate_next``, ``corrupt_next``, ``garbage`` and ``reset()`` (a
target-initiated reset mid-stream).
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field

from harness.kd import packets as kd
from harness.kd.synthetic import Machine

DEFAULT_RETRIES = 20  # KdpContext.KdpDefaultRetries
KMODE_EXCEPTION_NOT_HANDLED = 0x1E
MANUALLY_INITIATED_CRASH = 0xE2
MAX_REFAULTS = 3  # a faulting instruction continued as "handled" faults again; the emulator stops after this many
BREAKIN_PC = 0xFFFFF80000001B1D  # where a break-in stops (DbgBreakPointWithStatus), for the record
_FILE_CREATE = 0x3430
_REPLY_HEADER = {kd.TYPE_STATE_MANIPULATE: kd.MANIPULATE_SIZE, kd.TYPE_DEBUG_IO: kd.DEBUG_IO.size, kd.TYPE_FILE_IO: kd.FILE_IO_SIZE}
_LEADER, _HEADER, _BODY = range(3)


@dataclass(frozen=True)
class _Fault:
    code: int
    address: int
    handled: bool  # an exception handler of the kernel takes it when it is dispatched
    first_chance: bool


@dataclass
class _Message:
    type: int
    payload: bytes
    waits_for: int | None = None  # host packet type the target then waits for
    quick_timeout: bool = False  # may be given up after DEFAULT_RETRIES tries
    absent_skip: str = ""  # "print" or "module": not sent while the debugger is absent
    text: str = ""
    breakin: bool = False
    fault: _Fault | None = None
    retries: int = DEFAULT_RETRIES
    acked: bool = False


@dataclass(frozen=True)
class Continued:
    """A Continue the target took, decoded at the AMD64 offsets of DBGKD_CONTINUE2."""

    code: int  # exception code of the stop, 0 for a load-symbols report
    breakin: bool  # the stop was the target's own break-in stop
    api: int
    status: int
    trace_flag: int
    dr7: int
    symbol_start: int
    symbol_end: int


@dataclass
class TargetLog:
    """What the target saw from the host, and what it did about the debugger."""

    continues: list[Continued] = field(default_factory=list)
    prompt_replies: list[str] = field(default_factory=list)
    file_replies: list[int] = field(default_factory=list)  # status of each FILE_IO reply
    acks: int = 0
    resends_received: int = 0
    resends_sent: int = 0
    resets_received: int = 0
    ignored: int = 0
    timeouts: int = 0  # tries that ended in silence
    gave_up: int = 0  # times the debugger was marked absent
    dropped: list[str] = field(default_factory=list)  # prints that never went out, or were given up
    skipped_modules: int = 0
    manipulates: list[int] = field(default_factory=list)  # APIs of the requests answered in stops
    refused: list[int] = field(default_factory=list)  # APIs answered with STATUS_UNSUCCESSFUL
    breakins: int = 0
    discarded: int = 0  # bytes the poll read and threw away
    refaults: int = 0

    @property
    def statuses(self) -> list[int]:
        """ContinueStatus of each Continue, the break-in stops' left out."""
        return [item.status for item in self.continues if not item.breakin]


def _exception_payload(
    code: int, address: int, processor: int, first_chance: bool, parameters: tuple[int, ...], processors: int = 1,
    thread: int = 0xFFFFF80000AB0000,
) -> bytes:  # fmt: skip
    head = struct.pack("<IHHI4xQQ", kd.STATE_EXCEPTION, 0, processor, processors, thread, address)
    record = struct.pack("<IIQQI4x", code, 0, 0, address, len(parameters)) + struct.pack(
        "<15Q", *(list(parameters) + [0] * (15 - len(parameters)))
    )
    return (head + record + struct.pack("<I", int(first_chance))).ljust(192, b"\0") + bytes(48)


class KdTarget:
    """The target end of a KD link. ``outbox`` holds bytes for the host; feed its answers to ``receive``."""

    def __init__(self, sync_first: bool = True, machine: Machine | None = None) -> None:
        self.machine = machine
        self.current_id = kd.INITIAL_ID | (kd.SYNC_BIT if sync_first else 0)
        self.remote_id = kd.INITIAL_ID
        self.present = True  # not KdDebuggerNotPresent
        self.breakin_pending = False  # KdpControlCPending
        self.queue: deque[_Message] = deque()
        self.outbox = bytearray()
        self.rx = bytearray()  # bytes from the host not read yet
        self.log = TargetLog()
        self.duplicate_next = False
        self.corrupt_next = False
        self._phase = _LEADER
        self._lead = 0  # the leader byte being counted (or a break-in byte)
        self._lead_count = 0
        self._frame = bytearray()  # header after the leader, then payload and trailer
        self._need = 0

    # -- what the kernel does ---------------------------------------------------------------------

    def print(self, text: str | bytes, processor: int = 0) -> None:
        data = text.encode() if isinstance(text, str) else text
        payload = kd.DEBUG_IO.pack(kd.API_PRINT_STRING, 0, processor, len(data), 0) + data
        self._enqueue(_Message(kd.TYPE_DEBUG_IO, payload, quick_timeout=True, absent_skip="print", text=data.decode("utf-8", "replace")))

    def prompt(self, text: str, processor: int = 0, max_reply: int = 16) -> None:
        data = text.encode()
        payload = kd.DEBUG_IO.pack(kd.API_GET_STRING, 0, processor, len(data), max_reply) + data
        self._enqueue(_Message(kd.TYPE_DEBUG_IO, payload, waits_for=kd.TYPE_DEBUG_IO))

    def exception(
        self,
        code: int = kd.STATUS_BREAKPOINT,
        address: int = 0xFFFFF80000001000,
        processor: int = 0,
        first_chance: bool = True,
        parameters: tuple[int, ...] = (),
    ) -> None:
        """A stop that waits for a Continue (a breakpoint, or an exception reported to the debugger)."""
        payload = _exception_payload(code, address, processor, first_chance, parameters)
        self._enqueue(_Message(kd.TYPE_STATE_CHANGE64, payload, waits_for=kd.TYPE_STATE_MANIPULATE))

    def fault(self, code: int, address: int, handled: bool = False, stop_on_exception: bool = False) -> None:
        """A kernel-mode fault (KiDispatchException): reported first-chance only with FLG_STOP_ON_EXCEPTION,
        then dispatched to the kernel's handlers, then second-chance; continued "handled", it runs again."""
        if stop_on_exception:
            self._enqueue(self._fault_stop(_Fault(code, address, handled, first_chance=True)))
        elif not handled:
            self._enqueue(self._fault_stop(_Fault(code, address, handled, first_chance=False)))

    def load_module(self, path: str, base: int, size: int, unload: bool = False, processor: int = 0) -> None:
        name = path.encode() + b"\0"
        head = struct.pack("<IHHI4xQQ", kd.STATE_LOAD_SYMBOLS, 0, processor, 1, 0xFFFFF80000AB0000, base)
        symbols = struct.pack("<I4xQQII?", len(name), base, 4, 0, size, unload)
        payload = (head + symbols).ljust(192, b"\0") + bytes(48) + name
        message = _Message(kd.TYPE_STATE_CHANGE64, payload, waits_for=kd.TYPE_STATE_MANIPULATE, quick_timeout=True, absent_skip="module")
        self._enqueue(message)

    def bugcheck(self, code: int, parameters: tuple[int, int, int, int]) -> None:
        """KeBugCheck2 as seen on the link: the Fatal System Error print, then a breakpoint stop."""
        for message in self._bugcheck(code, parameters):
            self._enqueue(message)

    def load_machine_modules(self) -> None:
        """The load-symbols reports of the machine's drivers, in load order."""
        assert self.machine is not None
        for path, base, size in self.machine.modules:
            self.load_module(path, base, size)

    def crash(self) -> None:
        """The machine's bugcheck (it stops on the machine's stopped processor)."""
        assert self.machine is not None and self.machine.bugcheck is not None
        self.bugcheck(*self.machine.bugcheck)

    def _stop_payload(self, code: int, default_pc: int, processor: int | None = None) -> bytes:
        """A breakpoint stop: on the machine's stopped processor at its RIP, else at ``default_pc``."""
        machine = self.machine
        if machine is None:
            return _exception_payload(code, default_pc, processor or 0, True, ())
        cpu = machine.stop_processor if processor is None else processor
        return _exception_payload(code, machine.pc(cpu), cpu, True, (), len(machine.contexts), machine.thread(cpu))

    def file_request(self, path: str) -> None:
        payload = struct.pack("<II", _FILE_CREATE, 0).ljust(kd.FILE_IO_SIZE, b"\0") + (path + "\0").encode("utf-16-le")
        self._enqueue(_Message(kd.TYPE_FILE_IO, payload, waits_for=kd.TYPE_FILE_IO, quick_timeout=True))

    def reset(self) -> None:
        """Misbehaviour: the target resets the link in the middle of things."""
        self.outbox += kd.encode_control(kd.TYPE_RESET)
        self.current_id = self.remote_id = kd.INITIAL_ID
        if self.queue and not self.queue[0].acked:
            self._transmit(self.queue[0])

    def garbage(self, data: bytes) -> None:
        """Misbehaviour: bytes that are no packet at all (line noise)."""
        self.outbox += data

    # -- the link ---------------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """Running: nothing to send or wait for."""
        return not self.queue

    def take(self) -> bytes:
        data = bytes(self.outbox)
        self.outbox.clear()
        return data

    def receive(self, data: bytes) -> None:
        """Bytes from the host. In the debugger they are read at once; a running kernel leaves them to ``poll()``."""
        self.rx += data
        self._read()

    def timeout(self) -> None:
        """The target waited a whole timeout and no byte came."""
        self._read()
        if not self.queue:
            return
        head = self.queue[0]
        lone_breakin = self._phase == _LEADER and self._lead == kd.BREAKIN_BYTE
        partial_body = self._phase == _BODY
        self._restart_scan()
        if lone_breakin:  # a break-in byte, then nothing: "resend", and break in when the kernel next polls
            self.breakin_pending = True
            self._resend(head)
        elif partial_body:  # a host packet stopped short: ask for it again
            self._send_resend()
        elif not head.acked:
            self.log.timeouts += 1
            head.retries = max(head.retries - 1, 0)
            if head.retries == 0 and head.quick_timeout:
                self._give_up()
            else:
                self._transmit(head)
        # waiting for a reply (a Continue, a prompt answer): the target keeps waiting

    def poll(self) -> bool:
        """A clock tick of the running kernel: break in on a pending break-in or a 0x62 byte. True if it did."""
        if self.queue or not self._breakin_polled():
            return False
        self._enqueue(self._breakin_stop())
        return True

    # -- sending ----------------------------------------------------------------------------------

    def _enqueue(self, message: _Message) -> None:
        self.queue.append(message)
        if len(self.queue) == 1:
            self._start()
            self._read()  # bytes that came while the kernel ran are read in its first wait

    def _start(self) -> None:
        """The kernel goes on to its next message: send it, or skip it while the debugger is absent."""
        while self.queue:
            message = self.queue[0]
            if message.acked:
                return  # a stop whose reply to a request went out: it waits for the next request
            if not message.absent_skip or self.present:
                message.retries = DEFAULT_RETRIES
                message.acked = False
                self._transmit(message)
                return
            self.queue.popleft()
            if message.absent_skip == "print":
                self.log.dropped.append(message.text)
            else:
                self.log.skipped_modules += 1

    def _transmit(self, message: _Message) -> None:
        wire = bytearray(kd.encode_data(message.type, self.current_id, message.payload))
        if self.corrupt_next:
            self.corrupt_next = False
            wire[kd.HEADER_SIZE] ^= 0xFF
        self.outbox += wire
        if self.duplicate_next:
            self.duplicate_next = False
            self.outbox += kd.encode_data(message.type, self.current_id, message.payload)

    def _resend(self, head: _Message) -> None:
        """KDP_PACKET_RESEND: the packet in flight goes out again (in a reply wait: the whole exchange restarts)."""
        if head.acked:
            head.acked = False
            head.retries = DEFAULT_RETRIES
        self._transmit(head)

    def _give_up(self) -> None:
        head = self.queue.popleft()
        self.present = False
        self.log.gave_up += 1
        self.current_id = kd.INITIAL_ID | kd.SYNC_BIT
        self.remote_id = kd.INITIAL_ID
        if head.absent_skip == "print":
            self.log.dropped.append(head.text)
        self._start()

    def _delivered(self) -> None:
        """The packet in flight was ACKed."""
        self.current_id &= ~kd.SYNC_BIT
        head = self.queue[0]
        head.acked = True
        if head.waits_for is not None:
            return
        self.queue.popleft()
        if head.absent_skip == "print" and self._breakin_polled():  # KdpPrintString polls once after sending
            self.queue.appendleft(self._breakin_stop())
        self._start()

    def _breakin_polled(self) -> bool:
        """KdPollBreakIn: a pending break-in, else one byte read (0x62 breaks in, anything else is lost)."""
        if self.breakin_pending:
            self.breakin_pending = False
            return True
        if not self.rx:
            return False
        byte = self.rx.pop(0)
        if byte == kd.BREAKIN_BYTE:
            return True
        self.log.discarded += 1
        return False

    def _breakin_stop(self) -> _Message:
        self.log.breakins += 1
        payload = self._stop_payload(kd.STATUS_BREAKPOINT, BREAKIN_PC, 0)
        return _Message(kd.TYPE_STATE_CHANGE64, payload, waits_for=kd.TYPE_STATE_MANIPULATE, breakin=True)

    def _fault_stop(self, fault: _Fault) -> _Message:
        payload = _exception_payload(fault.code, fault.address, 0, fault.first_chance, ())
        return _Message(kd.TYPE_STATE_CHANGE64, payload, waits_for=kd.TYPE_STATE_MANIPULATE, fault=fault)

    def _bugcheck(self, code: int, parameters: tuple[int, int, int, int]) -> list[_Message]:
        text = f"\n*** Fatal System Error: 0x{code:08x}\n                       ({','.join(f'0x{p:016X}' for p in parameters)})\n\n"
        data = text.encode()
        stop = self._stop_payload(kd.STATUS_BREAKPOINT, 0xFFFFF80000001000)
        return [
            _Message(kd.TYPE_DEBUG_IO, kd.DEBUG_IO.pack(kd.API_PRINT_STRING, 0, 0, len(data), 0) + data, quick_timeout=True,
                     absent_skip="print", text=text),
            _Message(kd.TYPE_STATE_CHANGE64, stop, waits_for=kd.TYPE_STATE_MANIPULATE),
        ]  # fmt: skip

    # -- receiving --------------------------------------------------------------------------------

    def _restart_scan(self) -> None:
        self._phase = _LEADER
        self._lead = self._lead_count = 0
        self._frame.clear()

    def _send_resend(self) -> None:
        self.log.resends_sent += 1
        self.outbox += kd.encode_control(kd.TYPE_RESEND)

    def _read(self) -> None:
        while self.queue and self.rx:
            byte = self.rx.pop(0)
            if self._phase == _LEADER:
                self._leader_byte(byte)
            elif self._phase == _HEADER:
                self._header_byte(byte)
            else:
                self._body_byte(byte)

    def _leader_byte(self, byte: int) -> None:
        if byte in (kd.DATA_LEADER_BYTE, kd.CONTROL_LEADER_BYTE):
            if byte != self._lead:
                self._lead_count = 0
            self._lead = byte
            self._lead_count += 1
            if self._lead_count == 4:
                self._phase = _HEADER
                self.present = True  # a packet from a debugger: it is there
        elif byte == kd.BREAKIN_BYTE:
            self._lead, self._lead_count = byte, 0
        else:
            self._lead = self._lead_count = 0

    def _header_byte(self, byte: int) -> None:
        self._frame.append(byte)
        control = self._lead == kd.CONTROL_LEADER_BYTE
        if len(self._frame) == 2 and control and self._frame[0] | self._frame[1] << 8 == kd.TYPE_RESEND:
            self._restart_scan()  # acted on at once; the rest of its header is read as noise
            self.log.resends_received += 1
            self._resend(self.queue[0])
            return
        if len(self._frame) < kd.HEADER_SIZE - 4:
            return
        packet_type, count, packet_id, total = struct.unpack_from("<HHII", self._frame)
        head = self.queue[0]
        if control:
            self._restart_scan()
            self._control(packet_type, packet_id)
        elif not head.acked:  # waiting for an ACK and a data packet came: RESEND, and take ours as delivered
            self._restart_scan()
            self._send_resend()
            self.current_id ^= 1
            self._delivered()
        elif count < _REPLY_HEADER.get(head.waits_for or 0, 0) or count > kd.MAX_PAYLOAD:
            self._restart_scan()
            self._send_resend()
        else:
            self._phase = _BODY
            self._need = kd.HEADER_SIZE - 4 + count + 1

    def _body_byte(self, byte: int) -> None:
        self._frame.append(byte)
        if len(self._frame) < self._need:
            return
        packet_type, _, packet_id, total = struct.unpack_from("<HHII", self._frame)
        payload, trailer = bytes(self._frame[kd.HEADER_SIZE - 4 : -1]), self._frame[-1]
        self._restart_scan()
        if trailer != kd.TRAILER or kd.checksum(payload) != total:
            self._send_resend()
            return
        self.outbox += kd.encode_control(kd.TYPE_ACKNOWLEDGE, packet_id)
        head = self.queue[0]
        if packet_id != self.remote_id or packet_type != head.waits_for:
            self.log.ignored += 1  # a resend of something already taken, or not what the target waits for
            return
        self.remote_id ^= 1
        self._reply(head, packet_type, payload)

    def _control(self, packet_type: int, packet_id: int) -> None:
        head = self.queue[0]
        if packet_type == kd.TYPE_ACKNOWLEDGE:
            if not head.acked and packet_id == self.current_id & ~kd.SYNC_BIT:
                self.log.acks += 1
                self.current_id ^= 1
                self._delivered()
        elif packet_type == kd.TYPE_RESET:
            self.log.resets_received += 1
            self.current_id = self.remote_id = kd.INITIAL_ID
            self.outbox += kd.encode_control(kd.TYPE_RESET)
            self._resend(head)

    def _reply(self, head: _Message, packet_type: int, payload: bytes) -> None:
        follow: list[_Message] = []
        if packet_type == kd.TYPE_STATE_MANIPULATE:
            api = struct.unpack_from("<I", payload)[0]
            if api not in (kd.API_CONTINUE, kd.API_CONTINUE2):
                self._manipulate(kd.Manipulate.decode(payload))
                return
            status, trace, dr7, start, end = struct.unpack_from("<IIQQQ", payload.ljust(kd.MANIPULATE_SIZE, b"\0"), 16)
            if api == kd.API_CONTINUE:
                trace = dr7 = start = end = 0
            code = struct.unpack_from("<I", head.payload, 32)[0] if struct.unpack_from("<I", head.payload)[0] == kd.STATE_EXCEPTION else 0
            self.log.continues.append(Continued(code, head.breakin, api, status, trace, dr7, start, end))
            if head.fault is not None:
                follow = self._after_fault(head.fault, handled=status < 0x80000000)
        elif packet_type == kd.TYPE_DEBUG_IO:
            length = struct.unpack_from("<I", payload, 12)[0]
            self.log.prompt_replies.append(payload[kd.DEBUG_IO.size : kd.DEBUG_IO.size + length].decode("utf-8", "replace"))
        elif packet_type == kd.TYPE_FILE_IO:
            self.log.file_replies.append(struct.unpack_from("<I", payload, 4)[0])
        self.queue.popleft()
        self.queue.extendleft(reversed(follow))
        self._start()

    def _manipulate(self, request: kd.Manipulate) -> None:
        """A request in a stop (KdpSendWaitContinue): the reply goes out, then the stop waits for the next request."""
        self.log.manipulates.append(request.api)
        if request.api == kd.API_CAUSE_BUGCHECK:  # KdpCauseBugCheck: KeBugCheck(MANUALLY_INITIATED_CRASH), no reply
            self.queue.popleft()
            self.queue.extendleft(reversed(self._bugcheck(MANUALLY_INITIATED_CRASH, (0, 0, 0, 0))))
            self._start()
            return
        reply = self._answer(request)
        if reply.status != kd.STATUS_SUCCESS:
            self.log.refused.append(request.api)
        self.queue.appendleft(_Message(kd.TYPE_STATE_MANIPULATE, reply.encode()))
        self._start()

    def _answer(self, request: kd.Manipulate) -> kd.Manipulate:
        machine = self.machine
        failed = kd.Manipulate(request.api, request.processor, kd.STATUS_UNSUCCESSFUL, request.body, level=request.level)
        if request.api == kd.API_GET_VERSION:
            version = machine.version if machine is not None else kd.GET_VERSION.pack(*([0] * 14))
            return kd.Manipulate(request.api, request.processor, kd.STATUS_SUCCESS, version, level=request.level)
        if request.api == kd.API_GET_CONTEXT:
            contexts = machine.contexts if machine is not None else ()
            if request.processor >= max(len(contexts), 1):
                return failed
            context = contexts[request.processor] if contexts else kd.encode_context({})
            return kd.Manipulate(request.api, request.processor, kd.STATUS_SUCCESS, request.body, context, request.level)
        if request.api == kd.API_READ_VIRTUAL_MEMORY:
            address, count, _ = kd.READ_MEMORY.unpack_from(request.body)
            length = min(count, kd.MAX_READ)
            data = machine.read(address, length) if machine is not None else b""
            status = kd.STATUS_SUCCESS if len(data) == length else kd.STATUS_UNSUCCESSFUL
            body = kd.READ_MEMORY.pack(address, count, len(data))
            return kd.Manipulate(request.api, request.processor, status, body, data, request.level)
        return failed

    def _after_fault(self, fault: _Fault, handled: bool) -> list[_Message]:
        """KiDispatchException after the debugger answered."""
        if handled:  # DBG_CONTINUE: the faulting instruction runs again, and faults again
            if self.log.refaults >= MAX_REFAULTS:
                return []
            self.log.refaults += 1
            return [self._fault_stop(fault)]
        if fault.first_chance:
            return [] if fault.handled else [self._fault_stop(_Fault(fault.code, fault.address, False, first_chance=False))]
        return self._bugcheck(KMODE_EXCEPTION_NOT_HANDLED, (fault.code, fault.address, 0xFFFFF80000C0FFEE, 0))
