"""The sans-I/O clusterer core, driven by a clock and the packets OpenSIPS 4.0.1 sent."""

from __future__ import annotations

import struct
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from binif import STREAM, PacketReader, PacketWriter
from binif.cluster import packets as p
from binif.cluster.core import (
    CapabilitiesChanged,
    ClusterConfig,
    ClusterCore,
    Event,
    ModulePacket,
    NodeAdded,
    NodeRemoved,
    NodeState,
    NodeStateChanged,
    RefusalReason,
    SyncFinished,
    SyncReceived,
    SyncRequested,
    TopologyChanged,
)
from binif.opensips40 import DialogCreated, Trailer
from tests.vectors import VECTORS

FOLDER = VECTORS / "opensips-4.0"
WALL = 1795839141.0
DLG = "dialog-dlg-repl"
LOCAL = "127.0.0.1"


def vector(name: str) -> bytes:
    return (FOLDER / name).read_bytes()


def reader(data: bytes) -> PacketReader:
    return PacketReader.parse(data, wire=STREAM)


def with_dst(data: bytes, dst: int) -> bytes:
    """A trailered packet re-addressed to ``dst`` (the last int of the trailer)."""
    return data[:-4] + struct.pack("<i", dst)


def make_core(node_id: int = 3, seeds: dict[int, str] | None = None, **kw: object) -> ClusterCore:
    if seeds is None:
        seeds = {1: "bin:127.0.0.1:5555", 2: "bin:127.0.0.1:5556"}
    config = ClusterConfig(
        cluster_id=1,
        node_id=node_id,
        url="bin:127.0.0.1:5557",
        seeds=seeds,
        capabilities={DLG: 4},
        sip_addr="127.0.0.1:5062",
        **kw,  # type: ignore[arg-type]
    )
    return ClusterCore(config, now=0.0, wall_time=WALL)


def sent(core: ClusterCore) -> list[tuple[int | None, p.ClustererPacket]]:
    return [(t.node_id, p.parse_bytes(t.data)) for t in core.datagrams_to_send()]


def events(core: ClusterCore) -> list[Event]:
    out = []
    while (event := core.next_event()) is not None:
        out.append(event)
    return out


def feed(core: ClusterCore, data: bytes, now: float, ip: str = LOCAL, conn: str = "c") -> None:
    core.receive(reader(data), ip, conn, now)


def up(core: ClusterCore, node_id: int, now: float) -> None:
    """Make ``node_id`` up: the timer pings it, it answers."""
    core.handle_timer(now)
    core.datagrams_to_send()
    feed(core, p.Pong(1, node_id).to_bytes(), now)
    core.datagrams_to_send()
    events(core)


def of_type(items: Iterable[object], cls: type) -> list[object]:
    return [item for item in items if isinstance(item, cls)]


# --- join -----------------------------------------------------------------------------


def test_join_as_the_vectors_show() -> None:
    core = make_core(seeds={2: "bin:127.0.0.1:5556"})
    assert [type(e) for e in events(core)] == [NodeAdded]
    assert core.get_timer() == 0.0
    core.handle_timer(0.0)
    assert sent(core) == [(2, p.Ping(1, 3, req_node_list=True))]
    assert core.state_of(2) is NodeState.PROBING

    feed(core, vector("join-clusterer-unknown-id-1.bin"), 0.01)
    described, ping = sent(core)
    assert ping == (2, p.Ping(1, 3, req_node_list=True))
    assert described[0] == 2
    description = described[1]
    assert isinstance(description, p.NodeDescription)
    captured = p.parse_bytes(vector("join-clusterer-node-description-1.bin"))
    assert isinstance(captured, p.NodeDescription)
    # What node 2 flooded is what node 3 sent, plus node 2 appended to the path.
    assert description.info == captured.info
    assert description.path == (3,) == captured.path[:1]

    feed(core, vector("join-clusterer-pong-1.bin"), 0.02)  # PONG from node 2
    assert events(core) == [NodeStateChanged(2, NodeState.PROBING, NodeState.UP)]
    ((dst, update),) = sent(core)
    assert dst == 2 and isinstance(update, p.CapabilityUpdate)
    assert update.nodes == (p.NodeCapabilities(3, ((DLG, 0),)),)
    assert update.require_reply and update.path == (3,)
    assert update.timestamp == int(WALL)


