"""Stream soak: one good peer's packets must all arrive, in order, while hostile clients attack.

    python benchmarks/soak_stream.py --packets 1000000     # make soak
    python benchmarks/soak_stream.py --packets 20000 --hostile 6    # in make test

A good peer (a process of its own, a ``StreamEndpoint`` sending with ``await
send`` as fast as it can) sends ``--packets`` numbered packets to one
``StreamEndpoint``. All the while (and for at least ``--hostile`` rounds) a
hostile process attacks in rounds, every kind at once, each connection of one
kind: random garbage, an oversized or undersized length, valid packets then
garbage, half a packet that stalls; every third round a burst of more idle
connections than ``max_connections`` allows (held until the refused ones are
closed, then closed by the client).

At the end the run checks, and exits 1 if any fails:
  the good peer raised nothing and the handler saw 0..N-1 exactly, in order;
  every hostile connection was closed by the endpoint (or, for held idle ones,
  by the client), and the endpoint counted every accepted connection:
  accepted == open + closed by all reasons, with each attack's reason > 0;
  received == handled + drops (the stats balance), nothing dropped;
  RSS settled (grew less than --rss-slack MB over the second half of the run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import random
import struct
import sys
import time
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

from checks import print_figures

import binif
from binif import STREAM, CloseReason, PacketReader, PacketWriter, StreamEndpoint

HOST = "127.0.0.1"
KINDS = ("garbage", "too_long", "too_short", "good_then_garbage", "stall", "crowd")
EXPECTED = {
    "garbage": CloseReason.BAD_MARKER,
    "too_long": CloseReason.TOO_LONG,
    "too_short": CloseReason.TOO_SHORT,
    "good_then_garbage": CloseReason.BAD_MARKER,
    "stall": CloseReason.READ_TIMEOUT,
    "crowd": CloseReason.MAX_CONNECTIONS,
}


def good_packet(seq: int, module: str = "soak") -> bytes:
    """A numbered packet whose payload is derived from the number (so a mix-up shows)."""
    writer = PacketWriter(module, 1, wire=STREAM, version=1)
    return writer.pack("is", seq, f"payload-{seq * 7919 % 100003}".encode()).to_bytes()


def rss_mb() -> float:
    """Resident set size of this process in MB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# --- the good peer ------------------------------------------------------------------------------


def good_main(address: tuple[str, int], count: int, report: Connection) -> None:
    async def run() -> dict[str, Any]:
        raised = 0
        async with StreamEndpoint(None, connect_timeout=10.0) as peer:
            began = time.perf_counter()
            for seq in range(count):
                try:
                    await peer.send(good_packet(seq), address)
                except binif.PeerUnreachable:
                    raised += 1
            elapsed = time.perf_counter() - began
            stats = peer.stats
        return {"sent": stats.packets_sent, "raised": raised, "seconds": elapsed}

    report.send(binif.run(run()))


# --- the hostile clients ------------------------------------------------------------------------


async def closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bool:
    try:
        while await asyncio.wait_for(reader.read(65536), timeout):
            pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


async def one_attack(
    kind: str, address: tuple[str, int], rng: random.Random, wait: float, tally: Counter[str]
) -> None:
    reader, writer = await asyncio.open_connection(*address)
    tally[f"opened:{kind}"] += 1
    if kind == "garbage":
        junk = rng.randbytes(rng.randint(8, 4000))
        writer.write(b"JUNK" + junk)
    elif kind == "too_long":
        writer.write(b"P4CK" + struct.pack("<IhH", rng.randint(65516, 2**32 - 1), 1, 4) + b"soak")
    elif kind == "too_short":
        writer.write(b"P4CK" + struct.pack("<IhH", rng.randint(0, 16), 1, 4) + b"soak")
    elif kind == "good_then_garbage":
        writer.write(b"".join(good_packet(seq, "hostile") for seq in range(rng.randint(1, 20))))
        writer.write(b"NOPE" + rng.randbytes(64))
    elif kind == "stall":
        packet = good_packet(0, "hostile")
        writer.write(packet[: rng.randint(1, len(packet) - 1)])
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    if await closed_by_server(reader, wait):
        tally[f"closed:{kind}"] += 1
    writer.close()


