"""The host side of a KDCOM link, as a pure state machine: bytes in, bytes to send and events out.

What it does, per the protocol facts (shared notes §1, docs/windows-facts.md): ACK every data
packet with its id (SYNC bit cleared), drop duplicates, ask for a resend of damaged packets, turn
DEBUG_IO prints into lines (per processor), answer prompts and file-IO requests, answer every state
change with a Continue so the guest never freezes, and recognise a bugcheck from its "*** Fatal
System Error" print. Before its first packet of its own it synchronises the ids with a RESET (the
target answers RESET and sends its pending packet again); a target that numbers its packets from
the start again (the SYNC bit: a reboot, or a kernel that gave up on the debugger) is synchronised
again the same way.

Attaching (``attached()``, on every connection) sends a break-in byte (again after a silence, until
the target's first packet): a kernel that gave up on an absent debugger sends nothing until its
clock-tick poll reads one, and then stops; the stop is continued like any other.

Where it crashed or hung (harness.kd.inspect): at the bugcheck's first break, and at a break-in the harness asked
for (``request_stacks``), the stop is not continued at once: the host first reads the processors' contexts, the
version block and memory with state-manipulation requests, one at a time, and walks the stacks; then it continues
as always. The exchange is bounded (requests, a reply timeout, a total budget); a target that does not answer is
continued with what was read. With ``crash_after_stacks`` a hang inspection ends in DbgKdCauseBugCheckApi instead
(the debugger-initiated crash, 0xE2), whose bugcheck is then reported as forced, not as a crash of the scenario.

Continue status: DBG_CONTINUE for breakpoints, single steps and load-symbols reports;
DBG_EXCEPTION_NOT_HANDLED for every other exception, so the kernel's own handling runs and an
unhandled fault ends in a bugcheck instead of running the faulting instruction again. Continue2
leaves the kernel's symbol range unchanged (CurrentSymbolStart = 1).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from harness.kd import packets as kd
from harness.kd.inspect import Inspection, Stop
from harness.kernel.stacks import StackReport
from harness.triage.pe import PeImage

_FATAL = re.compile(r"^\*\*\* Fatal System Error: 0x([0-9A-Fa-f]{8})\s*$")
_FATAL_PARAMS = re.compile(r"^\s*\(0x([0-9A-Fa-f]+),0x([0-9A-Fa-f]+),0x([0-9A-Fa-f]+),0x([0-9A-Fa-f]+)\)\s*$")
_STATE_HEAD = struct.Struct("<IHHI4xQQ")  # new state, level, processor, processors, thread, pc
_EXCEPTION = struct.Struct("<IIQQI4x")  # code, flags, record, address, parameter count
_LOAD_SYMBOLS = struct.Struct("<I4xQQII?")  # path length, base, process, checksum, size, unload
_PRINT_API = kd.API_PRINT_STRING.to_bytes(4, "little")
RETRANSMIT_AFTER = 1.5
MAX_RETRANSMITS = 5
# A break-in byte can be lost (a reader that reconnects while QEMU still restores a saved state; a port that the
# firmware or the kernel's debugger initialisation flushes): until the target's first packet after an attach,
# it is sent again every BREAKIN_RETRY seconds of silence, BREAKIN_TRIES times in all. Harmless when it arrives
# twice: a kernel in the debugger forgets a break-in byte that a packet leader follows.
BREAKIN_RETRY = 2.0
BREAKIN_TRIES = 5
REPLY_TIMEOUT = 10.0  # a manipulate request the target has not answered after this long ends the inspection
INSPECT_BUDGET = 60.0  # an inspection ends (with what it read) after this long
MANUALLY_INITIATED_CRASH = 0xE2


@dataclass(frozen=True)
class KdLine:
    """A complete line of kernel debug output (DbgPrint), without the newline."""

    processor: int
    text: str


@dataclass(frozen=True)
class KdStateChange:
    """The target stopped (breakpoint, exception, bugcheck break, a break-in) and was continued with ``status``."""

    processor: int
    thread: int
    pc: int
    code: int
    address: int
    first_chance: bool
    parameters: tuple[int, ...]
    status: int = kd.DBG_CONTINUE

    def describe(self) -> str:
        chance = "first" if self.first_chance else "second"
        how = "continued" if self.status == kd.DBG_CONTINUE else "continued as not handled"
        return f"state change: exception 0x{self.code:08X} at 0x{self.address:x} on cpu {self.processor} ({chance} chance), {how}"


@dataclass(frozen=True)
class KdAttach:
    """The host attached to the link (a new connection) and sent a break-in; the stop it causes is continued."""

    number: int

    def describe(self) -> str:
        return f"debugger attached (connection {self.number}): break-in sent"


@dataclass(frozen=True)
class KdModule:
    """A driver image was loaded or unloaded (load-symbols state change), and continued."""

    path: str
    base: int
    size: int
    unload: bool

    def describe(self) -> str:
        return f"module {'unload' if self.unload else 'load'}: {self.path} at 0x{self.base:x} size 0x{self.size:x}"


@dataclass(frozen=True)
class KdBugcheck:
    """The kernel announced a bugcheck (a BSOD) with its code and four parameters.

    ``forced``: the harness caused it on purpose (a debugger-initiated crash or an NMI, to get a dump of a hang).
    """

    code: int
    parameters: tuple[int, int, int, int]
    forced: bool = False

    def describe(self) -> str:
        text = f"bugcheck 0x{self.code:08X} ({', '.join(f'0x{p:x}' for p in self.parameters)})"
        return text + (", forced by the harness for a dump" if self.forced else "")


@dataclass(frozen=True)
class KdStacks:
    """Where the stopped kernel's processors were (read before the stop was continued)."""

    report: StackReport
    requests: int
    seconds: float
    complete: bool  # False: cut short (request cap, time budget, or the target stopped answering)

    def describe(self) -> str:
        frames = sum(len(thread.frames) for thread in self.report.threads)
        how = "" if self.complete else ", cut short"
        return (
            f"{self.report.kind} stacks read: {len(self.report.threads)} stack(s), {frames} frames, "
            f"{self.requests} requests in {self.seconds:.2f}s{how}"
        )