def test_cap_update_with_require_reply_is_answered_and_recorded() -> None:
    core = make_core()
    up(core, 1, 0.0)
    feed(core, vector("join-clusterer-cap-update-1.bin"), 0.1)  # node 1: 1 -> 0, 2 -> 1
    assert of_type(events(core), CapabilitiesChanged) == [
        CapabilitiesChanged(1, {DLG: 0}),
        CapabilitiesChanged(2, {DLG: 1}),
    ]
    ((dst, answer),) = sent(core)
    assert dst == 1 and isinstance(answer, p.CapabilityUpdate)
    assert not answer.require_reply and answer.nodes == (p.NodeCapabilities(3, ((DLG, 0),)),)
    assert core.nodes[2].capabilities == {DLG: 1}
    assert core.sync_donor(DLG) is None  # node 2 is not up here
    # The same update again is stale: OpenSIPS ignores it too.
    feed(core, vector("join-clusterer-cap-update-1.bin"), 0.2)
    assert core.refusals[RefusalReason.STALE_UPDATE] == 1
    assert sent(core) == []


def test_cap_update_numbers_keep_rising_across_restarts() -> None:
    first = make_core()
    up(first, 1, 0.0)
    numbers = []
    for seq in range(1, 4):
        update = p.CapabilityUpdate(1, 1, 100 + seq, int(WALL), (), True, (1,))
        feed(first, update.to_bytes(), 0.1 * seq)
        ((_, answer),) = sent(first)
        assert isinstance(answer, p.CapabilityUpdate)
        numbers.append(answer.seq_no)
    restarted = ClusterCore(first.config, now=0.0, wall_time=WALL + 1)
    up(restarted, 1, 0.0)
    feed(restarted, p.CapabilityUpdate(1, 1, 200, int(WALL), (), True, (1,)).to_bytes(), 0.1)
    ((_, answer),) = sent(restarted)
    assert isinstance(answer, p.CapabilityUpdate)
    assert numbers == sorted(numbers) and answer.seq_no > numbers[-1] > 0
    assert answer.seq_no < 2**31


# --- heartbeats -------------------------------------------------------------------------


def test_ping_is_answered_with_pong_and_node_list_on_request() -> None:
    core = make_core()
    feed(core, vector("clusterer-ping-2.bin"), 0.0)  # node 1, req_node_list=1
    assert sent(core) == [(1, p.Pong(1, 3, (2,)))]
    feed(core, vector("clusterer-ping-3.bin"), 0.1)  # node 1, req_node_list=0
    ((dst, pong),) = sent(core)
    assert (dst, pong) == (1, p.Pong(1, 3, ()))
    assert pong.to_bytes()[:34] == vector("clusterer-pong-1.bin")[:34]  # same head


def test_silence_probing_down_then_up() -> None:
    core = make_core(seeds={1: "bin:127.0.0.1:5555"})
    up(core, 1, 0.0)
    assert core.state_of(1) is NodeState.UP
    # Up: a PING every 4 s, answered.
    assert core.get_timer() == 4.0
    core.handle_timer(4.0)
    assert sent(core) == [(1, p.Ping(1, 3, req_node_list=False))]
    feed(core, p.Pong(1, 1).to_bytes(), 4.01)
    assert core.get_timer() == 8.0
    # Silent from 8 s on: probing after the 1 s timeout, then 3 retries, then down.
    core.handle_timer(8.0)
    sent(core)
    core.handle_timer(9.0)
    assert events(core) == [NodeStateChanged(1, NodeState.UP, NodeState.PROBING)]
    pings = sent(core)
    for now in (10.0, 11.0):
        assert core.get_timer() == now
        core.handle_timer(now)
        pings += sent(core)
    assert pings == [(1, p.Ping(1, 3, req_node_list=True))] * 3
    assert core.get_timer() == 12.0
    core.handle_timer(12.0)
    assert events(core) == [NodeStateChanged(1, NodeState.PROBING, NodeState.DOWN)]
    assert sent(core) == []
    assert core.state_of(1) is NodeState.DOWN
    # Down: pinged again after node_timeout (60 s).
    assert core.get_timer() == 72.0
    # It comes back and pings us: PONG, and we probe it at once.
    feed(core, p.Ping(1, 1).to_bytes(), 20.0)
    assert sent(core) == [(1, p.Pong(1, 3)), (1, p.Ping(1, 3, req_node_list=True))]
    assert events(core) == [NodeStateChanged(1, NodeState.DOWN, NodeState.PROBING)]
    feed(core, p.Pong(1, 1).to_bytes(), 20.01)
    assert events(core) == [NodeStateChanged(1, NodeState.PROBING, NodeState.UP)]
    assert of_type((packet for _, packet in sent(core)), p.CapabilityUpdate)


