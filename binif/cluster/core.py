"""The clusterer as a sans-I/O state machine: packets and the clock in, packets and events out.

Modelled on aioquic's ``QuicConnection``. :class:`ClusterCore` never touches a
socket, a loop or a clock:

- :meth:`~ClusterCore.receive` takes one parsed packet, the IP of the TCP peer
  it came from, a token for the connection it came in on, and the current time
  (any monotonic float, in seconds);
- :meth:`~ClusterCore.handle_timer` runs the heartbeats at the time
  :meth:`~ClusterCore.get_timer` asked for;
- :meth:`~ClusterCore.datagrams_to_send` hands out the packets to send, each
  addressed to a node id (send on your own connection to that node's URL) or,
  for answers to a node not yet known, to the connection the request came on;
- :meth:`~ClusterCore.next_event` hands out what happened (:class:`NodeStateChanged`,
  :class:`TopologyChanged`, :class:`CapabilitiesChanged`, :class:`SyncReceived`,
  :class:`SyncFinished`, :class:`ModulePacket`, ...).

It does what OpenSIPS 4.0's clusterer does for a node that does not relay:
join (PING; on UNKNOWN_ID a NODE_DESCRIPTION), PING/PONG heartbeats with
retries (a silent node goes up -> probing -> down, a down node is pinged again
after ``node_timeout``), topology from LS_UPDATE, FULL_TOP_UPDATE,
NODE_DESCRIPTION and REMOVE_NODE, capabilities from CAP_UPDATE (answered when
asked), sync requests and replies, and the receive checks OpenSIPS makes before
it hands a module packet on. It does not flood updates to other nodes nor
route packets addressed to another node (OpenSIPS nodes do both themselves).

Sync donors. A capability is advertised with state 0 (not a donor) unless the
application declares a provider for it (:meth:`ClusterCore.set_provider`): an
OpenSIPS node syncing from a donor deletes every item the donor did not send,
so only a node that holds the complete set may be one. A SYNC_REQ for a
capability without a provider is not answered (counted, and reported as
:class:`SyncRequested`), never with an empty SYNC_END.

CAP_UPDATE sequence numbers. OpenSIPS ignores a CAP_UPDATE whose number is not
above the last one it saw from that node id, until the node is removed. The
first number is therefore taken from the wall clock (``wall_time`` at
construction): quarter-seconds since 2024-01-01, which fits the signed 32-bit
field until 2041 and keeps rising across restarts as long as a node sends on
average fewer than 4 updates a second between restarts (it sends one per peer
that comes up, asks, or when a provider changes).
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Final, NamedTuple, TypeAlias

from ..errors import BadVersion, DecodeError
from ..opensips40 import Trailer
from ..reader import PacketReader
from . import packets as p

__all__ = [
    "KNOWN_CAPABILITY_VERSIONS",
    "CapabilitiesChanged",
    "ClusterConfig",
    "ClusterCore",
    "ClustererMessage",
    "Event",
    "ModulePacket",
    "NodeAdded",
    "NodeRemoved",
    "NodeState",
    "NodeStateChanged",
    "NodeView",
    "RefusalReason",
    "SyncFinished",
    "SyncReceived",
    "SyncRequested",
    "TopologyChanged",
    "Transmit",
    "parse_url",
]

KNOWN_CAPABILITY_VERSIONS: Final[Mapping[str, int]] = MappingProxyType(
    {"dialog-dlg-repl": 4, "dialog-prof-repl": 4, "usrloc-contact-repl": 5}
)
"""Packet-layout versions OpenSIPS 4.0 uses per capability (WIRE.md)."""

SYNC_DATA_VERSIONS: Final[Mapping[str, int]] = MappingProxyType(
    {"dialog-dlg-repl": 4, "usrloc-contact-repl": 5}
)
"""The data version a SYNC carries per capability (the capability's layout version)."""

_SEQ_EPOCH: Final = 1_704_067_200
"""2024-01-01 UTC: CAP_UPDATE numbers count quarter-seconds from here."""

SYNC_PACKET_SIZE: Final = 16384
"""A SYNC packet is closed once its chunks pass this many bytes (OpenSIPS: ``sync_packet_size``)."""


def parse_url(url: str) -> tuple[str, int]:
    """``bin:127.0.0.1:5557`` -> ``("127.0.0.1", 5557)``; ``bin:[::1]:5557`` for IPv6."""
    scheme, sep, rest = url.partition(":")
    if not sep or scheme.lower() != "bin":
        raise ValueError(f"{url!r} is not a bin: URL (bin:HOST:PORT)")
    host, sep, port_text = rest.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{url!r} has no valid port (bin:HOST:PORT)")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{url!r}: the host must be an IP address, not {host!r}") from None
    return host, int(port_text)


