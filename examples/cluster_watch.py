"""Join an OpenSIPS cluster as a node and keep live tables of its dialogs and registrations.

    python examples/cluster_watch.py --cluster 1 --node 3 --url bin:127.0.0.1:5557 \\
        --seed 1=bin:127.0.0.1:5555 [--seed 2=bin:127.0.0.1:5556] [--once]

The node joins (the OpenSIPS nodes must know it: see the README, "Adding a binif
node to an OpenSIPS cluster"), asks a node that holds the dialogs for a sync,
then keeps the table from the replication: created and updated dialogs are
stored (an update without a create makes the dialog, as OpenSIPS does),
deleted ones are removed. Registrations are kept the same way in a
``binif.location.LocationTable`` (synced too when a node holds them, expired
locally, since OpenSIPS does not replicate expiry): AoR, contact, seconds left,
user agent, received address and branch flags (``NAT``); and the dialog
profile counters each node broadcasts. The tables are redrawn in the terminal
when they change, with ``rich`` when it is installed (``pip install rich``), as
plain text otherwise. ``--once`` prints them after the syncs and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass

import binif
from binif import opensips40
from binif.cluster import Node, NoSyncDonor
from binif.location import LocationTable, UsrlocMessage
from binif.messages import Message
from binif.opensips40_usrloc import (
    PROFILE_CAPABILITY,
    USRLOC_CAPABILITY,
    USRLOC_MESSAGES,
    ProfileCounters,
)

DLG = "dialog-dlg-repl"
STATES = {1: "unconfirmed", 2: "early", 3: "confirmed (no ACK)", 4: "confirmed", 5: "deleted"}


@dataclass
class Row:
    """One dialog as the table shows it."""

    callid: str
    from_uri: str
    to_uri: str
    state: int
    start: int


class Table:
    """Dialogs by (callid, h_id): OpenSIPS matches duplicates and deletes on the h_id."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int], Row] = {}
        self.changed = asyncio.Event()

    def store(self, dialog: opensips40.DialogCreated | opensips40.DialogUpdated) -> None:
        row = Row(dialog.callid, dialog.from_uri, dialog.to_uri, dialog.state, dialog.start_ts)
        self.rows[(dialog.callid, dialog.h_id)] = row
        self.changed.set()

    def remove(self, dialog: opensips40.DialogDeleted) -> None:
        if self.rows.pop((dialog.callid, dialog.h_id), None) is not None:
            self.changed.set()

    def lines(self, now: float) -> list[tuple[str, str, str, str, str, str]]:
        out = []
        for row in sorted(self.rows.values(), key=lambda r: (r.start, r.callid)):
            start = time.strftime("%H:%M:%S", time.localtime(row.start)) if row.start else "-"
            duration = f"{int(now - row.start)}s" if row.start and row.state == 4 else "-"
            state = STATES.get(row.state, str(row.state))
            out.append((row.callid, row.from_uri, row.to_uri, state, start, duration))
        return out


class Registrations:
    """The location table and each node's dialog profile counters."""

    def __init__(self, changed: asyncio.Event) -> None:
        self.location = LocationTable()
        self.profiles: dict[int, dict[tuple[str, str | None], int]] = {}
        self.changed = changed

    def apply(self, message: UsrlocMessage) -> None:
        if self.location.apply(message):
            self.changed.set()

    def expire(self) -> None:
        if self.location.expire():
            self.changed.set()

    def count(self, node_id: int, counters: ProfileCounters) -> None:
        counts = counters.counts()  # sent every 200 ms: redraw only on a change
        if self.profiles.get(node_id) != counts:
            self.profiles[node_id] = counts
            self.changed.set()

    def lines(self, now: float) -> list[tuple[str, str, str, str, str]]:
        out = []
        for binding in sorted(self.location.bindings(), key=lambda b: (b.aor, -b.q, b.contact)):
            left = binding.expires_in(now)
            expires = "never" if left is None else f"{max(0, int(left))}s"
            nat = " ".join(str(part) for part in (binding.received, binding.cflags) if part)
            out.append((binding.aor, binding.contact, expires, binding.user_agent, nat or "-"))
        return out

    def profile_lines(self) -> list[tuple[str, str, str, str]]:
        out = []
        for node_id, counts in sorted(self.profiles.items()):
            for (profile, value), count in sorted(counts.items(), key=lambda item: str(item[0])):
                out.append((str(node_id), profile, "-" if value is None else value, str(count)))
        return out


Section = tuple[str, tuple[str, ...], list[tuple[str, ...]]]


