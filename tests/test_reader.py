"""PacketReader: validation in OpenSIPS's order, then bounds-checked, immutable pops."""

from __future__ import annotations

import asyncio
import dataclasses
import struct

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import binif.reader as reader_module
from binif import (
    DATAGRAM,
    DATAGRAM_BIG_ENDIAN,
    BadFieldLength,
    BadModuleName,
    BadNameLength,
    BinError,
    LayoutError,
    PacketReader,
    PacketWriter,
    TrailingBytes,
    TruncatedField,
)
from binif.crc import opensips_crc32

PACKET = PacketWriter("dialog", 3).pack("ssi", "call-1", b"", 42).to_bytes()


def packet_with_body(body: bytes) -> bytes:
    """A packet whose CRC is right for ``body``, however malformed the body is."""
    return b"P4CK" + struct.pack("<I", opensips_crc32(body)) + body


def test_parse_reads_module_command_and_fields() -> None:
    reader = PacketReader.parse(PACKET)
    assert (reader.module, reader.command, reader.index, reader.offset) == ("dialog", 3, 0, 22)
    assert reader.data == PACKET
    assert reader.fields == reader.remaining == PACKET[22:]
    assert reader.unpack("ssi", exact=True) == (b"call-1", b"", 42)


def test_parse_accepts_bytearray_and_memoryview() -> None:
    assert PacketReader.parse(bytearray(PACKET)).unpack("ssi") == (b"call-1", b"", 42)
    assert PacketReader.parse(memoryview(PACKET)).unpack("ssi") == (b"call-1", b"", 42)


def test_readers_are_not_built_directly() -> None:
    with pytest.raises(TypeError, match=r"PacketReader\.parse"):
        PacketReader()
    with pytest.raises(TypeError, match=r"not built directly: use PacketReader\.parse\(data\)"):
        PacketReader(b"P4CK")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("data", "name"), [(42, "int"), ([80, 52, 67, 75], "list"), ("P4CK", "str"), (None, "NoneType")]
)
def test_parse_takes_bytes_and_says_so(data: object, name: str) -> None:
    message = f"takes the packet as bytes, bytearray or memoryview, not {name}"
    with pytest.raises(TypeError, match=message):
        PacketReader.parse(data)  # type: ignore[arg-type]


def test_parse_wire_that_is_not_a_wire_format_is_a_type_error() -> None:
    packet = PacketWriter("dialog", 1).push_int(1).to_bytes()
    with pytest.raises(TypeError, match=r"wire must be a binif\.WireFormat"):
        PacketReader.parse(packet, wire="datagram")  # type: ignore[arg-type]


@pytest.mark.parametrize("name_len", [0, -1, 7, 2**31 - 1])
def test_bad_module_name_length(name_len: int) -> None:
    body = struct.pack("<i", name_len) + b"dialog" + struct.pack("<i", 1)
    with pytest.raises(BadNameLength, match=f"module name length {name_len} at byte offset 8"):
        PacketReader.parse(packet_with_body(body))


def test_name_length_that_leaves_no_room_for_the_command() -> None:
    body = struct.pack("<i", 8) + b"dialog" + b"\x01\x00\x00\x00"
    with pytest.raises(BadNameLength):
        PacketReader.parse(packet_with_body(body))


def test_module_name_must_be_utf8() -> None:
    body = struct.pack("<i", 2) + b"\xff\xfe" + struct.pack("<i", 1)
    with pytest.raises(BadModuleName, match="not UTF-8"):
        PacketReader.parse(packet_with_body(body))


def test_pops_return_the_value_and_a_new_reader() -> None:
    first = PacketReader.parse(PACKET)
    callid, second = first.pop_str()
    empty, third = second.pop_str()
    number, last = third.pop_int()
    assert (callid, empty, number) == (b"call-1", b"", 42)
    assert last.at_end and (last.index, last.offset) == (3, 40) and len(PACKET) == 40
    # Popping the same reader twice gives the same answer: no hidden cursor.
    assert first.pop_str() == (callid, second)
    assert first.index == 0 and first.offset == 22
    assert last.rewind() == first


def test_skip_moves_over_fields() -> None:
    reader = PacketReader.parse(PACKET)
    assert reader.skip_str(2).pop_int()[0] == 42
    assert reader.skip_str().skip_str().skip_int().at_end
    assert reader.skip_str(2).skip_int(1).index == 3
    assert reader.skip_str(0) == reader == reader.skip_int(0)
    with pytest.raises(LayoutError, match="not -1"):
        reader.skip_str(-1)
    with pytest.raises(LayoutError):
        reader.skip_int(-2)


def test_popping_past_the_end_names_field_and_offset() -> None:
    last = PacketReader.parse(PACKET).skip_str(2).skip_int()
    with pytest.raises(TruncatedField, match=r"field 3 \(int\) at byte offset 40") as caught:
        last.pop_int()
    assert (caught.value.index, caught.value.offset) == (3, 40)
    with pytest.raises(TruncatedField, match=r"field 3 \(str length\) at byte offset 40"):
        last.pop_str()
    with pytest.raises(TruncatedField):
        last.skip_int()
    with pytest.raises(TruncatedField):
        last.skip_str()
    # The failed pops left the reader where it was.
    assert (last.index, last.offset) == (3, 40)


