"""Dialog replication between an active and a backup process, as OpenSIPS 2.1 does it.

The backup process listens with a :class:`binif.Endpoint` and keeps a dialog
table from the packets: created (1) and updated (2) store the 25 fields,
deleted (3) removes the dialog. The active process creates, updates and deletes
a few thousand dialogs at a steady rate and replicates each event to the
backup, in the OpenSIPS 2.1 dialog packet layout. At the end both report their
table and stats; the tables must be equal.

    python examples/replication.py [--dialogs 3000] [--rate 2500]

Exits 1 if the backup's table differs from the active's or a packet was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import binif
from binif import Endpoint, PacketReader, PacketWriter, Stats

DIALOG = "dialog"
CREATED, UPDATED, DELETED = 1, 2, 3
LAYOUT = "sssssiiissssssssssssiiiii"
"""OpenSIPS 2.1 dialog created/updated: 25 fields (see WIRE.md)."""
CONTROL = "demo"
END_OF_RUN = 1
"""Control packet the active sends last: one int, the number of dialog packets sent."""

Fields = tuple[bytes | int, ...]
Table = dict[bytes, Fields]


# --- the active side ------------------------------------------------------------------


def callid_of(fields: Fields) -> bytes:
    """The Call-ID, the first field of every dialog packet: the table's key."""
    callid = fields[0]
    assert isinstance(callid, bytes)
    return callid


def dialog_fields(n: int, state: int, cseq: int, now: int) -> Fields:
    """The 25 fields of dialog ``n`` as OpenSIPS 2.1 would replicate them."""
    return (
        f"demo-{n}@127.0.0.1".encode(),  # callid
        f"from{n:06d}".encode(),  # from_tag
        f"to{n:06d}".encode(),  # to_tag
        b"sip:alice@127.0.0.1",  # from_uri
        f"sip:bob{n % 100}@127.0.0.1".encode(),  # to_uri
        n,  # h_id
        now,  # start_ts
        state,  # state: 3 confirmed_na, 4 confirmed
        b"udp:127.0.0.1:5060",  # caller_sock
        b"udp:127.0.0.1:5060",  # callee_sock
        b"0",  # caller_r_cseq
        str(cseq).encode(),  # callee_r_cseq
        b"",  # caller_route_set
        b"",  # callee_route_set
        b"sip:alice@127.0.0.1:5080",  # caller_contact
        f"sip:bob{n % 100}@127.0.0.1:5070".encode(),  # callee_contact
        b"",  # callee_from_uri
        b"",  # callee_to_uri
        f"origin#demo|n#{n}|".encode(),  # vars
        b"caller#alice|",  # profiles
        0,  # user_flags
        16,  # flags
        now + 3600,  # timeout
        cseq,  # caller_last_gen_cseq
        cseq + 1,  # callee_last_gen_cseq
    )


def events(dialogs: int) -> list[tuple[int, int]]:
    """(command, dialog) in the order a busy proxy would see them.

    Dialog n is created at step n, updated (its ACK) 10 steps later, and every
    third dialog is deleted (its BYE) 50 steps later.
    """
    timeline: list[tuple[int, int]] = []
    for step in range(dialogs + 50):
        if step < dialogs:
            timeline.append((CREATED, step))
        if 0 <= step - 10 < dialogs:
            timeline.append((UPDATED, step - 10))
        if 0 <= step - 50 < dialogs and (step - 50) % 3 == 0:
            timeline.append((DELETED, step - 50))
    return timeline


async def active(backup: tuple[str, int], dialogs: int, rate: int) -> tuple[Table, Stats, float]:
    """Replicate every dialog event to ``backup`` at ``rate`` packets per second."""
    table: Table = {}
    now = int(time.time())
    timeline = events(dialogs)
    loop = asyncio.get_running_loop()
    async with Endpoint(peers=[backup]) as endpoint:
        began = loop.time()
        for sent, (command, n) in enumerate(timeline):
            due = began + sent / rate
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            if command == DELETED:
                callid, from_tag, to_tag = table.pop(f"demo-{n}@127.0.0.1".encode())[:3]
                packet = PacketWriter(DIALOG, DELETED).pack("sss", callid, from_tag, to_tag)
            else:
                fields = dialog_fields(n, 3 if command == CREATED else 4, 1 + command, now)
                table[callid_of(fields)] = fields
                packet = PacketWriter(DIALOG, command).pack(LAYOUT, *fields)
            await endpoint.replicate(packet)
        elapsed = loop.time() - began
        await endpoint.replicate(PacketWriter(CONTROL, END_OF_RUN).pack("i", len(timeline)))
        return table, endpoint.stats, elapsed


