"""A debugger that attaches late, and how stops are continued: the KD host against the target emulator.

The emulator follows ReactOS's KDCOM target (docs/windows-facts.md, "Kernel debugger over serial"):
20 unanswered tries and the debugger is marked absent; prints are then dropped, not queued; only a
break-in byte read by the clock-tick poll brings the debugger back.
"""

from __future__ import annotations

import struct

import pytest

from harness.kd import packets as kd
from harness.kd.emulator import DEFAULT_RETRIES, KdTarget
from harness.kd.session import BREAKIN_TRIES, KdAttach, KdBugcheck, KdEvent, KdHost, KdLine, KdStateChange

BREAKPOINT = 0x80000003
SINGLE_STEP = 0x80000004
ACCESS_VIOLATION = 0xC0000005


def run(host: KdHost, target: KdTarget, connected: bool = True, rounds: int = 500) -> list[KdEvent]:
    """Shuttle bytes until both ends are quiet. Silence is a timed-out wait for the target in its debugger.

    With ``connected=False`` nobody listens: what the target sends is lost (QEMU's socket chardev
    discards it) and every wait of the target ends in a timeout.
    """
    events: list[KdEvent] = []
    now = 0.0
    for _ in range(rounds):
        data = target.take()
        if data and connected:
            out = host.receive(data, now)
            events += out.events
            target.receive(out.send)
            continue
        if target.idle:
            break
        now += 2.0
        reply = host.idle(now).send if connected else b""
        if reply:
            target.receive(reply)
        else:
            target.timeout()
    return events


def lines(events: list[KdEvent]) -> list[str]:
    return [event.text for event in events if isinstance(event, KdLine)]


def packet_ids(wire: bytes) -> list[int]:
    framer = kd.Framer()
    return [item.id for item in framer.feed(wire) if isinstance(item, kd.Packet) and not item.is_control]


def gave_up(target: KdTarget) -> None:
    """Nobody listens while the target prints its first line: it gives up on the debugger."""
    target.print("line 0\n")
    run(KdHost(), target, connected=False)
    assert not target.present


def test_the_target_gives_up_after_20_unanswered_tries_and_then_drops_prints() -> None:
    target = KdTarget()
    target.print("first\n")
    sent = target.take()
    for _ in range(DEFAULT_RETRIES - 1):
        target.timeout()
        sent += target.take()
        assert target.present
    target.timeout()
    # 20 tries in all, every one with the first packet's SYNC-bit id (it was never ACKed).
    assert packet_ids(sent) == [kd.INITIAL_ID | kd.SYNC_BIT] * DEFAULT_RETRIES
    assert not target.present and target.idle and target.log.gave_up == 1
    # From now on prints and module loads are not sent at all (nothing is queued for later).
    target.print("second\n")
    target.load_module("\\SystemRoot\\system32\\drivers\\receiver.sys", 0xFFFFF80000400000, 0x6000)
    assert target.take() == b"" and target.idle
    assert target.log.dropped == ["first\n", "second\n"] and target.log.skipped_modules == 1


def test_a_stop_is_never_given_up() -> None:
    target = KdTarget()
    gave_up(target)
    target.exception(BREAKPOINT)
    for _ in range(3 * DEFAULT_RETRIES):
        assert target.take() != b""  # sent again after every timeout, forever
        target.timeout()
    assert not target.idle


def test_a_host_that_attaches_late_gets_every_line_printed_after_the_attach() -> None:
    target = KdTarget()
    gave_up(target)
    for number in range(1, 5):
        target.print(f"line {number}\n")  # nobody there: dropped
    host = KdHost()
    attach = host.attached()
    assert attach.send == bytes([kd.BREAKIN_BYTE]) and any(isinstance(event, KdAttach) for event in attach.events)
    target.receive(attach.send)
    assert target.poll()  # the next clock tick reads the break-in byte
    for number in range(5, 25):
        target.print(f"line {number}\n")
    events = run(host, target)
    assert lines(events) == [f"line {number}" for number in range(5, 25)]
    stops = [event for event in events if isinstance(event, KdStateChange)]
    assert [(stop.code, stop.status) for stop in stops] == [(BREAKPOINT, kd.DBG_CONTINUE)]
    assert target.present and target.log.breakins == 1 and target.idle


