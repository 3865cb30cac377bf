"""OpenSIPS 4.0's dialog replication as typed messages, and the clusterer trailer (issue 10 part 5).

Every captured dialog packet splits into its trailer and a typed message whose
fields are the manifest's, and rebuilds byte for byte from them; a message
refuses a packet of another layout version with ``BadVersion``, and a packet
still carrying its trailer with ``TrailingBytes``.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from vectors import OPENSIPS_40, Vector, field_value, load

from binif import (
    DATAGRAM,
    STREAM,
    BadFieldText,
    BadVersion,
    FieldTypeError,
    InvalidVersion,
    MessageMismatch,
    PacketReader,
    PacketWriter,
    StreamMessage,
    TrailingBytes,
    TruncatedField,
)
from binif.opensips40 import (
    DIALOG_CAPABILITY,
    OPENSIPS40,
    DialogCreated,
    DialogCseq,
    DialogDeleted,
    DialogUpdated,
    DialogValue,
    Trailer,
    ValueType,
)
from binif.opensips40_usrloc import AorInserted, ProfileCounters

DIALOG = [v for v in load(OPENSIPS_40, key="packets") if v.entry["capability"] == DIALOG_CAPABILITY]
CLASSES = {1: DialogCreated, 2: DialogUpdated, 3: DialogDeleted, 4: DialogCseq, 5: DialogValue}


def ids(vectors: list[Vector]) -> list[str]:
    return [v.name for v in vectors]


def split(vector: Vector) -> tuple[Trailer, PacketReader]:
    return Trailer.split(PacketReader.parse(vector.data, wire=STREAM))


def test_every_dialog_packet_type_was_captured() -> None:
    assert len(DIALOG) == 16
    assert {v.entry["packet_type"] for v in DIALOG} == set(CLASSES)


@pytest.mark.parametrize("vector", DIALOG, ids=ids(DIALOG))
def test_each_dialog_packet_decodes_to_its_manifest_fields(vector: Vector) -> None:
    trailer, reader = split(vector)
    message = OPENSIPS40.decode(reader)
    assert type(message) is CLASSES[vector.entry["packet_type"]]
    expected = {field["name"]: field_value(field) for field in vector.fields}
    assert trailer == Trailer(
        expected.pop("trailer.cluster_id"),  # type: ignore[arg-type]
        expected.pop("trailer.src_node_id"),  # type: ignore[arg-type]
        expected.pop("trailer.dst_node_id"),  # type: ignore[arg-type]
    )
    decoded: dict[str, Any] = {
        field.name: value.encode() if isinstance(value, str) else value
        for field, value in message.items()
    }
    assert decoded == expected
    assert list(decoded) == list(expected)  # in wire order


@pytest.mark.parametrize("vector", DIALOG, ids=ids(DIALOG))
def test_each_dialog_packet_rebuilds_byte_for_byte_from_its_message(vector: Vector) -> None:
    trailer, reader = split(vector)
    message = OPENSIPS40.decode(reader)
    assert message is not None
    assert trailer.append_to(message.to_writer()).to_bytes() == vector.data
    assert type(message).from_bytes(message.to_bytes()) == message


@pytest.mark.parametrize("vector", DIALOG, ids=ids(DIALOG))
def test_a_packet_still_carrying_its_trailer_is_refused(vector: Vector) -> None:
    reader = PacketReader.parse(vector.data, wire=STREAM)
    with pytest.raises(TrailingBytes):
        OPENSIPS40.decode(reader)


# --- versions ---------------------------------------------------------------------------


def deleted(version: int) -> bytes:
    writer = PacketWriter(DIALOG_CAPABILITY, 3, wire=STREAM, version=version)
    return writer.pack("sssi", "c", "a", "b", 7).to_bytes()


def test_a_message_carries_its_version_in_the_header() -> None:
    packet = bytes(DialogDeleted(callid="c", caller_tag="a", callee_tag="b", h_id=7))
    assert packet == deleted(4)
    assert DialogDeleted.VERSION == 4
    assert PacketReader.parse(packet, wire=STREAM).version == 4


@pytest.mark.parametrize("version", [3, 5, -4])
def test_another_version_is_refused_with_bad_version(version: int) -> None:
    with pytest.raises(BadVersion, match=f"version 4, the packet is version {version}"):
        DialogDeleted.from_bytes(deleted(version))
    with pytest.raises(BadVersion):
        OPENSIPS40.decode(PacketReader.parse(deleted(version), wire=STREAM))


def test_a_datagram_has_no_version_for_a_versioned_message() -> None:
    datagram = PacketWriter(DIALOG_CAPABILITY, 3).pack("sssi", "c", "a", "b", 7).to_bytes()
    with pytest.raises(BadVersion, match="the packet is version None"):
        DialogDeleted.from_bytes(datagram, wire=DATAGRAM)
    with pytest.raises(InvalidVersion, match="carries no version"):
        DialogDeleted("c", "a", "b", 7).to_bytes(wire=DATAGRAM)


def test_another_type_is_still_a_mismatch() -> None:
    with pytest.raises(MessageMismatch, match="dialog-dlg-repl/4, the packet is dialog-dlg-repl/3"):
        DialogCseq.from_bytes(deleted(4))


def test_version_keyword_is_checked_when_the_class_is_made() -> None:
    with pytest.raises(TypeError, match="version= goes with module= and command="):

        class Orphan(StreamMessage, version=1):
            x: int

    with pytest.raises(TypeError, match="signed 16-bit"):

        class Huge(StreamMessage, module="m", command=1, version=40000):
            x: int


# --- DialogValue: the tail val_type chooses ----------------------------------------------


def value_packet(version: int) -> PacketWriter:
    return PacketWriter(DIALOG_CAPABILITY, 5, wire=STREAM, version=version)


@pytest.mark.parametrize(
    ("val_type", "value", "tail"),
    [
        (ValueType.STR, "yes", b"\x03\x00yes"),
        (ValueType.INT, -5, struct.pack("<i", -5)),
        (ValueType.NONE, None, b""),
        (7, None, b""),  # OpenSIPS reads nothing after a type it does not know
    ],
)
def test_dialog_value_tail_by_type(val_type: int, value: str | int | None, tail: bytes) -> None:
    message = DialogValue(callid="c", h_id=1, name="n", val_type=val_type, value=value)
    head = value_packet(4).pack("sisi", "c", 1, "n", val_type)
    packet = head.to_bytes()
    packet = packet[:4] + struct.pack("<I", len(packet) + len(tail)) + packet[8:] + tail
    assert bytes(message) == packet
    assert DialogValue.from_bytes(packet) == message
    assert [field.name for field, _ in message.items()][4:] == (["value"] if tail else [])


def test_dialog_value_refuses_a_value_of_the_wrong_kind() -> None:
    with pytest.raises(FieldTypeError, match="val_type 1 sends a str, not 5"):
        bytes(DialogValue("c", 1, "n", ValueType.STR, 5))
    with pytest.raises(FieldTypeError, match="val_type 2 sends a signed 32-bit int"):
        bytes(DialogValue("c", 1, "n", ValueType.INT, 2**31))


def test_dialog_value_errors_name_the_field() -> None:
    head = value_packet(4).pack("sisi", "c", 1, "n", 1)
    with pytest.raises(TruncatedField, match=r"field 4 \(str length\) at byte offset 45"):
        DialogValue.from_bytes(head.to_bytes())
    with pytest.raises(BadFieldText, match=r"field 4 \(value\) at byte offset 45"):
        DialogValue.from_bytes(head.push_str(b"\xff").to_bytes())
    with pytest.raises(BadFieldText, match=r"field 2 \(name\) at byte offset 38"):
        DialogValue.from_bytes(value_packet(4).pack("sisi", "c", 1, b"\xfe", 0).to_bytes())
    with pytest.raises(TrailingBytes, match="4 bytes left after field 4"):
        DialogValue.from_bytes(head.push_str("v").push_int(9).to_bytes())
    with pytest.raises(BadVersion):
        DialogValue.from_bytes(value_packet(3).pack("sisi", "c", 1, "n", 0).to_bytes())


# --- the trailer --------------------------------------------------------------------------


def test_trailer_appends_and_splits_three_ints() -> None:
    trailer = Trailer(cluster_id=1, src_node_id=3, dst_node_id=-0x40000000)
    writer = trailer.append_to(DialogDeleted("c", "a", "b", 7).to_writer())
    packet = writer.to_bytes()
    assert packet[-12:] == struct.pack("<iii", 1, 3, -0x40000000)
    got, reader = Trailer.split(PacketReader.parse(packet, wire=STREAM))
    assert got == trailer
    assert DialogDeleted.from_packet(reader) == DialogDeleted("c", "a", "b", 7)


def test_a_packet_too_short_for_a_trailer_is_refused() -> None:
    packet = PacketWriter(DIALOG_CAPABILITY, 3, wire=STREAM, version=4).pack("ii", 1, 2).to_bytes()
    with pytest.raises(TruncatedField, match="no int to pop from the back"):
        Trailer.split(PacketReader.parse(packet, wire=STREAM))


# --- the registry ----------------------------------------------------------------------------


def test_the_registry_holds_dialog_profile_and_usrloc_messages() -> None:
    assert OPENSIPS40[DIALOG_CAPABILITY, 5] is DialogValue
    assert OPENSIPS40.by_name("dialog.cseq") is DialogCseq
    assert OPENSIPS40.by_name("dialog.profile_counters") is ProfileCounters
    assert OPENSIPS40.by_name("usrloc.aor_inserted") is AorInserted
    assert len(OPENSIPS40) == 11
    unknown = PacketWriter("clusterer-internal", 0, wire=STREAM, version=1).pack("ii", 1, 2)
    assert OPENSIPS40.decode(PacketReader.parse(unknown.to_bytes(), wire=STREAM)) is None
