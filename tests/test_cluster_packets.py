"""binif.cluster.packets against every clusterer packet captured from OpenSIPS 4.0.1."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from binif import STREAM, BadVersion, DecodeError, PacketReader, TrailingBytes, TruncatedField
from binif.cluster import packets as p
from binif.opensips40 import DialogCreated, Trailer
from tests.vectors import VECTORS

FOLDER = VECTORS / "opensips-4.0"
MANIFEST = json.loads((FOLDER / "manifest.json").read_text())
CLUSTERER = [entry for entry in MANIFEST["packets"] if entry["capability"].startswith("clusterer")]


def flat(packet: p.ClustererPacket) -> list[int | str]:
    """The packet's values in wire order, as the manifest lists its fields."""
    if isinstance(packet, p.InternalPacket):
        out: list[int | str] = [packet.cluster_id, packet.src_node_id]
    else:
        out = []
    if isinstance(packet, p.Ping):
        out.append(int(packet.req_node_list))
    elif isinstance(packet, p.Pong):
        out += [len(packet.node_ids), *packet.node_ids]
    elif isinstance(packet, p.LinkStateUpdate):
        out += [packet.seq_no, packet.timestamp, packet.neighbour_id, packet.link_state]
    elif isinstance(packet, p.FullTopologyUpdate):
        out += [packet.seq_no, packet.timestamp, len(packet.nodes)]
        for node in packet.nodes:
            out += [node.node_id, int(node.info is not None)]
            if node.info is not None:
                out += [node.info.url, node.info.sip_addr]
                out += [node.info.priority, node.info.ping_retries]
            out += [node.ls_seq_no, node.ls_timestamp, len(node.neighbours), *node.neighbours]
    elif isinstance(packet, p.NodeDescription):
        info = packet.info
        out += [info.url, info.sip_addr, info.priority, info.ping_retries]
    elif isinstance(packet, p.CapabilityUpdate):
        out += [packet.seq_no, packet.timestamp, len(packet.nodes)]
        for caps in packet.nodes:
            out += [caps.node_id, len(caps.capabilities)]
            for name, state in caps.capabilities:
                out += [name, state]
        out.append(int(packet.require_reply))
    elif isinstance(packet, p.RemoveNode):
        out.append(packet.target_node_id)
    elif isinstance(packet, p.MiCommand):
        out += [packet.name, len(packet.params), *packet.params]
    elif isinstance(packet, p.ShtagActive):
        out.append(packet.tag)
    elif isinstance(packet, p.SyncRequest):
        out.append(packet.capability)
    elif isinstance(packet, p.Sync):
        out += [packet.capability, packet.data_version]
        for chunk, message in zip(packet.chunks, p.SYNC_CHUNKS.decode(packet), strict=True):
            assert isinstance(message, DialogCreated)
            out += [len(chunk), p.SYNC_CHUNK_MARKER]
            out += [v.decode() if isinstance(v, bytes) else v for v in message.values()]
    elif isinstance(packet, p.SyncEnd):
        out += [packet.capability, packet.chunks]
    if isinstance(packet, (p.LinkStateUpdate, p.FullTopologyUpdate, p.NodeDescription,
                           p.CapabilityUpdate)):  # fmt: skip
        out += [len(packet.path), *packet.path]
    if isinstance(packet, p.ExtraPacket):
        trailer = packet.trailer
        out += [trailer.cluster_id, trailer.src_node_id, trailer.dst_node_id]
    return out


def manifest_values(entry: dict[str, Any]) -> list[int | str]:
    return [field["value"] for field in entry["fields"]]


def test_every_clusterer_vector_is_covered() -> None:
    types = {entry["packet_type"] for entry in CLUSTERER}
    assert types == {0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13}
    on_disk = {path.name for path in FOLDER.glob("*clusterer-*.bin")}
    assert {entry["file"] for entry in CLUSTERER} == on_disk and len(on_disk) == 61


@pytest.mark.parametrize("entry", CLUSTERER, ids=[e["file"] for e in CLUSTERER])
def test_vector_parses_to_its_manifest_and_builds_back(entry: dict[str, Any]) -> None:
    data = (FOLDER / entry["file"]).read_bytes()
    packet = p.parse_bytes(data)
    assert entry["packet_type"] == packet.TYPE
    assert entry["capability"] == packet.CAPABILITY
    assert entry["version"] == packet.VERSION
    assert flat(packet) == manifest_values(entry)
    assert packet.to_bytes() == data


def test_sync_chunk_decodes_as_dialog_created() -> None:
    sync = p.parse_bytes((FOLDER / "join-clusterer-sync-1.bin").read_bytes())
    assert isinstance(sync, p.Sync)
    (dialog,) = p.SYNC_CHUNKS.decode(sync)
    assert isinstance(dialog, DialogCreated)
    assert (dialog.callid, dialog.h_id, dialog.caller_sock) == (
        "inject-1@thirdparty",
        4242,
        "udp:sipsock",
    )