class NodeState(StrEnum):
    """What this node knows of the link to another node."""

    PROBING = "probing"
    """Pinged and not answering yet (new, or silent while up: "possibly down, retrying")."""
    UP = "up"
    """Answers PINGs."""
    DOWN = "down"
    """Did not answer the retries; pinged again after ``node_timeout``."""


_DOWN: Final = NodeState.DOWN


class RefusalReason(StrEnum):
    """Why a received packet was not acted on. Every refusal has exactly one."""

    MALFORMED = "malformed"
    """A clusterer packet or trailer that does not decode."""
    UNKNOWN_CLUSTER = "unknown_cluster"
    """The packet is for another cluster id."""
    OWN_NODE_ID = "own_node_id"
    """The source claims this node's own id."""
    UNKNOWN_SOURCE = "unknown_source"
    """The source id is not a known node."""
    UNKNOWN_ADDRESS = "unknown_address"
    """The TCP peer's IP is not the IP of any known node."""
    NOT_FOR_THIS_NODE = "not_for_this_node"
    """The destination id is another node (this node does not route)."""
    UNKNOWN_CAPABILITY = "unknown_capability"
    """The capability is not served by this node."""
    BAD_VERSION = "bad_version"
    """The packet's version is not the one the capability expects."""
    STALE_UPDATE = "stale_update"
    """A topology or capability update whose sequence number is not above the last one."""


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """This node's identity and the clusterer's timers (OpenSIPS's defaults)."""

    cluster_id: int
    """The cluster joined."""
    node_id: int
    """This node's id; unique in the cluster."""
    url: str
    """This node's BIN listener as the other nodes reach it, e.g. ``bin:127.0.0.1:5557``."""
    seeds: Mapping[int, str] = field(default_factory=dict)
    """Nodes known at start: node id -> URL."""
    capabilities: Mapping[str, int] = field(default_factory=dict)
    """Capabilities served: name -> packet-layout version."""
    sip_addr: str = ""
    """The SIP address advertised in the node description (informative)."""
    priority: int = 50
    """Advertised routing priority."""
    ping_retries: int = 3
    """PINGs retried before a silent node is down (and advertised as ours)."""
    ping_interval: float = 4.0
    """Seconds between PINGs to an up node."""
    ping_timeout: float = 1.0
    """Seconds to wait for a PONG."""
    node_timeout: float = 60.0
    """Seconds between PINGs to a down node."""
    accept_new_nodes: bool = True
    """Add nodes from NODE_DESCRIPTION and FULL_TOP_UPDATE (OpenSIPS without a database)."""

    def __post_init__(self) -> None:
        for name in ("cluster_id", "node_id"):
            value = getattr(self, name)
            if type(value) is not int or not 0 < value < 2**31:
                raise ValueError(f"{name} must be a positive 32-bit int, not {value!r}")
        parse_url(self.url)
        for node_id, url in self.seeds.items():
            if node_id == self.node_id:
                raise ValueError(f"seed {node_id} is this node's own id")
            parse_url(url)
        for value, name in ((self.ping_interval, "ping_interval"),
                            (self.ping_timeout, "ping_timeout"),
                            (self.node_timeout, "node_timeout")):  # fmt: skip
            if not value > 0:
                raise ValueError(f"{name} must be positive, not {value!r}")
        if self.ping_retries < 0:
            raise ValueError(f"ping_retries must be 0 or more, not {self.ping_retries}")


# --- what comes out -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transmit:
    """A packet to send: to ``node_id`` on this node's connection to its URL, or on ``reply_on``."""

    data: bytes
    """The complete packet."""
    node_id: int | None
    """The destination node, or None to answer on the connection the request came in on."""
    reply_on: Hashable | None = None
    """The connection token given to :meth:`ClusterCore.receive`, when ``node_id`` is None."""
    paced: bool = False
    """A clusterer-extra packet (sync traffic): paced like module packets, not urgent."""


@dataclass(frozen=True, slots=True)
class NodeStateChanged:
    """A node's link went from ``old`` to ``new``."""

    node_id: int
    old: NodeState
    new: NodeState