def test_timers_are_configurable() -> None:
    core = make_core(
        seeds={1: "bin:127.0.0.1:5555"}, ping_interval=1.0, ping_timeout=0.25, ping_retries=0
    )
    up(core, 1, 0.0)
    assert core.get_timer() == 1.0
    core.handle_timer(1.0)
    core.handle_timer(1.25)
    assert [e for e in events(core) if isinstance(e, NodeStateChanged)] == [
        NodeStateChanged(1, NodeState.UP, NodeState.PROBING),
        NodeStateChanged(1, NodeState.PROBING, NodeState.DOWN),
    ]


def test_a_seed_that_never_answers_goes_down() -> None:
    core = make_core(seeds={1: "bin:127.0.0.1:5555"})
    now = 0.0
    for _ in range(4):
        assert core.get_timer() == now
        core.handle_timer(now)
        now += 1.0
    assert len(sent(core)) == 4
    core.handle_timer(now)
    assert core.state_of(1) is NodeState.DOWN


# --- topology ---------------------------------------------------------------------------


def test_topology_from_full_and_link_state_updates() -> None:
    core = make_core()
    up(core, 1, 0.0)
    up(core, 2, 0.0)
    feed(core, vector("join-clusterer-full-top-update-2.bin"), 0.1)  # node 2's view
    assert of_type(events(core), TopologyChanged) == [
        TopologyChanged(2, frozenset({1, 3})),
        TopologyChanged(1, frozenset({3})),
    ]
    assert core.nodes[2].neighbours == {1, 3}
    # LS_UPDATE from node 1: its link with node 2 is up, then down again.
    feed(core, p.LinkStateUpdate(1, 1, 5, int(WALL), 2, p.LinkState.UP, (1,)).to_bytes(), 0.2)
    feed(core, p.LinkStateUpdate(1, 1, 6, int(WALL), 2, p.LinkState.DOWN, (1,)).to_bytes(), 0.3)
    assert of_type(events(core), TopologyChanged) == [
        TopologyChanged(1, frozenset({2, 3})),
        TopologyChanged(1, frozenset({3})),
    ]
    # Stale: number 6 again.
    feed(core, p.LinkStateUpdate(1, 1, 6, int(WALL), 2, p.LinkState.DOWN, (1,)).to_bytes(), 0.4)
    assert core.refusals[RefusalReason.STALE_UPDATE] == 1


def test_link_state_about_us_that_disagrees_restarts_probing() -> None:
    core = make_core()
    up(core, 1, 0.0)
    feed(core, p.LinkStateUpdate(1, 1, 1, int(WALL), 3, p.LinkState.DOWN, (1,)).to_bytes(), 0.5)
    assert events(core) == [NodeStateChanged(1, NodeState.UP, NodeState.PROBING)]
    assert sent(core) == [(1, p.Ping(1, 3, req_node_list=True))]


def test_node_description_adds_a_node_and_remove_node_forgets_it() -> None:
    core = make_core(node_id=4)
    events(core)
    # Node 3's description as node 2 flooded it to node 1 (we are node 4 here).
    feed(core, vector("join-clusterer-node-description-1.bin"), 0.0)
    assert events(core) == [NodeAdded(3, "bin:127.0.0.1:5557")]
    assert core.nodes[3].state is NodeState.PROBING
    core.handle_timer(0.0)
    assert (3, p.Ping(1, 4, req_node_list=True)) in sent(core)
    # Node 2 tells us to forget node 3 (the captured one, re-addressed to us).
    feed(core, with_dst(vector("join-clusterer-remove-node-1.bin"), 4), 0.1)
    assert events(core) == [NodeRemoved(3)]
    assert 3 not in core.nodes


