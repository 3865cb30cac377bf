"""Join an OpenSIPS cluster as a node and keep a live table of its dialogs.

    python examples/cluster_watch.py --cluster 1 --node 3 --url bin:127.0.0.1:5557 \\
        --seed 1=bin:127.0.0.1:5555 [--seed 2=bin:127.0.0.1:5556] [--once]

The node joins (the OpenSIPS nodes must know it: see the README, "Adding a binif
node to an OpenSIPS cluster"), asks a node that holds the dialogs for a sync,
then keeps the table from the replication: created and updated dialogs are
stored (an update without a create makes the dialog, as OpenSIPS does),
deleted ones are removed. The table is redrawn in the terminal when it
changes, with ``rich`` when it is installed (``pip install rich``), as plain
text otherwise. ``--once`` prints the table after the sync and exits.
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


def render(table: Table, node: Node) -> None:
    now = time.time()
    nodes = ", ".join(f"{i}: {v.state}" for i, v in sorted(node.nodes.items()))
    title = f"node {node.node_id}: {len(table.rows)} dialogs; nodes {nodes}"
    headers = ("callid", "from", "to", "state", "start", "duration")
    try:
        from rich.console import Console
        from rich.table import Table as RichTable
    except ImportError:
        print("\x1b[2J\x1b[H" + title)
        print(" | ".join(headers))
        for line in table.lines(now):
            print(" | ".join(line))
        return
    grid = RichTable(*headers, title=title)
    for line in table.lines(now):
        grid.add_row(*line)
    console = Console()
    console.clear()
    console.print(grid)


def parse_seed(text: str) -> tuple[int, str]:
    node_id, sep, url = text.partition("=")
    if not sep or not node_id.isdigit():
        raise argparse.ArgumentTypeError(f"--seed takes ID=bin:HOST:PORT, not {text!r}")
    return int(node_id), url


async def main(args: argparse.Namespace) -> int:
    table = Table()
    node = Node(
        cluster_id=args.cluster,
        node_id=args.node,
        url=args.url,
        seeds=dict(args.seed),
        capabilities=[DLG],
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

    async with node:
        try:
            result = await node.sync(DLG, timeout=args.sync_timeout)
            print(f"synced {result.delivered} dialogs from node {result.donor}", file=sys.stderr)
        except NoSyncDonor as error:
            print(f"no sync: {error}", file=sys.stderr)
        render(table, node)
        if args.once:
            return 0
        while True:
            table.changed.clear()
            try:
                async with asyncio.timeout(1.0):  # redraw durations once a second
                    await table.changed.wait()
            except TimeoutError:
                pass
            render(table, node)


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
