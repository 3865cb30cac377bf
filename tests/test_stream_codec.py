"""The stream profile's codec (WIRE.md part 2): header, version, 2-byte lengths, limits.

``P4CK``, a 4-byte total length, a 2-byte signed version, a 2-byte unsigned
name length, the name, the packet type, then str fields with 2-byte unsigned
lengths and 4-byte ints; no checksum; 17 to 65515 bytes.
"""

from __future__ import annotations

import struct

import pytest

from binif import (
    DATAGRAM,
    STREAM,
    STREAM_BIG_ENDIAN,
    BadMarker,
    BadNameLength,
    FieldTypeError,
    InvalidVersion,
    LengthMismatch,
    PacketReader,
    PacketTooLarge,
    PacketTooLong,
    PacketTooShort,
    PacketWriter,
    StrTooLong,
    TruncatedField,
)


def stream_packet(name: bytes, command: int, body: bytes, version: int = 4) -> bytes:
    """A stream packet laid out by hand, independently of the writer."""
    rest = struct.pack("<H", len(name)) + name + struct.pack("<i", command) + body
    return b"P4CK" + struct.pack("<Ih", 10 + len(rest), version) + rest


def test_writer_lays_out_the_header_and_fields() -> None:
    packet = (
        PacketWriter("dialog-dlg-repl", 3, wire=STREAM, version=4)
        .push_str("call-1")
        .push_int(-7)
        .to_bytes()
    )
    body = b"\x06\x00call-1" + struct.pack("<i", -7)
    assert packet == stream_packet(b"dialog-dlg-repl", 3, body)


def test_reader_exposes_the_version_and_reads_2_byte_lengths() -> None:
    packet = stream_packet(b"clusterer-extra", 12, b"\x03\x00abc" + struct.pack("<i", 9), -2)
    reader = PacketReader.parse(packet, wire=STREAM)
    assert (reader.module, reader.command, reader.version) == ("clusterer-extra", 12, -2)
    assert reader.unpack("si", exact=True) == (b"abc", 9)


def test_the_datagram_profile_has_no_version() -> None:
    packet = PacketWriter("dialog", 3).push_str("x").to_bytes()
    assert PacketReader.parse(packet).version is None
    assert PacketWriter("dialog", 3).version is None


def test_same_head_in_two_versions_reads_each_version() -> None:
    """Readers cache decoded heads: the version is part of what selects one."""
    v4 = PacketWriter("dialog-dlg-repl", 1, wire=STREAM, version=4).push_int(1).to_bytes()
    v5 = PacketWriter("dialog-dlg-repl", 1, wire=STREAM, version=5).push_int(1).to_bytes()
    assert PacketReader.parse(v4, wire=STREAM).version == 4
    assert PacketReader.parse(v5, wire=STREAM).version == 5
    assert PacketReader.parse(v4, wire=STREAM).version == 4


def test_big_endian_stream_round_trip() -> None:
    writer = PacketWriter("ul", 2, wire=STREAM_BIG_ENDIAN, version=3).pack("si", b"ab", 1)
    packet = writer.to_bytes()
    assert packet == b"P4CK" + struct.pack(">Ih", 26, 3) + b"\x00\x02ul" + struct.pack(
        ">i", 2
    ) + b"\x00\x02ab" + struct.pack(">i", 1)
    reader = PacketReader.parse(packet, wire=STREAM_BIG_ENDIAN)
    assert (reader.version, reader.unpack("si", exact=True)) == (3, (b"ab", 1))
    with pytest.raises(PacketTooLong):  # read little-endian, the length is absurd
        PacketReader.parse(packet, wire=STREAM)


# --- the version a writer is given ----------------------------------------------------


def test_the_stream_profile_needs_a_version() -> None:
    with pytest.raises(InvalidVersion, match="carries a version"):
        PacketWriter("dialog-dlg-repl", 1, wire=STREAM)


def test_the_datagram_profile_takes_no_version() -> None:
    with pytest.raises(InvalidVersion, match="carries no version"):
        PacketWriter("dialog", 1, wire=DATAGRAM, version=4)


@pytest.mark.parametrize("version", [-(2**15), 2**15 - 1])
def test_versions_at_the_int16_limits_are_built(version: int) -> None:
    packet = PacketWriter("m", 1, wire=STREAM, version=version).to_bytes()
    assert PacketReader.parse(packet, wire=STREAM).version == version


@pytest.mark.parametrize("version", [-(2**15) - 1, 2**15])
def test_versions_outside_int16_are_refused(version: int) -> None:
    with pytest.raises(InvalidVersion, match="signed 16-bit"):
        PacketWriter("m", 1, wire=STREAM, version=version)


def test_a_version_that_is_no_int_is_a_type_error() -> None:
    with pytest.raises(FieldTypeError, match="version is an int"):
        PacketWriter("m", 1, wire=STREAM, version=4.0)  # type: ignore[arg-type]


# --- sizes ----------------------------------------------------------------------------


def test_a_str_over_65535_bytes_raises_at_the_push() -> None:
    writer = PacketWriter("m", 1, wire=STREAM, version=1)
    with pytest.raises(StrTooLong, match=r"field 0: a 65536-byte str .* 65535 bytes"):
        writer.push_str(bytes(65536))
    with pytest.raises(StrTooLong, match="field 1: a 70000-byte str"):
        writer.pack("is", 1, bytes(70000))


