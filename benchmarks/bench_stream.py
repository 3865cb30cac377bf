"""Stream endpoint benchmark: binif's StreamEndpoint against a hand-written asyncio Protocol.

The packet is OpenSIPS 4.0.1's dialog CREATED with its clusterer trailer, as
captured (``tests/vectors/opensips-4.0/dialog-create-1.bin``).

1. Receive: a sender process writes N packets on one TCP connection as fast as
   TCP lets it. Contenders, interleaved in every round after a warm-up round,
   each clocked from the moment the sender is told to go until its handler has
   seen the N-th packet: a hand-written ``asyncio.Protocol`` that frames by the
   length field, reads the header (version, capability, type) and calls a plain
   function per packet; ``StreamEndpoint`` with a handler that counts; and
   ``StreamEndpoint`` with a handler that decodes ``opensips40.DialogCreated``
   (its trailer split off first). Ratio: median of per-round ratios. Floor: the
   counting endpoint at 50% of the hand-written rate.
2. Send: ``await ep.send`` against bare ``transport.write``, each to a sink
   process that reads and discards. Floor: 60%.
3. Flood: 100,000 distinct dialog CREATED packets (each its own call-id)
   written as fast as possible into a StreamEndpoint whose typed handler keeps
   a table of dialogs: all 100,000 must be in the table, none dropped.
4. Where the time goes, in-process (no sockets), microseconds per packet for
   256 KiB reads: the hand-written framing loop; ``StreamDecoder.feed`` alone
   (framing and ``PacketReader.parse``); a connection of a StreamEndpoint fed
   the same reads (decoder, dispatch, queue, worker, a counting handler).

    python benchmarks/bench_stream.py [--quick]

Runs on uvloop through ``binif.run`` when it is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import statistics
import struct
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from checks import require

import binif
from binif import STREAM, PacketReader, StreamEndpoint, opensips40

VECTOR = Path(__file__).resolve().parent.parent / "tests/vectors/opensips-4.0/dialog-create-1.bin"
PACKET = VECTOR.read_bytes()
HOST = "127.0.0.1"
CHUNK = 256
"""Packets the sender joins into one sendall."""


def loop_name() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def distinct_packets(count: int) -> list[bytes]:
    """``count`` copies of PACKET, each with its own call-id (same length, so same framing)."""
    reader = PacketReader.parse(PACKET, wire=STREAM)
    callid, _rest = reader.pop_str()
    start = reader.offset + 2  # past the str's 2-byte length
    width = min(len(callid), 12)
    return [
        PACKET[:start] + f"{seq:0{width}d}".encode() + PACKET[start + width :]
        for seq in range(count)
    ]


# --- the sender and the sink: processes of their own -------------------------------------------


def sender_process(commands: Connection) -> None:
    """For each ``(address, packets)`` received: connect, write them all, close; reply the count."""
    while True:
        command = commands.recv()
        if command is None:
            return
        address, packets = command
        chunks = [b"".join(packets[i : i + CHUNK]) for i in range(0, len(packets), CHUNK)]
        commands.send("ready")
        commands.recv()  # go
        with socket.create_connection(address) as sock:
            for chunk in chunks:
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
            sock.recv(1)  # wait for the receiver to close: everything was read
        commands.send(len(packets))


def sink_process(ready: Connection) -> None:
    """Accept connections and read them to the end, discarding; report the port first."""
    server = socket.create_server((HOST, 0))
    ready.send(server.getsockname()[1])
    import threading

    def drain(conn: socket.socket) -> None:
        with conn:
            while conn.recv(1 << 20):
                pass

    while True:
        conn, _ = server.accept()
        threading.Thread(target=drain, args=(conn,), daemon=True).start()


class Sender:
    """The sender process, kept across rounds so its start-up is never timed."""

    def __init__(self) -> None:
        self.pipe, theirs = multiprocessing.Pipe()
        self.process = multiprocessing.Process(target=sender_process, args=(theirs,), daemon=True)
        self.process.start()

    async def prepare(self, address: Any, packets: list[bytes]) -> None:
        self.pipe.send((tuple(address[:2]), packets))
        await asyncio.to_thread(self.pipe.recv)

    def go(self) -> float:
        began = time.perf_counter()
        self.pipe.send("go")
        return began

    async def finished(self) -> int:
        sent: int = await asyncio.to_thread(self.pipe.recv)
        return sent

    def stop(self) -> None:
        self.pipe.send(None)
        self.process.join(5)


# --- 1. receive ---------------------------------------------------------------------------------

_HEAD = struct.Struct("<4sIhH")
_TYPE = struct.Struct("<i")


class HandWritten(asyncio.Protocol):
    """What one writes by hand: frame by the length field, read the header, call a function."""

    def __init__(self, consume: Callable[[int, bytes, int, bytes], None]) -> None:
        self.consume = consume
        self.buffer = b""
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        end = len(buffer)
        pos = 0
        consume = self.consume
        while end - pos >= 12:
            marker, total, version, name_len = _HEAD.unpack_from(buffer, pos)
            if marker != b"P4CK" or not 17 <= total <= 65515:
                assert self.transport is not None
                self.transport.close()
                return
            if end - pos < total:
                break
            name_end = pos + 12 + name_len
            (kind,) = _TYPE.unpack_from(buffer, name_end)
            consume(version, buffer[pos + 12 : name_end], kind, buffer[pos : pos + total])
            pos += total
        self.buffer = buffer[pos:]


async def receive_bare(sender: Sender, packets: list[bytes]) -> float:
    """Packets per second into the hand-written protocol."""
    count = len(packets)
    seen = 0
    done: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def consume(version: int, name: bytes, kind: int, packet: bytes) -> None:
        nonlocal seen
        seen += 1
        if seen == count:
            done.set_result(time.perf_counter())

    server = await asyncio.get_running_loop().create_server(lambda: HandWritten(consume), HOST, 0)
    try:
        await sender.prepare(server.sockets[0].getsockname(), packets)
        began = sender.go()
        ended = await done
        sent = await sender.finished()
        require(sent == count, f"the sender wrote {sent} of {count} packets")
    finally:
        server.close()
    return count / (ended - began)


async def receive_binif(sender: Sender, packets: list[bytes], *, typed: bool) -> float:
    """Packets per second into a StreamEndpoint whose handler counts (or decodes, ``typed``)."""
    count = len(packets)
    seen = 0
    done: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def counting(packet: PacketReader, source: Any) -> None:
        nonlocal seen
        seen += 1
        if seen == count:
            done.set_result(time.perf_counter())

    async def decoding(packet: PacketReader, source: Any) -> None:
        nonlocal seen
        _trailer, rest = opensips40.Trailer.split(packet)
        opensips40.DialogCreated.from_packet(rest)
        seen += 1
        if seen == count:
            done.set_result(time.perf_counter())

    async with StreamEndpoint((HOST, 0)) as endpoint:
        endpoint.register("dialog-dlg-repl", decoding if typed else counting)
        await sender.prepare(endpoint.local_address, packets)
        began = sender.go()
        ended = await done
        sent = await sender.finished()
        require(sent == count, f"the sender wrote {sent} of {count} packets")
        stats = endpoint.stats
        require(stats.dropped == 0 and stats.handler_errors == 0, stats)
    return count / (ended - began)


async def part_receive(
    count: int, rounds: int, sender: Sender
) -> tuple[list[float], list[float], list[float]]:
    packets = [PACKET] * count
    bare, ours, typed = [], [], []
    await receive_bare(sender, packets[: count // 4])  # warm-up, not counted
    await receive_binif(sender, packets[: count // 4], typed=False)
    for number in range(rounds):
        order = ["bare", "binif", "typed"] if number % 2 == 0 else ["typed", "binif", "bare"]
        for name in order:
            if name == "bare":
                bare.append(await receive_bare(sender, packets))
            elif name == "binif":
                ours.append(await receive_binif(sender, packets, typed=False))
            else:
                typed.append(await receive_binif(sender, packets, typed=True))
    return bare, ours, typed


# --- 2. send ------------------------------------------------------------------------------------


async def send_bare(port: int, count: int) -> float:
    transport, _ = await asyncio.get_running_loop().create_connection(asyncio.Protocol, HOST, port)
    write = transport.write
    began = time.perf_counter()
    for _ in range(count):
        write(PACKET)
    elapsed = time.perf_counter() - began
    transport.close()
    return count / elapsed


async def send_binif(endpoint: StreamEndpoint, port: int, count: int) -> float:
    send = endpoint.send
    target = (HOST, port)
    await send(PACKET, target)  # connect outside the clock
    began = time.perf_counter()
    for _ in range(count):
        await send(PACKET, target)
    return count / (time.perf_counter() - began)


async def part_send(count: int, rounds: int, port: int) -> tuple[list[float], list[float]]:
    bare, ours = [], []
    for _ in range(rounds):
        bare.append(await send_bare(port, count))
        async with StreamEndpoint(None) as endpoint:  # a new connection each round, as bare
            ours.append(await send_binif(endpoint, port, count))
    return ours, bare


# --- 3. flood -----------------------------------------------------------------------------------


async def flood(sender: Sender, count: int) -> tuple[float, int, binif.StreamStats]:
    """Rate of ``count`` distinct dialogs into a typed table, the table's size, the stats."""
    packets = distinct_packets(count)
    table: dict[str, opensips40.DialogCreated] = {}
    done: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def keep(packet: PacketReader, source: Any) -> None:
        _trailer, rest = opensips40.Trailer.split(packet)
        dialog = opensips40.DialogCreated.from_packet(rest)
        table[dialog.callid] = dialog
        if len(table) == count:
            done.set_result(time.perf_counter())

    async with StreamEndpoint((HOST, 0)) as endpoint:
        endpoint.register("dialog-dlg-repl", keep)
        await sender.prepare(endpoint.local_address, packets)
        began = sender.go()
        try:
            ended = await asyncio.wait_for(done, 300)
        finally:
            await sender.finished()
        await endpoint.join()
        stats = endpoint.stats
    return count / (ended - began), len(table), stats


