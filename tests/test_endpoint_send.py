"""Endpoint send side: send, send_many, replicate, size limits, OS errors, flow control; run().

Real sockets on 127.0.0.1 and ::1 only; async tests run on both loops.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from endpoint_helpers import (
    numbered,
    packet_of_size,
    received,
    vector,
    wait_until,
)

import binif
from binif import (
    DatagramTooLarge,
    Endpoint,
    EndpointNotRunning,
    PacketReader,
    PacketWriter,
)
from binif.endpoint import MAX_DATAGRAM_IPV4, MAX_DATAGRAM_IPV6

HOSTS = ["127.0.0.1", "::1"]


class Collector:
    """A handler that keeps every packet's bytes and source."""

    def __init__(self) -> None:
        self.packets: list[tuple[bytes, Any]] = []

    async def __call__(self, packet: PacketReader, source: Any) -> None:
        self.packets.append((packet.data, source))


# --- send -------------------------------------------------------------------------------


@pytest.mark.parametrize("host", HOSTS)
async def test_send_writer_or_bytes_returns_bytes_sent(host: str) -> None:
    collect = Collector()
    writer = PacketWriter("dialog", 3).pack("sss", "c", "f", "t")
    async with Endpoint((host, 0)) as rx, Endpoint((host, 0)) as tx:
        rx.register("dialog", collect)
        assert await tx.send(writer, rx.local_address) == writer.size
        assert await tx.send(bytearray(vector("dialog-deleted-1.bin")), rx.local_address) == 74
        await wait_until(lambda: len(collect.packets) == 2)
        assert collect.packets[0] == (writer.to_bytes(), tx.local_address)
        assert collect.packets[1][0] == vector("dialog-deleted-1.bin")
        stats = tx.stats
        assert (stats.packets_sent, stats.bytes_sent) == (2, writer.size + 74)


@pytest.mark.parametrize(
    ("host", "limit"), [("127.0.0.1", MAX_DATAGRAM_IPV4), ("::1", MAX_DATAGRAM_IPV6)]
)
async def test_datagram_too_large_for_the_family_is_refused_before_sending(
    host: str, limit: int
) -> None:
    collect = Collector()
    async with Endpoint((host, 0), recv_buffer=1 << 20) as rx, Endpoint((host, 0)) as tx:
        rx.register("dialog", collect)
        largest = packet_of_size(limit)
        assert await tx.send(largest, rx.local_address) == limit
        await wait_until(lambda: len(collect.packets) == 1)
        assert collect.packets[0][0] == largest
        too_big = packet_of_size(limit + 1)
        with pytest.raises(DatagramTooLarge, match=f"{limit + 1}-byte datagram .* {limit}-byte"):
            await tx.send(too_big, rx.local_address)
        with pytest.raises(DatagramTooLarge):
            await tx.send_many(too_big, [rx.local_address, rx.local_address])
        assert isinstance(DatagramTooLarge("x"), binif.EncodeError)
        assert tx.stats.packets_sent == 1 and tx.running


async def test_send_many_and_replicate_send_one_build_to_every_destination() -> None:
    collectors = [Collector() for _ in range(4)]
    data = vector("dialog-created-2.bin")
    async with (
        Endpoint() as r1,
        Endpoint() as r2,
        Endpoint(("::1", 0)) as r3,
        Endpoint(("::1", 0)) as r4,
    ):
        for receiver, collect in zip((r1, r2, r3, r4), collectors, strict=True):
            receiver.register("dialog", collect)
        async with (
            Endpoint(peers=[r1.local_address, r2.local_address]) as tx4,
            Endpoint(("::1", 0)) as tx6,
        ):
            assert await tx4.replicate(data) == 2 * len(data)
            sent = await tx6.send_many(PacketReader.parse(data).data, [r3.local_address] * 2)
            assert sent == 2 * len(data)
            tx6.peers = (r3.local_address, r4.local_address)
            assert await tx6.replicate(PacketWriter("dialog", 3).pack("sss", "c", "f", "t")) > 0
            await wait_until(lambda: [len(c.packets) for c in collectors] == [1, 1, 3, 1])
            assert (tx4.stats.packets_sent, tx6.stats.packets_sent) == (2, 4)
        assert all(c.packets[0][0] == data for c in collectors[:3])
        assert collectors[2].packets[0][1] == collectors[3].packets[0][1] == tx6.local_address
    async with Endpoint() as lonely:
        assert await lonely.replicate(data) == 0