@dataclass(frozen=True, slots=True)
class NodeAdded:
    """A node became known (seed, description, topology update)."""

    node_id: int
    url: str


@dataclass(frozen=True, slots=True)
class NodeRemoved:
    """A node was forgotten (REMOVE_NODE)."""

    node_id: int


@dataclass(frozen=True, slots=True)
class TopologyChanged:
    """The links of ``node_id`` changed (LS_UPDATE, FULL_TOP_UPDATE)."""

    node_id: int
    neighbours: frozenset[int]


@dataclass(frozen=True, slots=True)
class CapabilitiesChanged:
    """What ``node_id`` advertises changed: name -> state (1 ready, 0 not)."""

    node_id: int
    capabilities: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class SyncRequested:
    """``node_id`` asked for ``capability``; ``answered`` is False without a provider."""

    node_id: int
    capability: str
    answered: bool


@dataclass(frozen=True, slots=True)
class SyncReceived:
    """A SYNC packet from ``node_id``: its chunks, undecoded."""

    node_id: int
    sync: p.Sync


@dataclass(frozen=True, slots=True)
class SyncFinished:
    """SYNC_END from ``node_id``: ``announced`` chunks sent, ``received`` of them seen here."""

    node_id: int
    capability: str
    announced: int
    received: int


class ModulePacket(NamedTuple):
    """A module packet that passed every check: the reader without its trailer.

    A named tuple rather than a frozen dataclass: one is built per packet received.
    """

    capability: str
    packet: PacketReader
    node_id: int


@dataclass(frozen=True, slots=True)
class ClustererMessage:
    """A clusterer-extra packet this node does not act on (MI_CMD, SHTAG_ACTIVE, GENERIC_MSG)."""

    packet: p.ExtraPacket


@dataclass(frozen=True, slots=True)
class Refused:
    """A packet that failed a check (also counted in :attr:`ClusterCore.refusals`)."""

    reason: RefusalReason
    detail: str


Event: TypeAlias = (
    NodeStateChanged
    | NodeAdded
    | NodeRemoved
    | TopologyChanged
    | CapabilitiesChanged
    | SyncRequested
    | SyncReceived
    | SyncFinished
    | ModulePacket
    | ClustererMessage
    | Refused
)

Provider: TypeAlias = Callable[[], Iterable[bytes]]
"""Returns the chunk bodies of every item this node holds for a capability."""


@dataclass(frozen=True, slots=True)
class NodeView:
    """What this node knows of another node, as :attr:`ClusterCore.nodes` shows it."""

    node_id: int
    state: NodeState
    url: str
    capabilities: Mapping[str, int]
    """Advertised capabilities: name -> state (1 ready to be a sync donor, 0 not)."""
    neighbours: frozenset[int]
    """The nodes it has an up link with, as the topology updates say."""


# --- per-node state -----------------------------------------------------------------


class _Peer:
    """Link state of one other node (OpenSIPS's node_info, minus routing)."""

    __slots__ = (
        "cap_seq",
        "cap_timestamp",
        "capabilities",
        "info",
        "ip",
        "last_ping",
        "ls_seq",
        "ls_timestamp",
        "neighbours",
        "node_id",
        "outstanding",
        "retries_left",
        "state",
        "top_seq",
        "top_timestamp",
        "view",
    )

    def __init__(self, node_id: int, info: p.NodeInfo, retries: int) -> None:
        self.node_id = node_id
        self.info = info
        self.ip = ipaddress.ip_address(parse_url(info.url)[0])
        self.state = NodeState.PROBING
        self.last_ping: float | None = None
        self.outstanding = False
        self.retries_left = retries
        self.capabilities: dict[str, int] = {}
        self.neighbours: set[int] = set()
        self.cap_seq = self.ls_seq = self.top_seq = 0
        self.cap_timestamp = self.ls_timestamp = self.top_timestamp = 0
        self.view: NodeView | None = None


def _fresh(last_seq: int, seq: int, last_timestamp: int, timestamp: int) -> bool:
    """OpenSIPS's validate_update: a number above the last, or 0 with a newer timestamp."""
    if seq == 0:
        return not (last_seq == 0 and timestamp <= last_timestamp)
    return seq > last_seq


