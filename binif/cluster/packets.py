"""The clusterer's own packets as typed values: parse from and build to bytes.

OpenSIPS's ``clusterer`` module speaks two capabilities over the stream profile
(``binif.STREAM``):

- ``clusterer-internal`` (version 1, no trailer): the body starts with
  cluster_id and src_node_id. :class:`Ping`, :class:`Pong`,
  :class:`LinkStateUpdate`, :class:`FullTopologyUpdate`, :class:`UnknownId`,
  :class:`NodeDescription`, :class:`CapabilityUpdate`.
- ``clusterer-extra`` (the clusterer trailer at the end: cluster_id,
  src_node_id, dst_node_id): :class:`RemoveNode`, :class:`GenericMessage`,
  :class:`MiCommand`, :class:`ShtagActive` (version 1), :class:`SyncRequest`,
  :class:`Sync`, :class:`SyncEnd` (version 3).

:func:`parse` turns a packet of either capability into one of these values and
``value.to_bytes()`` gives the packet back, byte for byte (the tests check both
against every clusterer packet captured from OpenSIPS 4.0.1).

Sync chunks and the capabilities that read them
------------------------------------------------
A :class:`Sync` packet carries a capability name, that capability's data
version, then chunks ``[size, marker 101010101, fields]``; :attr:`Sync.chunks`
holds each chunk's fields as raw bytes. What those fields mean belongs to the
capability, so a small registry maps a capability name to a decoder:

    SYNC_CHUNKS.register("dialog-dlg-repl", DialogCreated.from_packet, command=1)
    typed = SYNC_CHUNKS.decode(sync_packet)  # one value per chunk

A decoder is ``(chunk: PacketReader) -> object``: the reader holds exactly the
chunk's fields, framed as a packet of the capability with the sync's data
version (``reader.module`` is the capability, ``reader.version`` the data
version), so a typed message class decodes it with ``from_packet``. The
dialog capability's chunks are :class:`~binif.opensips40.DialogCreated` bodies
and are registered here. Another capability plugs in the same way, e.g.
``usrloc-contact-repl``, whose chunk is ``is_contact`` (int) then an AoR insert
or a contact insert body (:func:`~binif.opensips40_usrloc.usrloc_chunk`, also
registered here). ``binif.cluster.Node`` hands each decoded item to the
``@node.on`` handler of its class. A donor's chunk of a message is its fields
(:func:`chunk_body`), unless its capability registered an ``encoder`` (usrloc's
adds ``is_contact``): :meth:`SyncChunkRegistry.encode_chunk`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar, Final, TypeAlias

from ..errors import BadVersion, DecodeError, TrailingBytes
from ..messages import Message
from ..opensips40 import DialogCreated, Trailer
from ..opensips40_usrloc import USRLOC_CAPABILITY, usrloc_chunk, usrloc_chunk_body
from ..reader import PacketReader
from ..wire import STREAM
from ..writer import PacketWriter

__all__ = [
    "CLUSTERER_EXTRA",
    "CLUSTERER_INTERNAL",
    "SYNC_CHUNKS",
    "SYNC_CHUNK_MARKER",
    "BadClustererPacket",
    "CapabilityUpdate",
    "ClustererPacket",
    "ExtraPacket",
    "FullTopologyUpdate",
    "GenericMessage",
    "InternalPacket",
    "LinkState",
    "LinkStateUpdate",
    "MiCommand",
    "NodeCapabilities",
    "NodeDescription",
    "PacketType",
    "Ping",
    "Pong",
    "RemoveNode",
    "ShtagActive",
    "Sync",
    "SyncChunkRegistry",
    "SyncEnd",
    "SyncPacket",
    "SyncRequest",
    "TopologyNode",
    "UnknownId",
    "chunk_body",
    "chunk_reader",
    "parse",
    "parse_bytes",
]

CLUSTERER_INTERNAL: Final = "clusterer-internal"
CLUSTERER_EXTRA: Final = "clusterer-extra"
INTERNAL_VERSION: Final = 1
EXTRA_VERSION: Final = 1
SYNC_VERSION: Final = 3
SYNC_CHUNK_MARKER: Final = 101010101
_CHUNK_HEAD: Final = struct.Struct("<ii")
_TOTAL: Final = struct.Struct("<I")
_TRAILER: Final = struct.Struct("<iii")
MAX_COUNT: Final = 16384
"""Largest node, capability, neighbour or path count accepted (a packet holds fewer)."""


class PacketType(IntEnum):
    """The clusterer's packet types, shared by both capabilities."""

    PING = 0
    PONG = 1
    LS_UPDATE = 2
    FULL_TOP_UPDATE = 3
    UNKNOWN_ID = 4
    NODE_DESCRIPTION = 5
    REMOVE_NODE = 6
    GENERIC_MSG = 7
    MI_CMD = 8
    CAP_UPDATE = 9
    SYNC_REQ = 10
    SYNC = 11
    SYNC_END = 12
    SHTAG_ACTIVE = 13


