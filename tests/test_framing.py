"""StreamDecoder (issue 10 part 2): a BIN stream in any split in, complete packets out.

The real TCP conversation between two OpenSIPS 4.0.1 nodes, per direction, in
one feed, one byte at a time and in random splits, gives exactly the packets
the manifest counts; what OpenSIPS 4.0 refuses is refused with the codec's
precise errors, and a refused stream stays refused.
"""

from __future__ import annotations

import json
import re
import struct
from collections import Counter

import pytest
from capture import tcp_streams
from hypothesis import given, settings
from hypothesis import strategies as st
from vectors import OPENSIPS_40, load

from binif import (
    DATAGRAM,
    STREAM,
    STREAM_BIG_ENDIAN,
    BadMarker,
    BadModuleName,
    BadNameLength,
    PacketReader,
    PacketTooLong,
    PacketTooShort,
    PacketWriter,
    StreamBroken,
    StreamDecoder,
)

STREAMS = tcp_streams()
MANIFEST = json.loads((OPENSIPS_40 / "manifest.json").read_text())
VECTORS = load(OPENSIPS_40, key="packets")


def kind_of(name: str) -> str:
    """``join-clusterer-ping-2.bin`` -> ``clusterer-ping``: the manifest's packet kinds."""
    return re.sub(r"^join-|-\d+\.bin$", "", name)


# (capability, packet type) of each kind of packet, from the vectors of that kind.
KINDS = {(v.entry["capability"], v.entry["packet_type"]): kind_of(v.name) for v in VECTORS}


def decode_all(data: bytes, pieces: list[int] | None = None) -> list[PacketReader]:
    """Feed ``data`` cut after each offset in ``pieces`` (one feed when None)."""
    decoder = StreamDecoder()
    packets = []
    start = 0
    for stop in [*(pieces or []), len(data)]:
        packets += decoder.feed(data[start:stop])
        start = stop
    assert decoder.buffered == 0 and decoder.offset == len(data)
    return packets


def test_the_capture_holds_four_streams_in_two_directions() -> None:
    assert len(STREAMS) == 4
    assert {(src_port, dst_port) for _, src_port, _, dst_port in STREAMS} == {
        (43691, 5555),
        (40957, 5556),
        (47529, 5555),
        (44123, 5556),
    }


def test_the_capture_decodes_to_the_packets_the_manifest_counts() -> None:
    seen: Counter[str] = Counter()
    for data in STREAMS.values():
        for reader in decode_all(data):
            seen[KINDS[reader.module, reader.command]] += 1
    assert seen == Counter(MANIFEST["packets_seen_in_captures"]["baseline"])


def test_every_captured_vector_is_a_packet_of_its_stream() -> None:
    packets = {
        (key[1], reader.data) for key, data in STREAMS.items() for reader in decode_all(data)
    }
    baseline = [v for v in VECTORS if v.entry["scenario"] == "baseline"]
    assert len(baseline) == 49
    for vector in baseline:
        assert (vector.entry["tcp_src_port"], vector.data) in packets, vector.name


@pytest.mark.parametrize("key", sorted(STREAMS), ids=lambda key: f"{key[1]}-{key[3]}")
def test_one_byte_at_a_time_gives_the_same_packets(key: tuple[str, int, str, int]) -> None:
    data = STREAMS[key]
    whole = [reader.data for reader in decode_all(data)]
    assert [reader.data for reader in decode_all(data, list(range(1, len(data))))] == whole


@settings(max_examples=60, deadline=None)
@given(
    key=st.sampled_from(sorted(STREAMS)),
    cuts=st.lists(st.integers(min_value=0, max_value=7000), max_size=40),
)
def test_any_split_gives_the_same_packets(key: tuple[str, int, str, int], cuts: list[int]) -> None:
    data = STREAMS[key]
    pieces = sorted({cut % (len(data) + 1) for cut in cuts})
    readers = decode_all(data, pieces)
    assert [reader.data for reader in readers] == [reader.data for reader in decode_all(data)]
    assert b"".join(reader.data for reader in readers) == data


def test_a_partial_packet_is_kept_until_it_completes() -> None:
    packet = VECTORS[0].data
    decoder = StreamDecoder()
    assert decoder.feed(packet + packet[:5]) != []
    assert (decoder.buffered, decoder.offset) == (5, len(packet))
    assert decoder.feed(packet[5:-1]) == []
    assert decoder.buffered == len(packet) - 1
    (reader,) = decoder.feed(packet[-1:] + packet[:12])
    assert reader.data == packet
    assert (decoder.buffered, decoder.offset) == (12, 2 * len(packet))


def test_a_feed_of_exactly_one_packet_keeps_its_bytes() -> None:
    packet = VECTORS[0].data
    (reader,) = StreamDecoder().feed(packet)
    assert reader.data is packet


def test_bytearray_and_memoryview_feeds() -> None:
    packet = VECTORS[0].data
    decoder = StreamDecoder()
    assert decoder.feed(bytearray(packet[:20])) == []
    (reader,) = decoder.feed(memoryview(packet)[20:])
    assert reader.data == packet


def test_big_endian_streams() -> None:
    packet = PacketWriter("dialog-dlg-repl", 3, wire=STREAM_BIG_ENDIAN, version=4).pack(
        "sssi", "c", "a", "b", 1
    )
    data = packet.to_bytes() * 3
    readers = StreamDecoder(STREAM_BIG_ENDIAN).feed(data)
    assert [r.unpack("sssi", exact=True) for r in readers] == [(b"c", b"a", b"b", 1)] * 3


