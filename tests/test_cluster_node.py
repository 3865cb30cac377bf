"""binif.cluster.Node over real loopback TCP: a simulated OpenSIPS peer, then two binif nodes."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cluster_helpers import free_port, run_cluster_watch, until

from binif import STREAM, EndpointNotRunning, PacketReader
from binif.cluster import Node, NodeNotUp, NodeState
from binif.cluster import packets as p
from binif.opensips40 import DialogCreated, DialogDeleted
from tests.vectors import VECTORS

pytestmark = pytest.mark.both_loops

FOLDER = VECTORS / "opensips-4.0"
ROOT = Path(__file__).resolve().parent.parent
DLG = "dialog-dlg-repl"
FAST = {"ping_interval": 0.3, "ping_timeout": 0.5, "ping_retries": 3}
"""Quicker heartbeats than OpenSIPS's (4 s, 1 s), with a timeout a loaded machine meets."""


def vector(name: str) -> bytes:
    return (FOLDER / name).read_bytes()


def with_trailer(data: bytes, cluster: int, src: int, dst: int) -> bytes:
    return data[:-12] + struct.pack("<iii", cluster, src, dst)


def with_source(data: bytes, src: int) -> bytes:
    """A clusterer-internal packet with another src_node_id (the body's second int)."""
    name_len = struct.unpack_from("<H", data, 10)[0]
    at = 12 + name_len + 4 + 4
    return data[:at] + struct.pack("<i", src) + data[at + 4 :]