async def crowd(
    address: tuple[str, int], extra: int, limit: int, wait: float, tally: Counter[str]
) -> None:
    """Open ``limit + extra`` idle connections at once; the endpoint must refuse some."""
    conns = []
    for _ in range(limit + extra):
        try:
            conns.append(await asyncio.open_connection(*address))
        except OSError:
            tally["connect_failed:crowd"] += 1
    tally["opened:crowd"] += len(conns)
    results = await asyncio.gather(
        *(closed_by_server(reader, wait / 4) for reader, _writer in conns)
    )
    refused = sum(results)
    tally["closed:crowd"] += refused
    tally["held_then_closed_by_client"] += len(conns) - refused
    for _reader, writer in conns:
        writer.close()


def hostile_main(
    address: tuple[str, int],
    rounds: int,
    limit: int,
    wait: float,
    seed: int,
    good_done: Any,
    report: Connection,
) -> None:
    """Attack in rounds, every kind at once in each, until the good peer is done (and at
    least ``rounds`` rounds); a crowd every third round."""

    async def run() -> dict[str, int]:
        rng = random.Random(seed)
        tally: Counter[str] = Counter()
        number = 0
        while number < rounds or not good_done.is_set():
            attacks = [
                one_attack(kind, address, rng, wait, tally)
                for kind in KINDS
                if kind != "crowd"
                for _ in range(2)
            ]
            if number % 3 == 2:
                attacks.append(crowd(address, rng.randint(1, 5), limit, wait, tally))
            await asyncio.gather(*attacks)
            number += 1
        tally["rounds"] = number
        return dict(tally)

    report.send(binif.run(run()))


