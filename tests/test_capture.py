"""Reading BIN packets out of captures: the real OpenSIPS 4.0 ones, and ones cut at will."""

from __future__ import annotations

import json
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pcaps import TcpFlow, pcap_bytes, split, udp_frame

from binif.capture import Boundary, CapturedPacket, read_capture
from binif.errors import BadCapture, BadMarker, PacketTooLong, StreamGap

VECTORS = Path(__file__).parent / "vectors"
V40 = VECTORS / "opensips-4.0"
VUL = VECTORS / "opensips-4.0-usrloc"
MANIFEST40: dict[str, Any] = json.loads((V40 / "manifest.json").read_text())
MANIFEST_UL: dict[str, Any] = json.loads((VUL / "manifest.json").read_text())
DATAGRAM_VECTOR = (VECTORS / "opensips-2.1" / "dialog-deleted-1.bin").read_bytes()
STREAM_VECTORS = [(V40 / e["file"]).read_bytes() for e in MANIFEST40["packets"]]
NODE1 = ("127.0.0.1", 5555)


def found(packets: list[CapturedPacket]) -> list[bytes]:
    assert all(p.error is None for p in packets), [p.error for p in packets if p.error]
    return [p.data for p in packets]


def packets_of(frames: list[bytes]) -> list[CapturedPacket]:
    return list(read_capture(pcap_bytes(frames)).packets())


def kinds(packets: list[CapturedPacket]) -> Counter[tuple[str, int]]:
    return Counter((p.reader.module, p.reader.command) for p in packets if p.reader)


# --- the captures of real OpenSIPS 4.0.1 nodes ------------------------------------------


def test_every_packet_of_the_opensips40_capture() -> None:
    capture = read_capture((V40 / "capture.pcap").read_bytes())
    packets = list(capture.packets())
    assert capture.frames == 253 and capture.skipped == {}
    assert all(p.error is None and p.transport == "tcp" for p in packets)
    # As many of each kind as the manifest counted in the capture.
    kind_of = {}
    for entry in MANIFEST40["packets"]:
        name = entry["file"].removeprefix("join-").rsplit("-", 1)[0]
        kind_of[name] = (entry["capability"], entry["packet_type"])
    seen = MANIFEST40["packets_seen_in_captures"]["baseline"]
    assert kinds(packets) == Counter({kind_of[name]: count for name, count in seen.items()})
    assert len(packets) == 113
    # Each vector is there, byte for byte, in its frame, between the manifest's ports.
    by_frame: dict[int, list[CapturedPacket]] = {}
    for packet in packets:
        by_frame.setdefault(packet.frame, []).append(packet)
    for entry in MANIFEST40["packets"]:
        if entry["scenario"] != "baseline":
            continue
        (packet,) = by_frame[entry["frame"]]
        assert packet.data == (V40 / entry["file"]).read_bytes(), entry["file"]
        assert packet.src[1] == entry["tcp_src_port"] and packet.dst[1] == entry["tcp_dst_port"]
        assert packet.time == pytest.approx(entry["time_epoch"], abs=1e-5)
        assert packet.reader is not None and packet.reader.version == entry["version"]


@pytest.mark.parametrize(
    ("pcap", "scenario"),
    [("capture.pcap", "usrloc-full-sharing"), ("capture-dialog-profiles.pcap", "dialog-profiles")],
)
def test_every_usrloc_and_profile_vector_is_in_its_capture(pcap: str, scenario: str) -> None:
    packets = list(read_capture((VUL / pcap).read_bytes()).packets())
    data = found(packets)
    entries = [e for e in MANIFEST_UL["packets"] if e["scenario"] == scenario]
    for entry in entries:
        assert (VUL / entry["file"]).read_bytes() in data, entry["file"]
    if scenario == "dialog-profiles":
        copies = sum(e["identical_copies_in_capture"] for e in entries)
        assert kinds(packets)[("dialog-prof-repl", 4)] == copies == 98
    else:
        # Every usrloc packet of the capture is a vector (the held-out frames were cut out,
        # so the stream jumps there: packet boundaries, nothing lost, nothing reported).
        usrloc = Counter(
            (e["capability"], e["packet_type"])
            for e in entries
            if e["capability"] == "usrloc-contact-repl"
        )
        assert {k: n for k, n in kinds(packets).items() if k[0] == "usrloc-contact-repl"} == usrloc


