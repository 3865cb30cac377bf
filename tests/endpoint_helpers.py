"""Helpers shared by the endpoint tests: vectors, packet builders, waiting on counters."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

from binif import Endpoint, PacketWriter

VECTORS = Path(__file__).parent / "vectors" / "opensips-2.1"
DIALOG_LAYOUT = "sssssiiissssssssssssiiiii"


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def numbered(seq: int, module: str = "dialog", command: int = 2) -> bytes:
    """A small valid packet carrying ``seq`` as its only int field."""
    return PacketWriter(module, command).pack("si", f"call-{seq}", seq).to_bytes()


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