class LinkState(IntEnum):
    """A link's state in a LS_UPDATE (OpenSIPS's ``clusterer_link_state``)."""

    UP = 0
    DOWN = 1


class BadClustererPacket(DecodeError):
    """A clusterer packet that OpenSIPS would not read: unknown type, bad count, bad chunk."""


# --- reading helpers ----------------------------------------------------------------


class _Fields:
    """Sequential pops over an immutable reader, with clusterer-specific checks."""

    __slots__ = ("reader",)

    def __init__(self, reader: PacketReader) -> None:
        self.reader = reader

    def int_(self) -> int:
        value, self.reader = self.reader.pop_int()
        return value

    def raw(self) -> bytes:
        value, self.reader = self.reader.pop_str()
        return value

    def text(self, what: str) -> str:
        offset = self.reader.offset
        raw = self.raw()
        try:
            return raw.decode()
        except UnicodeDecodeError as error:
            raise BadClustererPacket(
                f"{what} at byte offset {offset} is not UTF-8 text ({error.reason})"
            ) from None

    def count(self, what: str) -> int:
        offset = self.reader.offset
        n = self.int_()
        if not 0 <= n <= MAX_COUNT:
            raise BadClustererPacket(f"{what} at byte offset {offset} is {n}, not 0 to {MAX_COUNT}")
        return n

    def ints(self, what: str) -> tuple[int, ...]:
        return tuple(self.int_() for _ in range(self.count(what)))

    def end(self) -> None:
        if not self.reader.at_end:
            raise TrailingBytes(
                f"{len(self.reader.remaining)} bytes left after the last field",
                index=self.reader.index,
                offset=self.reader.offset,
            )


def _push_ints(writer: PacketWriter, values: tuple[int, ...]) -> PacketWriter:
    writer = writer.push_int(len(values))
    for value in values:
        writer = writer.push_int(value)
    return writer


# --- clusterer-internal -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InternalPacket:
    """A ``clusterer-internal`` packet: no trailer, cluster and source lead the body."""

    TYPE: ClassVar[PacketType]
    CAPABILITY: ClassVar[str] = CLUSTERER_INTERNAL
    VERSION: ClassVar[int] = INTERNAL_VERSION

    cluster_id: int
    """The cluster the packet is about."""
    src_node_id: int
    """The node that created the packet (not the one that relayed it)."""

    def to_bytes(self) -> bytes:
        """The complete packet, ready to send."""
        writer = PacketWriter(self.CAPABILITY, self.TYPE, wire=STREAM, version=self.VERSION)
        writer = writer.push_int(self.cluster_id).push_int(self.src_node_id)
        return self._push_body(writer).to_bytes()

    def _push_body(self, writer: PacketWriter) -> PacketWriter:
        return writer


@dataclass(frozen=True, slots=True)
class Ping(InternalPacket):
    """PING: a heartbeat; ``req_node_list`` asks for the known node ids in the PONG."""

    TYPE: ClassVar[PacketType] = PacketType.PING
    req_node_list: bool = False
    """Whether the PONG should list the sender's known nodes."""

    def _push_body(self, writer: PacketWriter) -> PacketWriter:
        return writer.push_int(int(self.req_node_list))


@dataclass(frozen=True, slots=True)
class Pong(InternalPacket):
    """PONG: the answer to a PING, with node ids when the PING asked for them."""

    TYPE: ClassVar[PacketType] = PacketType.PONG
    node_ids: tuple[int, ...] = ()
    """The answering node's known nodes, except the pinger (empty unless asked)."""

    def _push_body(self, writer: PacketWriter) -> PacketWriter:
        return _push_ints(writer, self.node_ids)


