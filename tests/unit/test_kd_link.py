"""The KD host against the KD target emulator, including every misbehaviour the emulator has."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from harness.kd import packets as kd
from harness.kd.emulator import KdTarget
from harness.kd.session import KdBugcheck, KdEvent, KdHost, KdLine, KdModule, KdNotice, KdStateChange

SEED = ["[sysTest] send.\n", "[sysRecv1]:get notify ulType:(1)\tulValue:(hello)\n"]


def pump(host: KdHost, target: KdTarget, wire: Callable[[bytes], bytes] = lambda data: data, rounds: int = 200) -> list[KdEvent]:
    """Shuttle bytes both ways until both ends are quiet; the target times out when the host says nothing."""
    events: list[KdEvent] = []
    now = 0.0
    for _ in range(rounds):
        data = target.take()
        if not data and target.idle:
            break
        if not data:
            now += 2.0
            out = host.idle(now)
            events += out.events
            if out.send:
                target.receive(out.send)
            else:
                target.timeout()
            continue
        out = host.receive(wire(data), now)
        events += out.events
        target.receive(out.send)
    return events


def lines(events: list[KdEvent]) -> list[str]:
    return [event.text for event in events if isinstance(event, KdLine)]


def test_prints_become_lines_with_tabs_kept() -> None:
    host, target = KdHost(), KdTarget()
    for text in SEED:
        target.print(text)
    assert lines(pump(host, target)) == [text.rstrip("\n") for text in SEED]
    assert target.log.acks == 2 and host.stats["duplicates"] == 0


def test_first_packet_with_sync_bit_is_adopted_and_acked_without_it() -> None:
    host, target = KdHost(), KdTarget(sync_first=True)
    target.print("x\n")
    wire = target.take()
    assert kd.HEADER.unpack_from(wire)[3] == kd.INITIAL_ID | kd.SYNC_BIT
    out = host.receive(wire)
    assert out.send == kd.encode_control(kd.TYPE_ACKNOWLEDGE, kd.INITIAL_ID)


def test_a_line_split_over_prints_is_reassembled_per_processor() -> None:
    host, target = KdHost(), KdTarget()
    target.print("[sysRecv1]:get ", processor=0)
    target.print("[other cpu] ", processor=1)
    target.print("notify\n", processor=0)
    target.print("line\nsecond\n", processor=1)
    assert lines(pump(host, target)) == ["[sysRecv1]:get notify", "[other cpu] line", "second"]


def test_a_partial_line_is_kept_until_the_end() -> None:
    host, target = KdHost(), KdTarget()
    target.print("no newline")
    assert lines(pump(host, target)) == []
    assert lines(host.close().events) == ["no newline"]


def test_duplicate_packets_are_acked_and_dropped() -> None:
    host, target = KdHost(), KdTarget()
    target.duplicate_next = True
    target.print("once\n")
    target.print("twice\n")
    assert lines(pump(host, target)) == ["once", "twice"]
    assert host.stats["duplicates"] == 1


def test_a_damaged_packet_is_resent_on_request() -> None:
    host, target = KdHost(), KdTarget()
    target.corrupt_next = True
    target.print("first\n")
    target.print("second\n")
    assert lines(pump(host, target)) == ["first", "second"]
    assert host.stats["resends_asked"] == 1 and target.log.resends_received == 1


def test_garbage_between_packets_is_skipped() -> None:
    host, target = KdHost(), KdTarget()
    target.garbage(b"\x00\xffboot noise 000 iii 0000\r\n")
    target.print("after noise\n")
    target.garbage(b"0000\x03\x00")  # a torn header
    target.print("still here\n")
    assert lines(pump(host, target)) == ["after noise", "still here"]


def test_lost_ack_means_a_resent_packet_which_is_not_repeated() -> None:
    host, target = KdHost(), KdTarget()
    target.print("one\n")
    out = host.receive(target.take())  # its ACK (out.send) never reaches the target
    target.timeout()  # so it sends the same packet again
    events = host.receive(target.take()).events
    assert lines(out.events) == ["one"] and lines(events) == []
    assert host.stats["duplicates"] == 1


def test_breakpoint_is_continued_after_resynchronising() -> None:
    host, target = KdHost(), KdTarget()
    target.print("before\n")
    target.exception(0x80000003, address=0xFFFFF80012345678)
    target.print("after\n")
    events = pump(host, target)
    stops = [event for event in events if isinstance(event, KdStateChange)]
    assert len(stops) == 1 and stops[0].code == 0x80000003 and stops[0].address == 0xFFFFF80012345678
    assert target.log.statuses == [kd.DBG_CONTINUE]
    assert target.log.resets_received == 1
    assert lines(events) == ["before", "after"]


def test_module_load_is_reported_with_its_path_and_continued() -> None:
    host, target = KdHost(), KdTarget()
    target.load_module("\\SystemRoot\\system32\\drivers\\receiver.sys", base=0xFFFFF80000400000, size=0x6000)
    target.load_module("\\SystemRoot\\system32\\drivers\\receiver.sys", base=0xFFFFF80000400000, size=0x6000, unload=True)
    events = pump(host, target)
    modules = [event for event in events if isinstance(event, KdModule)]
    assert [(m.path, m.base, m.size, m.unload) for m in modules] == [
        ("\\SystemRoot\\system32\\drivers\\receiver.sys", 0xFFFFF80000400000, 0x6000, False),
        ("\\SystemRoot\\system32\\drivers\\receiver.sys", 0xFFFFF80000400000, 0x6000, True),
    ]
    assert target.log.statuses == [kd.DBG_CONTINUE, kd.DBG_CONTINUE]


def test_bugcheck_sequence_gives_code_parameters_and_is_continued() -> None:
    host, target = KdHost(), KdTarget()
    target.print("[sysRecv1] last words\n")
    target.bugcheck(0x7E, (0xFFFFFFFFC0000005, 0xFFFFF80000401020, 0xFFFF8000AAAA0000, 0xFFFF8000BBBB0000))
    target.exception(0x80000003)  # the second break after the dump
    events = pump(host, target)
    bugchecks = [event for event in events if isinstance(event, KdBugcheck)]
    assert bugchecks == [KdBugcheck(0x7E, (0xFFFFFFFFC0000005, 0xFFFFF80000401020, 0xFFFF8000AAAA0000, 0xFFFF8000BBBB0000))]
    assert len(target.log.statuses) == 2
    assert "*** Fatal System Error: 0x0000007e" in lines(events)


def test_prompt_is_answered() -> None:
    host, target = KdHost(prompt_reply="i"), KdTarget()
    target.prompt("Break, Ignore, Terminate Process or Terminate Thread (bipt)? ")
    target.print("went on\n")
    events = pump(host, target)
    assert target.log.prompt_replies == ["i"]
    assert any(isinstance(event, KdNotice) and "answered 'i'" in event.text for event in events)
    assert lines(events) == ["Break, Ignore, Terminate Process or Terminate Thread (bipt)? i", "went on"]


def test_file_request_is_refused_so_the_target_goes_on() -> None:
    host, target = KdHost(), KdTarget()
    target.file_request("\\SystemRoot\\system32\\drivers\\receiver.sys")
    target.print("went on\n")
    events = pump(host, target)
    assert target.log.file_replies == [kd.STATUS_NO_SUCH_FILE]
    assert lines(events) == ["went on"]


def test_a_reset_from_the_target_mid_stream() -> None:
    host, target = KdHost(), KdTarget()
    target.print("one\n")
    target.print("two\n")
    host.receive(target.take())  # "one" arrives, its ACK is lost
    target.reset()
    target.print("three\n")
    events = pump(host, target)
    # Nothing is lost. "one" comes twice: its ACK was lost, and after a reset the ids start over,
    # so the protocol gives the host no way to tell its resend from a new packet.
    assert lines(events) == ["one", "one", "two", "three"]
    assert host.stats["resets"] == 2  # the target's reset, and its answer to ours
    assert target.idle


def test_a_reconnect_resynchronises_before_the_next_continue() -> None:
    host, target = KdHost(), KdTarget()
    target.exception()
    pump(host, target)
    target.receive(host.attached().send)  # the break-in byte waits in the UART for the running kernel's next poll
    target.exception()
    pump(host, target)
    assert target.log.statuses == [kd.DBG_CONTINUE, kd.DBG_CONTINUE]
    assert target.log.resets_received == 2


@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_bytes_arriving_in_small_pieces(chunk: int) -> None:
    target = KdTarget()
    for text in SEED * 3:
        target.print(text)
    host = KdHost()
    events: list[KdEvent] = []
    while not target.idle:
        data = target.take()
        for start in range(0, len(data), chunk):
            out = host.receive(data[start : start + chunk])
            events += out.events
            target.receive(out.send)
    assert lines(events) == [text.rstrip("\n") for text in SEED * 3]