def test_full_topology_update_adds_described_nodes() -> None:
    core = make_core(seeds={1: "bin:127.0.0.1:5555"})
    up(core, 1, 0.0)
    info = p.NodeInfo("bin:127.0.0.1:5559", "127.0.0.1:5064", 50, 3)
    update = p.FullTopologyUpdate(
        1, 1, 1, int(WALL), (p.TopologyNode(1, None, 0, 0, (3, 9)),
                             p.TopologyNode(9, info, 0, 0, (1,))), (1,)
    )  # fmt: skip
    feed(core, update.to_bytes(), 0.1)
    seen = events(core)
    assert NodeAdded(9, "bin:127.0.0.1:5559") in seen
    assert core.nodes[1].neighbours == {3, 9} and core.nodes[9].neighbours == {1}


# --- refusals ---------------------------------------------------------------------------


def dialog(src: int = 1, dst: int = 3, version: int = 4, cluster: int = 1) -> bytes:
    data = bytearray(vector("join-dialog-create-1.bin"))
    struct.pack_into("<h", data, 8, version)
    struct.pack_into("<iii", data, len(data) - 12, cluster, src, dst)
    return bytes(data)


def test_module_packet_that_passes_every_check_is_handed_on_without_trailer() -> None:
    core = make_core()
    events(core)
    feed(core, vector("join-dialog-create-1.bin"), 0.0)
    (event,) = events(core)
    assert isinstance(event, ModulePacket)
    assert (event.capability, event.node_id) == (DLG, 1)
    created = DialogCreated.from_packet(event.packet)
    assert created.callid == "rig40-call-1-2cbd38cc"


def sync_request(version: int = 3, capability: str = DLG) -> bytes:
    writer = PacketWriter(p.CLUSTERER_EXTRA, p.PacketType.SYNC_REQ, wire=STREAM, version=version)
    return Trailer(1, 2, 3).append_to(writer.push_str(capability)).to_bytes()


def truncated_sync_request() -> bytes:
    """A SYNC_REQ whose capability string runs into the trailer."""
    data = bytearray(with_dst(vector("clusterer-sync-req-1.bin"), 3))
    struct.pack_into("<H", data, 31, 200)
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "ip", "reason"),
    [
        (lambda: dialog(cluster=2), LOCAL, RefusalReason.UNKNOWN_CLUSTER),
        (lambda: dialog(src=3), LOCAL, RefusalReason.OWN_NODE_ID),
        (lambda: dialog(src=9), LOCAL, RefusalReason.UNKNOWN_SOURCE),
        (lambda: dialog(), "10.0.0.1", RefusalReason.UNKNOWN_ADDRESS),
        (lambda: dialog(dst=2), LOCAL, RefusalReason.NOT_FOR_THIS_NODE),
        (lambda: dialog(version=5), LOCAL, RefusalReason.BAD_VERSION),
        (lambda: p.Ping(2, 1).to_bytes(), LOCAL, RefusalReason.UNKNOWN_CLUSTER),
        (lambda: p.Ping(1, 3).to_bytes(), LOCAL, RefusalReason.OWN_NODE_ID),
        (lambda: p.Pong(1, 9).to_bytes(), LOCAL, RefusalReason.UNKNOWN_SOURCE),
        (lambda: p.Ping(1, 1).to_bytes(), "10.0.0.1", RefusalReason.UNKNOWN_ADDRESS),
        (
            lambda: vector("join-clusterer-remove-node-1.bin"),
            LOCAL,
            RefusalReason.NOT_FOR_THIS_NODE,
        ),
        (lambda: truncated_sync_request(), LOCAL, RefusalReason.MALFORMED),
        (lambda: sync_request(version=2), LOCAL, RefusalReason.BAD_VERSION),
        (
            lambda: sync_request(capability="dialog-prof-repl"),
            LOCAL,
            RefusalReason.UNKNOWN_CAPABILITY,
        ),
    ],
)
def test_each_refusal_is_counted_by_reason_and_not_handled(
    data: object, ip: str, reason: RefusalReason
) -> None:
    core = make_core()
    events(core)
    assert callable(data)
    feed(core, data(), 0.0, ip=ip)
    assert core.refusals[reason] == 1
    assert sum(core.refusals.values()) == 1
    assert not of_type(events(core), ModulePacket)
    assert sent(core) == []


