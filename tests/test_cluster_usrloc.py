"""Registrations through the cluster: a usrloc SYNC decoded into the same typed messages
as the inserts, and two binif nodes replicating 10,000 contact changes over loopback TCP."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
from cluster_helpers import free_port, run_cluster_watch, until
from usrloc_helpers import FOLDER, captured

from binif import STREAM, PacketReader
from binif.cluster import Node
from binif.cluster import packets as p
from binif.location import LocationTable, UsrlocMessage
from binif.opensips40_usrloc import (
    USRLOC_CAPABILITY,
    USRLOC_MESSAGES,
    AorDeleted,
    AorInserted,
    ContactDeleted,
    ContactId,
    ContactInserted,
    ContactMatch,
    ContactUpdated,
    ProfileCounters,
    ProfileEntry,
)


def test_the_sync_chunks_are_the_aors_and_contacts_the_inserts_carried() -> None:
    sync = p.parse_bytes((FOLDER / "ul-sync-1.bin").read_bytes())
    assert isinstance(sync, p.Sync)
    assert (sync.capability, sync.data_version, len(sync.chunks)) == (USRLOC_CAPABILITY, 5, 9)
    items = p.SYNC_CHUNKS.decode(sync)
    aors = [item for item in items if isinstance(item, AorInserted)]
    contacts = [item for item in items if isinstance(item, ContactInserted)]
    assert (len(aors), len(contacts)) == (4, 5)
    # One chunk per AoR, then one per contact of it.
    assert [(type(item).__name__, item.aor.split("@")[0]) for item in items] == [
        ("AorInserted", "carol"),
        ("ContactInserted", "carol"),
        ("AorInserted", "dave"),
        ("ContactInserted", "dave"),
        ("AorInserted", "bob"),
        ("ContactInserted", "bob"),
        ("ContactInserted", "bob"),
        ("AorInserted", "alice"),
        ("ContactInserted", "alice"),
    ]

    # Each AoR as its insert carried it, but next_clabel: the AoR has had a contact since.
    for number in (1, 2, 3, 4):
        insert = captured(f"ul-aor-insert-{number}.bin")
        assert isinstance(insert, AorInserted)
        (synced,) = [aor for aor in aors if aor.aor == insert.aor]
        assert (synced.domain, synced.label, synced.kv_storage) == (
            insert.domain,
            insert.label,
            insert.kv_storage,
        )
        assert synced.next_clabel > insert.next_clabel
    # Each contact as the latest insert or update sent for it. Carol's refresh is
    # one of the packets held out of the vectors: hers matches but for its times.
    latest: dict[tuple[str, str], ContactInserted | ContactUpdated] = {}
    for name in sorted(path.name for path in FOLDER.glob("ul-contact-*.bin")):
        message = captured(name)
        if isinstance(message, (ContactInserted, ContactUpdated)):
            latest[(message.contact, message.callid)] = message  # updates sort after inserts
    assert sorted(latest) == sorted((c.contact, c.callid) for c in contacts)
    for chunk in contacts:
        sent = latest[(chunk.contact, chunk.callid)]
        assert chunk.cmatch_mode == ContactMatch.CONTACT_CALLID  # sent -1: sync chunks say 1
        differ = {
            field.name
            for field, value in chunk.items()
            if value != getattr(sent, field.name) and field.name != "cmatch_mode"
        }
        if chunk.aor == "carol@example.com":
            assert differ == {"expires", "cseq", "last_modified"}
            assert (sent.cseq, chunk.cseq) == (1, 2)
        else:
            assert differ == set()


def test_a_sync_fills_a_location_table() -> None:
    sync = p.parse_bytes((FOLDER / "ul-sync-1.bin").read_bytes())
    assert isinstance(sync, p.Sync)
    table = LocationTable()
    for item in p.SYNC_CHUNKS.decode(sync):
        assert isinstance(item, (AorInserted, ContactInserted))
        table.apply(item)
    assert (len(table), table.contact_count) == (4, 5)
    assert [b.q for b in table.lookup("bob@example.com")] == [800, 500]


ROOT = Path(__file__).resolve().parent.parent

# --- two binif nodes -------------------------------------------------------------------

FAST = {"ping_interval": 0.3, "ping_timeout": 0.2, "ping_retries": 3}


def node(node_id: int, ports: dict[int, int]) -> Node:
    return Node(
        cluster_id=1,
        node_id=node_id,
        url=f"bin:127.0.0.1:{ports[node_id]}",
        seeds={i: f"bin:127.0.0.1:{port}" for i, port in ports.items() if i != node_id},
        capabilities=[USRLOC_CAPABILITY],
        rate=50_000,
        burst=500,
        **FAST,  # type: ignore[arg-type]
    )


def changes(count: int) -> list[UsrlocMessage]:
    """``count`` registration changes: AoRs and contacts come, refresh, go."""
    out: list[UsrlocMessage] = []
    user = 0
    while len(out) < count:
        aor = f"user{user}@example.com"
        contact = f"sip:user{user}@192.0.2.{user % 250}:5060"
        key = ContactId(user % 2**18, 0, 1)
        out.append(AorInserted("location", aor, 0, 1))
        for cseq in range(1, 4):
            cls = ContactInserted if cseq == 1 else ContactUpdated
            out.append(
                cls.build(
                    aor=aor,
                    contact=contact,
                    contact_id=key,
                    callid=f"reg-{user}",
                    cseq=cseq,
                    expires_at=1795903200 + 600 * cseq,
                    user_agent="load/1.0",
                )
            )
        if user % 3 == 0:  # every third user unregisters
            out.append(ContactDeleted("location", aor, contact, f"reg-{user}", 3))
            out.append(AorDeleted("location", aor))
        user += 1
    return out[:count]


pytestmark = pytest.mark.both_loops


async def test_two_binif_nodes_replicate_10000_contact_changes_in_order() -> None:
    ports = {1: free_port(), 2: free_port()}
    sent = changes(10_000)
    received: list[UsrlocMessage] = []
    sender_table, receiver_table = LocationTable(), LocationTable()
    a, b = node(1, ports), node(2, ports)

    async def keep(message: UsrlocMessage, node_id: int) -> None:
        assert node_id == 1
        received.append(message)
        receiver_table.apply(message)

    for cls in USRLOC_MESSAGES.values():
        b.on(cls)(keep)

    async with a, b:
        await a.wait_up(2, timeout=10)
        await b.wait_up(1, timeout=10)
        await until(lambda: USRLOC_CAPABILITY in a.nodes[2].capabilities)
        for message in sent:
            sender_table.apply(message)
            assert await a.broadcast(message) == 1
        await until(lambda: len(received) >= len(sent), timeout=60)
        assert received == sent  # nothing lost, nothing added, in order
        assert a.stats.send_failed == 0 and b.stats.handler_errors == 0
        assert b.stats.undecodable == 0
    assert list(receiver_table.bindings()) == list(sender_table.bindings())
    assert receiver_table.contact_count == sender_table.contact_count > 0


async def test_a_joining_node_syncs_the_location_table_from_a_binif_donor() -> None:
    ports = {1: free_port(), 3: free_port()}
    donor_table = LocationTable()
    for message in changes(3000):
        donor_table.apply(message)
    a = node(1, ports)
    a.provide(USRLOC_CAPABILITY, lambda: list(donor_table.sync_messages()))
    joined = LocationTable()
    c = node(3, ports)

    async def keep(message: UsrlocMessage, node_id: int) -> None:
        joined.apply(message)

    for cls in (AorInserted, ContactInserted):  # a sync carries inserts only
        c.on(cls)(keep)
    async with a, c:
        await c.wait_up(1, timeout=10)
        result = await c.sync(USRLOC_CAPABILITY, timeout=30)
    items = len(donor_table) + donor_table.contact_count
    assert (result.donor, result.announced, result.delivered) == (1, items, items)
    assert list(joined.bindings()) == list(donor_table.bindings())
    assert [r.next_clabel for r in joined.records.values()] == [
        r.next_clabel for r in donor_table.records.values()
    ]


async def test_cluster_watch_example_shows_the_synced_registrations() -> None:
    ports = {1: free_port(), 3: free_port()}
    donor = Node(
        cluster_id=1,
        node_id=1,
        url=f"bin:127.0.0.1:{ports[1]}",
        seeds={3: f"bin:127.0.0.1:{ports[3]}"},
        capabilities=["dialog-dlg-repl", USRLOC_CAPABILITY],
        **FAST,  # type: ignore[arg-type]
    )
    table = LocationTable()
    table.apply(
        ContactInserted.build(
            aor="alice@example.com",
            contact="sip:alice@192.0.2.10:5060",
            contact_id=ContactId(3029, 0, 14471),
            callid="reg-1",
            user_agent="phone/1.0",
            received="sip:198.51.100.7:40312",
            cflags="NAT",
            expires_at=int(time.time()) + 3600,
        )
    )
    donor.provide("dialog-dlg-repl", list)
    donor.provide(USRLOC_CAPABILITY, lambda: list(table.sync_messages()))
    async with donor:
        returncode, text, err = await run_cluster_watch(ports[3], ports[1])
    assert returncode == 0, err
    assert "synced 2 AoRs and contacts from node 1" in err
    assert "1 AoRs, 1 contacts" in text
    assert re.search(
        r"alice@example.com \| sip:alice@192.0.2.10:5060 \| 3[56]\d\ds \| phone/1.0"
        r" \| sip:198.51.100.7:40312 NAT",
        text,
    ), text


def load_cluster_watch() -> ModuleType:
    path = ROOT / "examples/cluster_watch.py"
    spec = importlib.util.spec_from_file_location("cluster_watch", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_cluster_watch_shows_each_nodes_profile_counters_and_redraws_on_a_change() -> None:
    watch = load_cluster_watch()
    changed = asyncio.Event()
    registrations = watch.Registrations(changed)
    reader = PacketReader.parse((FOLDER / "dlg-prof-3.bin").read_bytes(), wire=STREAM)
    for _ in range(3):
        _, reader = reader.pop_back_int()
    during_call = ProfileCounters.from_packet(reader)
    registrations.count(2, during_call)
    assert changed.is_set()
    assert registrations.profile_lines() == [
        ("2", "caller", "alice", "1"),
        ("2", "calls", "-", "1"),
    ]
    changed.clear()
    registrations.count(2, during_call)  # the same counters 200 ms later: no redraw
    assert not changed.is_set()
    registrations.count(2, ProfileCounters((ProfileEntry.of("calls", 0),)))
    assert changed.is_set()
    assert registrations.profile_lines() == [("2", "calls", "-", "0")]