def test_without_a_break_in_a_late_host_gets_nothing() -> None:
    """What the harness did before: connect, and wait for packets that never come."""
    target = KdTarget()
    gave_up(target)
    host = KdHost()
    for number in range(1, 21):
        target.print(f"line {number}\n")
        target.poll()
    assert lines(run(host, target)) == [] and not target.present


def test_bytes_other_than_the_break_in_byte_are_thrown_away_by_the_poll() -> None:
    target = KdTarget()
    gave_up(target)
    target.receive(kd.encode_control(kd.TYPE_RESET))  # a RESET means nothing to a kernel that is running
    for _ in range(kd.HEADER_SIZE):
        assert not target.poll()
    assert target.log.discarded == kd.HEADER_SIZE and not target.present and target.idle


def test_a_break_in_byte_during_the_ack_wait_breaks_in_after_the_print() -> None:
    target, host = KdTarget(), KdHost()
    target.print("x\n")
    first = target.take()
    target.receive(bytes([kd.BREAKIN_BYTE]))
    target.timeout()  # silence after the 0x62: the packet is sent again, and a break-in is pending
    assert packet_ids(target.take()) == packet_ids(first) and target.log.timeouts == 0
    events = run(host, target)
    assert lines(events) == ["x"]
    assert target.log.breakins == 1 and [stop.code for stop in events if isinstance(stop, KdStateChange)] == [BREAKPOINT]


def test_a_break_in_byte_followed_by_a_packet_leader_is_forgotten() -> None:
    target, host = KdTarget(), KdHost()
    target.print("x\n")
    out = host.receive(target.take())
    target.receive(bytes([kd.BREAKIN_BYTE]) + out.send)
    assert target.idle and target.log.breakins == 0


def test_the_first_packet_keeps_its_sync_id_until_acked_and_the_next_has_none() -> None:
    target, host = KdTarget(), KdHost()
    target.print("one\n")
    target.print("two\n")
    first = target.take()
    target.timeout()
    again = target.take()
    assert packet_ids(first) == packet_ids(again) == [kd.INITIAL_ID | kd.SYNC_BIT]
    target.receive(host.receive(again).send)
    assert packet_ids(target.take()) == [kd.INITIAL_ID ^ 1]


def test_a_data_packet_while_the_target_waits_for_an_ack_is_answered_with_resend() -> None:
    target = KdTarget()
    target.print("one\n")
    target.take()
    target.receive(kd.encode_data(kd.TYPE_STATE_MANIPULATE, kd.INITIAL_ID, kd.encode_continue2(0, 0, kd.DBG_CONTINUE)))
    assert target.take() == kd.encode_control(kd.TYPE_RESEND)
    # kddll then takes its own packet as delivered (it flips its id and returns "received").
    assert target.idle and target.log.resends_sent == 1
    target.print("two\n")
    assert packet_ids(target.take()) == [kd.INITIAL_ID ^ 1]


@pytest.mark.parametrize(
    ("code", "first_chance", "status"),
    [
        (BREAKPOINT, True, kd.DBG_CONTINUE),
        (SINGLE_STEP, True, kd.DBG_CONTINUE),
        (ACCESS_VIOLATION, True, kd.DBG_EXCEPTION_NOT_HANDLED),
        (ACCESS_VIOLATION, False, kd.DBG_EXCEPTION_NOT_HANDLED),
        (0xC0000420, True, kd.DBG_EXCEPTION_NOT_HANDLED),  # STATUS_ASSERTION_FAILURE
    ],
)
def test_each_kind_of_stop_gets_its_continue_status(code: int, first_chance: bool, status: int) -> None:
    host, target = KdHost(), KdTarget()
    target.exception(code, first_chance=first_chance)
    events = run(host, target)
    assert target.log.statuses == [status]
    assert [stop.status for stop in events if isinstance(stop, KdStateChange)] == [status]