@dataclass(frozen=True, slots=True)
class LinkStateUpdate(InternalPacket):
    """LS_UPDATE: the source's link with one neighbour changed state."""

    TYPE: ClassVar[PacketType] = PacketType.LS_UPDATE
    seq_no: int = 0
    """The source's link-state sequence number (rises by one per update)."""
    timestamp: int = 0
    """The source's wall clock when it sent the update."""
    neighbour_id: int = 0
    """The neighbour whose link changed."""
    link_state: int = LinkState.UP
    """The link's new state (:class:`LinkState`)."""
    path: tuple[int, ...] = ()
    """The nodes the update went through, the source first (flooding appends one per hop)."""

    def _push_body(self, writer: PacketWriter) -> PacketWriter:
        writer = writer.push_int(self.seq_no).push_int(self.timestamp)
        writer = writer.push_int(self.neighbour_id).push_int(self.link_state)
        return _push_ints(writer, self.path)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """How to reach a node, as a description carries it."""

    url: str
    """The node's BIN listener, e.g. ``bin:127.0.0.1:5557``."""
    sip_addr: str
    """The node's SIP address (informative)."""
    priority: int = 50
    """Lower is preferred when routing."""
    ping_retries: int = 3
    """PINGs retried before the node is declared down."""


@dataclass(frozen=True, slots=True)
class TopologyNode:
    """One node's entry in a FULL_TOP_UPDATE: its adjacency list."""

    node_id: int
    """The node described."""
    info: NodeInfo | None
    """Its description, sent when the receiver may not know the node."""
    ls_seq_no: int
    """Its last link-state sequence number the sender saw."""
    ls_timestamp: int
    """Its last link-state timestamp the sender saw."""
    neighbours: tuple[int, ...]
    """The nodes it has an up link with."""


@dataclass(frozen=True, slots=True)
class FullTopologyUpdate(InternalPacket):
    """FULL_TOP_UPDATE: the sender's whole view of the topology, itself first."""

    TYPE: ClassVar[PacketType] = PacketType.FULL_TOP_UPDATE
    seq_no: int = 0
    """The source's topology sequence number."""
    timestamp: int = 0
    """The source's wall clock when it sent the update."""
    nodes: tuple[TopologyNode, ...] = ()
    """One adjacency list per node, the source's first."""
    path: tuple[int, ...] = ()
    """The nodes the update went through, the source first."""

    def _push_body(self, writer: PacketWriter) -> PacketWriter:
        writer = writer.push_int(self.seq_no).push_int(self.timestamp).push_int(len(self.nodes))
        for node in self.nodes:
            writer = writer.push_int(node.node_id).push_int(int(node.info is not None))
            if node.info is not None:
                writer = _push_info(writer, node.info)
            writer = writer.push_int(node.ls_seq_no).push_int(node.ls_timestamp)
            writer = _push_ints(writer, node.neighbours)
        return _push_ints(writer, self.path)


@dataclass(frozen=True, slots=True)
class UnknownId(InternalPacket):
    """UNKNOWN_ID: "I do not know you": the answer to a PING from an unknown node."""

    TYPE: ClassVar[PacketType] = PacketType.UNKNOWN_ID


@dataclass(frozen=True, slots=True)
class NodeDescription(InternalPacket):
    """NODE_DESCRIPTION: how to reach the source; the answer to UNKNOWN_ID."""

    TYPE: ClassVar[PacketType] = PacketType.NODE_DESCRIPTION
    info: NodeInfo = field(default_factory=lambda: NodeInfo("", ""))
    """The source's url, sip address, priority and ping retries."""
    path: tuple[int, ...] = ()
    """The nodes the description went through, the source first."""

    def _push_body(self, writer: PacketWriter) -> PacketWriter:
        return _push_ints(_push_info(writer, self.info), self.path)


def _push_info(writer: PacketWriter, info: NodeInfo) -> PacketWriter:
    writer = writer.push_str(info.url).push_str(info.sip_addr)
    return writer.push_int(info.priority).push_int(info.ping_retries)


