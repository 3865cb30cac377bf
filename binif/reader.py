"""PacketReader: a validated, immutable view of a received packet.

``parse`` checks the packet in OpenSIPS's order (size, marker, checksum, module
name, command). Each pop returns the value and a new reader positioned after
it, so a reader can be popped twice with the same result and shared between
tasks; there is no cursor to corrupt. Every read is bounds-checked first: a
packet is fully decoded or rejected with a :class:`~binif.errors.FieldError`.
"""

from __future__ import annotations

import struct
from typing import NoReturn

from .errors import (
    BadFieldLength,
    BadModuleName,
    BadNameLength,
    LayoutError,
    TrailingBytes,
    TruncatedField,
)
from .layout import STR, compile_layout
from .wire import DATAGRAM, WireFormat, not_a_wire_format

__all__ = ["Field", "PacketReader"]

Field = bytes | int
"""A decoded field: bytes for a str field, int for an int field."""


class _Head:
    """What every reader of one packet shares, with the wire's unpackers bound."""

    __slots__ = (
        "byte_order_prefix",
        "command",
        "fields_offset",
        "length_size",
        "module",
        "unpack_int",
        "unpack_length",
        "version",
        "wire",
    )

    def __init__(
        self, module: str, command: int, version: int | None, wire: WireFormat, fields_offset: int
    ) -> None:
        self.module = module
        self.command = command
        self.version = version
        self.wire = wire
        self.fields_offset = fields_offset
        self.unpack_length = wire.length.unpack_from
        self.length_size = wire.length.size
        self.unpack_int = wire.int32.unpack_from
        self.byte_order_prefix = wire.int32.format[0]


def _received_bytes(data: object) -> bytes:
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise TypeError(
        f"PacketReader.parse takes the packet as bytes, bytearray or memoryview,"
        f" not {type(data).__name__}"
    )


