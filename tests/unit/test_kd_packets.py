"""KD framing: encoding, checks, and robustness against garbage (property-based)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.kd import packets as kd
from harness.kd.session import KdHost


def test_data_packet_round_trip() -> None:
    wire = kd.encode_data(kd.TYPE_DEBUG_IO, 0x80800001, b"hello")
    assert wire[:4] == b"0000" and wire[-1] == 0xAA and len(wire) == 16 + 5 + 1
    assert kd.HEADER.unpack_from(wire) == (kd.DATA_LEADER, 3, 5, 0x80800001, sum(b"hello"))
    assert kd.Framer().feed(wire) == [kd.Packet(kd.DATA_LEADER, 3, 0x80800001, b"hello")]


def test_control_packet_round_trip() -> None:
    wire = kd.encode_control(kd.TYPE_ACKNOWLEDGE, 0x80800000)
    assert wire == b"iiii\x04\x00\x00\x00\x00\x00\x80\x80\x00\x00\x00\x00"
    assert kd.Framer().feed(wire) == [kd.Packet(kd.CONTROL_LEADER, 4, 0x80800000)]


def test_checksum_is_a_plain_byte_sum() -> None:
    assert kd.checksum(b"\xff" * 10) == 2550
    assert kd.checksum(b"") == 0


def test_bad_checksum_and_missing_trailer_are_damaged() -> None:
    wire = bytearray(kd.encode_data(3, 1, b"abc"))
    wire[17] ^= 1
    assert kd.Framer().feed(bytes(wire)) == [kd.Damaged("bad checksum", 3, 1)]
    wire = bytearray(kd.encode_data(3, 1, b"abc"))
    wire[-1] = 0
    assert kd.Framer().feed(bytes(wire)) == [kd.Damaged("missing 0xAA trailer", 3, 1)]


def test_implausible_headers_are_skipped_not_reported() -> None:
    too_long = kd.HEADER.pack(kd.DATA_LEADER, 3, 4001, 1, 0)
    bad_type = kd.HEADER.pack(kd.DATA_LEADER, 12, 0, 1, 0) + b"\xaa"
    good = kd.encode_data(3, 2, b"ok")
    assert kd.Framer().feed(too_long + bad_type + good) == [kd.Packet(kd.DATA_LEADER, 3, 2, b"ok")]


def test_oversized_payload_cannot_be_encoded() -> None:
    try:
        kd.encode_data(3, 1, bytes(4001))
    except ValueError:
        return
    raise AssertionError("expected ValueError")


def test_a_header_claiming_a_long_payload_gives_way_on_flush() -> None:
    framer = kd.Framer()
    fake = kd.HEADER.pack(kd.DATA_LEADER, 3, 3000, 1, 0)  # garbage that looks like the start of a long packet
    good = kd.encode_data(3, 2, b"behind it")
    assert framer.feed(fake + good) == []
    assert framer.flush() == [kd.Packet(kd.DATA_LEADER, 3, 2, b"behind it")]


packets_st = st.lists(
    st.builds(
        lambda kind, ident, payload: kd.Packet(kd.DATA_LEADER, kind, ident, payload),
        st.sampled_from([2, 3, 7, 9, 10, 11]),
        st.integers(0, 0xFFFFFFFF),
        st.binary(max_size=300),
    )
    | st.builds(
        lambda kind, ident: kd.Packet(kd.CONTROL_LEADER, kind, ident), st.sampled_from(kd.CONTROL_TYPES), st.integers(0, 0xFFFFFFFF)
    ),
    min_size=1,
    max_size=8,
)
garbage_st = st.binary(max_size=200) | st.lists(
    st.sampled_from([b"0", b"i", b"0000", b"iiii", b"\xaa", b"\x03\x00", b"b"]), max_size=40
).map(b"".join)


def decode_all(stream: bytes, chunks: list[int]) -> list[kd.Packet | kd.Damaged]:
    framer = kd.Framer()
    out: list[kd.Packet | kd.Damaged] = []
    position = 0
    for size in chunks:
        out += framer.feed(stream[position : position + size])
        position += size
    out += framer.feed(stream[position:])
    out += framer.flush()
    return out


def is_subsequence(wanted: list[kd.Packet], got: list[kd.Packet | kd.Damaged]) -> bool:
    iterator = iter(got)
    return all(any(item == packet for item in iterator) for packet in wanted)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(garbage=garbage_st, packets=packets_st, between=st.lists(garbage_st, max_size=8), chunks=st.lists(st.integers(1, 64), max_size=30))
def test_every_valid_packet_after_garbage_is_decoded(
    garbage: bytes, packets: list[kd.Packet], between: list[bytes], chunks: list[int]
) -> None:
    stream = garbage
    for index, packet in enumerate(packets):
        stream += kd.encode(packet) + (between[index] if index < len(between) else b"")
    assert is_subsequence(packets, decode_all(stream, chunks))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(packets=packets_st, flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=6))
def test_corruption_loses_only_the_corrupted_packets(packets: list[kd.Packet], flips: list[tuple[int, int]]) -> None:
    wires = [kd.encode(packet) for packet in packets]
    stream = bytearray(b"".join(wires))
    touched: set[int] = set()
    for position, mask in flips:
        position %= len(stream)
        stream[position] ^= mask
        offset = 0
        for index, wire in enumerate(wires):
            if offset <= position < offset + len(wire):
                touched.add(index)
            offset += len(wire)
    untouched = [packet for index, packet in enumerate(packets) if index not in touched]
    assert is_subsequence(untouched, decode_all(bytes(stream), []))


@settings(max_examples=300)
@given(
    data=st.lists(
        st.binary(max_size=100) | st.sampled_from([b"0000", b"iiii", kd.encode_control(6), kd.encode_data(7, 0, bytes(30))]), max_size=30
    )
)
def test_the_host_survives_any_byte_stream(data: list[bytes]) -> None:
    host = KdHost()
    for now, chunk in enumerate(data):
        host.receive(chunk, float(now))
        host.idle(float(now))
    host.close()