@dataclass(frozen=True, slots=True)
class NodeCapabilities:
    """The capabilities one node serves, each with its state (1 ready/synced, 0 not)."""

    node_id: int
    """The node that serves them."""
    capabilities: tuple[tuple[str, int], ...]
    """(name, state) pairs; state 1 makes the node a sync donor for that capability."""


@dataclass(frozen=True, slots=True)
class CapabilityUpdate(InternalPacket):
    """CAP_UPDATE: the capabilities and states of the source (and what it knows of others)."""

    TYPE: ClassVar[PacketType] = PacketType.CAP_UPDATE
    seq_no: int = 0
    """Rises per update; a receiver ignores one not above the last it saw from the source."""
    timestamp: int = 0
    """The source's wall clock when it sent the update."""
    nodes: tuple[NodeCapabilities, ...] = ()
    """The source's own capabilities first, then any other node's it relays."""
    require_reply: bool = False
    """Whether the receiver should answer with its own CAP_UPDATE."""
    path: tuple[int, ...] = ()
    """The nodes the update went through, the source first."""

    def _push_body(self, writer: PacketWriter) -> PacketWriter:
        writer = writer.push_int(self.seq_no).push_int(self.timestamp).push_int(len(self.nodes))
        for node in self.nodes:
            writer = writer.push_int(node.node_id).push_int(len(node.capabilities))
            for name, state in node.capabilities:
                writer = writer.push_str(name).push_int(state)
        writer = writer.push_int(int(self.require_reply))
        return _push_ints(writer, self.path)


# --- clusterer-extra ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExtraPacket:
    """A ``clusterer-extra`` packet: its fields, then the clusterer trailer."""

    TYPE: ClassVar[PacketType]
    CAPABILITY: ClassVar[str] = CLUSTERER_EXTRA
    VERSION: ClassVar[int] = EXTRA_VERSION

    trailer: Trailer
    """cluster_id, src_node_id, dst_node_id, as the receiver checks them."""

    def to_bytes(self) -> bytes:
        """The complete packet, trailer included."""
        return self.trailer.append_to(self._push_body(self._writer())).to_bytes()

    def _writer(self) -> PacketWriter:
        return PacketWriter(self.CAPABILITY, self.TYPE, wire=STREAM, version=self.VERSION)

    def _push_body(self, writer: PacketWriter) -> PacketWriter:
        return writer


@dataclass(frozen=True, slots=True)
class RemoveNode(ExtraPacket):
    """REMOVE_NODE: forget a node (``clusterer_remove_node``, no-DB mode only)."""

    TYPE: ClassVar[PacketType] = PacketType.REMOVE_NODE
    target_node_id: int = 0
    """The node to forget."""

    def _push_body(self, writer: PacketWriter) -> PacketWriter:
        return writer.push_int(self.target_node_id)


@dataclass(frozen=True, slots=True)
class GenericMessage(ExtraPacket):
    """GENERIC_MSG: ``cluster_send_req``/``cluster_broadcast_req`` payloads."""

    TYPE: ClassVar[PacketType] = PacketType.GENERIC_MSG
    req_like: int = 0
    """1 for a request expecting a reply, 0 for a reply or a plain message."""
    tag: str = ""
    """The exchange tag pairing requests and replies."""
    message: str = ""
    """The message text."""

    def _push_body(self, writer: PacketWriter) -> PacketWriter:
        return writer.push_int(self.req_like).push_str(self.tag).push_str(self.message)


@dataclass(frozen=True, slots=True)
class MiCommand(ExtraPacket):
    """MI_CMD: run an MI command on the receiver (``cluster_send_mi``)."""

    TYPE: ClassVar[PacketType] = PacketType.MI_CMD
    name: str = ""
    """The MI command."""
    params: tuple[str, ...] = ()
    """Its parameters, as strings."""

    def _push_body(self, writer: PacketWriter) -> PacketWriter:
        writer = writer.push_str(self.name).push_int(len(self.params))
        for param in self.params:
            writer = writer.push_str(param)
        return writer


@dataclass(frozen=True, slots=True)
class ShtagActive(ExtraPacket):
    """SHTAG_ACTIVE: the source took a sharing tag over; the receiver steps back."""

    TYPE: ClassVar[PacketType] = PacketType.SHTAG_ACTIVE
    tag: str = ""
    """The sharing tag's name."""

    def _push_body(self, writer: PacketWriter) -> PacketWriter:
        return writer.push_str(self.tag)


