"""StreamEndpoint (issue 10 part 4): BIN over loopback TCP, on both loops, IPv4 and IPv6.

Delivery and order between two endpoints, sending on the endpoint's own
outbound connection (connect on first use, reconnect, PeerUnreachable),
send_many/replicate, versions, allow, and the stats a TCP endpoint adds.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, ClassVar

import pytest
from endpoint_helpers import wait_until
from stream_helpers import Collector, free_tcp_port, numbered, seq_of

import binif
from binif import (
    STREAM,
    BinError,
    CloseReason,
    DropReason,
    EndpointNotRunning,
    PacketReader,
    PacketWriter,
    PeerUnreachable,
    StreamEndpoint,
)
from binif.errors import BadVersion

EXCHANGE = int(os.environ.get("BINIF_STREAM_PACKETS", "100000"))
"""Packets each way in the exchange test over IPv4 (a fifth of it over IPv6)."""


@pytest.fixture(params=["127.0.0.1", "::1"], ids=["ipv4", "ipv6"])
def host(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_two_endpoints_exchange_packets_both_ways_in_order(host: str) -> None:
    count = EXCHANGE if host == "127.0.0.1" else max(EXCHANGE // 5, 1000)
    left_got, right_got = Collector(), Collector()
    async with StreamEndpoint((host, 0)) as left, StreamEndpoint((host, 0)) as right:
        for module in ("dialog", "usrloc"):
            left.register(module, left_got)
            right.register(module, right_got)

        async def pour(sender: StreamEndpoint, to: Any) -> None:
            for seq in range(count):
                await sender.send(numbered(seq, "dialog" if seq % 3 else "usrloc"), to)

        await asyncio.gather(pour(left, right.local_address), pour(right, left.local_address))
        await wait_until(lambda: left_got.count() == right_got.count() == count, timeout=120)
        await left.join()
        await right.join()
        for got in (left_got, right_got):
            assert got.seen["dialog"] == [seq for seq in range(count) if seq % 3]
            assert got.seen["usrloc"] == [seq for seq in range(count) if not seq % 3]
        for endpoint in (left, right):
            stats = endpoint.stats
            assert stats.received == stats.handled == count and stats.dropped == 0
            assert stats.balanced()
            assert stats.packets_sent == count and stats.connects == 1
            assert stats.connections_accepted == stats.connections_open == 1
            assert stats.bytes_received == stats.bytes_sent
        # The source is the peer's end of the connection it sent on, not its listener.
        (source,) = right_got.sources
        assert source[0] == host and source[1] != left.local_address[1]


async def test_a_sender_without_a_listener_sends() -> None:
    got = Collector()
    async with StreamEndpoint() as rx, StreamEndpoint(None) as tx:
        rx.register("dialog", got)
        assert await tx.send(
            PacketWriter("dialog", 1, wire=STREAM, version=4).pack("si", "c", 1), rx.local_address
        )
        await wait_until(lambda: got.count() == 1)
        with pytest.raises(EndpointNotRunning):
            tx.local_address  # noqa: B018


async def test_unreachable_peer_raises_after_connect_timeout_with_backoff(host: str) -> None:
    port = free_tcp_port(host)
    async with StreamEndpoint((host, 0), connect_timeout=0.3, backoff_base=0.05) as tx:
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(PeerUnreachable) as caught:
            await tx.send(numbered(1), (host, port))
        waited = loop.time() - began
        assert isinstance(caught.value, BinError) and isinstance(caught.value, ConnectionError)
        assert str(port) in str(caught.value)
        assert 0.25 <= waited < 2.0
        stats = tx.stats
        # Backoff: 0.025-0.05, then 0.05-0.1, 0.1-0.2 s...: a handful of attempts, not hundreds.
        assert 2 <= stats.connect_failures <= 8
        assert stats.peer_unreachable == 1 and stats.packets_sent == 0 and stats.connects == 0


async def test_send_connects_once_the_peer_listens() -> None:
    port = free_tcp_port("127.0.0.1")
    got = Collector()
    async with StreamEndpoint(None, connect_timeout=5.0, backoff_max=0.1) as tx:
        sending = asyncio.ensure_future(tx.send(numbered(7), ("127.0.0.1", port)))
        await wait_until(lambda: tx.stats.connect_failures >= 2)
        assert not sending.done()
        async with StreamEndpoint(("127.0.0.1", port)) as rx:
            rx.register("dialog", got)
            await sending
            await wait_until(lambda: got.count() == 1)
        assert got.seen == {"dialog": [7]}


async def test_send_refuses_bad_addresses_and_a_closed_endpoint() -> None:
    endpoint = StreamEndpoint()
    with pytest.raises(EndpointNotRunning):
        await endpoint.send(numbered(1), ("127.0.0.1", 9))
    async with endpoint:
        with pytest.raises(binif.AddressTypeError):
            await endpoint.send(numbered(1), "127.0.0.1:5555")  # type: ignore[arg-type]
        with pytest.raises(binif.InvalidAddress):
            await endpoint.send(numbered(1), ("127.0.0.1", 0))
    with pytest.raises(EndpointNotRunning):
        await endpoint.send(numbered(1), ("127.0.0.1", 9))


async def test_send_many_and_replicate_reach_every_peer_and_name_the_unreachable() -> None:
    one, two = Collector(), Collector()
    async with StreamEndpoint() as rx1, StreamEndpoint() as rx2:
        rx1.register("dialog", one)
        rx2.register("dialog", two)
        peers = [rx1.local_address, rx2.local_address]
        async with StreamEndpoint(None, peers=peers, connect_timeout=0.2) as tx:
            packet = numbered(5)
            assert await tx.replicate(packet) == 2 * len(packet)
            dead = ("127.0.0.1", free_tcp_port("127.0.0.1"))
            with pytest.raises(PeerUnreachable) as caught:
                await tx.send_many(numbered(6), [rx1.local_address, dead])
            assert caught.value.address == [dead]
            await wait_until(lambda: one.count() == 2 and two.count() == 1)
            assert one.seen == {"dialog": [5, 6]} and two.seen == {"dialog": [5]}
            assert tx.stats.peer_unreachable == 1


async def test_versions_drop_other_layout_versions_as_bad_version() -> None:
    got = Collector()
    typed: list[Any] = []

    class Cseq:
        """A minimal typed message of layout version 4."""

        MODULE: ClassVar[str] = "dialog"
        COMMAND: ClassVar[int] = 4
        VERSION: ClassVar[int] = 4

        def __init__(self, seq: int) -> None:
            self.seq = seq

        @classmethod
        def from_packet(cls, reader: PacketReader) -> Cseq:
            if reader.version != 4:
                raise BadVersion(f"version {reader.version}")
            return cls(seq_of(reader))

    async def on_cseq(message: Cseq, source: Any) -> None:
        typed.append(message.seq)

    async with StreamEndpoint() as rx, StreamEndpoint(None) as tx:
        rx.register("dialog", got, versions={4})
        rx.register_message(Cseq, on_cseq)
        to = rx.local_address
        for packet in (
            numbered(1, version=4),
            numbered(2, version=5),
            numbered(3, command=4, version=4),
            numbered(4, command=4, version=3),
            numbered(5, version=4),
        ):
            await tx.send(packet, to)
        await wait_until(lambda: rx.stats.finished == 5)
        stats = rx.stats
        assert got.seen == {"dialog": [1, 5]} and typed == [3]
        assert stats.drops[DropReason.BAD_VERSION] == 2 and stats.balanced()
    with pytest.raises(ValueError, match="no version"):
        binif.Endpoint().register("dialog", got, versions={4})


async def test_a_change_of_handlers_applies_to_the_next_packet_on_an_open_connection() -> None:
    """Where a packet head goes is decided once and kept: registering and unregistering
    must make the same connection's next packets of that head go where they now belong."""
    got = Collector()
    async with StreamEndpoint() as rx, StreamEndpoint(None) as tx:
        rx.register("dialog", got, versions={4})
        to = rx.local_address
        await tx.send(numbered(1, version=4), to)
        await tx.send(numbered(2, version=5), to)
        await wait_until(lambda: rx.stats.finished == 2)
        rx.unregister("dialog")
        await tx.send(numbered(3, version=4), to)
        await wait_until(lambda: rx.stats.finished == 3)
        rx.register("dialog", got)  # every version now
        await tx.send(numbered(4, version=5), to)
        await tx.send(numbered(5, version=4), to)
        await wait_until(lambda: rx.stats.finished == 5)
        stats = rx.stats
        assert got.seen == {"dialog": [1, 4, 5]}
        assert stats.drops[DropReason.BAD_VERSION] == 1
        assert stats.drops[DropReason.UNKNOWN_MODULE] == 1
        assert stats.balanced() and stats.connections_accepted == 1


