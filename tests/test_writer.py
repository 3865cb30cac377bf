"""PacketWriter: immutable, size-aware building of packets."""

from __future__ import annotations

import enum
import pydoc
import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from binif import (
    FieldTypeError,
    IntOutOfRange,
    InvalidModuleName,
    LayoutError,
    PacketReader,
    PacketTooLarge,
    PacketTooSmall,
    PacketWriter,
    UnencodableText,
)
from binif.crc import opensips_crc32


def test_layout_of_a_packet() -> None:
    packet = PacketWriter("ul", 5).push_str("a").push_str(None).push_int(-1).to_bytes()
    body = (
        b"\x02\x00\x00\x00ul"  # module name length and name
        b"\x05\x00\x00\x00"  # command
        b"\x01\x00\x00\x00a"  # str field
        b"\x00\x00\x00\x00"  # NULL str: length 0, no bytes
        b"\xff\xff\xff\xff"  # int -1
    )
    assert packet == b"P4CK" + struct.pack("<I", opensips_crc32(body)) + body


def test_push_returns_a_new_writer_and_leaves_the_old_one_unchanged() -> None:
    base = PacketWriter("dialog", 1).push_str("call-1")
    before = base.to_bytes()
    left = base.push_int(1)
    right = base.push_str("other").push_int(2)
    assert base.to_bytes() == before
    assert (base.field_count, left.field_count, right.field_count) == (1, 2, 3)
    assert PacketReader.parse(left.to_bytes()).unpack("si", exact=True) == (b"call-1", 1)
    assert PacketReader.parse(right.to_bytes()).unpack("ssi", exact=True) == (
        b"call-1",
        b"other",
        2,
    )
    # Extending left again after right was made does not disturb right.
    assert left.push_int(9).to_bytes() != right.to_bytes()
    assert PacketReader.parse(right.to_bytes()).unpack("ssi") == (b"call-1", b"other", 2)


def test_public_attributes_are_read_only() -> None:
    writer = PacketWriter("dialog", 1)
    with pytest.raises(AttributeError):
        writer.module = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        writer.anything = 1  # type: ignore[attr-defined]


def test_pack_equals_pushes() -> None:
    values = (b"a", "b\u00e9", None, 1, -(2**31), 2**31 - 1, b"", bytearray(b"z"))
    layout = "sssiiiss"
    pushed = PacketWriter("m1", 7)
    for kind, value in zip(layout, values, strict=True):
        pushed = pushed.push_str(value) if kind == "s" else pushed.push_int(value)  # type: ignore[arg-type]
    assert PacketWriter("m1", 7).pack(layout, *values).to_bytes() == pushed.to_bytes()


def test_text_is_sent_as_utf8() -> None:
    packet = PacketWriter("dialog", 1).push_str("caf\u00e9").to_bytes()
    assert PacketReader.parse(packet).unpack("s") == ("caf\u00e9".encode(),)


@pytest.mark.parametrize("value", [2**31, -(2**31) - 1, 10**20])
def test_int_out_of_range_is_refused_at_the_push(value: int) -> None:
    writer = PacketWriter("dialog", 1).push_str("x")
    with pytest.raises(IntOutOfRange, match=rf"field 1: {value} is outside"):
        writer.push_int(value)
    with pytest.raises(IntOutOfRange, match=r"field 2: "):
        writer.pack("ii", 0, value)
    with pytest.raises(IntOutOfRange, match="command"):
        PacketWriter("dialog", value)


def test_wrong_types_are_refused() -> None:
    writer = PacketWriter("dialog", 1)
    with pytest.raises(FieldTypeError, match="str field takes"):
        writer.push_str(5)  # type: ignore[arg-type]
    with pytest.raises(FieldTypeError, match="int field takes an int, not float"):
        writer.push_int(1.5)  # type: ignore[arg-type]
    with pytest.raises(FieldTypeError, match="field 1: an int field takes an int, not str"):
        writer.pack("si", b"a", "1")
    with pytest.raises(TypeError):  # FieldTypeError is a TypeError too
        writer.pack("s", 3.0)
    with pytest.raises(FieldTypeError):
        PacketWriter("dialog", 1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "x" * 65524])
def test_module_name_empty_or_too_long_is_refused(name: str) -> None:
    with pytest.raises(InvalidModuleName):
        PacketWriter(name, 1)


def test_longest_module_name_fits() -> None:
    writer = PacketWriter("x" * 65519, 1)
    assert writer.size == 65535
    assert PacketReader.parse(writer.to_bytes()).module == "x" * 65519


def test_exactly_65535_bytes_is_accepted_and_one_more_is_refused() -> None:
    base = PacketWriter("dialog", 1)  # 8 + 4 + 6 + 4 = 22 bytes
    fill = 65535 - base.size - 4
    full = base.push_str(b"\x00" * fill)
    assert full.size == len(full.to_bytes()) == 65535
    assert PacketReader.parse(full.to_bytes()).unpack("s", exact=True) == (b"\x00" * fill,)
    with pytest.raises(PacketTooLarge, match="65536 bytes, over the 65535-byte maximum"):
        base.push_str(b"\x00" * (fill + 1))
    with pytest.raises(PacketTooLarge):
        full.push_str(None)
    with pytest.raises(PacketTooLarge):
        full.push_int(0)
    with pytest.raises(PacketTooLarge):
        base.pack("s", b"\x00" * (fill + 1))
    assert base.push_str(b"\x00" * (fill - 4)).push_int(7).size == 65535


