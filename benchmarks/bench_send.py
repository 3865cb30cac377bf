"""What dead-peer detection costs the sender: IP_RECVERR, the address check, a dead peer.

The endpoint asks Linux for ICMP errors on its socket (IP_RECVERR) so a peer
that does not listen shows in ``stats.peer_errors``, and checks every
destination (cached after the first send). In interleaved rounds of the same
run this measures, in datagrams per second:

- bare ``transport.sendto`` on a plain socket and on one with IP_RECVERR set;
- ``await Endpoint.send`` (address check, counters, IP_RECVERR);
- ``await Endpoint.replicate`` to two live peers, and to one live and one dead
  peer (every datagram to the dead one comes back as an ICMP error that the
  endpoint reads and counts; the live peer must get every datagram).

Run: ``python benchmarks/bench_send.py`` (``--rounds``, ``--count``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import statistics
import sys
import time
from typing import Any

import binif
from binif import Endpoint, PacketWriter

PACKET = PacketWriter("dialog", 3).pack("sss", "call-1@example.net", "tag-a", "tag-b").to_bytes()
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)


def sink() -> socket.socket:
    """A bound socket nobody reads: it proves the port listens; the kernel drops overflow."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def dead_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def bare(recverr: bool, count: int, target: Any) -> float:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if recverr:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, sock=sock)
    sendto = transport.sendto
    began = time.perf_counter()
    for _ in range(count):
        sendto(PACKET, target)
    elapsed = time.perf_counter() - began
    transport.close()
    return count / elapsed


async def checked(endpoint: Endpoint, count: int, target: Any) -> float:
    send = endpoint.send
    began = time.perf_counter()
    for _ in range(count):
        await send(PACKET, target)
    return count / (time.perf_counter() - began)


async def replicated(endpoint: Endpoint, count: int) -> float:
    replicate = endpoint.replicate
    began = time.perf_counter()
    for _ in range(count):
        await replicate(PACKET)
    return count * len(endpoint.peers) / (time.perf_counter() - began)


async def main(args: argparse.Namespace) -> int:
    logging.getLogger("binif").setLevel(logging.ERROR)  # one line per dead-peer error burst
    live_a, live_b = sink(), sink()
    a, b = live_a.getsockname(), live_b.getsockname()
    dead = ("127.0.0.1", dead_port())
    samples: dict[str, list[float]] = {}
    async with (
        Endpoint() as sender,
        Endpoint(peers=[a, b]) as to_live,
        Endpoint(peers=[a, dead]) as to_dead,
    ):
        for _ in range(args.rounds):
            rounds = {
                "bare sendto": await bare(False, args.count, a),
                "bare sendto, IP_RECVERR": await bare(True, args.count, a),
                "await Endpoint.send": await checked(sender, args.count, a),
                "replicate, 2 live peers": await replicated(to_live, args.count),
                "replicate, 1 live 1 dead": await replicated(to_dead, args.count),
            }
            for name, rate in rounds.items():
                samples.setdefault(name, []).append(rate)
        await asyncio.sleep(0.1)
        errors = to_dead.stats.peer_errors
        expected = args.rounds * args.count
        dead_key = f"127.0.0.1:{dead[1]}"
        sent_live = to_dead.stats.packets_sent
    live_a.close()
    live_b.close()
    loop = "uvloop" if "uvloop" in type(asyncio.get_running_loop()).__module__ else "asyncio"
    print(f"send rates on {loop}, Python {sys.version.split()[0]}, {len(PACKET)}-byte packet")
    print(f"{args.rounds} interleaved rounds of {args.count:,}; median datagrams/s")
    base = statistics.median(samples["bare sendto"])
    for name, rates in samples.items():
        median = statistics.median(rates)
        print(f"  {name:28}{median:>12,.0f}  {median / base:6.0%} of bare sendto")
    ratio_recverr = statistics.median(samples["bare sendto, IP_RECVERR"]) / base
    dead_vs_live = statistics.median(samples["replicate, 1 live 1 dead"]) / statistics.median(
        samples["replicate, 2 live peers"]
    )
    print(f"IP_RECVERR / plain: {ratio_recverr:.0%}; one dead peer / all live: {dead_vs_live:.0%}")
    print(
        f"dead peer {dead_key}: {errors.get(dead_key, 0):,} ICMP errors counted for"
        f" {expected:,} datagrams; datagrams sent by that endpoint {sent_live:,}"
        f" (expected {2 * expected:,})"
    )
    return 0 if errors.get(dead_key) == expected and sent_live == 2 * expected else 1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--count", type=int, default=20_000, help="datagrams a round")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(binif.run(main(parse_args())))