def test_sync_built_from_typed_dialogs_round_trips() -> None:
    dialogs = [DialogCreated.with_defaults(callid=f"call-{i}", h_id=i + 1) for i in range(3)]
    chunks = tuple(p.chunk_body(d.to_bytes(wire=STREAM)) for d in dialogs)
    sync = p.Sync(Trailer(1, 3, 2), "dialog-dlg-repl", 4, chunks)
    again = p.parse_bytes(sync.to_bytes())
    assert again == sync
    assert p.SYNC_CHUNKS.decode(again) == dialogs


def test_registry_refuses_a_second_decoder_and_names_unknown_capabilities() -> None:
    registry = p.SyncChunkRegistry()
    registry.register("x-repl", lambda reader: reader.pop_int()[0])
    with pytest.raises(ValueError, match="already"):
        registry.register("x-repl", lambda reader: None)
    assert registry.decode_chunk("x-repl", 1, struct.pack("<i", 7)) == 7
    assert "x-repl" in registry and "y-repl" not in registry
    with pytest.raises(KeyError):
        registry.decode_chunk("y-repl", 1, b"")


# --- refusals -------------------------------------------------------------------------


def reframe(data: bytes, body: bytes) -> PacketReader:
    """``data``'s header (up to its command) followed by ``body``, length rewritten."""
    name_len = struct.unpack_from("<H", data, 10)[0]
    head = bytearray(data[: 12 + name_len + 4])
    packet = head + body
    struct.pack_into("<I", packet, 4, len(packet))
    return PacketReader.parse(bytes(packet), wire=STREAM)


def vector(name: str) -> bytes:
    return (FOLDER / name).read_bytes()


def body(data: bytes) -> bytes:
    return PacketReader.parse(data, wire=STREAM).fields


def test_truncated_internal_packet_names_the_field() -> None:
    data = vector("clusterer-cap-update-1.bin")
    with pytest.raises(TruncatedField):
        p.parse(reframe(data, body(data)[:-2]))


def test_trailing_bytes_are_refused() -> None:
    data = vector("clusterer-ping-1.bin")
    with pytest.raises(TrailingBytes):
        p.parse(reframe(data, body(data) + b"\0\0\0\0"))


def test_negative_count_is_refused() -> None:
    data = vector("clusterer-pong-1.bin")
    with pytest.raises(p.BadClustererPacket, match="nr_nodes"):
        p.parse(reframe(data, struct.pack("<iii", 1, 2, -1)))


def test_bad_sync_chunk_marker_and_size_are_refused() -> None:
    data = vector("join-clusterer-sync-1.bin")
    fields = bytearray(body(data))
    marker_at = 2 + len(b"dialog-dlg-repl") + 4 + 4
    assert struct.unpack_from("<i", fields, marker_at)[0] == p.SYNC_CHUNK_MARKER
    bad = bytearray(fields)
    struct.pack_into("<i", bad, marker_at, 7)
    with pytest.raises(p.BadClustererPacket, match="marker 7"):
        p.parse(reframe(data, bytes(bad)))
    big = bytearray(fields)
    struct.pack_into("<i", big, marker_at - 4, 5000)
    with pytest.raises(p.BadClustererPacket, match="size 5000"):
        p.parse(reframe(data, bytes(big)))


def test_wrong_version_unknown_type_and_other_capability_are_refused() -> None:
    data = bytearray(vector("clusterer-sync-req-1.bin"))
    struct.pack_into("<h", data, 8, 2)  # SYNC_REQ v2 (OpenSIPS 3.2)
    with pytest.raises(BadVersion, match="version 2"):
        p.parse_bytes(bytes(data))
    ping = bytearray(vector("clusterer-ping-1.bin"))
    struct.pack_into("<i", ping, 12 + len(p.CLUSTERER_INTERNAL), 42)
    with pytest.raises(p.BadClustererPacket, match="42"):
        p.parse_bytes(bytes(ping))
    with pytest.raises(p.BadClustererPacket, match="not a clusterer"):
        p.parse_bytes(vector("dialog-create-1.bin"))
    unknown_internal = bytearray(vector("clusterer-ping-1.bin"))
    struct.pack_into("<i", unknown_internal, 12 + len(p.CLUSTERER_INTERNAL), 10)
    with pytest.raises(p.BadClustererPacket, match="SYNC_REQ"):
        p.parse_bytes(bytes(unknown_internal))


def test_text_that_is_not_utf8_is_refused() -> None:
    data = vector("clusterer-shtag-active-1.bin")
    fields = bytearray(body(data))
    fields[2] = 0xFF  # first byte of the tag "vip"
    with pytest.raises(p.BadClustererPacket, match="sharing_tag"):
        p.parse(reframe(data, bytes(fields)))


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from([entry["file"] for entry in CLUSTERER]),
    data=st.data(),
)
def test_any_body_parses_and_rebuilds_or_raises_a_decode_error(
    name: str, data: st.DataObject
) -> None:
    packet = vector(name)
    fields = bytearray(body(packet))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(fields) - 1))
        fields[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(fields)))
    try:
        parsed = p.parse(reframe(packet, bytes(fields[:cut])))
    except DecodeError:
        return
    # What parses builds back to a packet that parses to the same value.
    assert p.parse_bytes(parsed.to_bytes()) == parsed