class ClusterCore:
    """The clusterer state machine of one node in one cluster (see the module docstring)."""

    def __init__(self, config: ClusterConfig, *, now: float, wall_time: float) -> None:
        self.config = config
        self._id = config.node_id
        self._cluster = config.cluster_id
        self._start = now
        self._wall_start = wall_time
        self._cap_seq = max(1, int((wall_time - _SEQ_EPOCH) * 4))
        self._peers: dict[int, _Peer] = {}
        self._ip_cache: dict[str, bool] = {}
        self._timer_moved = True
        self._providers: dict[str, Provider] = {}
        self._sync_received: dict[tuple[int, str], int] = {}
        self._out: deque[Transmit] = deque()
        self._events: deque[Event] = deque()
        self._versions = dict(config.capabilities)
        self._info = p.NodeInfo(config.url, config.sip_addr, config.priority, config.ping_retries)
        self.refusals: dict[RefusalReason, int] = dict.fromkeys(RefusalReason, 0)
        """Refused packets by reason."""
        self.sync_requests_declined = 0
        """SYNC_REQs not answered because no provider holds the capability."""
        for node_id, url in config.seeds.items():
            self._add_peer(node_id, p.NodeInfo(url, ""), now)

    # --- the aioquic-style surface ----------------------------------------------------

    def datagrams_to_send(self) -> list[Transmit]:
        """Every packet queued since the last call, in order."""
        out = list(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | None:
        """The oldest event not yet taken, or None."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` should next run (None: nothing scheduled)."""
        self._timer_moved = False
        deadline: float | None = None
        for peer in self._peers.values():
            due = self._due(peer)
            if deadline is None or due < deadline:
                deadline = due
        return deadline

    def handle_timer(self, now: float) -> None:
        """Run the heartbeats that are due at ``now``."""
        for peer in list(self._peers.values()):
            if self._due(peer) <= now:
                self._heartbeat(peer, now)

    def receive(self, packet: PacketReader, peer_ip: str, connection: Hashable, now: float) -> None:
        """Act on one received packet of any capability.

        ``peer_ip`` is the TCP peer's address (its port does not matter);
        ``connection`` is handed back in :class:`Transmit` for answers that go
        back on the connection the packet came in on.
        """
        checked = self.receive_packet(packet, peer_ip, connection, now)
        if checked is not None:
            self._events.append(checked)

    def receive_packet(
        self, packet: PacketReader, peer_ip: str, connection: Hashable, now: float
    ) -> ModulePacket | None:
        """:meth:`receive`, returning a checked module packet instead of queueing its event.

        The fast path for a shell: module traffic is most of what arrives, and
        it changes no state. Everything else still comes out as events.
        """
        module = packet.module
        if module == p.CLUSTERER_INTERNAL:
            self._receive_internal(packet, peer_ip, connection, now)
        elif module == p.CLUSTERER_EXTRA:
            self._receive_extra(packet, peer_ip, now)
        else:
            return self._receive_module(packet, peer_ip, now)
        return None

    @property
    def has_output(self) -> bool:
        """Whether packets or events wait, or the timer moved since :meth:`get_timer` last ran."""
        return bool(self._out or self._events) or self._timer_moved

    # --- what the application asks ----------------------------------------------------

    @property
    def nodes(self) -> Mapping[int, NodeView]:
        """Every known node except this one: id -> :class:`NodeView`."""
        return MappingProxyType({i: self._view(peer) for i, peer in self._peers.items()})

    def state_of(self, node_id: int) -> NodeState | None:
        """A node's state, or None for an unknown node."""
        peer = self._peers.get(node_id)
        return peer.state if peer is not None else None

    @property
    def capabilities(self) -> Mapping[str, int]:
        """What this node advertises: name -> state (1 only with a provider)."""
        return MappingProxyType({name: int(name in self._providers) for name in self._versions})

    @property
    def capability_versions(self) -> Mapping[str, int]:
        """Capabilities served: name -> packet-layout version."""
        return MappingProxyType(self._versions)

    def peer_address(self, node_id: int) -> tuple[str, int]:
        """Where to connect to send to ``node_id`` (its URL's host and port)."""
        return parse_url(self._peers[node_id].info.url)

    def destinations(self, capability: str) -> list[int]:
        """Up nodes that advertise ``capability``, in id order: a broadcast's targets."""
        return [
            node_id
            for node_id, peer in sorted(self._peers.items())
            if peer.state is NodeState.UP and capability in peer.capabilities
        ]

    def trailer(self, dst_node_id: int) -> Trailer:
        """The trailer of a module packet from this node to ``dst_node_id``."""
        return Trailer(self._cluster, self._id, dst_node_id)

    def set_provider(self, capability: str, provider: Provider | None, now: float) -> None:
        """Declare (or withdraw, with None) that this node holds ``capability``'s complete set.

        With a provider the capability is advertised ready (state 1) and SYNC_REQs
        are answered with every chunk it returns; the change is advertised to
        every up node at once.
        """
        if capability not in self._versions:
            raise ValueError(f"{capability!r} is not a capability of this node")
        before = capability in self._providers
        if provider is None:
            self._providers.pop(capability, None)
        else:
            self._providers[capability] = provider
        if before != (provider is not None):
            for peer in self._peers.values():
                if peer.state is NodeState.UP:
                    self._send_cap_update(peer.node_id, False, now)

    def sync_donor(self, capability: str) -> int | None:
        """The node a sync of ``capability`` would ask: an up node advertising it ready."""
        for node_id, peer in sorted(self._peers.items()):
            if peer.state is NodeState.UP and peer.capabilities.get(capability) == 1:
                return node_id
        return None

    def request_sync(self, capability: str, donor: int | None = None) -> int | None:
        """Queue a SYNC_REQ for ``capability`` to ``donor`` (default :meth:`sync_donor`).

        Returns the donor asked, or None when no node can be one yet.
        """
        if capability not in self._versions:
            raise ValueError(f"{capability!r} is not a capability of this node")
        donor = self.sync_donor(capability) if donor is None else donor
        if donor is None:
            return None
        self._sync_received[(donor, capability)] = 0
        self._send(p.SyncRequest(self.trailer(donor), capability), donor)
        return donor

    # --- internal packets -------------------------------------------------------------

    def _receive_internal(
        self, reader: PacketReader, peer_ip: str, connection: Hashable, now: float
    ) -> None:
        try:
            packet = p.parse(reader)
        except DecodeError as error:
            self._refuse(RefusalReason.MALFORMED, str(error))
            return
        assert isinstance(packet, p.InternalPacket)
        src = packet.src_node_id
        if packet.cluster_id != self._cluster:
            self._refuse(RefusalReason.UNKNOWN_CLUSTER, f"cluster {packet.cluster_id}")
            return
        if src == self._id:
            self._refuse(RefusalReason.OWN_NODE_ID, f"{type(packet).__name__} claims our id")
            return
        peer = self._peers.get(src)
        if peer is None:
            self._from_unknown(packet, connection, now)
            return
        if not self._known_ip(peer_ip):
            self._refuse(RefusalReason.UNKNOWN_ADDRESS, f"{peer_ip} for node {src}")
            return
        if isinstance(packet, p.Ping):
            self._on_ping(peer, packet, now)
        elif isinstance(packet, p.Pong):
            self._on_pong(peer, now)
        elif isinstance(packet, p.LinkStateUpdate):
            self._on_ls_update(peer, packet, now)
        elif isinstance(packet, p.FullTopologyUpdate):
            self._on_full_top_update(peer, packet, now)
        elif isinstance(packet, p.CapabilityUpdate):
            self._on_cap_update(peer, packet, now)
        elif isinstance(packet, p.UnknownId):
            # The node does not know us: describe ourselves, then ping at once.
            self._send(p.NodeDescription(self._cluster, self._id, self._info, (self._id,)), src)
            self._ping(peer, now)
        # A NODE_DESCRIPTION from a known node changes nothing (as in OpenSIPS).

    def _from_unknown(self, packet: p.InternalPacket, connection: Hashable, now: float) -> None:
        if isinstance(packet, p.Ping):
            self._out.append(
                Transmit(p.UnknownId(self._cluster, self._id).to_bytes(), None, connection)
            )
        elif isinstance(packet, p.NodeDescription) and self.config.accept_new_nodes:
            self._add_peer(packet.src_node_id, packet.info, now)
            return
        self._refuse(
            RefusalReason.UNKNOWN_SOURCE,
            f"{type(packet).__name__} from unknown node {packet.src_node_id}",
        )

    def _on_ping(self, peer: _Peer, ping: p.Ping, now: float) -> None:
        ids = tuple(i for i in self._peers if i != peer.node_id) if ping.req_node_list else ()
        self._send(p.Pong(self._cluster, self._id, ids), peer.node_id)
        if peer.state is NodeState.DOWN:
            self._restart(peer, now)

    def _on_pong(self, peer: _Peer, now: float) -> None:
        self._timer_moved = True
        peer.outstanding = False
        if peer.state is not NodeState.UP:
            self._set_state(peer, NodeState.UP)
            self._send_cap_update(peer.node_id, True, now)

    def _on_ls_update(self, peer: _Peer, update: p.LinkStateUpdate, now: float) -> None:
        if not _fresh(peer.ls_seq, update.seq_no, peer.ls_timestamp, update.timestamp):
            self._refuse(
                RefusalReason.STALE_UPDATE, f"LS_UPDATE {update.seq_no} from {peer.node_id}"
            )
            return
        peer.ls_seq, peer.ls_timestamp = update.seq_no, update.timestamp
        up = update.link_state == p.LinkState.UP
        neighbour = update.neighbour_id
        if neighbour == self._id:
            # The node's view of us disagrees with ours: probe it again now.
            if (up and peer.state is NodeState.DOWN) or (not up and peer.state is NodeState.UP):
                self._restart(peer, now)
            return
        if neighbour not in self._peers:
            self._refuse(RefusalReason.UNKNOWN_SOURCE, f"LS_UPDATE about unknown node {neighbour}")
            return
        self._set_link(peer.node_id, neighbour, up)

    def _on_full_top_update(self, peer: _Peer, update: p.FullTopologyUpdate, now: float) -> None:
        if not _fresh(peer.top_seq, update.seq_no, peer.top_timestamp, update.timestamp):
            self._refuse(
                RefusalReason.STALE_UPDATE, f"FULL_TOP_UPDATE {update.seq_no} from {peer.node_id}"
            )
            return
        peer.top_seq, peer.top_timestamp = update.seq_no, update.timestamp
        if self.config.accept_new_nodes:
            for entry in update.nodes:
                if entry.info is not None:
                    self._add_peer(entry.node_id, entry.info, now)
        for entry in update.nodes:
            node = self._peers.get(entry.node_id)
            if node is None:
                continue
            neighbours = {n for n in entry.neighbours if n in self._peers or n == self._id}
            if self._id in entry.neighbours and node.state is NodeState.DOWN:
                self._restart(node, now)
            if neighbours != node.neighbours:
                node.neighbours = neighbours
                node.view = None
                self._events.append(TopologyChanged(node.node_id, frozenset(neighbours)))

    def _on_cap_update(self, peer: _Peer, update: p.CapabilityUpdate, now: float) -> None:
        if not _fresh(peer.cap_seq, update.seq_no, peer.cap_timestamp, update.timestamp):
            self._refuse(
                RefusalReason.STALE_UPDATE, f"CAP_UPDATE {update.seq_no} from {peer.node_id}"
            )
            return
        peer.cap_seq, peer.cap_timestamp = update.seq_no, update.timestamp
        for entry in update.nodes:
            node = self._peers.get(entry.node_id)
            if node is None:
                continue  # ourselves, or a node we do not know (OpenSIPS stops there too)
            caps = dict(node.capabilities)
            caps.update((name, state) for name, state in entry.capabilities if state in (0, 1))
            if caps != node.capabilities:
                node.capabilities = caps
                node.view = None
                self._events.append(CapabilitiesChanged(node.node_id, MappingProxyType(dict(caps))))
        if update.require_reply:
            self._send_cap_update(peer.node_id, False, now)

    # --- extra and module packets -----------------------------------------------------

    def _check_trailer(
        self, reader: PacketReader, peer_ip: str, now: float
    ) -> tuple[_Peer, PacketReader] | None:
        """OpenSIPS's checks on a packet with a trailer; the sender and the reader without it."""
        try:
            trailer, rest = Trailer.split(reader)
        except DecodeError as error:
            self._refuse(RefusalReason.MALFORMED, f"{reader.module}: {error}")
            return None
        if trailer.cluster_id != self._cluster:
            self._refuse(RefusalReason.UNKNOWN_CLUSTER, f"cluster {trailer.cluster_id}")
            return None
        src = trailer.src_node_id
        if src == self._id:
            self._refuse(RefusalReason.OWN_NODE_ID, f"{reader.module} claims our id")
            return None
        peer = self._peers.get(src)
        if peer is None:
            self._refuse(RefusalReason.UNKNOWN_SOURCE, f"{reader.module} from node {src}")
            return None
        if not self._known_ip(peer_ip):
            self._refuse(RefusalReason.UNKNOWN_ADDRESS, f"{peer_ip} for node {src}")
            return None
        if trailer.dst_node_id != self._id:
            self._refuse(
                RefusalReason.NOT_FOR_THIS_NODE, f"{reader.module} for {trailer.dst_node_id}"
            )
            return None
        if peer.state is NodeState.DOWN:
            self._restart(peer, now)
        return peer, rest

    def _receive_module(
        self, reader: PacketReader, peer_ip: str, now: float
    ) -> ModulePacket | None:
        # The fast path, taken by every packet that passes: the same checks as
        # _checked_module below, without naming a reason (most packets are these).
        module = reader.module
        version = self._versions.get(module)
        if version is not None and reader.version == version:
            try:
                dst, rest = reader.pop_back_int()
                src, rest = rest.pop_back_int()
                cluster, rest = rest.pop_back_int()
            except DecodeError:
                pass
            else:
                peer = self._peers.get(src)
                if (
                    peer is not None
                    and cluster == self._cluster
                    and dst == self._id
                    and peer.state is not _DOWN
                    and self._ip_cache.get(peer_ip)
                ):
                    return ModulePacket(module, rest, src)
        return self._checked_module(reader, peer_ip, now)

    def _checked_module(
        self, reader: PacketReader, peer_ip: str, now: float
    ) -> ModulePacket | None:
        """Every check in OpenSIPS's order, refusing with the first reason that applies."""
        module = reader.module
        version = self._versions.get(module)
        if version is None:
            self._refuse(RefusalReason.UNKNOWN_CAPABILITY, module)
            return None
        checked = self._check_trailer(reader, peer_ip, now)
        if checked is None:
            return None
        if reader.version != version:
            self._refuse(
                RefusalReason.BAD_VERSION, f"{module} version {reader.version}, need {version}"
            )
            return None
        peer, rest = checked
        return ModulePacket(module, rest, peer.node_id)

    def _receive_extra(self, reader: PacketReader, peer_ip: str, now: float) -> None:
        checked = self._check_trailer(reader, peer_ip, now)
        if checked is None:
            return
        peer = checked[0]
        try:
            packet = p.parse(reader)
        except BadVersion as error:
            self._refuse(RefusalReason.BAD_VERSION, str(error))
            return
        except DecodeError as error:
            self._refuse(RefusalReason.MALFORMED, str(error))
            return
        assert isinstance(packet, p.ExtraPacket)
        if isinstance(packet, p.SyncPacket) and packet.capability not in self._versions:
            self._refuse(RefusalReason.UNKNOWN_CAPABILITY, f"sync of {packet.capability}")
            return
        if isinstance(packet, p.RemoveNode):
            self._remove_peer(packet.target_node_id)
        elif isinstance(packet, p.SyncRequest):
            self._on_sync_request(peer, packet.capability)
        elif isinstance(packet, p.Sync):
            key = (peer.node_id, packet.capability)
            self._sync_received[key] = self._sync_received.get(key, 0) + len(packet.chunks)
            self._events.append(SyncReceived(peer.node_id, packet))
        elif isinstance(packet, p.SyncEnd):
            received = self._sync_received.pop((peer.node_id, packet.capability), 0)
            self._events.append(
                SyncFinished(peer.node_id, packet.capability, packet.chunks, received)
            )
        else:
            self._events.append(ClustererMessage(packet))

    def _on_sync_request(self, peer: _Peer, capability: str) -> None:
        provider = self._providers.get(capability)
        self._events.append(SyncRequested(peer.node_id, capability, provider is not None))
        if provider is None:
            self.sync_requests_declined += 1
            return
        trailer = self.trailer(peer.node_id)
        data_version = SYNC_DATA_VERSIONS.get(capability, self._versions[capability])
        batch: list[bytes] = []
        size = count = 0
        for chunk in provider():
            batch.append(chunk)
            size += len(chunk) + 8
            count += 1
            if size >= SYNC_PACKET_SIZE:
                self._send(p.Sync(trailer, capability, data_version, tuple(batch)), peer.node_id)
                batch, size = [], 0
        if batch:
            self._send(p.Sync(trailer, capability, data_version, tuple(batch)), peer.node_id)
        self._send(p.SyncEnd(trailer, capability, count), peer.node_id)

    # --- heartbeats -------------------------------------------------------------------

    def _due(self, peer: _Peer) -> float:
        if peer.last_ping is None:
            return self._start
        if peer.outstanding:
            wait = self.config.ping_timeout
        elif peer.state is NodeState.DOWN:
            wait = self.config.node_timeout
        else:
            wait = self.config.ping_interval
        return peer.last_ping + wait

    def _heartbeat(self, peer: _Peer, now: float) -> None:
        if not peer.outstanding or peer.last_ping is None:
            self._ping(peer, now)
            return
        # A PING went unanswered for ping_timeout.
        if peer.state is NodeState.UP:
            self._set_state(peer, NodeState.PROBING)
            peer.retries_left = self.config.ping_retries
        if peer.state is NodeState.PROBING and peer.retries_left > 0:
            peer.retries_left -= 1
            self._ping(peer, now)
        else:
            self._set_state(peer, NodeState.DOWN)
            peer.outstanding = False
            peer.last_ping = now

    def _ping(self, peer: _Peer, now: float) -> None:
        self._timer_moved = True
        req_node_list = peer.state is not NodeState.UP
        self._send(p.Ping(self._cluster, self._id, req_node_list), peer.node_id)
        peer.last_ping = now
        peer.outstanding = True

    def _restart(self, peer: _Peer, now: float) -> None:
        """Probe a node again at once (it spoke while down, or disagrees about our link)."""
        if peer.state is not NodeState.PROBING:
            self._set_state(peer, NodeState.PROBING)
        peer.retries_left = self.config.ping_retries
        self._ping(peer, now)

    # --- bookkeeping ------------------------------------------------------------------

    def _add_peer(self, node_id: int, info: p.NodeInfo, now: float) -> None:
        if node_id == self._id or node_id in self._peers:
            return
        try:
            peer = _Peer(node_id, info, self.config.ping_retries)
        except ValueError as error:
            self._refuse(RefusalReason.MALFORMED, f"node {node_id}: {error}")
            return
        self._peers[node_id] = peer
        self._ip_cache.clear()
        self._timer_moved = True
        self._events.append(NodeAdded(node_id, info.url))
        # last_ping None: the next handle_timer (due at once) pings it.

    def _remove_peer(self, node_id: int) -> None:
        if self._peers.pop(node_id, None) is None:
            return
        # What was queued for it has nowhere to go now.
        self._out = deque(t for t in self._out if t.node_id != node_id)
        self._ip_cache.clear()
        self._timer_moved = True
        for peer in self._peers.values():
            if node_id in peer.neighbours:
                peer.neighbours.discard(node_id)
                peer.view = None
        self._events.append(NodeRemoved(node_id))

    def _set_link(self, a: int, b: int, up: bool) -> None:
        peer = self._peers[a]
        before = set(peer.neighbours)
        if up:
            peer.neighbours.add(b)
        else:
            peer.neighbours.discard(b)
        if peer.neighbours != before:
            peer.view = None
            self._events.append(TopologyChanged(a, frozenset(peer.neighbours)))

    def _set_state(self, peer: _Peer, state: NodeState) -> None:
        self._timer_moved = True
        old = peer.state
        if old is not state:
            peer.state = state
            peer.view = None
            self._events.append(NodeStateChanged(peer.node_id, old, state))

    def _known_ip(self, peer_ip: str) -> bool:
        known = self._ip_cache.get(peer_ip)
        if known is None:
            try:
                ip = ipaddress.ip_address(peer_ip)
            except ValueError:
                return False
            if ip.version == 6 and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            known = any(peer.ip == ip for peer in self._peers.values())
            if len(self._ip_cache) < 1024:
                self._ip_cache[peer_ip] = known
        return known

    def _send_cap_update(self, node_id: int, require_reply: bool, now: float) -> None:
        self._cap_seq += 1
        own = p.NodeCapabilities(self._id, tuple(self.capabilities.items()))
        update = p.CapabilityUpdate(
            self._cluster,
            self._id,
            self._cap_seq,
            self._timestamp(now),
            (own,),
            require_reply,
            (self._id,),
        )
        self._send(update, node_id)

    def _timestamp(self, now: float) -> int:
        return int(self._wall_start + (now - self._start))

    def _send(self, packet: p.ClustererPacket, node_id: int) -> None:
        paced = isinstance(packet, p.ExtraPacket)
        self._out.append(Transmit(packet.to_bytes(), node_id, paced=paced))

    def _refuse(self, reason: RefusalReason, detail: str) -> None:
        self.refusals[reason] += 1
        self._events.append(Refused(reason, detail))

    def _view(self, peer: _Peer) -> NodeView:
        if peer.view is None:
            peer.view = NodeView(
                peer.node_id,
                peer.state,
                peer.info.url,
                MappingProxyType(dict(peer.capabilities)),
                frozenset(peer.neighbours),
            )
        return peer.view