class PacketReader:
    """A received packet and a position among its fields."""

    __slots__ = ("_head", "_data", "_pos", "_index")

    _head: _Head
    _data: bytes
    _pos: int
    _index: int

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise TypeError("PacketReader is not built directly: use PacketReader.parse(data)")

    @classmethod
    def parse(
        cls, data: bytes | bytearray | memoryview, *, wire: WireFormat = DATAGRAM
    ) -> PacketReader:
        """Validate ``data`` as one packet and return a reader at its first field.

        Raises a :class:`~binif.errors.DecodeError` subclass naming the first
        check that failed, in OpenSIPS's order: size, marker, checksum (datagram
        profile) or marker, declared length (stream profile); then module name
        length, module name, command.
        """
        if type(data) is not bytes:
            data = _received_bytes(data)
        try:
            check_frame = wire.check_frame
        except AttributeError:
            raise not_a_wire_format(wire) from None
        check_frame(data)
        return _first_field(data, wire)

    # --- what the packet is -----------------------------------------------------

    @property
    def module(self) -> str:
        """The module name the packet is addressed to (selects the handler)."""
        return self._head.module

    @property
    def command(self) -> int:
        """The packet type within the module."""
        return self._head.command

    @property
    def version(self) -> int | None:
        """The packet layout's version (stream profile); None in the datagram profile."""
        return self._head.version

    @property
    def wire(self) -> WireFormat:
        """The wire format the packet was parsed with."""
        return self._head.wire

    @property
    def data(self) -> bytes:
        """The packet as received, header included, less any int popped from the back."""
        return self._data

    @property
    def offset(self) -> int:
        """Byte offset of the next field."""
        return self._pos

    @property
    def index(self) -> int:
        """Number of fields read before this position."""
        return self._index

    @property
    def remaining(self) -> bytes:
        """The field bytes not yet read."""
        return self._data[self._pos :]

    @property
    def fields_offset(self) -> int:
        """Byte offset of the first field, where :meth:`rewind` starts."""
        return self._head.fields_offset

    @property
    def fields(self) -> bytes:
        """All field bytes of the packet, from the first field to the end."""
        return self._data[self._head.fields_offset :]

    @property
    def at_end(self) -> bool:
        """True when every byte of the packet has been read."""
        return self._pos == len(self._data)

    def rewind(self) -> PacketReader:
        """A reader of the same packet at its first field."""
        return _make(self._head, self._data, self._head.fields_offset, 0)

    # --- reading fields -----------------------------------------------------------

    # pop_str and pop_int inline the happy path: they are the per-field hot path.
    # Any failure goes through _str_span or _need, which name the precise error.

    def pop_str(self) -> tuple[bytes, PacketReader]:
        """Read a str field: ``(bytes, reader after it)``. NULL and empty both give b""."""
        data = self._data
        pos = self._pos
        head = self._head
        start = pos + head.length_size
        if start <= len(data):
            (n,) = head.unpack_length(data, pos)
            stop = start + n
            if n >= 0 and stop <= len(data):
                reader = _new_reader(PacketReader)
                reader._head = head
                reader._data = data
                reader._pos = stop
                reader._index = self._index + 1
                return data[start:stop], reader
        self._str_span(data, pos, self._index)
        raise AssertionError("unreachable: _str_span raises for a field that does not fit")

    def pop_int(self) -> tuple[int, PacketReader]:
        """Read a signed 32-bit int field: ``(int, reader after it)``."""
        data = self._data
        pos = self._pos
        stop = pos + 4
        if stop > len(data):
            self._need(pos, 4, "int", self._index)
        head = self._head
        reader = _new_reader(PacketReader)
        reader._head = head
        reader._data = data
        reader._pos = stop
        reader._index = self._index + 1
        return head.unpack_int(data, pos)[0], reader

    def pop_back_int(self) -> tuple[int, PacketReader]:
        """Read the packet's last int field: ``(int, reader without it)``.

        OpenSIPS's clusterer appends a trailer to a module's fields and pops it
        from the back before the module reads them. The int must lie among the
        fields not yet read; the reader returned keeps this one's position.
        """
        data = self._data
        end = len(data) - 4
        if end < self._pos:
            raise TruncatedField(
                f"no int to pop from the back: {len(data) - self._pos} unread bytes"
                f" after byte offset {self._pos} in the {len(data)}-byte packet",
                index=self._index,
                offset=self._pos,
            )
        (value,) = self._head.unpack_int(data, end)
        return value, _make(self._head, data[:end], self._pos, self._index)

    def skip_str(self, n: int = 1) -> PacketReader:
        """The reader after ``n`` str fields."""
        _check_count(n)
        data, pos = self._data, self._pos
        for index in range(self._index, self._index + n):
            pos = self._str_span(data, pos, index)[1]
        return _make(self._head, data, pos, self._index + n)

    def skip_int(self, n: int = 1) -> PacketReader:
        """The reader after ``n`` int fields."""
        _check_count(n)
        size = self._head.wire.int32.size
        self._need(self._pos, size * n, "int" if n == 1 else f"{n} ints", self._index)
        return _make(self._head, self._data, self._pos + size * n, self._index + n)

    def unpack(self, layout: str, *, exact: bool = False) -> tuple[Field, ...]:
        """Read one field per character of ``layout`` (``s`` str, ``i`` int).

        With ``exact=True`` the layout must consume the packet to its last
        byte, or :class:`~binif.errors.TrailingBytes` is raised.
        """
        values, pos = self._unpack(layout)
        if exact and pos != len(self._data):
            raise TrailingBytes(
                f"{len(self._data) - pos} bytes left after the {len(layout)} fields of {layout!r}",
                index=self._index + len(layout),
                offset=pos,
            )
        return values

    def unpack_reader(self, layout: str) -> tuple[tuple[Field, ...], PacketReader]:
        """Like :meth:`unpack`, also returning the reader after the fields read."""
        values, pos = self._unpack(layout)
        return values, _make(self._head, self._data, pos, self._index + len(values))

    def _unpack(self, layout: str) -> tuple[tuple[Field, ...], int]:
        head = self._head
        plan = compile_layout(layout, head.byte_order_prefix)
        data = self._data
        end = len(data)
        pos = self._pos
        unpack_length = head.unpack_length
        length_size = head.length_size
        values: list[Field] = []
        append = values.append
        extend = values.extend
        # The happy path checks only what struct does not: a str's length. Any
        # failure is re-read field by field to name the precise error.
        try:
            for ints in plan:
                if ints is None:
                    (n,) = unpack_length(data, pos)
                    start = pos + length_size
                    pos = start + n
                    if n < 0 or pos > end:
                        break
                    append(data[start:pos])
                else:
                    extend(ints.unpack_from(data, pos))
                    pos += ints.size
            else:
                return tuple(values), pos
        except struct.error:
            pass
        self._raise_unpack_error(layout)

    def _raise_unpack_error(self, layout: str) -> NoReturn:
        reader = self
        for kind in layout:
            reader = reader.skip_str() if kind == STR else reader.skip_int()
        raise AssertionError(f"unpack({layout!r}) failed but every field reads alone")

    # --- bounds checks: the only place a read can fail ------------------------------

    def _need(self, pos: int, size: int, what: str, index: int) -> None:
        left = len(self._data) - pos
        if size > left:
            raise TruncatedField(
                f"field {index} ({what}) at byte offset {pos}: needs {size} bytes,"
                f" {left} left in the {len(self._data)}-byte packet",
                index=index,
                offset=pos,
            )

    def _str_span(self, data: bytes, pos: int, index: int) -> tuple[int, int]:
        length = self._head.wire.length
        self._need(pos, length.size, "str length", index)
        (n,) = length.unpack_from(data, pos)
        start = pos + length.size
        if n < 0:
            raise BadFieldLength(
                f"field {index} (str) at byte offset {pos}: negative length {n}",
                index=index,
                offset=pos,
            )
        if start + n > len(data):
            raise TruncatedField(
                f"field {index} (str) at byte offset {pos}: length {n} runs past the end,"
                f" {len(data) - start} bytes left in the {len(data)}-byte packet",
                index=index,
                offset=pos,
            )
        return start, start + n

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PacketReader):
            return NotImplemented
        return (self._data, self._pos, self._head.wire) == (
            other._data,
            other._pos,
            other._head.wire,
        )

    def __hash__(self) -> int:
        return hash((self._data, self._pos))

    def __repr__(self) -> str:
        return (
            f"PacketReader(module={self.module!r}, command={self.command},"
            f" size={len(self._data)}, offset={self._pos}, index={self._index})"
        )