def test_unknown_capability_is_refused() -> None:
    core = make_core()
    events(core)
    writer = PacketWriter("usrloc-contact-repl", 3, wire=STREAM, version=5).push_str("x")
    feed(core, Trailer(1, 1, 3).append_to(writer).to_bytes(), 0.0)
    assert core.refusals[RefusalReason.UNKNOWN_CAPABILITY] == 1


def test_ping_from_an_unknown_node_gets_unknown_id_on_its_connection() -> None:
    core = make_core()
    core.receive(reader(p.Ping(1, 7).to_bytes()), LOCAL, "conn-7", 0.0)
    (transmit,) = core.datagrams_to_send()
    assert (transmit.node_id, transmit.reply_on) == (None, "conn-7")
    # The captured UNKNOWN_ID is node 2's: the same bytes with our id as the source.
    assert transmit.data == vector("join-clusterer-unknown-id-1.bin")[:-4] + struct.pack("<i", 3)
    assert core.refusals[RefusalReason.UNKNOWN_SOURCE] == 1


# --- sync -------------------------------------------------------------------------------


def test_sync_request_goes_to_an_up_donor_and_chunks_come_back_as_events() -> None:
    core = make_core()
    assert core.request_sync(DLG) is None  # nobody advertises it ready yet
    up(core, 2, 0.0)
    feed(core, p.CapabilityUpdate(1, 2, 1, int(WALL), (p.NodeCapabilities(2, ((DLG, 1),)),),
                                  False, (2,)).to_bytes(), 0.1)  # fmt: skip
    events(core)
    assert core.request_sync(DLG) == 2
    ((dst, request),) = sent(core)
    assert (dst, request) == (2, p.SyncRequest(Trailer(1, 3, 2), DLG))
    # The captured reply from node 2 (to node 1), re-addressed to us.
    feed(core, with_dst(vector("join-clusterer-sync-1.bin"), 3), 0.2)
    feed(core, with_dst(vector("join-clusterer-sync-end-1.bin"), 3), 0.3)
    received, finished = events(core)
    assert isinstance(received, SyncReceived) and received.node_id == 2
    (dialog_created,) = p.SYNC_CHUNKS.decode(received.sync)
    assert isinstance(dialog_created, DialogCreated)
    assert dialog_created.callid == "inject-1@thirdparty"
    assert finished == SyncFinished(2, DLG, 1, 1)


def test_a_node_without_provider_is_never_a_donor() -> None:
    core = make_core()
    up(core, 2, 0.0)
    assert core.capabilities == {DLG: 0}
    feed(core, with_dst(vector("clusterer-sync-req-1.bin"), 3), 0.1)
    assert events(core) == [SyncRequested(2, DLG, answered=False)]
    assert sent(core) == []  # no SYNC, and above all no empty SYNC_END
    assert core.sync_requests_declined == 1


