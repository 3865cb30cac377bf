"""Helpers shared by the endpoint tests: vectors, packet builders, waiting on counters,
the accounting check and burst sizes the receive buffer can hold."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

from binif import Endpoint, PacketWriter, Stats

VECTORS = Path(__file__).parent / "vectors" / "opensips-2.1"
DIALOG_LAYOUT = "sssssiiissssssssssssiiiii"


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def numbered(seq: int, module: str = "dialog", command: int = 2) -> bytes:
    """A small valid packet carrying ``seq`` as its only int field."""
    return PacketWriter(module, command).pack("si", f"call-{seq}", seq).to_bytes()


def packet_of_size(size: int) -> bytes:
    """A valid dialog packet of exactly ``size`` bytes (one str field fills it)."""
    base = PacketWriter("dialog", 1)
    return base.push_str(b"x" * (size - base.size - 4)).to_bytes()


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` every millisecond until true; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.001)


async def received(endpoint: Endpoint, count: int, timeout: float = 5.0) -> None:
    """Wait until ``endpoint`` has read ``count`` datagrams."""
    await wait_until(lambda: endpoint.stats.received >= count, timeout)


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on (bound then closed)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def assert_accounted(stats: Stats, *, pending: int | None = None) -> None:
    """Every datagram received is handled, failed, timed out, dropped for one reason, or pending.

    The sum is spelled out here rather than trusting ``stats.balanced()``, so the
    endpoint tests check the accounting even if ``balanced`` itself were wrong.
    ``pending`` (e.g. 0 once drained) is checked too when given.
    """
    ended = (
        stats.handled + stats.handler_errors + stats.handler_timeouts + sum(stats.drops.values())
    )
    assert stats.received == ended + stats.pending, (
        f"received {stats.received} != handled {stats.handled} + handler errors"
        f" {stats.handler_errors} + timeouts {stats.handler_timeouts} + drops"
        f" {dict(stats.drops)} + pending {stats.pending}"
    )
    if pending is not None:
        assert stats.pending == pending, f"{stats.pending} pending, expected {pending}"


DATAGRAM_COST = 2048
"""A generous bound on what Linux charges a small datagram against SO_RCVBUF (its whole
buffer: about 830 bytes for a 36-byte packet, 1,280 for a 282-byte one on loopback)."""
MIN_BURST = 32


def burst_size(receiver: Endpoint, datagram_size: int, wanted: int) -> int:
    """Datagrams a test may send back to back without the kernel dropping any: at most
    ``wanted``, fewer when the receive buffer the OS granted cannot hold them.

    The grant is capped by ``net.core.rmem_max`` (Linux's default, 212,992, holds about
    500 small datagrams); below ``MIN_BURST`` the test fails and says so.
    """
    granted = receiver.stats.recv_buffer
    assert granted is not None, "the receiver is not bound"
    fits = granted // (DATAGRAM_COST + datagram_size)
    assert fits >= MIN_BURST, (
        f"SO_RCVBUF granted {granted} bytes holds only {fits} datagrams of {datagram_size}"
        f" bytes: raise net.core.rmem_max (e.g. sysctl -w net.core.rmem_max=4194304)"
    )
    return min(wanted, fits)