def test_str_longer_than_the_packet() -> None:
    body = struct.pack("<i", 2) + b"ul" + struct.pack("<i", 1) + struct.pack("<i", 10) + b"abc"
    reader = PacketReader.parse(packet_with_body(body))
    with pytest.raises(TruncatedField, match="length 10 runs past the end, 3 bytes left") as caught:
        reader.pop_str()
    assert (caught.value.index, caught.value.offset) == (0, 18)
    with pytest.raises(TruncatedField, match="length 10 runs past the end"):
        reader.unpack("s")


def str_packet(declared: int, left: int, *, after_int: bool = False) -> bytes:
    """A ``ul``/1 packet: (an int, then) a str declaring ``declared`` bytes, ``left`` follow."""
    body = struct.pack("<i", 2) + b"ul" + struct.pack("<i", 1)
    if after_int:
        body += struct.pack("<i", 7)
    return packet_with_body(body + struct.pack("<i", declared) + b"x" * left)


# A str whose length is exactly the bytes left is whole; one byte more runs past the
# end (the class of bug that crashed OpenSIPS 2.1). Pop, unpack and skip must agree.
BOUNDARY_LEFT = [0, 1, 5]


@pytest.mark.parametrize("left", BOUNDARY_LEFT)
def test_str_length_equal_to_the_bytes_left_reads_to_the_end(left: int) -> None:
    reader = PacketReader.parse(str_packet(left, left))
    value, after = reader.pop_str()
    assert value == b"x" * left and after.at_end and after.index == 1
    assert reader.unpack("s", exact=True) == (b"x" * left,)
    assert reader.skip_str().at_end
    second = PacketReader.parse(str_packet(left, left, after_int=True))
    assert second.unpack("is", exact=True) == (7, b"x" * left)
    assert second.skip_int().pop_str()[0] == b"x" * left


@pytest.mark.parametrize("left", BOUNDARY_LEFT)
@pytest.mark.parametrize("after_int", [False, True])
def test_str_length_one_past_the_bytes_left_is_truncated(left: int, after_int: bool) -> None:
    reader = PacketReader.parse(str_packet(left + 1, left, after_int=after_int))
    index, offset = (1, 22) if after_int else (0, 18)
    expected = rf"field {index} \(str\) at byte offset {offset}: length {left + 1} runs past"
    layout = "is" if after_int else "s"
    str_reader = reader.skip_int() if after_int else reader
    attempts = {
        "pop_str": str_reader.pop_str,
        "skip_str": str_reader.skip_str,
        "unpack": lambda: reader.unpack(layout),
        "unpack exact": lambda: reader.unpack(layout, exact=True),
        "unpack_reader": lambda: reader.unpack_reader(layout),
    }
    for name, attempt in attempts.items():
        with pytest.raises(TruncatedField, match=expected) as caught:
            attempt()
        assert (caught.value.index, caught.value.offset) == (index, offset), name
        assert f", {left} bytes left" in str(caught.value), name


def test_negative_str_length() -> None:
    body = struct.pack("<i", 2) + b"ul" + struct.pack("<i", 1) + struct.pack("<i", -4) + b"abcd"
    reader = PacketReader.parse(packet_with_body(body))
    with pytest.raises(BadFieldLength, match="negative length -4"):
        reader.pop_str()
    with pytest.raises(BadFieldLength):
        reader.unpack("s")
    assert reader.unpack("i") == (-4,)  # the same bytes are a fine int


def test_unpack_errors_name_the_first_field_that_fails() -> None:
    reader = PacketReader.parse(PACKET)
    with pytest.raises(TruncatedField) as caught:
        reader.unpack("ssii")
    assert (caught.value.index, caught.value.offset) == (3, 40)
    with pytest.raises(TruncatedField) as caught:
        reader.unpack("sis")  # the empty str's 4 zero bytes are an int, then 42 as a length
    assert caught.value.index == 2


def test_exact_unpack_refuses_trailing_bytes() -> None:
    reader = PacketReader.parse(PACKET)
    with pytest.raises(TrailingBytes, match="4 bytes left after the 2 fields") as caught:
        reader.unpack("ss", exact=True)
    assert (caught.value.index, caught.value.offset) == (2, 36)
    assert reader.unpack("ss") == (b"call-1", b"")


def test_unpack_reader_continues_where_unpack_stopped() -> None:
    values, rest = PacketReader.parse(PACKET).unpack_reader("ss")
    assert values == (b"call-1", b"")
    assert rest.pop_int()[0] == 42 and rest.index == 2


def test_bad_layout() -> None:
    with pytest.raises(LayoutError, match="'q' at position 0"):
        PacketReader.parse(PACKET).unpack("qs")


async def test_one_reader_shared_by_many_tasks() -> None:
    reader = PacketReader.parse(PACKET)

    async def consume() -> tuple[object, ...]:
        values = []
        current = reader
        for kind in "ssi":
            await asyncio.sleep(0)
            value, current = current.pop_str() if kind == "s" else current.pop_int()
            values.append(value)
        return tuple(values)

    results = await asyncio.gather(*(consume() for _ in range(50)))
    assert set(results) == {(b"call-1", b"", 42)}