def test_a_provider_makes_the_node_a_donor_that_sends_every_item() -> None:
    core = make_core()
    up(core, 2, 0.0)
    dialogs = [
        DialogCreated.with_defaults(callid=f"call-{i}@binif", h_id=i + 1, caller_sock="udp:sipsock")
        for i in range(500)
    ]
    chunks = [p.chunk_body(d.to_bytes(wire=STREAM)) for d in dialogs]
    core.set_provider(DLG, lambda: chunks, 0.1)
    ((dst, update),) = sent(core)  # the change is advertised to every up node
    assert dst == 2 and isinstance(update, p.CapabilityUpdate)
    assert update.nodes == (p.NodeCapabilities(3, ((DLG, 1),)),)
    feed(core, with_dst(vector("clusterer-sync-req-1.bin"), 3), 0.2)
    replies = sent(core)
    syncs = [packet for _, packet in replies if isinstance(packet, p.Sync)]
    assert len(syncs) > 1  # spread over several packets
    assert all(dst == 2 for dst, _ in replies)
    end = replies[-1][1]
    assert end == p.SyncEnd(Trailer(1, 3, 2), DLG, 500)
    decoded = [d for sync in syncs for d in p.SYNC_CHUNKS.decode(sync)]
    assert decoded == dialogs
    assert all(sync.data_version == 4 and len(sync.to_bytes()) <= 65515 for sync in syncs)
    core.set_provider(DLG, None, 0.3)
    assert core.capabilities == {DLG: 0}


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="URL"):
        make_core(seeds={1: "udp:127.0.0.1:5555"})
    with pytest.raises(ValueError, match="own id"):
        make_core(seeds={3: "bin:127.0.0.1:5555"})
    with pytest.raises(ValueError, match="ping_timeout"):
        make_core(ping_timeout=0)
    with pytest.raises(ValueError, match="IP address"):
        make_core(seeds={1: "bin:opensips.example:5555"})


# --- any sequence of packets --------------------------------------------------------------

ids = st.integers(0, 6)
ints = st.integers(-3, 3)
paths = st.lists(ids, max_size=3).map(tuple)
infos = st.builds(
    p.NodeInfo,
    st.sampled_from(["bin:127.0.0.1:5560", "bin:[::1]:5561", "bin:nowhere", "udp:1.2.3.4:5"]),
    st.just(""),
    ints,
    ints,
)
caps = st.lists(st.tuples(st.sampled_from([DLG, "x-repl"]), ints), max_size=2).map(tuple)
internal = st.one_of(
    st.builds(p.Ping, st.just(1), ids, st.booleans()),
    st.builds(p.Pong, st.just(1), ids, st.lists(ids, max_size=3).map(tuple)),
    st.builds(p.LinkStateUpdate, st.just(1), ids, ints, ints, ids, st.integers(0, 1), paths),
    st.builds(
        p.FullTopologyUpdate,
        st.just(1),
        ids,
        ints,
        ints,
        st.lists(
            st.builds(p.TopologyNode, ids, st.none() | infos, ints, ints, paths), max_size=3
        ).map(tuple),
        paths,
    ),
    st.builds(p.UnknownId, st.just(1), ids),
    st.builds(p.NodeDescription, st.just(1), ids, infos, paths),
    st.builds(
        p.CapabilityUpdate,
        st.just(1),
        ids,
        ints,
        ints,
        st.lists(st.builds(p.NodeCapabilities, ids, caps), max_size=3).map(tuple),
        st.booleans(),
        paths,
    ),
)
trailers = st.builds(Trailer, st.just(1), ids, st.sampled_from([3, 3, 2]))
extra = st.one_of(
    st.builds(p.RemoveNode, trailers, ids),
    st.builds(p.SyncRequest, trailers, st.sampled_from([DLG, "x-repl"])),
    st.builds(p.SyncEnd, trailers, st.just(DLG), st.integers(0, 3)),
    st.builds(p.ShtagActive, trailers, st.just("vip")),
)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(internal | extra, st.floats(0, 10), st.sampled_from([LOCAL, "::1", "10.0.0.9"])),
        max_size=25,
    )
)
def test_any_sequence_of_packets_keeps_the_core_consistent(
    steps: list[tuple[p.ClustererPacket, float, str]],
) -> None:
    core = make_core()
    now = 0.0
    for packet, delay, ip in steps:
        now += delay
        timer = core.get_timer()
        if timer is not None and timer <= now:
            core.handle_timer(now)
        core.receive(reader(packet.to_bytes()), ip, "c", now)
        for transmit in core.datagrams_to_send():
            assert transmit.node_id is None or transmit.node_id in core.nodes
            p.parse_bytes(transmit.data)  # everything sent is a valid clusterer packet
        events(core)
    assert 3 not in core.nodes
    assert all(view.state in NodeState for view in core.nodes.values())
    timer = core.get_timer()
    assert timer is None or timer >= 0