async def test_allow_closes_connections_from_other_networks() -> None:
    async with StreamEndpoint(allow=["10.0.0.0/8"]) as rx:
        rx.register("dialog", Collector())
        reader, writer = await asyncio.open_connection(*rx.local_address[:2])
        writer.write(numbered(1))
        assert await reader.read() == b""  # closed by the endpoint
        writer.close()
        await wait_until(lambda: rx.stats.connections_closed[CloseReason.SOURCE_NOT_ALLOWED] == 1)
        stats = rx.stats
        assert stats.received == 0 and stats.connections_open == 0


async def test_stats_pickle_with_the_connection_counters() -> None:
    import pickle

    async with StreamEndpoint() as rx:
        stats = rx.stats
    again = pickle.loads(pickle.dumps(stats))
    assert type(again) is binif.StreamStats and again == stats
    assert again.as_dict()["connections_closed"]["max_connections"] == 0


async def test_packets_sent_back_on_our_outbound_connection_are_dispatched() -> None:
    """OpenSIPS answers an unknown node on the connection the request came in on."""
    got = Collector()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(len(numbered(1)))
        writer.write(numbered(42))
        await writer.drain()
        await reader.read()  # until the endpoint closes its side
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    async with server, StreamEndpoint(None) as tx:
        tx.register("dialog", got)
        address = server.sockets[0].getsockname()
        await tx.send(numbered(1), address)
        await wait_until(lambda: got.count() == 1)
        assert got.seen == {"dialog": [42]} and got.sources == {address}
        assert tx.stats.links_open == 1 and tx.stats.connections_accepted == 0


