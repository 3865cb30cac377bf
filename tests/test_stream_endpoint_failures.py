"""StreamEndpoint under failure (issue 10 part 4): bad peers, stalls, limits, floods, restarts.

A framing error or a stall closes that connection only, counted by reason;
``max_connections`` bounds accepts; a full queue pauses reading instead of
dropping; a peer restarted mid-run is reconnected to, and every packet given to
``send`` either arrives or raises.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from endpoint_helpers import wait_until
from stream_helpers import Collector, free_tcp_port, numbered, seq_of

from binif import CloseReason, PacketReader, PeerUnreachable, StreamEndpoint


@pytest.fixture(params=["127.0.0.1", "::1"], ids=["ipv4", "ipv6"])
def host(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """True once the other side closed (end of stream, or a reset)."""
    try:
        return await asyncio.wait_for(reader.read(), 5.0) == b""
    except ConnectionResetError:
        return True


async def test_garbage_closes_that_connection_only(
    host: str, caplog: pytest.LogCaptureFixture
) -> None:
    got = Collector()
    async with StreamEndpoint((host, 0)) as rx, StreamEndpoint(None) as good:
        rx.register("dialog", got)
        to = rx.local_address
        await good.send(numbered(0), to)
        reader, writer = await asyncio.open_connection(to[0], to[1])
        writer.write(numbered(100))
        await wait_until(lambda: got.count() == 2)
        writer.write(b"GARBAGE-NOT-A-PACKET" + numbered(101))
        assert await closed_by_peer(reader)
        writer.close()
        for seq in range(1, 50):
            await good.send(numbered(seq), to)
        await wait_until(lambda: got.count() == 51)
        stats = rx.stats
        assert sorted(got.seen["dialog"]) == [*range(50), 100]  # 101 came after the garbage
        assert stats.connections_closed[CloseReason.BAD_MARKER] == 1
        assert stats.connections_accepted == 2 and stats.connections_open == 1
    line = next(r.getMessage() for r in caplog.records if "bad_marker" in r.getMessage())
    assert host in line and "not b'P4CK'" in line.split("bad_marker", 1)[1]


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (b"P4CK\x05\x00\x00\x00\x04\x00\x06\x00dialog", CloseReason.TOO_SHORT),
        (b"P4CK\xff\xff\x00\x00\x04\x00\x06\x00dialog", CloseReason.TOO_LONG),
        (b"P4CK\x14\x00\x00\x00\x04\x00\x40\x00dialog\x00\x00", CloseReason.MALFORMED),
    ],
    ids=["length-under-minimum", "length-over-maximum", "name-length-past-packet"],
)
async def test_each_framing_error_is_counted_by_its_reason(garbage: bytes, reason: str) -> None:
    async with StreamEndpoint() as rx:
        rx.register("dialog", Collector())
        reader, writer = await asyncio.open_connection(*rx.local_address)
        writer.write(garbage)
        assert await closed_by_peer(reader)
        writer.close()
        await wait_until(lambda: rx.stats.connections_closed[reason] == 1)
        assert rx.stats.received == 0


async def test_a_stalled_half_packet_times_out(host: str) -> None:
    got = Collector()
    async with StreamEndpoint((host, 0), read_timeout=0.2) as rx:
        rx.register("dialog", got)
        reader, writer = await asyncio.open_connection(*rx.local_address[:2])
        whole = numbered(1)
        writer.write(whole + numbered(2)[:15])
        loop = asyncio.get_running_loop()
        began = loop.time()
        assert await closed_by_peer(reader)
        assert 0.15 <= loop.time() - began < 3.0
        writer.close()
        await wait_until(lambda: rx.stats.connections_closed[CloseReason.READ_TIMEOUT] == 1)
        assert got.seen == {"dialog": [1]}


async def test_a_slow_but_moving_stream_is_not_a_stall() -> None:
    got = Collector()
    async with StreamEndpoint(read_timeout=1.0) as rx:
        rx.register("dialog", got)
        _reader, writer = await asyncio.open_connection(*rx.local_address)
        # Each packet in two halves 0.1 s apart: longer than read_timeout in all, but
        # every half packet is completed well within it.
        for seq in range(12):
            packet = numbered(seq)
            writer.write(packet[:10])
            await asyncio.sleep(0.1)
            writer.write(packet[10:])
        await wait_until(lambda: got.count() == 12)
        assert rx.stats.connections_open == 1
        writer.close()


async def test_an_idle_connection_is_closed_after_idle_timeout() -> None:
    async with StreamEndpoint(idle_timeout=0.2) as rx:
        reader, writer = await asyncio.open_connection(*rx.local_address)
        assert await closed_by_peer(reader)
        writer.close()
        await wait_until(lambda: rx.stats.connections_closed[CloseReason.IDLE_TIMEOUT] == 1)


async def test_idle_timeout_spares_the_endpoints_own_outbound_connections() -> None:
    """Our links mostly write and rarely read: idleness on them is no reason to close."""
    async with StreamEndpoint() as rx, StreamEndpoint(idle_timeout=0.2) as tx:
        rx.register("dialog", Collector())
        await tx.send(numbered(1), rx.local_address)
        reader, writer = await asyncio.open_connection(*tx.local_address)
        assert await closed_by_peer(reader)  # an idle accepted connection is closed...
        writer.close()
        stats = tx.stats
        assert stats.connections_closed[CloseReason.IDLE_TIMEOUT] == 1
        assert stats.links_open == 1 and sum(stats.links_closed.values()) == 0  # ...ours not
        await tx.send(numbered(2), rx.local_address)
        assert tx.stats.connects == 1


async def test_connections_beyond_max_connections_are_refused_and_counted(host: str) -> None:
    got = Collector()
    async with StreamEndpoint((host, 0), max_connections=2) as rx:
        rx.register("dialog", got)
        to = rx.local_address[:2]
        kept = [await asyncio.open_connection(*to) for _ in range(2)]
        await wait_until(lambda: rx.stats.connections_open == 2)
        extra_reader, extra_writer = await asyncio.open_connection(*to)
        assert await closed_by_peer(extra_reader)
        extra_writer.close()
        for seq, (_reader, writer) in enumerate(kept):
            writer.write(numbered(seq))
        await wait_until(lambda: got.count() == 2)
        stats = rx.stats
        assert stats.connections_closed[CloseReason.MAX_CONNECTIONS] == 1
        assert stats.connections_accepted == 3 and stats.connections_open == 2
        for _reader, writer in kept:
            writer.close()


async def test_backpressure_takes_a_flood_without_loss(host: str) -> None:
    count = 20_000
    seen: list[int] = []

    async def slow(packet: PacketReader, source: Any) -> None:
        seen.append(seq_of(packet))
        if len(seen) % 100 == 0:
            await asyncio.sleep(0.001)

    async with StreamEndpoint((host, 0), queue_size=64) as rx, StreamEndpoint(None) as tx:
        rx.register("dialog", slow)
        to = rx.local_address
        for seq in range(count):
            await tx.send(numbered(seq), to)
        await wait_until(lambda: len(seen) == count, timeout=60)
        await rx.join()
        stats = rx.stats
        assert seen == list(range(count))
        assert stats.dropped == 0 and stats.handled == count and stats.balanced()
        assert stats.read_pauses > 0  # the queue filled and reading stopped, not dropped


async def test_a_restarted_peer_is_reconnected_and_nothing_is_lost_silently(
    host: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "binif")
    port = free_tcp_port(host)
    before, after = Collector(), Collector()
    raised: list[int] = []
    total = 3000
    first = StreamEndpoint((host, port))
    first.register("dialog", before)
    await first.start()
    async with StreamEndpoint(None, connect_timeout=0.1, backoff_max=0.05) as tx:
        to = first.local_address

        async def pour() -> None:
            for seq in range(total):
                try:
                    await tx.send(numbered(seq), to)
                except PeerUnreachable:
                    raised.append(seq)
                if seq % 10 == 0:
                    await asyncio.sleep(0.001)

        sender = asyncio.ensure_future(pour())
        await wait_until(lambda: before.count() >= total // 4)
        await first.close()  # graceful: reads until the sender closes its side
        await wait_until(lambda: len(raised) >= 3)  # nothing listens for a while
        second = StreamEndpoint((host, port))
        second.register("dialog", after)
        async with second:
            await sender
            await wait_until(lambda: before.count() + after.count() + len(raised) == total)
            await second.join()
        stats = tx.stats
    old, new = before.seen["dialog"], after.seen["dialog"]
    assert sorted(old + new + raised) == list(range(total))  # each exactly once
    assert old == sorted(old) and new == sorted(new)
    assert max(old) < min(new)
    assert stats.connects == 2 and stats.peer_unreachable == len(raised)
    assert stats.links_closed[CloseReason.PEER_CLOSED] == 2  # each receiver closed in turn
    assert stats.packets_sent == total - len(raised)
    assert first.stats.connections_closed[CloseReason.SHUTDOWN] == 1