# --- 4. where the time goes -----------------------------------------------------------------------


class _NoTransport:
    """Stands in for a transport: reading is never really paused."""

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return True


def cost_hand_written(chunk: bytes, reads: int) -> float:
    seen = 0

    def consume(version: int, name: bytes, kind: int, packet: bytes) -> None:
        nonlocal seen
        seen += 1

    protocol = HandWritten(consume)
    began = time.perf_counter()
    for _ in range(reads):
        protocol.data_received(chunk)
    return (time.perf_counter() - began) / seen * 1e6


def cost_decoder(chunk: bytes, reads: int) -> float:
    decoder = binif.StreamDecoder()
    began = time.perf_counter()
    seen = sum(len(decoder.feed(chunk)) for _ in range(reads))
    return (time.perf_counter() - began) / seen * 1e6


async def cost_endpoint(chunk: bytes, reads: int) -> float:
    from binif.stream import _Connection  # the per-connection protocol, fed directly

    seen = 0

    async def counting(packet: PacketReader, source: Any) -> None:
        nonlocal seen
        seen += 1

    async with StreamEndpoint(None) as endpoint:
        endpoint.register("dialog-dlg-repl", counting)
        connection = _Connection(endpoint)
        connection.transport = _NoTransport()  # type: ignore[assignment]
        connection.peer = (HOST, 5555)
        began = time.perf_counter()
        for _ in range(reads):
            connection.data_received(chunk)
            await asyncio.sleep(0)
            while connection.blocked_on:  # backpressure: let the worker take its share
                await asyncio.sleep(0)
        await endpoint.join()
        return (time.perf_counter() - began) / seen * 1e6


