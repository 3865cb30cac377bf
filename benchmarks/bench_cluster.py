"""Dialogs a second to a typed handler through a cluster Node, against a bare StreamEndpoint.

Each round writes the same N distinct OpenSIPS 4.0 dialog CREATED packets, as
fast as TCP takes them, on one loopback connection to each contender in turn:

- ``node``: a :class:`binif.cluster.Node` (node 3 of cluster 1); every packet
  carries the clusterer trailer (cluster 1, node 1 -> node 3) and goes through
  the node's checks (cluster, source, peer address, destination, version), the
  trailer is cut and ``DialogCreated`` decoded for the ``@node.on`` handler;
- ``bare``: a :class:`binif.StreamEndpoint` with the same handler registered for
  ``DialogCreated`` (``register_message``); its packets carry no trailer, as
  one would send them without a cluster.

The rate is N over the wall-clock time from the first byte written to the
N-th handler call (sender and receiver share one process and loop; the
process's CPU time is shown too, as it moves less with the machine's load).
Rounds alternate node and bare in the same run; the result is the median of
the per-round ratios node/bare. Exit status 1 when it is under the floor.

    python benchmarks/bench_cluster.py [--dialogs 50000] [--rounds 11] [--floor 0.70]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import struct
import time

from checks import require

import binif
from binif import STREAM, StreamEndpoint
from binif.cluster import Node
from binif.opensips40 import DialogCreated

DLG = "dialog-dlg-repl"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dialogs(n: int) -> list[bytes]:
    return [
        DialogCreated.with_defaults(
            callid=f"bench-{i}@binif",
            caller_tag=f"ftag-{i}",
            callee_tag=f"ttag-{i}",
            from_uri="sip:alice@127.0.0.1:5080",
            to_uri="sip:bob@127.0.0.1:5070",
            h_id=1_000_000 + i,
            start_ts=1795839080,
            state=4,
            caller_sock="udp:sipsock",
            callee_sock="udp:sipsock",
            caller_contact="sip:alice@127.0.0.1:5080",
            callee_contact="sip:bob@127.0.0.1:5070",
            timeout_abs=1795842680,
        ).to_bytes(wire=STREAM)
        for i in range(n)
    ]


def with_trailer(packets: list[bytes]) -> list[bytes]:
    trailer = struct.pack("<iii", 1, 1, 3)
    out = []
    for data in packets:
        packet = bytearray(data + trailer)
        struct.pack_into("<I", packet, 4, len(packet))
        out.append(bytes(packet))
    return out


class Counter:
    """The handler both contenders run: count, and note when the last one arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.done = asyncio.Event()

    async def __call__(self, dialog: DialogCreated, source: object) -> None:
        self.count += 1
        if self.count == self.expected:
            self.done.set()


Timing = tuple[float, float]
"""Wall-clock seconds and this process's CPU seconds."""


async def blast(port: int, payload: bytes, counter: Counter) -> Timing:
    """Write everything, wait for the last handler call; return the time it took."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    wall, cpu = time.perf_counter(), time.process_time()
    writer.write(payload)
    await writer.drain()
    await asyncio.wait_for(counter.done.wait(), timeout=120)
    timing = time.perf_counter() - wall, time.process_time() - cpu
    writer.close()
    return timing


async def through_node(payload: bytes, n: int) -> Timing:
    seed = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # absorbs pings
    seed_port = seed.sockets[0].getsockname()[1]
    port = free_port()
    counter = Counter(n)
    node = Node(1, 3, f"bin:127.0.0.1:{port}", {1: f"bin:127.0.0.1:{seed_port}"}, [DLG])
    node.on(DialogCreated)(counter)
    async with node:
        elapsed = await blast(port, payload, counter)
        require(node.stats.handled == n and not any(node.stats.refusals.values()), node.stats)
    seed.close()
    return elapsed


async def through_endpoint(payload: bytes, n: int) -> Timing:
    counter = Counter(n)
    endpoint = StreamEndpoint(("127.0.0.1", 0))
    endpoint.register_message(DialogCreated, counter)
    async with endpoint:
        elapsed = await blast(endpoint.local_address[1], payload, counter)
        require(endpoint.stats.handled == n, endpoint.stats)
    return elapsed


async def run(n: int, rounds: int) -> tuple[list[Timing], list[Timing]]:
    plain = dialogs(n)
    bare_payload = b"".join(plain)
    node_payload = b"".join(with_trailer(plain))
    node_times, bare_times = [], []
    for _ in range(rounds):
        node_times.append(await through_node(node_payload, n))
        bare_times.append(await through_endpoint(bare_payload, n))
    return node_times, bare_times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dialogs", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--floor", type=float, default=0.70)
    args = parser.parse_args()
    node_times, bare_times = binif.run(run(args.dialogs, args.rounds))
    n = args.dialogs
    print(f"{n} dialog CREATED packets per round, {args.rounds} alternating rounds")
    print(f"{'contender':10} {'dialogs/s':>10} {'min':>10} {'max':>10} {'per CPU s':>10}")
    for name, times in (("node", node_times), ("bare", bare_times)):
        rates = [n / wall for wall, _ in times]
        cpu_rate = statistics.median(n / cpu for _, cpu in times)
        print(
            f"{name:10} {statistics.median(rates):10,.0f} {min(rates):10,.0f}"
            f" {max(rates):10,.0f} {cpu_rate:10,.0f}"
        )
    ratios = [b[0] / a[0] for a, b in zip(node_times, bare_times, strict=True)]
    cpu_ratios = [b[1] / a[1] for a, b in zip(node_times, bare_times, strict=True)]
    ratio = statistics.median(ratios)
    met = ratio >= args.floor
    print(f"node / bare, wall clock: {ratio:.2f} median of rounds {fmt(ratios)}")
    print(f"node / bare, CPU time:   {statistics.median(cpu_ratios):.2f} median of rounds"
          f" {fmt(cpu_ratios)}")  # fmt: skip
    print(f"floor {args.floor:.2f} (wall clock): {'met' if met else 'NOT MET'}")
    return 0 if met else 1


def fmt(ratios: list[float]) -> str:
    return ", ".join(f"{r:.2f}" for r in ratios)


if __name__ == "__main__":
    raise SystemExit(main())