@dataclass(frozen=True)
class KdNotice:
    """Something about the link itself: a prompt answered, a file request refused, a resync."""

    text: str

    def describe(self) -> str:
        return self.text


KdEvent = KdLine | KdStateChange | KdModule | KdBugcheck | KdNotice | KdAttach | KdStacks


def continue_status(code: int) -> int:
    """How an exception stop is continued: breakpoints (a DbgBreakPoint, a break-in, the bugcheck breaks) and
    single steps as handled; anything else as not handled, so the kernel dispatches it (an unhandled fault then
    bugchecks with KMODE_EXCEPTION_NOT_HANDLED instead of faulting again for ever)."""
    return kd.DBG_CONTINUE if code in (kd.STATUS_BREAKPOINT, kd.STATUS_SINGLE_STEP) else kd.DBG_EXCEPTION_NOT_HANDLED


@dataclass
class Output:
    """What the host wants done after some input: bytes to write, events to record."""

    send: bytes = b""
    events: list[KdEvent] = field(default_factory=list)

    def extend(self, other: Output) -> None:
        self.send += other.send
        self.events.extend(other.events)


class KdHost:
    """One KD link's host state. Feed it with ``receive``; call ``idle`` when the line is quiet.

    Args:
        prompt_reply: what to answer DbgPrompt with ("i" = ignore, for assertion prompts).
    """

    def __init__(self, prompt_reply: str = "i") -> None:
        self.framer = kd.Framer()
        self.prompt_reply = prompt_reply
        self.expected: int | None = None  # next id expected from the target; None: adopt the first
        self.next_send = kd.INITIAL_ID
        self.synced = False  # our send ids are known to match the target's expectation
        self.outstanding: bytes | None = None
        self.outstanding_id = 0
        self.sent_at = 0.0
        self.retransmits = 0
        self.queue: list[tuple[int, bytes]] = []
        self.reset_sent = False
        self.replay: tuple[int, bytes] | None = None  # packet to re-handle after the RESET reply, without new events
        self.last_accepted: tuple[int, int, bytes] | None = None
        self.lines: dict[int, bytearray] = {}
        self.last_line: dict[int, str] = {}
        self.attaches = 0
        self.breakins_left = 0  # break-in bytes still to send while the target says nothing after an attach
        self.breakin_at = 0.0
        # Where it crashed or hung.
        self.images: dict[str, PeImage] = {}  # module file name (lower case) -> the image the user gave
        self.seen: list[tuple[str, int, int, bool]] = []  # (path, base, size, unloaded) of each module reported, oldest first
        self.pending_bugcheck: KdBugcheck | None = None  # announced; its first break is inspected
        self.stacks_wanted = False  # the next break-in stop is inspected as a hang
        self.crash_after_stacks = False  # end a hang inspection with DbgKdCauseBugCheckApi instead of a continue
        self.forced_codes: set[int] = set()  # bugcheck codes the harness is causing itself
        self.inspection: Inspection | None = None
        self.inspection_stop: tuple[int, int, int] = (0, 0, kd.DBG_CONTINUE)  # level, processor, continue status
        self.inspection_started = 0.0
        self.request_at = 0.0
        self.later = Output()  # bytes and events made outside receive()/idle(), given out with their next output
        self.stats = {"packets": 0, "acks": 0, "resends_asked": 0, "duplicates": 0, "resets": 0, "retransmits": 0, "resyncs": 0}

    # -- input -----------------------------------------------------------------------------------

    def receive(self, data: bytes, now: float = 0.0) -> Output:
        out = self._take_later()
        for item in self.framer.feed(data):
            self._handle(item, now, out)
        return out

    def idle(self, now: float) -> Output:
        """The line has been quiet: abandon a frame that cannot complete, retransmit an unACKed packet."""
        out = self._take_later()
        for item in self.framer.flush():
            self._handle(item, now, out)
        if self.inspection is not None and (now - self.request_at >= REPLY_TIMEOUT or now - self.inspection_started >= INSPECT_BUDGET):
            out.extend(self._end_inspection(now, complete=False))
        if self.outstanding is not None and now - self.sent_at >= RETRANSMIT_AFTER and self.retransmits < MAX_RETRANSMITS:
            self.retransmits += 1
            self.stats["retransmits"] += 1
            self.sent_at = now
            out.send += self.outstanding
        if self.breakins_left and now - self.breakin_at >= BREAKIN_RETRY:
            self.breakins_left -= 1
            self.breakin_at = now
            out.send += bytes([kd.BREAKIN_BYTE])
        return out

    def attached(self, now: float = 0.0) -> Output:
        """A (new) connection to the target: forget the link state of any earlier one, and break in.

        A kernel that found no debugger gave up on it and sends nothing until it reads the break-in
        byte; one that is running, or was just restored, stops once and is continued.
        """
        self.framer = kd.Framer()
        self.expected = None
        self.synced = False
        self.outstanding = None
        self.queue.clear()
        self.reset_sent = False
        self.replay = None
        self.last_accepted = None
        self.attaches += 1
        self.breakins_left, self.breakin_at = BREAKIN_TRIES - 1, now
        self.inspection = None  # a stop of the old connection: it is sent again and continued
        out = self._take_later()
        out.send += bytes([kd.BREAKIN_BYTE])
        for processor in list(self.lines):
            out.events.extend(self._flush_partial(processor))
        out.events.append(KdAttach(self.attaches))
        return out

    def close(self) -> Output:
        """End of stream: emit partial lines still buffered."""
        out = Output()
        for item in self.framer.flush():
            self._handle(item, 0.0, out)
        for processor in list(self.lines):
            out.events.extend(self._flush_partial(processor))
        return out

    # -- packets ---------------------------------------------------------------------------------

    def _handle(self, item: kd.Packet | kd.Damaged, now: float, out: Output) -> None:
        if isinstance(item, kd.Damaged):
            self.stats["resends_asked"] += 1
            out.send += kd.encode_control(kd.TYPE_RESEND)
            return
        self.stats["packets"] += 1
        if item.is_control:
            out.extend(self._control(item, now))
            return
        base_id = item.id & ~kd.SYNC_BIT
        out.send += kd.encode_control(kd.TYPE_ACKNOWLEDGE, base_id)
        self.breakins_left = 0  # the target talks
        repeat = (base_id, item.type, item.payload) == self.last_accepted
        if item.id & kd.SYNC_BIT and not repeat:
            # SYNC: the target numbers from the start again (booted, or gave up on the debugger) and now expects
            # our packets from INITIAL: adopt its numbering, and synchronise ours before we send.
            if self.synced:
                self.stats["resyncs"] += 1
            self.expected = base_id
            self.synced = False
            self.outstanding = None
            self.queue.clear()
        elif self.expected is None:
            self.expected = base_id
        if base_id != self.expected:
            self.stats["duplicates"] += 1
            return
        self.expected ^= 1
        self.last_accepted = (base_id, item.type, item.payload)
        replaying = self.replay is not None and self.replay == (item.type, item.payload)
        self.replay = None
        if item.type == kd.TYPE_DEBUG_IO and not replaying and len(item.payload) >= kd.DEBUG_IO.size and item.payload[0:4] == _PRINT_API:
            # The hot path: a DbgPrint.
            processor = item.payload[6] | item.payload[7] << 8
            length = int.from_bytes(item.payload[8:12], "little")
            out.events.extend(self._print(processor, item.payload[kd.DEBUG_IO.size : kd.DEBUG_IO.size + length]))
            return
        out.extend(self._dispatch(item, now, quiet=replaying))

    def _control(self, packet: kd.Packet, now: float) -> Output:
        out = Output()
        if packet.type == kd.TYPE_ACKNOWLEDGE:
            if self.outstanding is not None and (packet.id & ~kd.SYNC_BIT) == self.outstanding_id:
                self.stats["acks"] += 1
                self.outstanding = None
                self.next_send ^= 1
                out.send += self._send_queued(now)
        elif packet.type == kd.TYPE_RESEND:
            if self.outstanding is not None:
                self.sent_at = now
                out.send += self.outstanding
        elif packet.type == kd.TYPE_RESET:
            self.stats["resets"] += 1
            self.expected = kd.INITIAL_ID
            self.next_send = kd.INITIAL_ID
            self.outstanding = None
            self.synced = True
            if self.reset_sent:
                self.reset_sent = False
            else:
                out.send += kd.encode_control(kd.TYPE_RESET)
                self.reset_sent = True
                out.events.append(KdNotice("target reset the link"))
        return out

    def _send(self, packet_type: int, payload: bytes, now: float, about: kd.Packet) -> bytes:
        """Queue a data packet; before the ids are known good, synchronise with a RESET first."""
        if not self.synced:
            # The target answers RESET, then sends `about` again; we reply to that copy.
            self.replay = (about.type, about.payload)
            self.reset_sent = True
            return kd.encode_control(kd.TYPE_RESET)
        self.queue.append((packet_type, payload))
        return self._send_queued(now) if self.outstanding is None else b""

    def _send_queued(self, now: float) -> bytes:
        if not self.queue or self.outstanding is not None:
            return b""
        packet_type, payload = self.queue.pop(0)
        self.outstanding = kd.encode_data(packet_type, self.next_send, payload)
        self.outstanding_id = self.next_send
        self.sent_at = now
        self.retransmits = 0
        return self.outstanding

    def _dispatch(self, packet: kd.Packet, now: float, quiet: bool) -> Output:
        if packet.type == kd.TYPE_DEBUG_IO and len(packet.payload) >= kd.DEBUG_IO.size:
            return self._debug_io(packet, now, quiet)
        if packet.type == kd.TYPE_STATE_CHANGE64 and len(packet.payload) >= _STATE_HEAD.size:
            return self._state_change(packet, now, quiet)
        if packet.type == kd.TYPE_FILE_IO and len(packet.payload) >= 4:
            return self._file_io(packet, now, quiet)
        if packet.type == kd.TYPE_STATE_MANIPULATE and self.inspection is not None:
            return self._manipulate_reply(packet, now)
        return Output()  # trace and control requests: ACKed, nothing else

    def _debug_io(self, packet: kd.Packet, now: float, quiet: bool) -> Output:
        out = Output()
        api, level, processor, length, _ = kd.DEBUG_IO.unpack_from(packet.payload)
        text = packet.payload[kd.DEBUG_IO.size : kd.DEBUG_IO.size + length]
        if api == kd.API_PRINT_STRING:
            if not quiet:
                out.events.extend(self._print(processor, text))
        elif api == kd.API_GET_STRING:
            reply = self.prompt_reply.encode()
            if not quiet:
                # As a console shows it: the prompt, the answer typed, a newline.
                out.events.extend(self._print(processor, text + reply + b"\n"))
                out.events.append(KdNotice(f"prompt {text.decode('utf-8', 'replace')!r} answered {self.prompt_reply!r}"))
            payload = kd.DEBUG_IO.pack(kd.API_GET_STRING, level, processor, 0, len(reply)) + reply
            out.send += self._send(kd.TYPE_DEBUG_IO, payload, now, packet)
        return out

    def _state_change(self, packet: kd.Packet, now: float, quiet: bool) -> Output:
        out = Output()
        state, level, processor, processors, thread, pc = _STATE_HEAD.unpack_from(packet.payload)
        if self.inspection is not None and self.inspection.pending is not None:
            # The stop came again (after the RESET that synchronised the ids, or a resend the target chose): it is the
            # stop being inspected, so ask the pending question (again, unless it is still on its way).
            if self.outstanding is None:
                self.request_at = now
                out.send += self._send(kd.TYPE_STATE_MANIPULATE, self.inspection.pending.request.encode(), now, packet)
            return out
        if not quiet:
            if state == kd.STATE_LOAD_SYMBOLS and len(packet.payload) >= 32 + _LOAD_SYMBOLS.size:
                length, base, _, _, size, unload = _LOAD_SYMBOLS.unpack_from(packet.payload, 32)
                raw_path = packet.payload[len(packet.payload) - length :] if 0 < length <= len(packet.payload) else b""
                path = raw_path.rstrip(b"\0").decode("utf-8", "replace")
                out.events.append(KdModule(path=path, base=base, size=size, unload=unload))
                self._remember_module(path, base, size, unload)
            elif len(packet.payload) >= 188:
                code, _, _, address, count = _EXCEPTION.unpack_from(packet.payload, 32)
                params = struct.unpack_from("<15Q", packet.payload, 64)[: min(count, 15)]
                first = struct.unpack_from("<I", packet.payload, 184)[0] != 0
                out.events.append(KdStateChange(processor, thread, pc, code, address, first, tuple(params), continue_status(code)))
            else:
                out.events.append(KdNotice(f"state change 0x{state:04x} on cpu {processor}, continued"))
        status = kd.DBG_CONTINUE
        code = struct.unpack_from("<I", packet.payload, 32)[0] if len(packet.payload) >= 36 else 0
        if state == kd.STATE_EXCEPTION and len(packet.payload) >= 36:
            status = continue_status(code)
        if not quiet and state == kd.STATE_EXCEPTION and code == kd.STATUS_BREAKPOINT and self.inspection is None:
            stop = self._stop_to_inspect(processor, processors, thread, pc)
            if stop is not None:
                self.inspection = Inspection(stop, self.seen, self.images)
                self.inspection_stop = (level, processor, status)
                self.inspection_started = self.request_at = now
                request = self.inspection.start()
                if request is not None:
                    out.send += self._send(kd.TYPE_STATE_MANIPULATE, request.encode(), now, packet)
                    return out
                out.extend(self._end_inspection(now, complete=True))
                return out
        out.send += self._send(kd.TYPE_STATE_MANIPULATE, kd.encode_continue2(level, processor, status), now, packet)
        return out

    # -- where it crashed or hung ----------------------------------------------------------------------------------

    def request_stacks(self, crash_after: bool = False) -> None:
        """Break in (when the line next speaks or idles) and inspect that stop as a hang: every processor's stack.

        ``crash_after``: end with DbgKdCauseBugCheckApi (the kernel bugchecks 0xE2 and writes its dump).
        """
        self.stacks_wanted = True
        self.crash_after_stacks = crash_after
        self.later.send += bytes([kd.BREAKIN_BYTE])

    def cancel_stacks(self, now: float) -> list[KdEvent]:
        """Stop waiting for a hang's stacks: no break-in stop is inspected any more, and one in progress ends now
        (its continue goes out with the next output)."""
        self.stacks_wanted = False
        self.crash_after_stacks = False
        if self.inspection is not None and self.inspection.stop.kind == "hang":
            out = self._end_inspection(now, complete=False)
            self.later.send += out.send
            return out.events
        return []

    @property
    def inspecting(self) -> bool:
        """A stop is being read, or an announced bugcheck's break is still to come."""
        return self.inspection is not None or self.pending_bugcheck is not None

    def expect_forced_bugcheck(self, code: int) -> None:
        """The harness is causing a bugcheck with ``code`` itself (an NMI): report it as forced, do not inspect it."""
        self.forced_codes.add(code)

    def _remember_module(self, path: str, base: int, size: int, unload: bool) -> None:
        if unload:
            for index in range(len(self.seen) - 1, -1, -1):
                old_path, old_base, old_size, gone = self.seen[index]
                if old_base == base and not gone:
                    self.seen[index] = (old_path, old_base, old_size, True)
                    return
        self.seen.append((path, base, size, unload))

    def _stop_to_inspect(self, processor: int, processors: int, thread: int, pc: int) -> Stop | None:
        if self.pending_bugcheck is not None:
            bugcheck, self.pending_bugcheck = self.pending_bugcheck, None
            return Stop("crash", processor, processors, thread, pc, bugcheck.code, bugcheck.parameters)
        if self.stacks_wanted:
            self.stacks_wanted = False
            return Stop("hang", processor, processors, thread, pc)
        return None

    def _manipulate_reply(self, packet: kd.Packet, now: float) -> Output:
        inspection = self.inspection
        assert inspection is not None
        try:
            reply = kd.Manipulate.decode(packet.payload)
        except ValueError:
            return Output()
        if inspection.pending is None or reply.api != inspection.pending.request.api:
            return Output()  # not the answer to our question (a stale reply): keep waiting
        if now - self.inspection_started >= INSPECT_BUDGET:
            return self._end_inspection(now, complete=False)
        request = inspection.answer(reply)
        if request is None:
            return self._end_inspection(now, complete=True)
        self.request_at = now
        out = Output()
        out.send += self._send(kd.TYPE_STATE_MANIPULATE, request.encode(), now, packet)
        return out

    def _end_inspection(self, now: float, complete: bool) -> Output:
        """Report the stacks and continue the stop (or cause the crash a hang dump needs)."""
        inspection = self.inspection
        assert inspection is not None
        self.inspection = None
        report = inspection.report if complete and inspection.report is not None else inspection.finish()
        complete = complete and not inspection.answers.final  # not cut short by the request cap
        out = Output(events=[KdStacks(report, inspection.requests, now - self.inspection_started, complete)])
        if self.outstanding is not None and self.queue == []:
            self.outstanding = None  # an unanswered request: the target never took it (same id for the continue)
        level, processor, status = self.inspection_stop
        if report.kind == "hang" and self.crash_after_stacks:
            self.crash_after_stacks = False
            self.forced_codes.add(MANUALLY_INITIATED_CRASH)
            payload = kd.Manipulate(kd.API_CAUSE_BUGCHECK, processor, level=level).encode()
        else:
            payload = kd.encode_continue2(level, processor, status)
        out.send += self._send_direct(kd.TYPE_STATE_MANIPULATE, payload, now)
        return out

    def _send_direct(self, packet_type: int, payload: bytes, now: float) -> bytes:
        """Queue a packet when the ids are known good (during an inspection they are)."""
        self.queue.append((packet_type, payload))
        return self._send_queued(now) if self.outstanding is None else b""

    def _take_later(self) -> Output:
        out, self.later = self.later, Output()
        return out

    def _file_io(self, packet: kd.Packet, now: float, quiet: bool) -> Output:
        out = Output()
        api = struct.unpack_from("<I", packet.payload)[0]
        if not quiet:
            name = packet.payload[kd.FILE_IO_SIZE :].decode("utf-16-le", "replace").split("\0")[0]
            out.events.append(KdNotice(f"file request 0x{api:04x} {name!r} refused (STATUS_NO_SUCH_FILE)"))
        reply = struct.pack("<II", api, kd.STATUS_NO_SUCH_FILE).ljust(kd.FILE_IO_SIZE, b"\0")
        out.send += self._send(kd.TYPE_FILE_IO, reply, now, packet)
        return out

    # -- text ------------------------------------------------------------------------------------

    def _print(self, processor: int, text: bytes) -> list[KdEvent]:
        buffer = self.lines.setdefault(processor, bytearray())
        buffer += text
        events: list[KdEvent] = []
        while True:
            newline = buffer.find(b"\n")
            if newline < 0:
                break
            line = buffer[:newline].rstrip(b"\r").decode("utf-8", "replace")
            del buffer[: newline + 1]
            events.extend(self._line(processor, line))
        return events

    def _line(self, processor: int, line: str) -> list[KdEvent]:
        events: list[KdEvent] = [KdLine(processor, line)]
        previous = self.last_line.get(processor, "")
        header = _FATAL.match(previous)
        params = _FATAL_PARAMS.match(line)
        if header and params:
            values = tuple(int(value, 16) for value in params.groups())
            code = int(header.group(1), 16)
            bugcheck = KdBugcheck(code, (values[0], values[1], values[2], values[3]), forced=code in self.forced_codes)
            events.append(bugcheck)
            if bugcheck.forced:
                self.forced_codes.discard(code)
            else:
                self.pending_bugcheck = bugcheck
        self.last_line[processor] = line
        return events

    def _flush_partial(self, processor: int) -> list[KdEvent]:
        buffer = self.lines.pop(processor, bytearray())
        return self._line(processor, buffer.decode("utf-8", "replace")) if buffer else []