# --- TCP streams rebuilt from segments ----------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 700), min_size=1, max_size=30))
def test_a_stream_cut_anywhere_yields_every_packet(sizes: list[int]) -> None:
    stream = b"".join(STREAM_VECTORS)
    client = TcpFlow(("127.0.0.1", 40000), NODE1)
    frames = [client.syn(), *(client.send(piece) for piece in split(stream, sizes))]
    assert found(packets_of(frames)) == STREAM_VECTORS


def test_directions_and_connections_are_kept_apart() -> None:
    a, b = STREAM_VECTORS[:40], STREAM_VECTORS[40:]
    one = TcpFlow(("127.0.0.1", 40000), NODE1)
    two = TcpFlow(("::1", 40001), ("::1", 5556))
    back = TcpFlow(NODE1, ("127.0.0.1", 40000), seq=2**32 - 30)  # wraps around
    frames = [one.syn(), two.syn(), back.syn()]
    pieces_a, pieces_b = split(b"".join(a), [3, 100]), split(b"".join(b), [7, 1000])
    for index in range(max(len(pieces_a), len(pieces_b))):
        if index < len(pieces_a):
            frames += [one.send(pieces_a[index]), back.send(pieces_a[index])]
        if index < len(pieces_b):
            frames.append(two.send(pieces_b[index]))
    packets = packets_of(frames)
    assert found([p for p in packets if p.src == ("127.0.0.1", 40000)]) == a
    assert found([p for p in packets if p.src == NODE1]) == a
    assert found([p for p in packets if p.src == ("::1", 40001)]) == b


def test_retransmitted_bytes_are_read_once() -> None:
    stream = b"".join(STREAM_VECTORS[:5])
    client = TcpFlow(("127.0.0.1", 40000), NODE1)
    frames = [client.syn(), client.send(stream[:100])]
    client.seq -= 60  # resend 60 bytes, with 40 new ones
    frames += [client.send(stream[40:140]), client.send(stream[140:])]
    client.seq -= len(stream) - 140  # the whole tail again: nothing new
    frames.append(client.send(stream[140:]))
    assert found(packets_of(frames)) == STREAM_VECTORS[:5]


def test_a_gap_inside_a_packet_loses_that_packet_only() -> None:
    first, *rest = STREAM_VECTORS[:5]
    cut = next(v for v in STREAM_VECTORS if len(v) > 500)  # a dialog create
    client = TcpFlow(("127.0.0.1", 40000), NODE1)
    frames = [client.syn(), client.send(first + cut[:30])]
    client.seq += 40  # 40 bytes never captured
    frames += [client.send(cut[70:] + b"".join(rest))]
    packets = packets_of(frames)
    assert [p.data for p in packets if p.error is None] == [first, *rest]
    errors = [p.error for p in packets if p.error is not None]
    assert [type(e) for e in errors] == [StreamGap, StreamGap]
    assert "after 30 bytes of a packet" in str(errors[0])
    assert f"skipped {len(cut) - 70} bytes" in str(errors[1])


def test_a_capture_that_starts_mid_connection_finds_the_next_packet() -> None:
    client = TcpFlow(("127.0.0.1", 40000), NODE1)
    client.syn()  # not captured
    frames = [client.send(STREAM_VECTORS[0][10:] + b"".join(STREAM_VECTORS[1:4]))]
    packets = packets_of(frames)
    assert found(packets) == STREAM_VECTORS[1:4]  # an unknown stream: no error for the skip


def test_the_end_of_the_capture_inside_a_packet_is_reported() -> None:
    client = TcpFlow(("127.0.0.1", 40000), NODE1)
    packets = packets_of([client.syn(), client.send(STREAM_VECTORS[0] + STREAM_VECTORS[1][:20])])
    assert [p.data for p in packets if p.error is None] == [STREAM_VECTORS[0]]
    (error,) = [p.error for p in packets if p.error is not None]
    assert isinstance(error, StreamGap) and "20 bytes into a packet" in str(error)