# --- the endpoint under attack ------------------------------------------------------------------


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    violations: list[str] = []
    expected_seq = 0
    out_of_order = 0
    hostile_packets = 0

    async with StreamEndpoint(
        (HOST, 0),
        max_connections=args.max_connections,
        read_timeout=args.read_timeout,
        queue_size=args.queue_size,
        log_interval=5.0,
    ) as endpoint:

        @endpoint.handler("soak")
        async def in_order(packet: PacketReader, source: Any) -> None:
            nonlocal expected_seq, out_of_order
            seq, _payload = packet.unpack("is", exact=True)
            if seq != expected_seq or packet.data != good_packet(expected_seq):
                out_of_order += 1
            expected_seq += 1

        @endpoint.handler("hostile")
        async def hostile(packet: PacketReader, source: Any) -> None:
            nonlocal hostile_packets
            hostile_packets += 1

        address = endpoint.local_address
        ctx = mp.get_context("spawn")
        good_pipe, good_theirs = ctx.Pipe()
        bad_pipe, bad_theirs = ctx.Pipe()
        good_done = ctx.Event()
        good_proc = ctx.Process(target=good_main, args=(address, args.packets, good_theirs))
        good_proc.start()
        await asyncio.sleep(0)
        bad_proc = ctx.Process(
            target=hostile_main,
            args=(
                address,
                args.hostile,
                args.max_connections,
                args.read_timeout * 4 + 2,
                args.seed,
                good_done,
                bad_theirs,
            ),
        )
        bad_proc.start()
        began = time.monotonic()
        rss = [(0.0, rss_mb())]
        while good_proc.is_alive() or bad_proc.is_alive():
            await asyncio.sleep(0.25)
            rss.append((time.monotonic() - began, rss_mb()))
            if not good_proc.is_alive():
                good_done.set()
        good = await asyncio.to_thread(good_pipe.recv)
        bad: dict[str, int] = await asyncio.to_thread(bad_pipe.recv)
        good_proc.join()
        bad_proc.join()
        try:
            await asyncio.wait_for(endpoint.join(), 30)
        except TimeoutError:
            violations.append("the queues did not drain within 30 s")
        # Held connections closed by the hostile client are counted as they go.
        deadline = time.monotonic() + 10
        while endpoint.stats.connections_open > 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stats = endpoint.stats

    seconds = rss[-1][0]
    second_half = [mb for at, mb in rss if at >= seconds / 2]
    growth = max(second_half) - min(second_half) if second_half else 0.0
    closed = {str(reason): count for reason, count in stats.connections_closed.items()}
    opened = {kind: bad.get(f"opened:{kind}", 0) for kind in KINDS}
    closed_seen = {kind: bad.get(f"closed:{kind}", 0) for kind in KINDS}

    if good["raised"]:
        violations.append(f"the good peer got PeerUnreachable {good['raised']} times")
    if expected_seq != args.packets or out_of_order:
        violations.append(
            f"good packets: {expected_seq} of {args.packets} handled, {out_of_order} out of order"
        )
    for kind in KINDS:
        if closed_seen[kind] != opened[kind] and kind != "crowd":
            violations.append(
                f"{kind}: {opened[kind]} connections, {closed_seen[kind]} closed by the endpoint"
            )
        if opened[kind] and not closed[EXPECTED[kind]]:
            violations.append(f"{kind}: no connection closed as {EXPECTED[kind]}")
    if not closed_seen["crowd"]:
        violations.append("crowd: more than max_connections and none was refused")
    hostile_total = sum(opened.values())
    if stats.connections_accepted != hostile_total + 1:
        violations.append(
            f"accepted {stats.connections_accepted} connections, clients opened {hostile_total + 1}"
        )
    if stats.connections_accepted != stats.connections_open + sum(closed.values()):
        violations.append(f"connections unaccounted: {stats.connections_accepted=} {closed=}")
    if stats.dropped or stats.handler_errors or not stats.balanced():
        violations.append(f"drops or errors: {stats.as_dict()}")
    if growth > args.rss_slack:
        violations.append(f"RSS grew {growth:.1f} MB over the second half (> {args.rss_slack})")

    return {
        "packets": args.packets,
        "good_sent": good["sent"],
        "good_handled_in_order": expected_seq - out_of_order,
        "good_seconds": round(good["seconds"], 2),
        "good_rate": round(good["sent"] / good["seconds"]) if good["seconds"] else 0,
        "hostile_rounds": bad.get("rounds", 0),
        "hostile_connections": opened,
        "closed_by_endpoint": closed_seen,
        "held_then_closed_by_client": bad.get("held_then_closed_by_client", 0),
        "connections_accepted": stats.connections_accepted,
        "connections_closed": closed,
        "hostile_packets_handled": hostile_packets,
        "read_pauses": stats.read_pauses,
        "rss_mb_start": round(rss[0][1], 1),
        "rss_mb_peak": round(max(mb for _, mb in rss), 1),
        "rss_mb_growth_second_half": round(growth, 1),
        "violations": violations,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; exit status 1 on any violation."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=1_000_000, help="the good peer's")
    parser.add_argument(
        "--hostile",
        type=int,
        default=30,
        help="rounds of attacks at least (more while the good peer sends)",
    )
    parser.add_argument("--max-connections", type=int, default=16)
    parser.add_argument("--read-timeout", type=float, default=0.5)
    parser.add_argument("--queue-size", type=int, default=binif.runtime.DEFAULT_QUEUE_SIZE)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rss-slack", type=float, default=16.0, help="MB allowed to grow")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    args = parser.parse_args(argv)
    figures = binif.run(soak(args))
    if not print_figures(figures, as_json=args.json, width=28, failed="STREAM SOAK FAILED:"):
        return 1
    print("stream soak passed: the good peer lost nothing, every hostile connection was closed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
