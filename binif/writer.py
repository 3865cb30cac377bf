"""PacketWriter: builds a packet field by field, immutably.

Each push returns a new writer that points back at the one it extends, so a
push costs one small object and no copy, and a writer can be extended in two
different ways. The bytes are joined and checksummed once, in ``to_bytes``.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import Final

from .errors import (
    FieldTypeError,
    IntOutOfRange,
    InvalidModuleName,
    InvalidVersion,
    LayoutError,
    PacketTooLarge,
    PacketTooSmall,
    StrTooLong,
    UnencodableText,
)
from .layout import compile_layout
from .wire import DATAGRAM, WireFormat, not_a_wire_format

__all__ = ["PacketWriter", "StrValue", "packet_bytes"]

StrValue = bytes | bytearray | memoryview | str | None
"""What a str field accepts: bytes, text (sent as UTF-8), or None (OpenSIPS's NULL)."""

INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1
INT16_MIN: Final = -(2**15)
INT16_MAX: Final = 2**15 - 1


def _str_bytes(value: object, index: int) -> bytes:
    if type(value) is bytes:
        return value
    if isinstance(value, str):
        return _utf8(value, index)
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise FieldTypeError(
        f"{_what(index)}: a str field takes bytes, str or None, not {type(value).__name__}"
    )


def _utf8(text: str, index: int) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise UnencodableText(
            f"{_what(index)}: {text[:40]!r} is not encodable as UTF-8: {exc.reason}"
        ) from None


_MODULE_NAME = -1
"""The index error messages use for the module name, which is no field."""


def _what(index: int) -> str:
    return "module name" if index == _MODULE_NAME else f"field {index}"


def _int_error(value: object, what: str) -> Exception:
    if not isinstance(value, int) or isinstance(value, bool):
        return FieldTypeError(f"{what}: an int field takes an int, not {type(value).__name__}")
    return IntOutOfRange(
        f"{what}: {value} is outside the signed 32-bit range [{INT32_MIN}, {INT32_MAX}]"
    )


_SHORT = 256
"""Length prefixes of str fields shorter than this are packed once, not per field."""


@lru_cache(maxsize=8)
def _length_prefixes(length_format: str) -> tuple[bytes, ...]:
    pack = struct.Struct(length_format).pack
    return tuple(pack(n) for n in range(_SHORT))


class _Head:
    """What every writer extending one root shares, with the wire's packers bound."""

    __slots__ = (
        "byte_order_prefix",
        "command",
        "max_packet",
        "module",
        "pack_int",
        "pack_length",
        "prefixes",
        "version",
        "wire",
    )

    def __init__(self, module: str, command: int, version: int | None, wire: WireFormat) -> None:
        self.module = module
        self.command = command
        self.version = version
        self.wire = wire
        self.max_packet = wire.max_packet
        self.pack_length = wire.length.pack
        self.pack_int = wire.int32.pack
        self.prefixes = _length_prefixes(wire.length.format)
        self.byte_order_prefix = wire.int32.format[0]


_Root = tuple[_Head, bytes, int]
"""A writer with no fields: shared head, the body's first chunk, packet size."""

# Building a root validates the name and binds the wire's packers; senders use a
# handful of (module, command) pairs, so roots are kept (up to a bound).
_ROOTS: dict[tuple[str, int, int | None, WireFormat], _Root] = {}
_ROOTS_MAX = 1024


def _make_root(module: str, command: int, version: int | None, wire: WireFormat) -> _Root:
    if not isinstance(module, str):
        raise FieldTypeError(f"a module name is a str, not {type(module).__name__} {module!r}")
    if not isinstance(command, int) or isinstance(command, bool):
        raise FieldTypeError(f"a command is an int, not {type(command).__name__} {command!r}")
    if not isinstance(wire, WireFormat):
        raise not_a_wire_format(wire)
    name = _utf8(module, _MODULE_NAME)
    limit = wire.max_packet - wire.header_size - wire.length.size - wire.int32.size
    if not name or len(name) > limit:
        raise InvalidModuleName(
            f"module name must be 1 to {limit} bytes of UTF-8, not {len(name)}: {module[:40]!r}"
        )
    try:
        command_bytes = wire.int32.pack(command)
    except struct.error:
        raise _int_error(command, "command") from None
    _check_version(version, wire)
    chunk = wire.length.pack(len(name)) + name + command_bytes
    return _Head(module, command, version, wire), chunk, wire.header_size + len(chunk)


def _check_version(version: object, wire: WireFormat) -> None:
    if not wire.has_version:
        if version is not None:
            raise InvalidVersion(f"the {wire.name} profile carries no version, not {version!r}")
        return
    if version is None:
        raise InvalidVersion(f"the {wire.name} profile carries a version: give version=")
    if not isinstance(version, int):
        raise FieldTypeError(f"a version is an int, not {type(version).__name__}")
    if not INT16_MIN <= version <= INT16_MAX:
        raise InvalidVersion(
            f"version {version} is outside the signed 16-bit range [{INT16_MIN}, {INT16_MAX}]"
        )


class PacketWriter:
    """An immutable packet under construction: module name, command, then fields.

    ``PacketWriter("dialog", 3).push_str("call-1").push_int(7).to_bytes()``
    gives a datagram ready to send; the writers in between stay valid. The
    stream profile carries the layout's version:
    ``PacketWriter("dialog-dlg-repl", 3, wire=STREAM, version=4)``.

    What building raises (all :class:`~binif.errors.BinError`):

    - ``FieldTypeError`` (a ``TypeError``): a module name that is not a str, a
      command or int field that is not an int (``True`` included), a str field
      that is not bytes, str or None; ``TypeError`` for a ``wire`` that is no
      :class:`~binif.wire.WireFormat`.
    - ``InvalidModuleName``: an empty module name, or one too long to fit.
    - ``IntOutOfRange``: a command or int field outside the signed 32-bit range.
    - ``UnencodableText``: text that is not encodable as UTF-8 (a lone surrogate).
    - ``PacketTooLarge``: a push or ``pack`` that would pass the wire's maximum
      packet size (65535 bytes in the datagram profile), raised at that call.
    - ``LayoutError``: ``pack`` with a layout character other than ``s`` and
      ``i``, or a number of values that does not match the layout.
    - ``PacketTooSmall``: ``to_bytes`` of a packet below the minimum receivers
      accept.
    """

    __slots__ = ("_chunk", "_count", "_head", "_prev", "_size")

    _head: _Head
    _prev: PacketWriter | None
    _chunk: bytes
    _size: int
    _count: int

    def __init__(
        self,
        module: str,
        command: int,
        *,
        wire: WireFormat = DATAGRAM,
        version: int | None = None,
    ) -> None:
        key = (module, command, version, wire)
        # 1.0 == 1: only true ints may take a cached root made for ints.
        root = (
            _ROOTS.get(key)
            if type(command) is int and (version is None or type(version) is int)
            else None
        )
        if root is None:
            root = _make_root(module, command, version, wire)
            if len(_ROOTS) < _ROOTS_MAX:
                _ROOTS[key] = root
        self._head, self._chunk, self._size = root
        self._prev = None
        self._count = 0

    def _extend(self, chunk: bytes, count: int) -> PacketWriter:
        size = self._size + len(chunk)
        if size > self._head.max_packet:
            raise self._too_large(chunk, size)
        new = _new_writer(PacketWriter)
        new._head = self._head
        new._prev = self
        new._chunk = chunk
        new._size = size
        new._count = self._count + count
        return new

    def _too_large(self, chunk: bytes, size: int) -> PacketTooLarge:
        return PacketTooLarge(
            f"field {self._count}: {len(chunk)} more bytes would make the packet {size} bytes,"
            f" over the {self._head.max_packet}-byte maximum"
        )

    # push_str and push_int inline _extend: they are the per-field hot path.

    def push_str(self, value: StrValue) -> PacketWriter:
        """Return a writer with one more str field: bytes, text as UTF-8, or None (NULL).

        Raises ``FieldTypeError``, ``UnencodableText`` or ``PacketTooLarge``.
        """
        if type(value) is not bytes:
            value = _str_bytes(value, self._count)
        head = self._head
        n = len(value)
        chunk = (head.prefixes[n] if n < _SHORT else self._long_prefix(n, self._count)) + value
        size = self._size + len(chunk)
        if size > head.max_packet:
            raise self._too_large(chunk, size)
        new = _new_writer(PacketWriter)
        new._head = head
        new._prev = self
        new._chunk = chunk
        new._size = size
        new._count = self._count + 1
        return new

    def push_int(self, value: int) -> PacketWriter:
        """Return a writer with one more signed 32-bit int field.

        Raises ``FieldTypeError`` (not an int, or a bool), ``IntOutOfRange`` or
        ``PacketTooLarge``.
        """
        head = self._head
        try:
            if type(value) is bool:  # struct packs True as 1: refuse it as the wrong type
                raise struct.error
            chunk = head.pack_int(value)
        except struct.error:
            raise _int_error(value, f"field {self._count}") from None
        size = self._size + 4
        if size > head.max_packet:
            raise self._too_large(chunk, size)
        new = _new_writer(PacketWriter)
        new._head = head
        new._prev = self
        new._chunk = chunk
        new._size = size
        new._count = self._count + 1
        return new

    def pack(self, layout: str, *values: StrValue | int) -> PacketWriter:
        """Return a writer with one field per character of ``layout`` (``s`` str, ``i`` int).

        Raises ``LayoutError`` for a bad layout or a value count that does not
        match it, and what :meth:`push_str` and :meth:`push_int` raise for the
        first value that does not fit, naming its field index.
        """
        head = self._head
        plan = compile_layout(layout, head.byte_order_prefix)
        if len(values) != len(layout):
            raise LayoutError(
                f"layout {layout!r} has {len(layout)} fields but {len(values)} values were given"
            )
        prefixes = head.prefixes
        parts: list[bytes] = []
        append = parts.append
        index = 0
        for ints in plan:
            if ints is None:
                value = values[index]
                if type(value) is not bytes:
                    value = _str_bytes(value, self._count + index)
                n = len(value)
                append(prefixes[n] if n < _SHORT else self._long_prefix(n, self._count + index))
                append(value)
                index += 1
            else:
                stop = index + (ints.size >> 2)
                run = values[index:stop]
                try:
                    if bool in map(type, run):  # struct packs True as 1: refuse it
                        raise struct.error
                    append(ints.pack(*run))
                except struct.error:
                    raise self._first_bad_int(values, index, stop) from None
                index = stop
        return self._extend(b"".join(parts), len(values))

    def _long_prefix(self, n: int, index: int) -> bytes:
        try:
            return self._head.pack_length(n)
        except struct.error:
            wire = self._head.wire
            raise StrTooLong(
                f"field {index}: a {n}-byte str is longer than the {wire.max_str} bytes"
                f" the {wire.name} profile's {wire.length.size}-byte length can state"
            ) from None

    def _first_bad_int(self, values: tuple[object, ...], start: int, stop: int) -> Exception:
        for index in range(start, stop):
            try:
                if type(values[index]) is bool:
                    raise struct.error
                self._head.pack_int(values[index])
            except struct.error:
                return _int_error(values[index], f"field {self._count + index}")
        raise AssertionError("struct refused a run of ints that each pack alone")

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
    def version(self) -> int | None:
        """The layout version the packet carries (stream profile), or None (datagram)."""
        return self._head.version

    @property
    def size(self) -> int:
        """Size in bytes of the complete packet, header included."""
        return self._size

    @property
    def field_count(self) -> int:
        """Number of fields pushed so far."""
        return self._count

    def to_bytes(self) -> bytes:
        """The complete packet: the profile's header, then the body."""
        chunks = []
        node: PacketWriter | None = self
        while node is not None:
            chunks.append(node._chunk)
            node = node._prev
        chunks.reverse()
        wire = self._head.wire
        if self._size < wire.min_packet:
            raise PacketTooSmall(
                f"a {self._size}-byte packet is below the {wire.min_packet}-byte minimum that"
                " receivers accept: use a longer module name or add a field"
            )
        return wire.frame(b"".join(chunks), self._head.version)

    __bytes__ = to_bytes

    def __repr__(self) -> str:
        return (
            f"PacketWriter(module={self.module!r}, command={self.command},"
            f" fields={self._count}, size={self._size})"
        )


_new_writer = object.__new__


def packet_bytes(packet: object) -> bytes:
    """The bytes of a packet given to send: a writer, bytes-like, or a message (``__bytes__``).

    Anything else (an int, a list, a str) is a TypeError: ``bytes(42)`` would
    be 42 NUL bytes, not a packet.
    """
    if isinstance(packet, bytes | bytearray | memoryview):
        return bytes(packet)
    if hasattr(type(packet), "__bytes__"):
        data = bytes(packet)  # type: ignore[call-overload]
        if type(data) is bytes:
            return data
    raise TypeError(
        "a packet is a PacketWriter, bytes, bytearray, memoryview or a message,"
        f" not {type(packet).__name__}"
    )