def test_a_refused_stream_stops_until_the_next_connection() -> None:
    """As OpenSIPS closes the connection: the packets before the bad bytes, one error."""
    good = STREAM_VECTORS[0]
    client = TcpFlow(("127.0.0.1", 40000), NODE1)
    oversized = b"P4CK" + struct.pack("<I", 70000) + bytes(20)
    frames = [client.syn(), client.send(good + b"GARBAGE!"), client.send(good), client.fin()]
    again = TcpFlow(("127.0.0.1", 40000), NODE1, seq=5000)
    frames += [again.syn(), again.send(good + oversized), again.send(good)]
    packets = packets_of(frames)
    assert [(p.data, type(p.error)) for p in packets] == [
        (good, type(None)),
        (b"", BadMarker),
        (good, type(None)),
        (b"", PacketTooLong),
    ]


def test_other_traffic_is_skipped_silently() -> None:
    sip = b"REGISTER sip:example.com SIP/2.0\r\n\r\n"
    web = TcpFlow(("127.0.0.1", 40000), ("127.0.0.1", 5060))
    bin_flow = TcpFlow(("127.0.0.1", 40001), NODE1)
    frames = [
        udp_frame(("127.0.0.1", 5061), ("127.0.0.1", 5060), sip),
        web.syn(),
        web.send(sip),
        web.send(b"P4CK...but it is not the start of the stream"),
        bin_flow.syn(),
        bin_flow.send(STREAM_VECTORS[0]),
    ]
    assert found(packets_of(frames)) == [STREAM_VECTORS[0]]


def test_segments_say_where_a_connection_starts_and_where_bytes_are_missing() -> None:
    client = TcpFlow(("127.0.0.1", 40000), NODE1)
    frames = [client.syn(), client.send(b"ab"), client.send(b"cd")]
    client.seq += 5
    frames.append(client.send(b"ef"))
    segments = list(read_capture(pcap_bytes(frames)).segments())
    assert [(s.data, s.boundary) for s in segments] == [
        (b"ab", Boundary.START),
        (b"cd", None),
        (b"ef", Boundary.GAP),
    ]
    assert [s.frame for s in segments] == [2, 3, 4]


# --- UDP datagrams (the datagram profile) ---------------------------------------------------


def test_datagrams_are_read_with_the_datagram_profile() -> None:
    bad = bytearray(DATAGRAM_VECTOR)
    bad[-1] ^= 0xFF  # the CRC no longer matches
    frames = [
        udp_frame(("127.0.0.1", 5061), ("127.0.0.1", 5062), DATAGRAM_VECTOR),
        udp_frame(("::1", 5061), ("::1", 5062), bytes(bad)),
    ]
    good, broken = packets_of(frames)
    assert good.data == DATAGRAM_VECTOR and good.transport == "udp"
    assert good.reader is not None and good.reader.module == "dialog"
    assert good.wire.name == "datagram"
    assert broken.reader is None and type(broken.error).__name__ == "BadChecksum"
    assert broken.data == bytes(bad) and broken.src == ("::1", 5061)


def test_ip_fragments_are_counted_not_read() -> None:
    frame = dpkt.ethernet.Ethernet(udp_frame(("127.0.0.1", 1), ("127.0.0.1", 2), DATAGRAM_VECTOR))
    frame.data.mf = 1
    frame.data.sum = 0
    capture = read_capture(pcap_bytes([bytes(frame)]))
    assert list(capture.packets()) == []
    assert capture.skipped == {"IP fragment": 1}


# --- capture files ---------------------------------------------------------------------


def _pcap(link_type: int, frames: list[bytes]) -> bytes:
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, link_type)
    records = [struct.pack("<IIII", 1, 0, len(f), len(f)) + f for f in frames]
    return head + b"".join(records)


def test_loopback_and_raw_ip_link_types() -> None:
    ip = bytes(dpkt.ethernet.Ethernet(udp_frame(("127.0.0.1", 1), NODE1, DATAGRAM_VECTOR)).data)
    for link, frame in (
        (0, struct.pack("=I", 2) + ip),  # BSD loopback, host order
        (101, ip),  # raw IP
        (228, ip),  # raw IPv4
    ):
        (packet,) = read_capture(_pcap(link, [frame])).packets()
        assert packet.data == DATAGRAM_VECTOR, link


def test_files_that_are_not_captures_are_refused() -> None:
    with pytest.raises(BadCapture, match="not a pcap or pcapng file"):
        read_capture(b"P4CK" + bytes(40))
    with pytest.raises(BadCapture, match="link type 147 is not supported"):
        read_capture(_pcap(147, []))
