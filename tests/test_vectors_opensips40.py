"""Byte-exact agreement with packets captured between two OpenSIPS 4.0.1 nodes (WIRE.md part 2).

Every packet parses in the stream profile to the fields its manifest lists,
its clusterer trailer (when it has one) popped from the back, and rebuilds to
the same bytes with ``pack`` and with ``push_*``.
"""

from __future__ import annotations

import hashlib
import struct

import pytest
from vectors import OPENSIPS_40, Vector, field_value, load

from binif import STREAM, PacketReader, PacketWriter

VECTORS = load(OPENSIPS_40, key="packets")
TRAILER = ("trailer.cluster_id", "trailer.src_node_id", "trailer.dst_node_id")


def ids(vectors: list[Vector]) -> list[str]:
    return [v.name for v in vectors]


def split_trailer(vector: Vector) -> tuple[list[dict[str, object]], list[int]]:
    """The manifest's fields before the trailer, and the trailer's ints (empty when none)."""
    fields = vector.fields
    names = tuple(field["name"] for field in fields[-3:])
    if names != TRAILER:
        assert not any(str(field["name"]).startswith("trailer.") for field in fields)
        return fields, []
    return fields[:-3], [int(field["value"]) for field in fields[-3:]]


def test_every_file_is_covered() -> None:
    assert len(VECTORS) == 77
    for vector in VECTORS:
        assert hashlib.sha256(vector.data).hexdigest() == vector.entry["sha256"]
        assert len(vector.data) == vector.entry["total_length"]
    # Every clusterer-internal packet is trailer-less; every other packet has one.
    for vector in VECTORS:
        _, trailer = split_trailer(vector)
        assert (vector.entry["capability"] == "clusterer-internal") == (not trailer)


@pytest.mark.parametrize("vector", VECTORS, ids=ids(VECTORS))
def test_parse_gives_every_manifest_field(vector: Vector) -> None:
    reader = PacketReader.parse(vector.data, wire=STREAM)
    assert reader.module == vector.entry["capability"]
    assert reader.command == vector.entry["packet_type"]
    assert reader.version == vector.entry["version"]
    assert reader.offset == vector.entry["body_offset"]
    fields, trailer = split_trailer(vector)
    popped = []
    for _ in trailer:
        value, reader = reader.pop_back_int()
        popped.append(value)
    assert popped[::-1] == trailer
    layout = "".join(str(field["type"])[0] for field in fields)
    values = tuple(field_value(field) for field in fields)  # type: ignore[arg-type]
    assert reader.unpack(layout, exact=True) == values
    # Field by field: each at the manifest's offset, ending exactly at the trailer.
    for field, expected in zip(fields, values, strict=True):
        assert reader.offset == field["offset"]
        value, reader = reader.pop_str() if field["type"] == "str" else reader.pop_int()
        assert value == expected
    assert reader.at_end


@pytest.mark.parametrize("vector", VECTORS, ids=ids(VECTORS))
def test_writer_rebuilds_the_exact_bytes(vector: Vector) -> None:
    entry = vector.entry
    writer = PacketWriter(
        entry["capability"], entry["packet_type"], wire=STREAM, version=entry["version"]
    )
    layout = vector.layout
    assert writer.pack(layout, *vector.values).to_bytes() == vector.data
    for kind, value in zip(layout, vector.values, strict=True):
        writer = writer.push_str(value) if kind == "s" else writer.push_int(value)  # type: ignore[arg-type]
    assert writer.version == entry["version"]
    assert bytes(writer) == vector.data


def test_header_layout_is_the_manifests() -> None:
    """0 'P4CK' | 4 uint32 total length | 8 int16 version | 10 uint16 name length | name."""
    vector = VECTORS[0]
    marker, total, version, name_len = struct.unpack_from("<4sIhH", vector.data)
    assert (marker, total, version) == (b"P4CK", len(vector.data), vector.entry["version"])
    assert name_len == vector.entry["capability_name_length"]
    assert STREAM.header_size == 10
    assert (STREAM.min_packet, STREAM.max_packet) == (17, 65515)