# --- OS errors never close the endpoint ------------------------------------------------------


async def test_os_send_error_is_counted_and_returns_zero(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Endpoint() as rx, Endpoint() as tx:
        collect = Collector()
        rx.register("dialog", collect)
        # A broadcast address without SO_BROADCAST: the OS refuses the datagram (EACCES).
        assert await tx.send(numbered(1), ("127.255.255.255", 5999)) == 0
        assert isinstance(tx.last_send_error, PermissionError)
        assert await tx.send(numbered(2), rx.local_address) > 0
        await wait_until(lambda: len(collect.packets) == 1)
        stats = tx.stats
        assert (stats.send_errors, stats.packets_sent, stats.errors_received) == (1, 1, 0)
        assert tx.running
    assert any("send failed" in r.getMessage() for r in caplog.records)


# --- flow control -----------------------------------------------------------------------------


class GatedSocket:
    """Wraps a real socket; ``sendto`` raises BlockingIOError while the gate is closed."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.closed_gate = True
        self.refused = 0

    def sendto(self, data: bytes, addr: Any) -> int:
        if self.closed_gate:
            self.refused += 1
            raise BlockingIOError
        return self._sock.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


async def test_send_waits_while_the_transport_is_paused(request: pytest.FixtureRequest) -> None:
    if "uvloop" in request.node.name:
        pytest.skip(
            "uvloop's transport socket is not patchable:"
            " test_endpoint_netns.py runs real flow control on uvloop"
        )
    collect = Collector()
    async with Endpoint() as rx, Endpoint() as tx:
        rx.register("dialog", collect)
        transport: Any = tx.transport
        transport.set_write_buffer_limits(0, 0)
        gated = GatedSocket(transport._sock)
        transport._sock = gated
        # The socket would block: the datagram is buffered and the protocol paused.
        assert await tx.send(numbered(1), rx.local_address) > 0
        assert tx.paused and gated.refused == 1
        second = asyncio.create_task(tx.send(numbered(2), rx.local_address))
        await asyncio.sleep(0.05)
        assert not second.done() and tx.paused
        assert transport.get_write_buffer_size() > 0
        gated.closed_gate = False  # the socket drains, asyncio resumes writing
        assert await asyncio.wait_for(second, 2) > 0
        assert not tx.paused
        await wait_until(lambda: len(collect.packets) == 2)
        assert [PacketReader.parse(p).unpack("si")[1] for p, _ in collect.packets] == [1, 2]


async def test_pause_and_resume_writing_hold_and_release_senders() -> None:
    collect = Collector()
    async with Endpoint() as rx, Endpoint() as tx:
        rx.register("dialog", collect)
        tx.pause_writing()
        sends = [asyncio.create_task(tx.send(numbered(n), rx.local_address)) for n in range(3)]
        many = asyncio.create_task(tx.send_many(numbered(3), [rx.local_address] * 2))
        await asyncio.sleep(0.05)
        assert not any(task.done() for task in [*sends, many])
        assert tx.stats.packets_sent == 0
        tx.resume_writing()
        size = len(numbered(0))
        assert await asyncio.gather(*sends, many) == [size, size, size, 2 * size]
        await received(rx, 5)
        assert tx.stats.packets_sent == 5


async def test_close_releases_a_paused_sender_with_an_error() -> None:
    tx = Endpoint()
    await tx.start()
    tx.pause_writing()
    waiting = asyncio.create_task(tx.send(numbered(1), ("127.0.0.1", 9)))
    await asyncio.sleep(0.01)
    await tx.close()
    with pytest.raises(EndpointNotRunning):
        await waiting
    assert tx.stats.packets_sent == 0


# --- binif.run -------------------------------------------------------------------------------


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_run_uses_uvloop_when_available() -> None:
    pytest.importorskip("uvloop")
    assert binif.run(_loop_module()).startswith("uvloop")


def test_run_can_be_told_to_use_asyncio() -> None:
    assert binif.run(_loop_module(), use_uvloop=False).startswith("asyncio")


def test_run_does_not_install_a_policy() -> None:
    before = asyncio.get_event_loop_policy()
    binif.run(asyncio.sleep(0))
    assert asyncio.get_event_loop_policy() is before