async def test_reply_goes_back_on_the_connection_the_packet_came_in_on(host: str) -> None:
    """As OpenSIPS's clusterer answers a node it does not know yet (UNKNOWN_ID)."""
    answers = Collector()
    sources: set[Any] = set()
    async with StreamEndpoint((host, 0)) as rx, StreamEndpoint(None) as tx:

        async def answer(packet: PacketReader, source: Any) -> None:
            sources.add(source)
            await rx.reply(numbered(seq_of(packet) + 100, "usrloc"), source)

        rx.register("dialog", answer)
        tx.register("usrloc", answers)
        for seq in range(3):
            await tx.send(numbered(seq), rx.local_address)
        await wait_until(lambda: answers.count() == 3)
        assert answers.seen == {"usrloc": [100, 101, 102]}
        assert answers.sources == {rx.local_address}  # on tx's own link to rx
        stats = rx.stats
        assert stats.packets_sent == 3 and stats.bytes_sent == 3 * len(numbered(100, "usrloc"))
        assert stats.connects == stats.links_open == 0  # rx made no connection of its own
        assert tx.stats.connections_accepted == 0
        (source,) = sources
        with pytest.raises(TypeError):
            await rx.reply(numbered(9), list(source))
        # The peer closes: a reply on its connection raises, counted, nothing written.
        await tx.close()
        await wait_until(lambda: rx.stats.connections_open == 0)
        with pytest.raises(PeerUnreachable) as caught:
            await rx.reply(numbered(9), source)
        assert caught.value.address == source
        assert rx.stats.peer_unreachable == 1 and rx.stats.packets_sent == 3
    with pytest.raises(EndpointNotRunning):
        await rx.reply(numbered(9), source)


async def test_concurrent_sends_to_a_new_peer_share_one_connection() -> None:
    got = Collector()
    async with StreamEndpoint() as rx, StreamEndpoint(None) as tx:
        rx.register("dialog", got)
        await asyncio.gather(*(tx.send(numbered(seq), rx.local_address) for seq in range(50)))
        await wait_until(lambda: got.count() == 50)
        assert sorted(got.seen["dialog"]) == list(range(50))
        assert tx.stats.connects == 1 and rx.stats.connections_accepted == 1


async def test_close_while_a_send_waits_for_a_connection_raises_endpoint_not_running() -> None:
    port = free_tcp_port("127.0.0.1")
    tx = StreamEndpoint(None, connect_timeout=30.0, backoff_max=0.05)
    await tx.start()
    sending = asyncio.ensure_future(tx.send(numbered(1), ("127.0.0.1", port)))
    await wait_until(lambda: tx.stats.connect_failures >= 1)
    await tx.close()
    with pytest.raises(EndpointNotRunning):
        await sending
    assert tx.stats.packets_sent == 0


@pytest.mark.parametrize(
    "options",
    [
        {"connect_timeout": 0},
        {"read_timeout": -1},
        {"backoff_base": 0},
        {"backoff_max": 0},
        {"idle_timeout": 0},
        {"max_connections": 0},
        {"max_connections": 1.5},
        {"wire": binif.DATAGRAM},
    ],
)
def test_options_it_cannot_take_raise_invalid_option(options: dict[str, Any]) -> None:
    with pytest.raises(binif.InvalidOption, match=next(iter(options)).replace("wire", "profile")):
        StreamEndpoint(**options)