@dataclass(frozen=True, slots=True)
class SyncPacket(ExtraPacket):
    """The sync packets (version 3): each names the capability it is about."""

    VERSION: ClassVar[int] = SYNC_VERSION
    capability: str = ""
    """The capability synced, e.g. ``dialog-dlg-repl``."""


@dataclass(frozen=True, slots=True)
class SyncRequest(SyncPacket):
    """SYNC_REQ: "send me everything you hold for this capability"."""

    TYPE: ClassVar[PacketType] = PacketType.SYNC_REQ

    def _push_body(self, writer: PacketWriter) -> PacketWriter:
        return writer.push_str(self.capability)


@dataclass(frozen=True, slots=True)
class Sync(SyncPacket):
    """SYNC: a batch of the donor's items, one chunk each."""

    TYPE: ClassVar[PacketType] = PacketType.SYNC
    data_version: int = 0
    """The version of the capability's layout the chunks use (4 for dialogs)."""
    chunks: tuple[bytes, ...] = ()
    """Each chunk's fields as raw bytes (what follows its size and marker)."""

    def to_bytes(self) -> bytes:
        """The complete packet: capability, data version, chunks, trailer."""
        head = self._writer().push_str(self.capability).push_int(self.data_version).to_bytes()
        chunks = b"".join(_CHUNK_HEAD.pack(len(c), SYNC_CHUNK_MARKER) + c for c in self.chunks)
        trailer = _TRAILER.pack(
            self.trailer.cluster_id, self.trailer.src_node_id, self.trailer.dst_node_id
        )
        return _extended(head, chunks + trailer)


@dataclass(frozen=True, slots=True)
class SyncEnd(SyncPacket):
    """SYNC_END: the donor sent every chunk; ``chunks`` says how many."""

    TYPE: ClassVar[PacketType] = PacketType.SYNC_END
    chunks: int = 0
    """Chunks sent in all the SYNC packets before it."""

    def _push_body(self, writer: PacketWriter) -> PacketWriter:
        return writer.push_str(self.capability).push_int(self.chunks)


ClustererPacket: TypeAlias = InternalPacket | ExtraPacket
"""Any clusterer packet :func:`parse` returns."""


# --- parsing ------------------------------------------------------------------------


def _info(fields: _Fields) -> NodeInfo:
    url = fields.text("url")
    sip_addr = fields.text("sip_addr")
    return NodeInfo(url, sip_addr, fields.int_(), fields.int_())


def _internal(kind: PacketType, cluster_id: int, src: int, fields: _Fields) -> InternalPacket:
    if kind is PacketType.PING:
        return Ping(cluster_id, src, bool(fields.int_()))
    if kind is PacketType.PONG:
        return Pong(cluster_id, src, fields.ints("nr_nodes"))
    if kind is PacketType.LS_UPDATE:
        seq_no, timestamp, neighbour, state = (fields.int_() for _ in range(4))
        return LinkStateUpdate(
            cluster_id, src, seq_no, timestamp, neighbour, state, fields.ints("path_len")
        )
    if kind is PacketType.FULL_TOP_UPDATE:
        seq_no, timestamp = fields.int_(), fields.int_()
        nodes = []
        for _ in range(fields.count("no_nodes")):
            node_id = fields.int_()
            info = _info(fields) if fields.int_() else None
            ls_seq_no, ls_timestamp = fields.int_(), fields.int_()
            nodes.append(
                TopologyNode(node_id, info, ls_seq_no, ls_timestamp, fields.ints("no_neigh"))
            )
        return FullTopologyUpdate(
            cluster_id, src, seq_no, timestamp, tuple(nodes), fields.ints("path_len")
        )
    if kind is PacketType.UNKNOWN_ID:
        return UnknownId(cluster_id, src)
    if kind is PacketType.NODE_DESCRIPTION:
        return NodeDescription(cluster_id, src, _info(fields), fields.ints("path_len"))
    if kind is PacketType.CAP_UPDATE:
        seq_no, timestamp = fields.int_(), fields.int_()
        caps = []
        for _ in range(fields.count("nr_nodes")):
            node_id = fields.int_()
            pairs = tuple(
                (fields.text("capability name"), fields.int_())
                for _ in range(fields.count("nr_cap"))
            )
            caps.append(NodeCapabilities(node_id, pairs))
        require_reply = bool(fields.int_())
        return CapabilityUpdate(
            cluster_id, src, seq_no, timestamp, tuple(caps), require_reply, fields.ints("path_len")
        )
    raise BadClustererPacket(f"{CLUSTERER_INTERNAL} has no packet type {kind.value} ({kind.name})")


