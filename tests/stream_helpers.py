"""Helpers shared by the stream endpoint tests: packet builders, a collecting handler, ports."""

from __future__ import annotations

import socket
from typing import Any

from binif import STREAM, PacketReader, PacketWriter


def numbered(seq: int, module: str = "dialog", command: int = 2, version: int = 4) -> bytes:
    """A small stream packet carrying ``seq`` as its only int field."""
    writer = PacketWriter(module, command, wire=STREAM, version=version)
    return writer.pack("si", "c", seq).to_bytes()


def seq_of(packet: PacketReader) -> int:
    """The number :func:`numbered` put in ``packet``."""
    value = packet.unpack("si")[1]
    assert isinstance(value, int)
    return value


def free_tcp_port(host: str) -> int:
    """A TCP port nothing listens on (bound then closed)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


class Collector:
    """A handler that keeps, per module, the numbers it saw in order, and the sources."""

    def __init__(self) -> None:
        self.seen: dict[str, list[int]] = {}
        self.sources: set[Any] = set()

    async def __call__(self, packet: PacketReader, source: Any) -> None:
        self.seen.setdefault(packet.module, []).append(seq_of(packet))
        self.sources.add(source)

    def count(self) -> int:
        """Packets seen, every module together."""
        return sum(len(seqs) for seqs in self.seen.values())