def _first_field(data: bytes, wire: WireFormat) -> PacketReader:
    """A reader at the first field of ``data``, whose frame ``wire`` has checked.

    Reads the module name length, the name and the command (``BadNameLength``,
    ``BadModuleName``). :class:`~binif.framing.StreamDecoder` calls it on packets
    whose header it has checked while framing them.
    """
    start = wire.header_size
    (name_len,) = wire.length.unpack_from(data, start)
    name_at = start + wire.length.size
    command_end = name_at + name_len + 4
    if name_len <= 0 or command_end > len(data):
        raise BadNameLength(
            f"module name length {name_len} at byte offset {start} does not leave"
            f" room for the name and the command in a {len(data)}-byte packet"
        )
    # The head (version if any, name length, name, command) is a few bytes: its
    # decoded form is looked up by them rather than decoded again for every packet.
    key = data[wire.version_at : command_end]
    head = _HEADS.get(key)
    if head is None or head.wire is not wire:
        head = _make_head(data, name_at, name_len, wire)
        if len(_HEADS) < _HEADS_MAX:
            _HEADS[key] = head
    reader = _new_reader(PacketReader)
    reader._head = head
    reader._data = data
    reader._pos = command_end
    reader._index = 0
    return reader


def _check_count(n: int) -> None:
    if type(n) is not int or n < 0:
        raise LayoutError(f"the number of fields to skip is an int >= 0, not {n!r}")


def _make(head: _Head, data: bytes, pos: int, index: int) -> PacketReader:
    reader = _new_reader(PacketReader)
    reader._head = head
    reader._data = data
    reader._pos = pos
    reader._index = index
    return reader


_new_reader = object.__new__


# A receiver sees a handful of (module, command) pairs: their decoded heads are
# kept (up to a bound, so random names cannot grow memory) and found by the
# head's raw bytes, which skips decoding the name on every packet.
_HEADS: dict[bytes, _Head] = {}
_HEADS_MAX = 1024


def _make_head(data: bytes, pos: int, name_len: int, wire: WireFormat) -> _Head:
    name = data[pos : pos + name_len]
    try:
        module = name.decode()
    except UnicodeDecodeError as exc:
        raise BadModuleName(f"module name {name!r} is not UTF-8") from exc
    (command,) = wire.int32.unpack_from(data, pos + name_len)
    version = None if wire.version is None else wire.version.unpack_from(data, wire.version_at)[0]
    return _Head(module, command, version, wire, pos + name_len + wire.int32.size)