def test_module_loads_and_the_bugcheck_breaks_are_continued() -> None:
    host, target = KdHost(), KdTarget()
    target.load_module("\\SystemRoot\\system32\\drivers\\receiver.sys", 0xFFFFF80000400000, 0x6000)
    target.bugcheck(0xD1, (0x10, 2, 0, 0xFFFFF80000401020))
    target.exception(BREAKPOINT)  # the second bugcheck break, after the dump
    run(host, target)
    assert target.log.statuses == [kd.DBG_CONTINUE] * 3


def test_a_kernel_fault_ends_in_a_bugcheck_instead_of_running_again() -> None:
    """An access violation nobody handles reaches the debugger as a second-chance exception; "not
    handled" lets KiDispatchException bugcheck with KMODE_EXCEPTION_NOT_HANDLED (0x1E)."""
    host, target = KdHost(), KdTarget()
    target.fault(ACCESS_VIOLATION, 0xFFFFF80000401020)
    events = run(host, target)
    assert target.log.refaults == 0
    bugchecks = [event for event in events if isinstance(event, KdBugcheck)]
    assert [(b.code, b.parameters[:2]) for b in bugchecks] == [(0x1E, (ACCESS_VIOLATION, 0xFFFFF80000401020))]


def test_continue2_says_the_symbol_range_is_unchanged_at_the_amd64_offsets() -> None:
    host, target = KdHost(), KdTarget()
    target.exception(BREAKPOINT)
    run(host, target)
    (continued,) = target.log.continues
    assert continued.api == kd.API_CONTINUE2 and continued.symbol_start == 1
    assert continued.trace_flag == 0 and continued.dr7 == 0
    payload = kd.encode_continue2(0, 0, kd.DBG_CONTINUE)
    # DBGKD_MANIPULATE_STATE64 with DBGKD_CONTINUE2 (4-byte packing) and AMD64_DBGKD_CONTROL_SET
    assert len(payload) == kd.MANIPULATE_SIZE
    assert struct.unpack_from("<IHHI", payload) == (kd.API_CONTINUE2, 0, 0, 0)
    assert struct.unpack_from("<IIQQQ", payload, 16) == (kd.DBG_CONTINUE, 0, 0, 1, 0)


def test_a_target_that_restarts_under_an_attached_host_is_continued() -> None:
    """A reboot (Driver Verifier, a crash with automatic restart) under the same connection: the new
    kernel numbers its packets from the start again (SYNC bit) and expects the host's from INITIAL."""
    host, target = KdHost(), KdTarget()
    target.exception(BREAKPOINT)
    target.print("before\n")
    run(host, target)
    rebooted = KdTarget()
    rebooted.load_module("\\SystemRoot\\system32\\ntoskrnl.exe", 0xFFFFF80000000000, 0x800000)
    rebooted.print("after\n")
    events = run(host, rebooted)
    assert rebooted.log.statuses == [kd.DBG_CONTINUE] and rebooted.idle
    assert lines(events) == ["after"]


def test_a_lost_break_in_is_sent_again_after_a_silence_until_the_target_talks() -> None:
    """The break-in byte of an attach can be lost (QEMU still restoring a saved state, a port initialisation)."""
    target = KdTarget()
    gave_up(target)
    host = KdHost()
    host.attached(now=0.0)  # this byte never reaches the kernel
    sent = []
    for tick in range(1, 9):
        reply = host.idle(tick * 1.0).send
        sent.append(reply)
        target.receive(reply)
        target.poll()
        if not target.idle:
            break
    assert sent == [b"", bytes([kd.BREAKIN_BYTE])]  # after BREAKIN_RETRY seconds of silence
    target.print("back\n")
    assert lines(run(host, target)) == ["back"] and target.log.breakins == 1
    assert host.idle(100.0).send == b""  # the target talked: no more break-ins


def test_break_ins_of_an_attach_are_limited() -> None:
    host = KdHost()
    host.attached(now=0.0)
    resent = [host.idle(second * 1.0).send for second in range(1, 40)]
    assert resent.count(bytes([kd.BREAKIN_BYTE])) == BREAKIN_TRIES - 1