def test_a_datagram_profile_cannot_frame_a_stream() -> None:
    with pytest.raises(ValueError, match="no total length"):
        StreamDecoder(DATAGRAM)


# --- what OpenSIPS 4.0 refuses ------------------------------------------------------


def header(total: int, marker: bytes = b"P4CK", version: int = 4) -> bytes:
    return marker + struct.pack("<Ih", total, version)


def largest_packet() -> bytes:
    writer = PacketWriter("m", 1, wire=STREAM, version=1)
    packet = writer.push_str(bytes(STREAM.max_packet - writer.size - 2)).to_bytes()
    assert len(packet) == 65515
    return packet


def test_a_65515_byte_packet_passes() -> None:
    packet = largest_packet()
    decoder = StreamDecoder()
    assert decoder.feed(packet[:30000]) == []
    (reader,) = decoder.feed(packet[30000:])
    assert len(reader.data) == 65515


def test_a_65516_byte_length_is_refused_at_the_header() -> None:
    with pytest.raises(PacketTooLong, match=r"65516-byte declared packet .* 65515-byte maximum"):
        StreamDecoder().feed(header(65516))


def test_a_length_under_17_is_refused() -> None:
    with pytest.raises(PacketTooShort, match=r"16-byte declared packet .* 17-byte minimum"):
        StreamDecoder().feed(header(16) + bytes(6))


def test_a_wrong_marker_is_refused_before_its_length() -> None:
    with pytest.raises(BadMarker, match="b'GET '"):
        StreamDecoder().feed(b"GET / HTTP/1.1\r\n")


def test_nothing_is_refused_before_a_whole_header_is_in() -> None:
    decoder = StreamDecoder()
    assert decoder.feed(b"GET / HTT") == []
    with pytest.raises(BadMarker):
        decoder.feed(b"P")


@pytest.mark.parametrize("name_len", [0, 2, 300])
def test_a_capability_length_past_the_packet_is_refused(name_len: int) -> None:
    rest = struct.pack("<H", name_len) + b"m" + struct.pack("<i", 1)
    with pytest.raises(BadNameLength, match=f"module name length {name_len}"):
        StreamDecoder().feed(header(10 + len(rest)) + rest)


def test_a_capability_name_that_is_not_utf8_is_refused() -> None:
    rest = struct.pack("<H", 1) + b"\xff" + struct.pack("<i", 1)
    with pytest.raises(BadModuleName):
        StreamDecoder().feed(header(10 + len(rest)) + rest)


def test_the_refusal_comes_once_the_bad_bytes_are_in_whatever_the_split() -> None:
    good = VECTORS[0].data
    data = good + b"XXXX" + good
    decoder = StreamDecoder()
    packets = []
    with pytest.raises(BadMarker):
        for byte in range(len(data)):
            packets += decoder.feed(data[byte : byte + 1])
    assert byte == len(good) + 9  # the 10th byte of the bad header
    assert [reader.data for reader in packets] == [good]
    assert decoder.offset == len(good)


def test_packets_before_a_refusal_in_the_same_feed_are_returned_first() -> None:
    good = VECTORS[0].data
    decoder = StreamDecoder()
    (reader,) = decoder.feed(good + header(70000))
    assert reader.data == good
    assert isinstance(decoder.error, PacketTooLong)
    assert decoder.offset == len(good)
    with pytest.raises(PacketTooLong, match="70000-byte declared packet"):
        decoder.feed(b"")


def test_a_refused_stream_stays_refused() -> None:
    decoder = StreamDecoder()
    with pytest.raises(BadMarker):
        decoder.feed(b"XXXXXXXXXXXX")
    for data in (VECTORS[0].data, b""):
        with pytest.raises(StreamBroken, match=r"refused at byte offset 0 \(BadMarker") as caught:
            decoder.feed(data)
        assert isinstance(caught.value.__cause__, BadMarker)
    assert "broken" in repr(decoder)


@settings(max_examples=60, deadline=None)
@given(
    bodies=st.lists(st.binary(max_size=3000), min_size=1, max_size=12),
    big=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=40000), max_size=30),
)
def test_built_packets_come_back_whole_in_any_split(
    bodies: list[bytes], big: bool, cuts: list[int]
) -> None:
    """Packets of any size, in either byte order, cut anywhere: the same packets in order."""
    wire = STREAM_BIG_ENDIAN if big else STREAM
    packets = [
        PacketWriter(f"cap-{i}", i, wire=wire, version=i - 3).push_str(body).to_bytes()
        for i, body in enumerate(bodies)
    ]
    data = b"".join(packets)
    decoder = StreamDecoder(wire)
    readers = []
    start = 0
    for stop in [*sorted({cut % (len(data) + 1) for cut in cuts}), len(data)]:
        readers += decoder.feed(data[start:stop])
        start = stop
    assert [reader.data for reader in readers] == packets
    assert [(r.module, r.command, r.version) for r in readers] == [
        (f"cap-{i}", i, i - 3) for i in range(len(bodies))
    ]
    assert [r.unpack("s", exact=True)[0] for r in readers] == bodies
    assert (decoder.offset, decoder.buffered) == (len(data), 0)
