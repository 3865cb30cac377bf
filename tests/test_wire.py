"""The wire format as data: header layout, sizes, byte order, checksum rule."""

from __future__ import annotations

import struct

import pytest

from binif import (
    DATAGRAM,
    DATAGRAM_BIG_ENDIAN,
    BadChecksum,
    BadMarker,
    PacketReader,
    PacketTooLong,
    PacketTooShort,
    PacketWriter,
    WireFormat,
)
from binif.crc import opensips_crc32
from binif.wire import CHECKSUM, MARKER


def test_datagram_profile_is_described_by_data() -> None:
    assert DATAGRAM.marker == b"P4CK"
    assert DATAGRAM.header_size == 8
    assert DATAGRAM.length.size == 4
    assert DATAGRAM.byte_order == "little"
    assert DATAGRAM.checksum is opensips_crc32
    assert (DATAGRAM.min_packet, DATAGRAM.max_packet) == (18, 65535)


def test_frame_puts_marker_and_body_crc_before_the_body() -> None:
    body = b"\x02\x00\x00\x00ul\x01\x00\x00\x00"
    packet = DATAGRAM.frame(body)
    assert packet == b"P4CK" + struct.pack("<I", opensips_crc32(body)) + body
    DATAGRAM.check_frame(packet)


def test_checks_run_in_opensips_order() -> None:
    """Length first (a short packet with a bad marker is 'too short'), then marker, then CRC."""
    with pytest.raises(PacketTooShort):
        DATAGRAM.check_frame(b"XXXX" + bytes(13))
    with pytest.raises(BadMarker):
        DATAGRAM.check_frame(b"XXXX" + bytes(14))
    with pytest.raises(BadChecksum):
        DATAGRAM.check_frame(b"P4CK" + bytes(14))
    with pytest.raises(PacketTooLong):
        DATAGRAM.check_frame(b"P4CK" + bytes(65532))


def test_big_endian_round_trip_and_layout() -> None:
    writer = PacketWriter("dialog", 2, wire=DATAGRAM_BIG_ENDIAN).pack("si", b"abc", -2)
    packet = writer.to_bytes()
    body = packet[8:]
    assert packet[4:8] == struct.pack(">I", opensips_crc32(body))
    assert body == b"\x00\x00\x00\x06dialog\x00\x00\x00\x02\x00\x00\x00\x03abc\xff\xff\xff\xfe"
    reader = PacketReader.parse(packet, wire=DATAGRAM_BIG_ENDIAN)
    assert (reader.module, reader.command) == ("dialog", 2)
    assert reader.unpack("si", exact=True) == (b"abc", -2)
    # The same packet read with the wrong byte order fails its checksum.
    with pytest.raises(BadChecksum):
        PacketReader.parse(packet)


def test_with_byte_order_and_bad_order() -> None:
    assert DATAGRAM.with_byte_order("big").byte_order == "big"
    assert DATAGRAM_BIG_ENDIAN.int32.format == ">i"
    with pytest.raises(ValueError, match="byte_order"):
        DATAGRAM.with_byte_order("middle")  # type: ignore[arg-type]


def test_a_format_is_its_header_fields() -> None:
    """A profile with only a marker: the same codec, another format object."""
    plain = WireFormat(
        name="test-marker-only",
        marker=b"P4CK",
        header_fields=((MARKER, "4s"),),
        length_code="i",
        checksum=None,
        min_packet=14,
        max_packet=65535,
    )
    packet = PacketWriter("dialog", 1, wire=plain).push_int(5).to_bytes()
    assert packet == b"P4CK\x06\x00\x00\x00dialog\x01\x00\x00\x00\x05\x00\x00\x00"
    assert PacketReader.parse(packet, wire=plain).unpack("i") == (5,)
    assert PacketReader.parse(packet, wire=plain).version is None


def test_a_header_must_start_with_the_marker_and_match_its_checksum() -> None:
    with pytest.raises(ValueError, match="starts with the marker"):
        WireFormat("x", b"P4CK", ((CHECKSUM, "I"), (MARKER, "4s")), "i", opensips_crc32, 18, 99)
    with pytest.raises(ValueError, match="checksum function"):
        WireFormat("x", b"P4CK", ((MARKER, "4s"), (CHECKSUM, "I")), "i", None, 18, 99)
    with pytest.raises(ValueError, match="checksum function"):
        WireFormat("x", b"P4CK", ((MARKER, "4s"),), "i", opensips_crc32, 18, 99)


def test_a_datagram_is_not_delimited_by_a_header() -> None:
    with pytest.raises(ValueError, match="no total length"):
        DATAGRAM.packet_length(bytes(DATAGRAM.header_size))
