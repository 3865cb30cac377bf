"""PacketWriter: builds a packet field by field, immutably.

Each push returns a new writer that points back at the one it extends, so a
push costs one small object and no copy, and a writer can be extended in two
different ways. The bytes are joined and checksummed once, in ``to_bytes``.
"""

from __future__ import annotations

import struct
from typing import Final

from .errors import (
    FieldTypeError,
    IntOutOfRange,
    InvalidModuleName,
    LayoutError,
    PacketTooLarge,
)
from .layout import compile_layout
from .wire import DATAGRAM, WireFormat

__all__ = ["PacketWriter", "StrValue"]

StrValue = bytes | bytearray | memoryview | str | None
"""What a str field accepts: bytes, text (sent as UTF-8), or None (OpenSIPS's NULL)."""

INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1


def _str_bytes(value: object, index: int) -> bytes:
    if type(value) is bytes:
        return value
    if isinstance(value, str):
        return value.encode()
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise FieldTypeError(
        f"field {index}: a str field takes bytes, str or None, not {type(value).__name__}"
    )


def _int_error(value: object, index: int) -> Exception:
    if not isinstance(value, int):
        return FieldTypeError(
            f"field {index}: an int field takes an int, not {type(value).__name__}"
        )
    return IntOutOfRange(
        f"field {index}: {value} is outside the signed 32-bit range [{INT32_MIN}, {INT32_MAX}]"
    )


class _Head:
    """What every writer extending one root shares."""

    __slots__ = ("module", "command", "wire")

    def __init__(self, module: str, command: int, wire: WireFormat) -> None:
        self.module = module
        self.command = command
        self.wire = wire


class PacketWriter:
    """An immutable packet under construction: module name, command, then fields.

    ``PacketWriter("dialog", 3).push_str("call-1").push_int(7).to_bytes()``
    gives a datagram ready to send; the writers in between stay valid.
    """

    __slots__ = ("_head", "_prev", "_chunk", "_size", "_count")

    _head: _Head
    _prev: PacketWriter | None
    _chunk: bytes
    _size: int
    _count: int

    def __init__(self, module: str, command: int, *, wire: WireFormat = DATAGRAM) -> None:
        if not isinstance(module, str):
            raise InvalidModuleName(f"a module name is a str, not {type(module).__name__}")
        name = module.encode()
        limit = wire.max_packet - wire.header_size - wire.length.size - wire.int32.size
        if not name or len(name) > limit:
            raise InvalidModuleName(
                f"module name must be 1 to {limit} bytes of UTF-8, not {len(name)}: {module[:40]!r}"
            )
        try:
            command_bytes = wire.int32.pack(command)
        except struct.error:
            raise _int_error(command, -1) from None
        self._head = _Head(module, command, wire)
        self._prev = None
        self._chunk = wire.length.pack(len(name)) + name + command_bytes
        self._size = wire.header_size + len(self._chunk)
        self._count = 0

    def _extend(self, chunk: bytes, count: int) -> PacketWriter:
        size = self._size + len(chunk)
        if size > self._head.wire.max_packet:
            raise PacketTooLarge(
                f"field {self._count}: {len(chunk)} more bytes would make the packet {size} bytes,"
                f" over the {self._head.wire.max_packet}-byte maximum"
            )
        new = _new_writer(PacketWriter)
        new._head = self._head
        new._prev = self
        new._chunk = chunk
        new._size = size
        new._count = self._count + count
        return new

    def push_str(self, value: StrValue) -> PacketWriter:
        """Return a writer with one more str field: bytes, text as UTF-8, or None (NULL)."""
        data = _str_bytes(value, self._count)
        return self._extend(self._head.wire.length.pack(len(data)) + data, 1)

    def push_int(self, value: int) -> PacketWriter:
        """Return a writer with one more signed 32-bit int field."""
        try:
            return self._extend(self._head.wire.int32.pack(value), 1)
        except struct.error:
            raise _int_error(value, self._count) from None

    def pack(self, layout: str, *values: StrValue | int) -> PacketWriter:
        """Return a writer with one field per character of ``layout`` (``s`` str, ``i`` int)."""
        wire = self._head.wire
        runs = compile_layout(layout, wire.int32.format[0])
        if len(values) != len(layout):
            raise LayoutError(
                f"layout {layout!r} has {len(layout)} fields but {len(values)} values were given"
            )
        pack_length = wire.length.pack
        parts: list[bytes] = []
        index = 0
        for _kind, count, ints in runs:
            if ints is None:
                for value in values[index : index + count]:
                    data = _str_bytes(value, self._count + index)
                    parts.append(pack_length(len(data)))
                    parts.append(data)
                    index += 1
            else:
                group = values[index : index + count]
                try:
                    parts.append(ints.pack(*group))
                except struct.error:
                    for offset, value in enumerate(group):
                        try:
                            wire.int32.pack(value)
                        except struct.error:
                            raise _int_error(value, self._count + index + offset) from None
                    raise  # pragma: no cover - one of the values must have failed
                index += count
        return self._extend(b"".join(parts), len(values))

    @property
    def module(self) -> str:
        """The module name the packet is addressed to."""
        return self._head.module

    @property
    def command(self) -> int:
        """The packet type within the module."""
        return self._head.command

    @property
    def wire(self) -> WireFormat:
        """The wire format the packet is built in."""
        return self._head.wire

    @property
    def size(self) -> int:
        """Size in bytes of the complete packet, header included."""
        return self._size

    @property
    def field_count(self) -> int:
        """Number of fields pushed so far."""
        return self._count

    def to_bytes(self) -> bytes:
        """The complete packet: marker, checksum of the body, body."""
        chunks = []
        node: PacketWriter | None = self
        while node is not None:
            chunks.append(node._chunk)
            node = node._prev
        chunks.reverse()
        return self._head.wire.frame(b"".join(chunks))

    __bytes__ = to_bytes

    def __repr__(self) -> str:
        return (
            f"PacketWriter(module={self.module!r}, command={self.command},"
            f" fields={self._count}, size={self._size})"
        )


_new_writer = object.__new__
