"""The hand-written baseline the benchmarks measure binif against.

What a careful person writes inline with struct and zlib, without a library:
no immutability, no precise errors, no bounds checks beyond what struct does.
Also the real packet both benchmarks use: OpenSIPS 2.1.5's dialog CREATED.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

VECTOR = Path(__file__).resolve().parent.parent / "tests/vectors/opensips-2.1/dialog-created-1.bin"
PACKET = VECTOR.read_bytes()
LAYOUT = "sssssiiissssssssssssiiiii"
"""dialog CREATED in OpenSIPS 2.1: 25 fields."""

_I32 = struct.Struct("<i")
_HEADER = struct.Struct("<4sI")


def build(module: bytes, command: int, layout: str, values: tuple[Any, ...]) -> bytes:
    """Marker, CRC (OpenSIPS's: no final XOR), then the length-prefixed body."""
    parts = [_I32.pack(len(module)), module, _I32.pack(command)]
    for kind, value in zip(layout, values, strict=True):
        if kind == "s":
            parts.append(_I32.pack(len(value)))
            parts.append(value)
        else:
            parts.append(_I32.pack(value))
    body = b"".join(parts)
    return _HEADER.pack(b"P4CK", zlib.crc32(body) ^ 0xFFFFFFFF) + body


def parse(data: bytes, layout: str) -> tuple[bytes, int, tuple[Any, ...]]:
    """Module, command and fields; ValueError (or struct.error) for a bad packet."""
    if len(data) < 18:
        raise ValueError("short packet")
    marker, crc = _HEADER.unpack_from(data)
    if marker != b"P4CK" or crc != zlib.crc32(memoryview(data)[8:]) ^ 0xFFFFFFFF:
        raise ValueError("bad packet")
    unpack = _I32.unpack_from
    (n,) = unpack(data, 8)
    module = data[12 : 12 + n]
    (command,) = unpack(data, 12 + n)
    pos = 16 + n
    out: list[Any] = []
    for kind in layout:
        (v,) = unpack(data, pos)
        pos += 4
        if kind == "s":
            out.append(data[pos : pos + v])
            pos += v
        else:
            out.append(v)
    return module, command, tuple(out)
