"""Kernel drops made visible: datagrams the kernel drops when the receive buffer is full.

The loop is stalled (a blocking sleep) while a sender thread overflows a small
receive buffer; afterwards ``ep.stats.kernel_drops`` must equal exactly the
datagrams sent minus those the endpoint received.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time

import pytest

import binif

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/net/udp"),
    pytest.mark.both_loops,
]

PACKET = binif.PacketWriter("dialog", 3).pack("sss", "call-1@example", "ftag", "ttag").to_bytes()
SENT = 3000


async def settle(ep: binif.Endpoint, sent: int, timeout: float = 5.0) -> binif.Stats:
    """Let the loop read what is buffered: until received + kernel drops reach ``sent``."""
    deadline = time.monotonic() + timeout
    while True:
        stats = ep.stats
        if stats.received + (stats.kernel_drops or 0) >= sent and stats.pending == 0:
            return stats
        if time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.01)


def send_from_thread(host: str, address: tuple[object, ...], count: int) -> threading.Thread:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    def send() -> None:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            for _ in range(count):
                sock.sendto(PACKET, address)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


async def ignore(packet: binif.PacketReader, source: binif.Address) -> None:
    """A handler that accepts everything."""


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_kernel_drops_equal_sent_minus_received(host: str) -> None:
    handled = 0

    async def handler(packet: binif.PacketReader, source: binif.Address) -> None:
        nonlocal handled
        handled += 1

    async with binif.Endpoint((host, 0), recv_buffer=4096) as ep:
        ep.register("dialog", handler)
        assert ep.stats.kernel_drops == 0
        assert ep.stats.recv_buffer is not None and ep.stats.recv_buffer < 64 * 1024

        sender = send_from_thread(host, ep.local_address, SENT)
        time.sleep(0.05)  # the loop is stalled: nothing reads the socket
        sender.join()
        stalled = ep.stats
        assert stalled.received == 0  # the stall was real
        assert stalled.kernel_drops is not None and stalled.kernel_drops > SENT // 2

        stats = await settle(ep, SENT)
        await ep.join()
        assert stats.kernel_drops == SENT - stats.received
        assert 0 < stats.received < SENT
        assert handled == stats.received == ep.stats.handled
    # The socket is gone; its last count stays in the snapshots.
    assert ep.stats.kernel_drops == stats.kernel_drops


async def test_kernel_drops_stay_zero_without_overflow() -> None:
    async with binif.Endpoint(("127.0.0.1", 0)) as ep:
        ep.register("dialog", ignore)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(50):
                sock.sendto(PACKET, ep.local_address)
                await asyncio.sleep(0)
        stats = await settle(ep, 50)
        assert (stats.received, stats.kernel_drops) == (50, 0)


async def test_kernel_drops_are_those_of_this_socket_only() -> None:
    """Overflowing one endpoint leaves another endpoint's counter at zero."""
    async with (
        binif.Endpoint(("127.0.0.1", 0), recv_buffer=4096) as flooded,
        binif.Endpoint(("127.0.0.1", 0)) as quiet,
    ):
        send_from_thread("127.0.0.1", flooded.local_address, 500).join()
        assert (flooded.stats.kernel_drops or 0) > 0
        assert quiet.stats.kernel_drops == 0