@given(st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_raise_a_bin_error(data: bytes) -> None:
    try:
        reader = PacketReader.parse(data)
    except BinError:
        return
    assert data[:4] == b"P4CK"
    assert int.from_bytes(data[4:8], "little") == opensips_crc32(data[8:])
    assert reader.offset <= len(data)


@given(body=st.binary(min_size=10, max_size=200), layout=st.text("si", max_size=30))
def test_arbitrary_bodies_with_a_valid_crc_never_escape_bin_error(body: bytes, layout: str) -> None:
    """Past the checksum the fields are the attacker's: every read fails cleanly or succeeds."""
    try:
        reader = PacketReader.parse(packet_with_body(b"\x02\x00\x00\x00ul" + body))
    except BinError:
        return
    for exact in (False, True):
        try:
            values = reader.unpack(layout, exact=exact)
        except BinError:
            continue
        assert len(values) == len(layout)
    current = reader
    for kind in layout:
        try:
            _, current = current.pop_str() if kind == "s" else current.pop_int()
        except BinError:
            break


def str_field(value: bytes) -> bytes:
    return struct.pack("<i", len(value)) + value


# Fields as they are on the wire, some with lengths that lie by a byte or more.
FIELD_BYTES = st.one_of(
    st.binary(max_size=12).map(str_field),
    st.integers(-(2**31), 2**31 - 1).map(lambda n: struct.pack("<i", n)),
    st.tuples(st.binary(max_size=12), st.integers(-2, 3)).map(
        lambda pair: struct.pack("<i", len(pair[0]) + pair[1]) + pair[0]
    ),
    st.binary(max_size=3),
)


@given(fields=st.lists(FIELD_BYTES, max_size=8), layout=st.text("si", max_size=10))
# A last str one byte longer than what is left, and one that fits exactly, every run.
@example(fields=[struct.pack("<i", 7), struct.pack("<i", 3) + b"ab"], layout="is")
@example(fields=[struct.pack("<i", 7), struct.pack("<i", 2) + b"ab"], layout="is")
def test_unpack_gives_the_values_and_errors_of_popping_field_by_field(
    fields: list[bytes], layout: str
) -> None:
    """The bulk path (unpack) and the one-field path (pop) agree value for value."""
    reader = PacketReader.parse(
        packet_with_body(b"\x02\x00\x00\x00ul\x01\x00\x00\x00" + b"".join(fields))
    )
    popped: list[bytes | int] = []
    current = reader
    pop_error: BinError | None = None
    for kind in layout:
        try:
            value, current = current.pop_str() if kind == "s" else current.pop_int()
        except BinError as exc:
            pop_error = exc
            break
        popped.append(value)
    try:
        values, after = reader.unpack_reader(layout)
    except BinError as exc:
        assert pop_error is not None, f"unpack failed where pops succeeded: {exc!r}"
        assert type(exc) is type(pop_error)
        return
    assert pop_error is None, f"unpack succeeded where a pop failed: {pop_error!r}"
    assert list(values) == popped
    assert after == current and after.index == len(layout)
    assert reader.unpack(layout) == values


# --- the decoded-head cache -----------------------------------------------------------


def test_a_head_seen_with_one_wire_format_is_not_reused_for_another() -> None:
    """The cache is keyed by the head's raw bytes; the same bytes under another format."""
    copy = dataclasses.replace(DATAGRAM, name="datagram-copy")
    body = PacketWriter("dialog", 3).pack("si", "call-1", 5).to_bytes()[8:]
    for first, second in ((DATAGRAM, copy), (copy, DATAGRAM)):
        first_reader = PacketReader.parse(first.frame(body), wire=first)
        second_reader = PacketReader.parse(second.frame(body), wire=second)
        assert first_reader.wire is first and second_reader.wire is second
        assert second_reader.unpack("si", exact=True) == (b"call-1", 5)


def test_one_packet_read_little_then_big_endian() -> None:
    """The same message in both byte orders, one after the other: each read its own way."""
    for wire in (DATAGRAM, DATAGRAM_BIG_ENDIAN, DATAGRAM):
        packet = PacketWriter("dialog", 258, wire=wire).pack("si", "call-1", 258).to_bytes()
        reader = PacketReader.parse(packet, wire=wire)
        assert (reader.module, reader.command, reader.wire) == ("dialog", 258, wire)
        assert reader.unpack("si", exact=True) == (b"call-1", 258)


def test_the_head_cache_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """More distinct heads than the limit (random module names) do not grow it further."""
    monkeypatch.setattr(reader_module, "_HEADS", {})
    monkeypatch.setattr(reader_module, "_HEADS_MAX", 16)
    for number in range(100):
        module = f"m{number}"
        reader = PacketReader.parse(PacketWriter(module, number).push_int(number).to_bytes())
        assert (reader.module, reader.command, reader.unpack("i")) == (module, number, (number,))
    assert len(reader_module._HEADS) == 16