def _extra(kind: PacketType, trailer: Trailer, fields: _Fields) -> ExtraPacket:
    if kind is PacketType.REMOVE_NODE:
        return RemoveNode(trailer, fields.int_())
    if kind is PacketType.GENERIC_MSG:
        return GenericMessage(trailer, fields.int_(), fields.text("tag"), fields.text("message"))
    if kind is PacketType.MI_CMD:
        name = fields.text("cmd_name")
        params = tuple(fields.text("cmd_param") for _ in range(fields.count("no_params")))
        return MiCommand(trailer, name, params)
    if kind is PacketType.SHTAG_ACTIVE:
        return ShtagActive(trailer, fields.text("sharing_tag"))
    if kind is PacketType.SYNC_REQ:
        return SyncRequest(trailer, fields.text("capability"))
    if kind is PacketType.SYNC:
        capability = fields.text("capability")
        data_version = fields.int_()
        offset = fields.reader.offset
        rest = fields.reader.remaining
        return Sync(trailer, capability, data_version, tuple(_chunks(rest, offset)))
    if kind is PacketType.SYNC_END:
        return SyncEnd(trailer, fields.text("capability"), fields.int_())
    raise BadClustererPacket(f"{CLUSTERER_EXTRA} has no packet type {kind.value} ({kind.name})")


def _chunks(data: bytes, offset: int) -> Iterator[bytes]:
    """Split what follows a SYNC's data version into chunks (``offset``: where it starts)."""
    pos = 0
    while pos < len(data):
        if len(data) - pos < _CHUNK_HEAD.size:
            raise BadClustererPacket(
                f"sync chunk at byte offset {offset + pos}: {len(data) - pos} bytes,"
                " too short for its size and marker"
            )
        size, marker = _CHUNK_HEAD.unpack_from(data, pos)
        if marker != SYNC_CHUNK_MARKER:
            raise BadClustererPacket(
                f"sync chunk at byte offset {offset + pos}: marker {marker},"
                f" not {SYNC_CHUNK_MARKER}"
            )
        pos += _CHUNK_HEAD.size
        if not 0 <= size <= len(data) - pos:
            raise BadClustererPacket(
                f"sync chunk at byte offset {offset + pos - _CHUNK_HEAD.size}: size {size}"
                f" but {len(data) - pos} bytes remain"
            )
        yield data[pos : pos + size]
        pos += size


def _extended(packet: bytes, raw: bytes) -> bytes:
    """``packet`` with ``raw`` appended and its total length (offset 4) rewritten."""
    out = bytearray(packet + raw)
    _TOTAL.pack_into(out, 4, len(out))
    return bytes(out)


def parse(reader: PacketReader) -> ClustererPacket:
    """Decode a ``clusterer-internal`` or ``clusterer-extra`` packet.

    Raises :class:`BadClustererPacket` for another capability, an unknown type,
    a negative or absurd count or a bad sync chunk, :class:`~binif.errors.BadVersion`
    for a version OpenSIPS would discard, and the codec's field errors for
    truncated or trailing bytes.
    """
    try:
        kind = PacketType(reader.command)
    except ValueError:
        raise BadClustererPacket(
            f"{reader.module} packet type {reader.command} is not a clusterer type"
        ) from None
    if reader.module == CLUSTERER_INTERNAL:
        _check_version(reader, INTERNAL_VERSION)
        fields = _Fields(reader)
        cluster_id, src = fields.int_(), fields.int_()
        packet: ClustererPacket = _internal(kind, cluster_id, src, fields)
    elif reader.module == CLUSTERER_EXTRA:
        sync = kind in (PacketType.SYNC_REQ, PacketType.SYNC, PacketType.SYNC_END)
        _check_version(reader, SYNC_VERSION if sync else EXTRA_VERSION)
        trailer, rest = Trailer.split(reader)
        fields = _Fields(rest)
        packet = _extra(kind, trailer, fields)
        if isinstance(packet, Sync):
            return packet  # the chunks took every byte before the trailer
    else:
        raise BadClustererPacket(f"{reader.module!r} is not a clusterer capability")
    fields.end()
    return packet