def test_layout_errors() -> None:
    writer = PacketWriter("dialog", 1)
    with pytest.raises(LayoutError, match="'x' at position 1"):
        writer.pack("sx", b"", 1)
    with pytest.raises(LayoutError, match="3 fields but 2 values"):
        writer.pack("sss", b"", b"")


def test_a_packet_receivers_would_drop_as_too_short_is_refused() -> None:
    lone = PacketWriter("x", 1)
    with pytest.raises(PacketTooSmall, match="17-byte packet"):
        lone.to_bytes()
    assert len(lone.push_int(0).to_bytes()) == 21


def test_text_that_is_not_utf8_encodable_is_refused() -> None:
    with pytest.raises(UnencodableText, match="field 0"):
        PacketWriter("dialog", 1).push_str("\ud800")
    with pytest.raises(UnencodableText, match="field 1"):
        PacketWriter("dialog", 1).pack("ss", "ok", "\udcff")
    with pytest.raises(UnencodableText, match="module name"):
        PacketWriter("\ud800", 1)


def test_repr_and_properties() -> None:
    writer = PacketWriter("dialog", 3).pack("sss", "a", "b", "c")
    assert (writer.module, writer.command, writer.field_count) == ("dialog", 3, 3)
    assert repr(writer) == "PacketWriter(module='dialog', command=3, fields=3, size=37)"


fields = st.lists(st.one_of(st.binary(max_size=300), st.integers(-(2**31), 2**31 - 1)), max_size=40)


@given(
    module=st.text(min_size=1, max_size=30).filter(lambda s: len(s.encode()) <= 30),
    command=st.integers(-(2**31), 2**31 - 1),
    values=fields,
)
def test_any_fields_round_trip(module: str, command: int, values: list[bytes | int]) -> None:
    layout = "".join("i" if isinstance(v, int) else "s" for v in values)
    writer = PacketWriter(module, command).pack(layout, *values)
    if writer.size < 18:
        with pytest.raises(PacketTooSmall, match="below the 18-byte minimum"):
            writer.to_bytes()
        return
    reader = PacketReader.parse(writer.to_bytes())
    assert (reader.module, reader.command) == (module, command)
    assert reader.unpack(layout, exact=True) == tuple(values)
    for kind, value in zip(layout, values, strict=True):
        got, reader = reader.pop_str() if kind == "s" else reader.pop_int()
        assert got == value
    assert reader.at_end


# --- a wrong type is a TypeError that says what was expected ---------------------------

DIALOG = PacketWriter("dialog", 1)
WRONG_TYPES: list[tuple[Callable[[], object], str]] = [
    (lambda: PacketWriter(5, 1), "a module name is a str, not int 5"),  # type: ignore[arg-type]
    (lambda: PacketWriter(b"ul", 1), "a module name is a str, not bytes"),  # type: ignore[arg-type]
    (lambda: PacketWriter("dialog", True), "a command is an int, not bool True"),
    (lambda: PacketWriter("dialog", "1"), "a command is an int, not str '1'"),  # type: ignore[arg-type]
    (lambda: DIALOG.push_int(True), "field 0: an int field takes an int, not bool"),
    (lambda: DIALOG.push_int(1.0), "field 0: an int field takes an int, not float"),  # type: ignore[arg-type]
    (lambda: DIALOG.push_str(42), "field 0: a str field takes bytes, str or None, not int"),  # type: ignore[arg-type]
    (lambda: DIALOG.pack("sii", "a", 1, False), "field 2: an int field takes an int, not bool"),
    (lambda: DIALOG.pack("i", [1]), "field 0: an int field takes an int, not list"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("build", "message"), WRONG_TYPES)
def test_wrong_types_are_field_type_errors(build: Callable[[], object], message: str) -> None:
    with pytest.raises(FieldTypeError, match=message):
        build()
    assert issubclass(FieldTypeError, TypeError)


def test_int_subclasses_other_than_bool_are_ints() -> None:
    class Command(enum.IntEnum):
        CREATED = 1

    created = Command.CREATED
    writer = PacketWriter("dialog", created).push_int(created).pack("i", created)
    assert PacketReader.parse(writer.to_bytes()).unpack("ii", exact=True) == (1, 1)


def test_wire_that_is_not_a_wire_format_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"wire must be a binif\.WireFormat .* not str 'datagram'"):
        PacketWriter("dialog", 1, wire="datagram")  # type: ignore[arg-type]


def test_help_lists_what_building_raises() -> None:
    text = pydoc.render_doc(PacketWriter, renderer=pydoc.plaintext)
    for error in (
        "FieldTypeError",
        "InvalidModuleName",
        "IntOutOfRange",
        "UnencodableText",
        "PacketTooLarge",
        "LayoutError",
        "PacketTooSmall",
    ):
        assert error in text, error
    assert "Raises ``FieldTypeError`` (not an int, or a bool)" in (
        PacketWriter.push_int.__doc__ or ""
    )