def render(table: Table, registrations: Registrations, node: Node) -> None:
    now = time.time()
    nodes = ", ".join(f"{i}: {v.state}" for i, v in sorted(node.nodes.items()))
    location = registrations.location
    sections: list[Section] = [
        (
            f"node {node.node_id}: {len(table.rows)} dialogs; nodes {nodes}",
            ("callid", "from", "to", "state", "start", "duration"),
            list(table.lines(now)),
        ),
        (
            f"{len(location)} AoRs, {location.contact_count} contacts",
            ("aor", "contact", "expires", "user agent", "received / flags"),
            list(registrations.lines(now)),
        ),
        (
            "dialog profiles (each node's own count)",
            ("node", "profile", "value", "count"),
            list(registrations.profile_lines()),
        ),
    ]
    try:
        from rich.console import Console
        from rich.table import Table as RichTable
    except ImportError:
        print("\x1b[2J\x1b[H", end="")
        for title, headers, rows in sections:
            print(title)
            print(" | ".join(headers))
            for line in rows:
                print(" | ".join(line))
        return
    console = Console()
    console.clear()
    for title, headers, rows in sections:
        grid = RichTable(*headers, title=title)
        for line in rows:
            grid.add_row(*line)
        console.print(grid)


def parse_seed(text: str) -> tuple[int, str]:
    node_id, sep, url = text.partition("=")
    if not sep or not node_id.isdigit():
        raise argparse.ArgumentTypeError(f"--seed takes ID=bin:HOST:PORT, not {text!r}")
    return int(node_id), url


async def main(args: argparse.Namespace) -> int:
    table = Table()
    registrations = Registrations(table.changed)
    node = Node(
        cluster_id=args.cluster,
        node_id=args.node,
        url=args.url,
        seeds=dict(args.seed),
        capabilities=[DLG, USRLOC_CAPABILITY, PROFILE_CAPABILITY],
        sip_addr=args.sip_addr,
    )

    @node.on(opensips40.DialogCreated)
    async def created(dialog: opensips40.DialogCreated, node_id: int) -> None:
        table.store(dialog)

    @node.on(opensips40.DialogUpdated)
    async def updated(dialog: opensips40.DialogUpdated, node_id: int) -> None:
        table.store(dialog)  # sometimes the only packet of a new call

    @node.on(opensips40.DialogDeleted)
    async def deleted(dialog: opensips40.DialogDeleted, node_id: int) -> None:
        table.remove(dialog)

    async def registration(message: Message, node_id: int) -> None:
        assert isinstance(message, UsrlocMessage)  # registered for those classes only
        registrations.apply(message)  # a sync's AoRs and contacts come here too

    for message_class in USRLOC_MESSAGES.values():
        node.on(message_class)(registration)

    @node.on(ProfileCounters)
    async def profiles(counters: ProfileCounters, node_id: int) -> None:
        registrations.count(node_id, counters)

    async with node:
        try:
            result = await node.sync(DLG, timeout=args.sync_timeout)
            print(f"synced {result.delivered} dialogs from node {result.donor}", file=sys.stderr)
        except NoSyncDonor as error:
            print(f"no sync: {error}", file=sys.stderr)
        # Registrations are synced when a node advertises them ready (a usrloc
        # cluster with a full-sharing preset); otherwise they come as they change.
        if any(view.capabilities.get(USRLOC_CAPABILITY) == 1 for view in node.nodes.values()):
            try:
                result = await node.sync(USRLOC_CAPABILITY, timeout=args.sync_timeout)
                print(
                    f"synced {result.delivered} AoRs and contacts from node {result.donor}",
                    file=sys.stderr,
                )
            except NoSyncDonor as error:
                print(f"no registrations sync: {error}", file=sys.stderr)
        render(table, registrations, node)
        if args.once:
            return 0
        while True:
            table.changed.clear()
            try:
                async with asyncio.timeout(1.0):  # redraw durations once a second
                    await table.changed.wait()
            except TimeoutError:
                pass
            registrations.expire()
            render(table, registrations, node)


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cluster", type=int, default=1)
    parser.add_argument("--node", type=int, required=True, help="this node's id")
    parser.add_argument("--url", required=True, help="this node's bin:HOST:PORT")
    parser.add_argument("--seed", type=parse_seed, action="append", required=True)
    parser.add_argument("--sip-addr", default="", help="advertised SIP address")
    parser.add_argument("--sync-timeout", type=float, default=15.0)
    parser.add_argument("--once", action="store_true", help="print after the sync and exit")
    try:
        return binif.run(main(parser.parse_args()))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(cli())