def active_process(backup: tuple[str, int], dialogs: int, rate: int, report: Connection) -> None:
    report.send(binif.run(active(backup, dialogs, rate)))


# --- the backup side ------------------------------------------------------------------


async def backup(ready: Connection) -> tuple[Table, Stats]:
    """Keep a dialog table from replicated packets until the active says it is done."""
    table: Table = {}
    expected: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    async with Endpoint(("127.0.0.1", 0), allow=["127.0.0.1"]) as endpoint:

        @endpoint.handler(DIALOG)
        async def on_dialog(packet: PacketReader, source: Any) -> None:
            if packet.command == DELETED:
                del table[callid_of(packet.unpack("sss", exact=True))]
            else:
                fields = packet.unpack(LAYOUT, exact=True)
                table[callid_of(fields)] = fields

        @endpoint.handler(CONTROL)
        async def on_control(packet: PacketReader, source: Any) -> None:
            (count,) = packet.unpack("i", exact=True)
            assert isinstance(count, int)
            expected.set_result(count)

        ready.send(endpoint.local_address)
        count = await expected
        # The control packet has its own queue: wait for the dialog packets still
        # in flight (or give up after 2 s: a lost packet then shows as a mismatch).
        deadline = asyncio.get_running_loop().time() + 2
        while endpoint.stats.received < count + 1 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        await endpoint.join()
        stats = endpoint.stats
    return table, stats


def backup_process(ready: Connection) -> None:
    ready.send(binif.run(backup(ready)))


# --- orchestration -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the run produced."""

    equal: bool
    lost: int


def digest(table: Table) -> str:
    """A short fingerprint of a table, independent of insertion order."""
    h = hashlib.sha256()
    for callid in sorted(table):
        h.update(repr(table[callid]).encode())
    return h.hexdigest()[:16]


def show(name: str, stats: Stats) -> None:
    drops = {str(reason): count for reason, count in stats.drops.items() if count}
    print(f"  {name}:")
    print(
        f"    received {stats.received}  dispatched {stats.dispatched}  handled {stats.handled}"
        f"  handler errors {stats.handler_errors}  timeouts {stats.handler_timeouts}"
    )
    print(f"    drops {drops or 'none'}  pending {stats.pending}  balanced {stats.balanced()}")
    print(
        f"    sent {stats.packets_sent} packets / {stats.bytes_sent} bytes"
        f"  send errors {stats.send_errors}  errors received {stats.errors_received}"
    )
    print(
        f"    recv buffer granted {stats.recv_buffer}  kernel drops {stats.kernel_drops}"
        f"  queue depths {dict(stats.queue_depths)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dialogs", type=int, default=3000, help="dialogs to create")
    parser.add_argument("--rate", type=int, default=2500, help="packets per second")
    args = parser.parse_args()

    context = multiprocessing.get_context("spawn")
    backup_end, parent_backup = context.Pipe()
    active_end, parent_active = context.Pipe()
    backup_proc = context.Process(target=backup_process, args=(backup_end,), name="backup")
    backup_proc.start()
    address = parent_backup.recv()
    print(f"backup listening on {address[0]}:{address[1]}")
    active_proc = context.Process(
        target=active_process,
        args=(address, args.dialogs, args.rate, active_end),
        name="active",
    )
    active_proc.start()
    active_table, active_stats, elapsed = parent_active.recv()
    backup_table, backup_stats = parent_backup.recv()
    active_proc.join()
    backup_proc.join()

    sent = active_stats.packets_sent - 1  # without the control packet
    lost = active_stats.packets_sent - backup_stats.received
    print(
        f"active sent {sent} dialog packets for {args.dialogs} dialogs in {elapsed:.2f} s:"
        f" {sent / elapsed:,.0f} packets/s (target {args.rate:,})"
    )
    print("stats:")
    show("active", active_stats)
    show("backup", backup_stats)
    equal = backup_table == active_table
    print(
        f"tables: active {len(active_table)} dialogs [{digest(active_table)}],"
        f" backup {len(backup_table)} dialogs [{digest(backup_table)}]:"
        f" {'EQUAL' if equal else 'DIFFERENT'}"
    )
    ok = equal and lost == 0 and backup_stats.dropped == 0 and backup_stats.handler_errors == 0
    print("replication OK" if ok else f"replication FAILED (lost {lost})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
