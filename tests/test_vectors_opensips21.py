"""Byte-exact agreement with packets captured from a real OpenSIPS 2.1.5 (WIRE.md part 1)."""

from __future__ import annotations

import hashlib
import json

import pytest
from vectors import OPENSIPS_21, Vector, load

from binif import (
    BadChecksum,
    BadMarker,
    BinError,
    PacketReader,
    PacketTooShort,
    PacketWriter,
    TruncatedField,
)
from binif.crc import opensips_crc32

VECTORS = load(OPENSIPS_21)
VALID = [v for v in VECTORS if v.entry["crc_valid"] and "truncated_in" not in v.entry]
VALID = [v for v in VALID if v.data[:4] == b"P4CK" and len(v.data) >= 18]
BY_NAME = {v.name: v for v in VECTORS}
FIELD_LAYOUTS = json.loads((OPENSIPS_21 / "manifest.json").read_text())["field_layouts"]


def ids(vectors: list[Vector]) -> list[str]:
    return [v.name for v in vectors]


def test_every_file_is_covered() -> None:
    assert len(VECTORS) == 28
    assert len(VALID) == 21  # 17 captured + 4 crafted that OpenSIPS parses
    for vector in VECTORS:
        assert hashlib.sha256(vector.data).hexdigest() == vector.entry["sha256"]
        assert len(vector.data) == vector.entry["length"]


@pytest.mark.parametrize("vector", VALID, ids=ids(VALID))
def test_parse_gives_every_manifest_field(vector: Vector) -> None:
    reader = PacketReader.parse(vector.data)
    assert reader.module == vector.entry["module"]
    assert reader.command == vector.entry["command"]
    assert reader.unpack(vector.layout, exact=True) == vector.values
    # Field by field, the same values, ending exactly at the last byte.
    for field, expected in zip(vector.layout, vector.values, strict=True):
        value, reader = reader.pop_str() if field == "s" else reader.pop_int()
        assert value == expected
    assert reader.at_end


@pytest.mark.parametrize("vector", VALID, ids=ids(VALID))
def test_writer_rebuilds_the_exact_bytes(vector: Vector) -> None:
    writer = PacketWriter(vector.entry["module"], vector.entry["command"])
    assert writer.pack(vector.layout, *vector.values).to_bytes() == vector.data
    for field, value in zip(vector.layout, vector.values, strict=True):
        writer = writer.push_str(value) if field == "s" else writer.push_int(value)  # type: ignore[arg-type]
    assert bytes(writer) == vector.data
    assert writer.size == len(vector.data)


@pytest.mark.parametrize("vector", VECTORS, ids=ids(VECTORS))
def test_crc_in_header_matches_manifest(vector: Vector) -> None:
    crc_wire = int.from_bytes(vector.data[4:8], "little")
    assert f"{crc_wire:#010x}" == vector.entry["crc_wire"]
    assert (opensips_crc32(vector.data[8:]) == crc_wire) is vector.entry["crc_valid"]


def test_runt_is_too_short() -> None:
    with pytest.raises(PacketTooShort, match="12-byte datagram"):
        PacketReader.parse(BY_NAME["crafted-runt-12.bin"].data)


def test_bad_marker_is_refused_even_with_a_valid_crc() -> None:
    vector = BY_NAME["crafted-bad-marker.bin"]
    assert vector.entry["crc_valid"]
    with pytest.raises(BadMarker, match="XXXX"):
        PacketReader.parse(vector.data)


@pytest.mark.parametrize(
    "name",
    ["crafted-dialog-created-bad-crc.bin", "crafted-dialog-created-truncated-140-full-crc.bin"],
)
def test_bad_crc_is_refused(name: str) -> None:
    with pytest.raises(BadChecksum, match="checksum in header is"):
        PacketReader.parse(BY_NAME[name].data)


_CREATED_KEY = next(key for key in FIELD_LAYOUTS if key.startswith("dialog/1 "))
DIALOG_CREATED = (
    [spec.split(":")[0] for spec in FIELD_LAYOUTS[_CREATED_KEY]],
    "".join(spec.split(":")[1][0] for spec in FIELD_LAYOUTS[_CREATED_KEY]),
)
TRUNCATED = [v for v in VECTORS if "truncated_in" in v.entry and v.entry["crc_valid"]]


@pytest.mark.parametrize("vector", TRUNCATED, ids=ids(TRUNCATED))
def test_packets_that_crashed_opensips_are_rejected_whole(vector: Vector) -> None:
    """OpenSIPS 2.1 half-applied or segfaulted on these; binif names the cut field."""
    names, full_layout = DIALOG_CREATED
    reader = PacketReader.parse(vector.data)
    index = names.index(vector.entry["truncated_in"]["field"])
    assert index == len(vector.fields)
    with pytest.raises(TruncatedField) as caught:
        reader.unpack(full_layout)
    assert caught.value.index == index
    # The fields before the cut still decode, so the offset is theirs.
    complete, rest = reader.unpack_reader(vector.layout)
    assert complete == vector.values
    assert caught.value.offset == rest.offset
    assert f"field {index}" in str(caught.value)
    assert f"byte offset {rest.offset}" in str(caught.value)


def test_unknown_module_and_command_parse_as_packets() -> None:
    """Routing them is the endpoint's business; the codec reads them fine."""
    unknown = PacketReader.parse(BY_NAME["crafted-unknown-module.bin"].data)
    assert (unknown.module, unknown.command, unknown.unpack("s", exact=True)) == (
        "nosuchmod",
        1,
        (b"x",),
    )
    cmd9 = PacketReader.parse(BY_NAME["crafted-dialog-cmd9.bin"].data)
    assert (cmd9.module, cmd9.command) == ("dialog", 9)


def test_every_single_byte_change_to_every_vector_is_caught() -> None:
    """CRC-32 catches any error burst up to 32 bits; the marker check covers bytes 0-3."""
    checked = 0
    for vector in VALID:
        data = bytearray(vector.data)
        for position in range(len(data)):
            original = data[position]
            for replacement in range(256):
                if replacement == original:
                    continue
                data[position] = replacement
                try:
                    PacketReader.parse(data)
                except BinError:
                    checked += 1
                else:
                    raise AssertionError(f"{vector.name}: byte {position} -> {replacement} passed")
            data[position] = original
    assert checked == sum(len(v.data) for v in VALID) * 255