async def part_costs(count: int, rounds: int) -> tuple[float, float, float]:
    chunk = PACKET * (256 * 1024 // len(PACKET))
    reads = max(count // (256 * 1024 // len(PACKET)), 1)
    hand, decode, full = [], [], []
    for _ in range(rounds):
        hand.append(cost_hand_written(chunk, reads))
        decode.append(cost_decoder(chunk, reads))
        full.append(await cost_endpoint(chunk, reads))
    return statistics.median(hand), statistics.median(decode), statistics.median(full)


# --- main ---------------------------------------------------------------------------------------


def median_ratio(ours: list[float], theirs: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(ours, theirs, strict=True))


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


async def main(args: argparse.Namespace) -> int:
    print(f"binif stream benchmark on {loop_name()}, Python {sys.version.split()[0]}")
    print(f"packet: {VECTOR.name}, {len(PACKET)} bytes (OpenSIPS 4.0.1 dialog CREATED + trailer)")
    print()
    missed = 0
    sender = Sender()
    ready, theirs = multiprocessing.Pipe()
    sink = multiprocessing.Process(target=sink_process, args=(theirs,), daemon=True)
    sink.start()
    sink_port: int = ready.recv()
    try:
        print(
            f"1. receive over loopback TCP: {args.rounds} interleaved rounds of"
            f" {args.receive:,} packets after a warm-up; medians, ratio = median of per-round"
            " ratios"
        )
        bare, ours, typed = await part_receive(args.receive, args.rounds, sender)
        ratio = median_ratio(ours, bare)
        print(f"  {'':40}{'packets/s':>12}")
        print(f"  {'hand-written asyncio Protocol':40}{statistics.median(bare):>12,.0f}")
        print(f"  {'StreamEndpoint, handler counts':40}{statistics.median(ours):>12,.0f}")
        if typed:
            print(f"  {'StreamEndpoint, handler decodes':40}{statistics.median(typed):>12,.0f}")
        print(f"  ratio binif/hand-written: {ratio:.0%} (floor 50%): {verdict(ratio >= 0.5)}")
        if typed:
            print(f"  ratio typed/hand-written: {median_ratio(typed, bare):.0%}")
        print()
        missed += ratio < 0.5

        print(
            f"2. send: {args.rounds} alternating rounds of {args.send:,} packets to a sink"
            " process; medians, ratio = median of per-round ratios"
        )
        ours_send, bare_send = await part_send(args.send, args.rounds, sink_port)
        share = median_ratio(ours_send, bare_send)
        print(f"  {'':40}{'packets/s':>12}")
        print(f"  {'bare transport.write':40}{statistics.median(bare_send):>12,.0f}")
        print(f"  {'await StreamEndpoint.send':40}{statistics.median(ours_send):>12,.0f}")
        print(f"  ratio binif/bare: {share:.0%} (floor 60%): {verdict(share >= 0.6)}")
        print()
        missed += share < 0.6

        what = "typed DialogCreated"
        print(
            f"3. flood: {args.flood:,} distinct dialog CREATED packets as fast as TCP goes,"
            f" handler keeps a table by {what}"
        )
        rate, kept, stats = await flood(sender, args.flood)
        whole = kept == args.flood and stats.dropped == 0 and stats.balanced()
        print(
            f"  {kept:,} of {args.flood:,} in the table, {stats.dropped} dropped,"
            f" {stats.read_pauses} read pauses (backpressure): {rate:,.0f} dialogs/s:"
            f" {verdict(whole)}"
        )
        missed += not whole
        print()

        print(f"4. where the time goes, in-process, {args.receive:,} packets in 256 KiB reads:")
        hand, decode, full = await part_costs(args.receive, args.rounds)
        print(f"  {'':40}{'us/packet':>12}")
        print(f"  {'hand-written framing + function':40}{hand:>12.2f}")
        print(f"  {'StreamDecoder.feed (frame + parse)':40}{decode:>12.2f}")
        print(f"  {'StreamEndpoint connection, handler counts':40}{full:>12.2f}")
        print(
            f"  of binif's path: framing and parsing {decode / full:.0%},"
            f" dispatch, queue and worker {(full - decode) / full:.0%}"
        )
    finally:
        sender.stop()
        sink.kill()
    return 1 if missed else 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="binif stream endpoint benchmark")
    parser.add_argument("--quick", action="store_true", help="smaller counts, fewer rounds")
    parser.add_argument("--receive", type=int, default=100_000, help="packets a round, part 1")
    parser.add_argument("--send", type=int, default=100_000, help="packets a round, part 2")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of parts 1 and 2")
    parser.add_argument("--flood", type=int, default=100_000, help="dialogs in part 3")
    args = parser.parse_args()
    if args.quick:
        args.receive, args.send, args.rounds, args.flood = 20_000, 20_000, 3, 20_000
    return args


if __name__ == "__main__":
    sys.exit(binif.run(main(parse_args())))