class FakeOpenSIPS:
    """Node 1 of the cluster as OpenSIPS 4.0.1 behaves on the wire, scripted by the test.

    It listens on its URL (packets the node sends arrive there, on the node's
    own connection), answers on that same connection when told to (UNKNOWN_ID),
    and sends its own packets on its own connection to the node's listener.
    """

    def __init__(self, port: int, node_port: int) -> None:
        self.port = port
        self.node_port = node_port
        self.answers_pings = False
        """Once the node is known: answer its PINGs with PONGs, as OpenSIPS does."""
        self.received: asyncio.Queue[PacketReader] = asyncio.Queue()
        self.answers: asyncio.Queue[PacketReader] = asyncio.Queue()
        """What the node wrote back on our own connection (UNKNOWN_ID to an unknown id)."""
        self.inbound: asyncio.StreamWriter | None = None
        self.outbound: asyncio.StreamWriter | None = None
        self.server: asyncio.Server | None = None
        self.connecting = asyncio.Lock()
        self.closer: asyncio.Future[None] | None = None

    async def __aenter__(self) -> FakeOpenSIPS:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.closer is not None:
            await self.closer
        for writer in (self.inbound, self.outbound):
            if writer is not None:
                writer.close()
        assert self.server is not None
        self.server.close()

    @staticmethod
    async def _packets(reader: asyncio.StreamReader) -> AsyncIterator[PacketReader]:
        """The packets read from ``reader`` until the connection ends."""
        try:
            while True:
                head = await reader.readexactly(8)
                size = struct.unpack_from("<I", head, 4)[0]
                rest = await reader.readexactly(size - 8)
                yield PacketReader.parse(head + rest, wire=STREAM)
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.inbound = writer
        async for packet in self._packets(reader):
            self.received.put_nowait(packet)
            if self.answers_pings and (packet.module, packet.command) == (
                p.CLUSTERER_INTERNAL,
                p.PacketType.PING,
            ):
                await self.send(vector("join-clusterer-pong-2.bin"))  # PONG from node 1

    async def next(self, *types: p.PacketType, timeout: float = 5.0) -> p.ClustererPacket:
        """The next clusterer packet of one of ``types`` (others skipped: pings, pongs)."""
        async with asyncio.timeout(timeout):
            while True:
                packet = p.parse(await self.received.get())
                if packet.TYPE in types:
                    return packet

    async def next_raw(self, module: str, timeout: float = 5.0) -> PacketReader:
        async with asyncio.timeout(timeout):
            while True:
                reader = await self.received.get()
                if reader.module == module:
                    return reader

    async def _close_at_eof(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Keep what the node answers on our connection; its end of stream means it closes."""
        async for packet in self._packets(reader):
            self.answers.put_nowait(packet)
        writer.close()

    def reply(self, data: bytes) -> None:
        """Write on the connection the node opened to us."""
        assert self.inbound is not None
        self.inbound.write(data)

    async def send(self, data: bytes) -> None:
        """Write on our own connection to the node's listener."""
        async with self.connecting:
            if self.outbound is None:
                reader, self.outbound = await asyncio.open_connection("127.0.0.1", self.node_port)
                self.closer = asyncio.ensure_future(self._close_at_eof(reader, self.outbound))
        self.outbound.write(data)
        await self.outbound.drain()


async def join(node: Node, peer: FakeOpenSIPS) -> None:
    """Take the node through the join the vectors show, as node 1."""
    ping = await peer.next(p.PacketType.PING)
    assert ping == p.Ping(1, 3, req_node_list=True)
    peer.reply(with_source(vector("join-clusterer-unknown-id-1.bin"), 1))
    description = await peer.next(p.PacketType.NODE_DESCRIPTION)
    captured = p.parse_bytes(vector("join-clusterer-node-description-1.bin"))
    assert isinstance(captured, p.NodeDescription)
    # The node's own description: what node 2 flooded, before node 2 added itself
    # (the test's node listens on a free port instead of 5557).
    url = node.config.url
    assert description == dataclasses.replace(
        captured, info=dataclasses.replace(captured.info, url=url), path=(3,)
    )
    await peer.next(p.PacketType.PING)
    peer.answers_pings = True
    await peer.send(vector("join-clusterer-pong-2.bin"))  # PONG from node 1
    await node.wait_up(1, timeout=5)
    update = await peer.next(p.PacketType.CAP_UPDATE)
    assert isinstance(update, p.CapabilityUpdate)
    assert update.require_reply and update.nodes == (p.NodeCapabilities(3, ((DLG, 0),)),)


@pytest.fixture
async def opensips() -> AsyncIterator[tuple[Node, FakeOpenSIPS]]:
    peer_port, node_port = free_port(), free_port()
    node = Node(
        cluster_id=1,
        node_id=3,
        url=f"bin:127.0.0.1:{node_port}",
        seeds={1: f"bin:127.0.0.1:{peer_port}"},
        capabilities=[DLG],
        sip_addr="127.0.0.1:5062",
        **FAST,  # type: ignore[arg-type]
    )
    async with FakeOpenSIPS(peer_port, node_port) as peer, node:
        yield node, peer


async def test_joins_an_opensips_node_as_the_vectors_show(
    opensips: tuple[Node, FakeOpenSIPS],
) -> None:
    node, peer = opensips
    await join(node, peer)
    assert node.nodes[1].state is NodeState.UP
    # Node 1 pings: the PONG comes back in time, on the node's own connection.
    started = time.monotonic()
    await peer.send(vector("join-clusterer-ping-1.bin"))
    pong = await peer.next(p.PacketType.PONG)
    assert time.monotonic() - started < 1.0  # OpenSIPS's ping timeout
    assert pong.to_bytes() == with_source(vector("clusterer-pong-1.bin"), 3)
    # Topology and capabilities from node 1; the CAP_UPDATE asks for a reply.
    await peer.send(vector("join-clusterer-full-top-update-1.bin"))
    await peer.send(vector("join-clusterer-cap-update-1.bin"))
    answer = await peer.next(p.PacketType.CAP_UPDATE)
    assert isinstance(answer, p.CapabilityUpdate)
    assert not answer.require_reply and answer.nodes == (p.NodeCapabilities(3, ((DLG, 0),)),)
    await until(lambda: node.nodes[1].capabilities == {DLG: 0})
    assert node.nodes[1].neighbours == {3}


async def test_replication_reaches_typed_handlers_and_foreign_packets_are_refused(
    opensips: tuple[Node, FakeOpenSIPS],
) -> None:
    node, peer = opensips
    created: list[tuple[str, int]] = []
    deleted: list[str] = []

    @node.on(DialogCreated)
    async def on_created(dialog: DialogCreated, node_id: int) -> None:
        created.append((dialog.callid, node_id))

    @node.on(DialogDeleted)
    async def on_deleted(dialog: DialogDeleted, node_id: int) -> None:
        deleted.append(dialog.callid)

    await join(node, peer)
    await peer.send(vector("join-dialog-create-1.bin"))
    await peer.send(vector("join-dialog-delete-2.bin"))  # for node 2: refused
    await peer.send(vector("join-dialog-delete-1.bin"))
    await until(lambda: len(deleted) == 1)
    assert created == [("rig40-call-1-2cbd38cc", 1)]
    assert deleted == ["rig40-call-1-2cbd38cc"]
    assert node.stats.refusals["not_for_this_node"] == 1
    assert node.stats.handled == 2


async def test_sync_from_opensips_and_no_answer_without_provider(
    opensips: tuple[Node, FakeOpenSIPS],
) -> None:
    node, peer = opensips
    seen: list[tuple[str, str]] = []

    @node.on(DialogCreated)
    async def on_created(dialog: DialogCreated, node_id: int) -> None:
        seen.append(("created", dialog.callid))

    @node.on(DialogDeleted)
    async def on_deleted(dialog: DialogDeleted, node_id: int) -> None:
        seen.append(("deleted", dialog.callid))

    await join(node, peer)
    # Node 1 advertises dialog-dlg-repl ready (seq 8, as captured).
    await peer.send(vector("join-clusterer-cap-update-3.bin"))
    syncing = asyncio.ensure_future(node.sync(DLG, timeout=5))
    request = await peer.next(p.PacketType.SYNC_REQ)
    assert request.to_bytes() == with_trailer(vector("join-clusterer-sync-req-1.bin"), 1, 3, 1)
    # Replication that arrives during the sync is held until SYNC_END, as OpenSIPS does.
    await peer.send(vector("join-dialog-create-1.bin"))
    await peer.send(vector("join-dialog-delete-1.bin"))
    await until(lambda: node.stats.module_packets == 2)
    assert seen == []
    await peer.send(with_trailer(vector("join-clusterer-sync-1.bin"), 1, 1, 3))
    await peer.send(with_trailer(vector("join-clusterer-sync-end-1.bin"), 1, 1, 3))
    result = await syncing
    assert (result.donor, result.announced, result.received, result.delivered) == (1, 1, 1, 1)
    assert seen == [
        ("created", "inject-1@thirdparty"),
        ("created", "rig40-call-1-2cbd38cc"),
        ("deleted", "rig40-call-1-2cbd38cc"),
    ]
    # Node 1 asks us for a sync: without a provider the node is no donor and stays silent.
    await peer.send(with_trailer(vector("clusterer-sync-req-1.bin"), 1, 1, 3))
    await until(lambda: node.stats.sync_requests_declined == 1)
    await peer.send(vector("join-clusterer-ping-1.bin"))
    await peer.next(p.PacketType.PONG)
    while not peer.received.empty():
        assert p.parse(peer.received.get_nowait()).TYPE not in (
            p.PacketType.SYNC,
            p.PacketType.SYNC_END,
        )


async def test_a_sync_that_times_out_releases_what_it_held(
    opensips: tuple[Node, FakeOpenSIPS],
) -> None:
    node, peer = opensips
    seen: list[str] = []

    @node.on(DialogCreated)
    async def on_created(dialog: DialogCreated, node_id: int) -> None:
        seen.append(dialog.callid)

    await join(node, peer)
    await peer.send(vector("join-clusterer-cap-update-3.bin"))
    syncing = asyncio.ensure_future(node.sync(DLG, timeout=1))
    await peer.next(p.PacketType.SYNC_REQ)
    await peer.send(vector("join-dialog-create-1.bin"))
    with pytest.raises(TimeoutError):
        await syncing  # the donor never answers
    assert seen == ["rig40-call-1-2cbd38cc"]


async def test_a_silent_opensips_node_goes_probing_then_down(
    opensips: tuple[Node, FakeOpenSIPS],
) -> None:
    node, peer = opensips
    await join(node, peer)
    peer.answers_pings = False
    await node.wait_state(1, NodeState.PROBING, timeout=5)
    await node.wait_state(1, NodeState.DOWN, timeout=5)
    with pytest.raises(Exception, match="not up"):
        await node.send(DialogCreated.with_defaults(callid="x", h_id=1), 1)


async def test_sends_are_paced_per_peer(opensips: tuple[Node, FakeOpenSIPS]) -> None:
    node, peer = opensips
    node.rate, node.burst, node.max_waiting = 1000.0, 10, 50
    await join(node, peer)
    started = time.monotonic()
    most_queued = 0
    for i in range(200):
        await node.send(DialogCreated.with_defaults(callid=f"c{i}", h_id=i + 1), 1)
        most_queued = max(most_queued, node.stats.queued)
    assert most_queued <= 50  # what waits is bounded: senders waited for room instead
    assert node.stats.send_waits > 0
    callids = []
    for _ in range(200):
        reader = await peer.next_raw(DLG)
        callids.append(reader.pop_str()[0].decode())
        assert reader.data[-12:] == struct.pack("<iii", 1, 3, 1)  # trailer to node 1
    elapsed = time.monotonic() - started
    assert callids == [f"c{i}" for i in range(200)]
    assert elapsed >= 0.18  # 190 packets past the burst at 1000/s
    assert node.stats.paced > 0 and node.stats.sent == 200


async def test_close_wakes_a_sender_waiting_for_room(opensips: tuple[Node, FakeOpenSIPS]) -> None:
    node, peer = opensips
    node.rate, node.burst, node.max_waiting = 1.0, 1, 2
    await join(node, peer)
    for i in range(3):  # at most two wait in the queue
        await node.send(DialogCreated.with_defaults(callid=f"q{i}", h_id=i + 1), 1)
    waits = node.stats.send_waits
    waiting = asyncio.ensure_future(
        node.send(DialogCreated.with_defaults(callid="last", h_id=9), 1)
    )
    await until(lambda: node.stats.send_waits == waits + 1)
    await node.close()
    with pytest.raises(EndpointNotRunning):
        await waiting
    # Every packet the three sends queued was sent or counted as not sent.
    assert node.stats.sent + node.stats.send_failed == 3 and node.stats.queued == 0
    with pytest.raises(EndpointNotRunning):
        await node.send(DialogCreated.with_defaults(callid="after", h_id=10), 1)


async def test_raw_handlers_errors_and_misuse(opensips: tuple[Node, FakeOpenSIPS]) -> None:
    node, peer = opensips
    raw: list[tuple[int, int, bytes]] = []

    async def on_packet(packet: PacketReader, node_id: int) -> None:
        raw.append((packet.command, node_id, packet.pop_str()[0]))
        if packet.command == 3:
            raise RuntimeError("a handler bug")

    node.register(DLG, on_packet)
    with pytest.raises(ValueError, match="already"):
        node.register(DLG, on_packet)
    with pytest.raises(ValueError, match="not a capability"):
        node.register("usrloc-contact-repl", on_packet)
    await join(node, peer)
    await peer.send(vector("join-dialog-create-1.bin"))
    await peer.send(vector("join-dialog-delete-1.bin"))  # the handler raises
    await peer.send(vector("join-dialog-create-1.bin"))
    await until(lambda: len(raw) == 3)
    callid = b"rig40-call-1-2cbd38cc"
    assert raw == [(1, 1, callid), (3, 1, callid), (1, 1, callid)]  # the error stopped nothing
    await until(lambda: node.stats.handled == 2)
    assert node.stats.handler_errors == 1
    with pytest.raises(NodeNotUp, match="unknown"):
        await node.send(DialogCreated.with_defaults(callid="x"), 9)
    with pytest.raises(TypeError):
        await node.send(b"bytes", 1)  # type: ignore[arg-type]
    # A PING from a node nobody knows: UNKNOWN_ID goes back on the connection it came on.
    await peer.send(with_source(vector("join-clusterer-ping-1.bin"), 7))
    async with asyncio.timeout(5):
        answer = p.parse(await peer.answers.get())
    assert answer == p.UnknownId(1, 3)
    assert node.stats.refusals["unknown_source"] == 1 and node.stats.control_failed == 0


# --- two binif nodes ----------------------------------------------------------------------


def binif_node(node_id: int, ports: dict[int, int], **kw: object) -> Node:
    seeds = {i: f"bin:127.0.0.1:{port}" for i, port in ports.items() if i != node_id}
    return Node(
        cluster_id=1,
        node_id=node_id,
        url=f"bin:127.0.0.1:{ports[node_id]}",
        seeds=seeds,
        capabilities=[DLG],
        rate=50_000,
        burst=500,
        ping_interval=0.5,  # timeout 1 s, 3 retries: OpenSIPS's, on a loaded machine
        **kw,  # type: ignore[arg-type]
    )


def created_callids(node: Node) -> list[str]:
    """The callids of the DialogCreated ``node`` will receive, in order (registers a handler)."""
    received: list[str] = []

    @node.on(DialogCreated)
    async def on_created(dialog: DialogCreated, node_id: int) -> None:
        received.append(dialog.callid)

    return received


async def test_two_binif_nodes_replicate_10000_dialogs_then_resync_after_a_restart() -> None:
    ports = {1: free_port(), 2: free_port()}
    table: dict[str, DialogCreated] = {}
    a = binif_node(1, ports)
    a.provide(DLG, lambda: list(table.values()))  # node 1 holds every dialog it created
    received: dict[str, int] = {}

    def receiver() -> Node:
        b = binif_node(2, ports)

        @b.on(DialogCreated)
        async def on_created(dialog: DialogCreated, node_id: int) -> None:
            assert node_id == 1
            received[dialog.callid] = dialog.h_id

        return b

    async with a:
        b = receiver()
        async with b:
            await a.wait_up(2, timeout=10)
            await b.wait_up(1, timeout=10)
            await until(lambda: b.nodes[1].capabilities.get(DLG) == 1)
            await until(lambda: DLG in a.nodes[2].capabilities)
            assert a.nodes[2].capabilities == {DLG: 0}  # b has no provider: no donor
            for i in range(10_000):
                dialog = DialogCreated.with_defaults(
                    callid=f"call-{i}@binif", h_id=100_000 + i, caller_sock="udp:sipsock"
                )
                table[dialog.callid] = dialog
                assert await a.broadcast(dialog) == 1
            await until(lambda: len(received) == 10_000, timeout=60)
            assert received == {c: d.h_id for c, d in table.items()}
            assert a.stats.send_failed == 0 and b.stats.handler_errors == 0
        # b is gone: a marks it probing, then down.
        await a.wait_state(2, NodeState.DOWN, timeout=10)
        received.clear()
        b = receiver()
        async with b:
            await b.wait_up(1, timeout=10)
            await a.wait_up(2, timeout=10)
            result = await b.sync(DLG, timeout=30)
            assert (result.donor, result.announced, result.received) == (1, 10_000, 10_000)
            assert result.delivered == 10_000
            assert received == {c: d.h_id for c, d in table.items()}


async def test_a_third_node_joins_through_a_binif_seed_that_does_not_know_it() -> None:
    """PING -> UNKNOWN_ID (on the PING's connection) -> NODE_DESCRIPTION -> up, as WIRE.md."""
    ports = {1: free_port(), 2: free_port(), 3: free_port()}
    a = binif_node(1, {1: ports[1], 2: ports[2]})  # knows node 2 only
    b = binif_node(2, {1: ports[1], 2: ports[2]})
    c = binif_node(3, {1: ports[1], 3: ports[3]})  # its only seed: node 1
    received = created_callids(c)
    async with a, b:
        await a.wait_up(2, timeout=10)
        async with c:
            await c.wait_up(1, timeout=10)
            await a.wait_up(3, timeout=10)
            assert a.stats.refusals["unknown_source"] >= 1  # its first PING, answered
            assert a.stats.control_failed == 0 and a.stats.endpoint.peer_unreachable == 0
            await until(lambda: DLG in a.nodes[3].capabilities and DLG in a.nodes[2].capabilities)
            dialog = DialogCreated.with_defaults(callid="via-seed@binif", h_id=7)
            assert await a.broadcast(dialog) == 2
            await until(lambda: received == ["via-seed@binif"])
            assert c.stats.refusals == dict.fromkeys(c.stats.refusals, 0)


async def test_cluster_watch_example_syncs_and_prints_the_table() -> None:
    ports = {1: free_port(), 3: free_port()}
    donor = binif_node(1, ports)
    dialogs = [
        DialogCreated.with_defaults(
            callid=f"watch-{i}@binif", from_uri=f"sip:a{i}@x", to_uri="sip:b@x", h_id=i + 1, state=4
        )
        for i in range(2)
    ]
    donor.provide(DLG, lambda: dialogs)
    async with donor:
        returncode, text, err = await run_cluster_watch(ports[3], ports[1])
    assert returncode == 0, err
    assert "synced 2 dialogs from node 1" in err
    assert "watch-0@binif | sip:a0@x | sip:b@x | confirmed" in text
    assert "watch-1@binif" in text


async def test_two_nodes_over_ipv6_loopback() -> None:
    ports = {}
    for node_id in (1, 2):
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
            ports[node_id] = int(sock.getsockname()[1])
    urls = {i: f"bin:[::1]:{port}" for i, port in ports.items()}
    a = Node(1, 1, urls[1], {2: urls[2]}, [DLG], **FAST)  # type: ignore[arg-type]
    b = Node(1, 2, urls[2], {1: urls[1]}, [DLG], **FAST)  # type: ignore[arg-type]
    received = created_callids(b)
    async with a, b:
        await a.wait_up(2, timeout=10)
        await until(lambda: DLG in a.nodes[2].capabilities)
        for i in range(10):
            assert await a.broadcast(DialogCreated.with_defaults(callid=f"v6-{i}", h_id=i + 1)) == 1
        await until(lambda: len(received) == 10)
    assert received == [f"v6-{i}" for i in range(10)]