def test_the_largest_packet_is_built_and_parsed_and_one_more_byte_is_refused() -> None:
    writer = PacketWriter("m", 1, wire=STREAM, version=1)
    room = STREAM.max_packet - writer.size - 2
    packet = writer.push_str(bytes(room)).to_bytes()
    assert len(packet) == 65515
    assert PacketReader.parse(packet, wire=STREAM).unpack("s", exact=True) == (bytes(room),)
    with pytest.raises(PacketTooLarge, match="65516 bytes, over the 65515-byte maximum"):
        writer.push_str(bytes(room + 1))
    full = writer.push_str(bytes(room - 4))
    with pytest.raises(PacketTooLarge):
        full.push_int(1).push_int(1)


def test_the_smallest_packet_is_17_bytes() -> None:
    packet = PacketWriter("m", 1, wire=STREAM, version=1).to_bytes()
    assert len(packet) == 17
    assert PacketReader.parse(packet, wire=STREAM).at_end


# --- what a receiver refuses, in OpenSIPS 4.0's order ---------------------------------


def test_a_wrong_marker_is_refused_before_the_length() -> None:
    packet = stream_packet(b"m", 1, b"")
    with pytest.raises(BadMarker, match="b'P4CX'"):
        PacketReader.parse(b"P4CX" + struct.pack("<Ih", 5, 1) + packet[10:], wire=STREAM)


def test_a_declared_length_under_the_minimum_is_refused() -> None:
    with pytest.raises(PacketTooShort, match="16-byte declared packet"):
        STREAM.packet_length(b"P4CK" + struct.pack("<Ih", 16, 1))


def test_a_declared_length_over_the_maximum_is_refused() -> None:
    with pytest.raises(PacketTooLong, match="65516-byte declared packet"):
        STREAM.packet_length(b"P4CK" + struct.pack("<Ih", 65516, 1))
    assert STREAM.packet_length(b"P4CK" + struct.pack("<Ih", 65515, 1)) == 65515


def test_fewer_bytes_than_a_header_are_too_short() -> None:
    with pytest.raises(PacketTooShort, match="9 bytes are shorter than the 10-byte header"):
        PacketReader.parse(b"P4CK" + bytes(5), wire=STREAM)


def test_a_length_that_is_not_the_packets_size_is_refused() -> None:
    packet = stream_packet(b"m", 1, b"\x00\x00")
    with pytest.raises(LengthMismatch, match="declares a 19-byte packet but 18 bytes"):
        PacketReader.parse(packet[:-1], wire=STREAM)
    with pytest.raises(LengthMismatch, match="declares a 19-byte packet but 20 bytes"):
        PacketReader.parse(packet + b"\x00", wire=STREAM)


@pytest.mark.parametrize("name_len", [0, 4, 65535])
def test_a_capability_length_past_the_packet_is_refused(name_len: int) -> None:
    rest = struct.pack("<H", name_len) + b"m" + struct.pack("<i", 1)
    packet = b"P4CK" + struct.pack("<Ih", 10 + len(rest), 1) + rest
    with pytest.raises(BadNameLength, match=f"module name length {name_len} at byte offset 10"):
        PacketReader.parse(packet, wire=STREAM)


# --- popping the trailer from the back ------------------------------------------------


def trailer_packet() -> bytes:
    return (
        PacketWriter("dialog-dlg-repl", 3, wire=STREAM, version=4)
        .pack("sssi", "c", "a", "b", 77)
        .pack("iii", 1, 2, 3)
        .to_bytes()
    )


def test_pop_back_int_returns_the_last_int_and_the_reader_without_it() -> None:
    reader = PacketReader.parse(trailer_packet(), wire=STREAM)
    dst, reader = reader.pop_back_int()
    src, reader = reader.pop_back_int()
    cluster, reader = reader.pop_back_int()
    assert (cluster, src, dst) == (1, 2, 3)
    assert reader.unpack("sssi", exact=True) == (b"c", b"a", b"b", 77)
    assert reader.offset == reader.rewind().offset  # still at the first field


def test_pop_back_int_leaves_the_reader_it_was_called_on_unchanged() -> None:
    reader = PacketReader.parse(trailer_packet(), wire=STREAM)
    first, _ = reader.pop_back_int()
    again, _ = reader.pop_back_int()
    assert first == again == 3
    assert reader.unpack("sssiiii", exact=True)[-1] == 3


def test_pop_back_int_after_front_reads_keeps_the_position() -> None:
    reader = PacketReader.parse(trailer_packet(), wire=STREAM).skip_str(3)
    value, rest = reader.pop_back_int()
    assert value == 3
    assert (rest.offset, rest.index) == (reader.offset, reader.index)
    assert rest.unpack("iii", exact=True) == (77, 1, 2)


def test_pop_back_int_cannot_reach_into_fields_already_read() -> None:
    reader = PacketReader.parse(trailer_packet(), wire=STREAM).unpack_reader("sssiii")[1]
    assert reader.pop_back_int()[0] == 3
    end = reader.pop_back_int()[1]
    with pytest.raises(TruncatedField, match="no int to pop from the back: 0 unread bytes"):
        end.pop_back_int()


def test_pop_back_int_works_in_the_datagram_profile_too() -> None:
    packet = PacketWriter("dialog", 3).pack("si", "x", 5).to_bytes()
    value, reader = PacketReader.parse(packet).pop_back_int()
    assert value == 5
    assert reader.unpack("s", exact=True) == (b"x",)