def parse_bytes(data: bytes) -> ClustererPacket:
    """Parse one complete packet of the stream profile, then :func:`parse` it."""
    return parse(PacketReader.parse(data, wire=STREAM))


def _check_version(reader: PacketReader, expected: int) -> None:
    if reader.version != expected:
        raise BadVersion(
            f"{reader.module} packet type {reader.command} has version {reader.version},"
            f" OpenSIPS needs {expected}"
        )


# --- sync chunks to typed values ----------------------------------------------------

ChunkDecoder: TypeAlias = Callable[[PacketReader], object]
"""Turns one sync chunk (a reader over exactly its fields) into a typed value."""
ChunkEncoder: TypeAlias = Callable[[Message], bytes]
"""Turns one item a donor holds into the bytes of its sync chunk."""

_HEAD: Final = struct.Struct("<4sIhH")


def chunk_body(packet: bytes) -> bytes:
    """The fields of one stream-profile packet: what a sync chunk of that item holds.

    ``chunk_body(DialogCreated(...).to_bytes(wire=STREAM))`` is the chunk a
    dialog donor sends for that dialog.
    """
    return PacketReader.parse(packet, wire=STREAM).fields


def chunk_reader(capability: str, data_version: int, chunk: bytes, command: int) -> PacketReader:
    """A reader over ``chunk``'s fields, framed as a ``capability`` packet of ``command``."""
    name = capability.encode()
    command_bytes = struct.pack("<i", command)
    size = _HEAD.size + len(name) + len(command_bytes) + len(chunk)
    head = _HEAD.pack(b"P4CK", size, data_version, len(name))
    return PacketReader.parse(head + name + command_bytes + chunk, wire=STREAM)


class SyncChunkRegistry:
    """Capability name -> the decoder of its sync chunks (see the module docstring)."""

    def __init__(self) -> None:
        self._decoders: dict[str, tuple[ChunkDecoder, int]] = {}
        self._encoders: dict[str, ChunkEncoder] = {}

    def register(
        self,
        capability: str,
        decoder: ChunkDecoder,
        *,
        command: int = 0,
        encoder: ChunkEncoder | None = None,
    ) -> None:
        """Decode ``capability``'s chunks with ``decoder`` (and build them with ``encoder``).

        ``command`` is the packet type the chunk reader carries, so a typed
        message class (whose ``from_packet`` checks it) decodes the chunk.
        Without an ``encoder`` a message's chunk is its fields.
        """
        if capability in self._decoders:
            raise ValueError(f"sync chunks of {capability!r} already have a decoder")
        self._decoders[capability] = (decoder, command)
        if encoder is not None:
            self._encoders[capability] = encoder

    def encode_chunk(self, message: Message) -> bytes:
        """The chunk a donor sends for ``message`` (what follows the chunk's size and marker)."""
        encoder = self._encoders.get(message.MODULE)
        if encoder is not None:
            return encoder(message)
        return chunk_body(message.to_bytes(wire=STREAM))

    def __contains__(self, capability: object) -> bool:
        return capability in self._decoders

    def decode_chunk(self, capability: str, data_version: int, chunk: bytes) -> object:
        """One chunk as its capability's typed value; ``KeyError`` when none is registered."""
        decoder, command = self._decoders[capability]
        return decoder(chunk_reader(capability, data_version, chunk, command))

    def decode(self, sync: Sync) -> list[object]:
        """Every chunk of ``sync`` as its capability's typed value, in order."""
        return [self.decode_chunk(sync.capability, sync.data_version, c) for c in sync.chunks]


SYNC_CHUNKS: Final = SyncChunkRegistry()
"""The registry the cluster node uses; capabilities register their decoders here."""

SYNC_CHUNKS.register(DialogCreated.MODULE, DialogCreated.from_packet, command=DialogCreated.COMMAND)
SYNC_CHUNKS.register(USRLOC_CAPABILITY, usrloc_chunk, encoder=usrloc_chunk_body)
