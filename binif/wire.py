"""The wire formats as data: header fields, length-field size, byte order, checksum.

Reader and writer take every size, struct and header rule from a
:class:`WireFormat`, so both generations of the protocol are two values of one
class: the datagram profile of OpenSIPS 1.10-2.1 (marker, CRC of the body,
4-byte lengths) and the stream profile of OpenSIPS 2.4-4.0 (marker, total
length, version, 2-byte lengths, no checksum).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from .crc import opensips_crc32
from .errors import BadChecksum, BadMarker, LengthMismatch, PacketTooLong, PacketTooShort

__all__ = [
    "CHECKSUM",
    "DATAGRAM",
    "DATAGRAM_BIG_ENDIAN",
    "MARKER",
    "STREAM",
    "STREAM_BIG_ENDIAN",
    "TOTAL_LENGTH",
    "VERSION",
    "WireFormat",
]

ByteOrder = Literal["little", "big"]
Checksum = Callable[[bytes | memoryview], int]
HeaderField = Literal["marker", "checksum", "total_length", "version"]
_STRUCT_PREFIX = {"little": "<", "big": ">"}

MARKER: HeaderField = "marker"
"""The constant bytes a packet starts with."""
CHECKSUM: HeaderField = "checksum"
"""A checksum of the body (everything after the header)."""
TOTAL_LENGTH: HeaderField = "total_length"
"""The size of the whole packet, header included: what delimits packets on a stream."""
VERSION: HeaderField = "version"
"""The version of the packet layout the sender used (per capability, not per protocol)."""


class Frame(Protocol):
    """``frame(body, version=None) -> bytes``: a profile's header, then ``body``."""

    def __call__(self, body: bytes, version: int | None = None) -> bytes: ...


@dataclass(frozen=True, slots=True, eq=False)
class WireFormat:
    """One profile of the BIN wire format.

    ``header`` lists the header's fields in wire order, each with its struct
    code (without byte order); every other difference between the profiles
    (length prefixes, checksum, size limits, byte order) is a field too.
    Formats compare and hash by identity: use the module's constants or keep
    the one you made.
    """

    name: str
    """Short name for messages and ``repr``."""
    marker: bytes
    """The bytes every packet starts with."""
    header_fields: tuple[tuple[HeaderField, str], ...]
    """The header's fields in wire order: ``(MARKER, "4s")``, ``(CHECKSUM, "I")``..."""
    length_code: str
    """struct code of a str field's (and the module name's) length prefix."""
    checksum: Checksum | None
    """Checksum of the body, required when the header has a CHECKSUM field."""
    min_packet: int
    """Shortest packet accepted, header included."""
    max_packet: int
    """Longest packet built or accepted, header included."""
    byte_order: ByteOrder = "little"
    """Order of every integer on the wire."""

    header: struct.Struct = field(init=False, repr=False, compare=False)
    length: struct.Struct = field(init=False, repr=False, compare=False)
    int32: struct.Struct = field(init=False, repr=False, compare=False)
    header_size: int = field(init=False, repr=False, compare=False)
    """Bytes before the body."""
    max_str: int = field(init=False, repr=False, compare=False)
    """Longest str field the length prefix can state."""
    has_version: bool = field(init=False, repr=False, compare=False)
    """Whether packets carry a version (the stream profile does, the datagram one not)."""
    version: struct.Struct | None = field(init=False, repr=False, compare=False)
    """The version field's struct, or None when packets carry no version."""
    total_length: struct.Struct | None = field(init=False, repr=False, compare=False)
    """The total-length field's struct, or None when only the datagram delimits a packet."""
    total_length_at: int = field(init=False, repr=False, compare=False)
    """Byte offset of the total-length field (0 when there is none)."""
    version_at: int = field(init=False, repr=False, compare=False)
    """Byte offset of the version field, or of the body when there is none.

    The bytes from here to the command say which (version, module, command) a
    packet is: the reader caches its decoded head by them.
    """
    _fields: tuple[HeaderField, ...] = field(init=False, repr=False, compare=False)
    _checksum_index: int = field(init=False, repr=False, compare=False)
    _total_index: int = field(init=False, repr=False, compare=False)
    frame: Frame = field(init=False, repr=False, compare=False)
    """``frame(body, version=None)``: the complete packet, the profile's header then ``body``.

    ``version`` goes in the version field (the writer checks it is given
    exactly when the profile has one). Generated per format from the header's
    fields, so building a packet costs one struct call.
    """

    def __post_init__(self) -> None:
        if self.byte_order not in _STRUCT_PREFIX:
            raise ValueError(f"byte_order must be 'little' or 'big', not {self.byte_order!r}")
        fields = tuple(name for name, _ in self.header_fields)
        if fields[:1] != (MARKER,) or len(set(fields)) != len(fields):
            raise ValueError(f"a header starts with the marker and names each field once: {fields}")
        if (CHECKSUM in fields) != (self.checksum is not None):
            raise ValueError("give a checksum function exactly when the header has a checksum")
        prefix = _STRUCT_PREFIX[self.byte_order]
        codes = [code for _, code in self.header_fields]
        setattr_ = object.__setattr__
        setattr_(self, "_fields", fields)
        setattr_(self, "_checksum_index", fields.index(CHECKSUM) if CHECKSUM in fields else 0)
        setattr_(self, "_total_index", fields.index(TOTAL_LENGTH) if TOTAL_LENGTH in fields else -1)
        setattr_(self, "header", struct.Struct(prefix + "".join(codes)))
        setattr_(self, "length", struct.Struct(prefix + self.length_code))
        setattr_(self, "int32", struct.Struct(prefix + "i"))
        setattr_(self, "header_size", self.header.size)
        setattr_(self, "max_str", _max_unsigned_or_signed(self.length))
        setattr_(self, "has_version", VERSION in fields)
        offsets = {name: struct.calcsize("=" + "".join(codes[:i])) for i, name in enumerate(fields)}
        structs = {name: struct.Struct(prefix + code) for name, code in self.header_fields}
        setattr_(self, "total_length", structs.get(TOTAL_LENGTH))
        setattr_(self, "version", structs.get(VERSION))
        setattr_(self, "total_length_at", offsets.get(TOTAL_LENGTH, 0))
        setattr_(self, "version_at", offsets.get(VERSION, self.header_size))
        setattr_(self, "frame", _compile_frame(self))

    def with_byte_order(self, byte_order: ByteOrder) -> WireFormat:
        """The same profile with every integer in ``byte_order``."""
        return replace(self, byte_order=byte_order)

    # --- checking -----------------------------------------------------------------

    def packet_length(self, data: bytes | bytearray | memoryview, offset: int = 0) -> int:
        """The declared size of the packet whose header starts at ``offset``.

        Checks in OpenSIPS 4.0's order what a stream receiver checks once it
        holds a header: the marker, then the total length against the minimum
        and the maximum. ``data`` must hold at least :attr:`header_size` bytes
        from ``offset``. Raises ``BadMarker``, ``PacketTooShort`` or
        ``PacketTooLong``; ``ValueError`` for a profile without a total length.
        """
        index = self._total_index
        if index < 0:
            raise ValueError(f"the {self.name} profile has no total length: a datagram is a packet")
        header = self.header.unpack_from(data, offset)
        if header[0] != self.marker:
            raise BadMarker(f"packet starts with {header[0]!r}, not {self.marker!r}")
        size: int = header[index]
        if size < self.min_packet or size > self.max_packet:
            self._check_size(size, "declared")
        return size

    def check_frame(self, data: bytes) -> None:
        """Validate one whole packet's header in OpenSIPS's order, or raise.

        Datagram profile: size, marker, checksum. Stream profile: marker, the
        declared total length (minimum, maximum), then that it is the size of
        ``data`` (``LengthMismatch`` otherwise).
        """
        size = len(data)
        index = self._total_index
        if index < 0:
            if size < self.min_packet or size > self.max_packet:
                self._check_size(size, "datagram")
        elif size < self.header_size:
            raise PacketTooShort(
                f"{size} bytes are shorter than the {self.header_size}-byte header"
            )
        header = self.header.unpack_from(data)
        if header[0] != self.marker:
            raise BadMarker(f"packet starts with {header[0]!r}, not {self.marker!r}")
        if index >= 0:
            declared = header[index]
            if declared != size or size < self.min_packet or size > self.max_packet:
                self._check_size(declared, "declared")
                raise LengthMismatch(
                    f"the header declares a {declared}-byte packet but {size} bytes were given"
                )
        checksum = self.checksum
        if checksum is not None:
            check = header[self._checksum_index]
            # Copying a small body is cheaper than making a memoryview of it.
            body = (
                data[self.header_size :] if size <= 4096 else memoryview(data)[self.header_size :]
            )
            actual = checksum(body)
            if actual != check:
                raise BadChecksum(
                    f"checksum in header is {check:#010x} but the body's is {actual:#010x}"
                )

    def _check_size(self, size: int, what: str) -> None:
        if size < self.min_packet:
            raise PacketTooShort(
                f"{size}-byte {what} packet is shorter than the {self.min_packet}-byte minimum"
            )
        if size > self.max_packet:
            raise PacketTooLong(
                f"{size}-byte {what} packet is longer than the {self.max_packet}-byte maximum"
            )


# What each header field holds when a packet is built, as an expression of the body
# and the version: frame() is generated from these, once per format.
_FRAME_VALUES: dict[HeaderField, str] = {
    MARKER: "marker",
    CHECKSUM: "checksum(body)",
    TOTAL_LENGTH: "header_size + len(body)",
    VERSION: "version",
}


def _compile_frame(wire: WireFormat) -> Frame:
    values = ", ".join(_FRAME_VALUES[name] for name in wire._fields)
    source = f"def frame(body, version=None):\n    return pack({values}) + body\n"
    namespace: dict[str, object] = {
        "pack": wire.header.pack,
        "marker": wire.marker,
        "checksum": wire.checksum,
        "header_size": wire.header_size,
    }
    exec(source, namespace)
    return namespace["frame"]  # type: ignore[return-value]


def _max_unsigned_or_signed(length: struct.Struct) -> int:
    bits = 8 * length.size
    return (1 << bits) - 1 if length.format[-1].isupper() else (1 << (bits - 1)) - 1


DATAGRAM = WireFormat(
    name="datagram",
    marker=b"P4CK",
    header_fields=((MARKER, "4s"), (CHECKSUM, "I")),
    length_code="i",
    checksum=opensips_crc32,
    # header (8) + name length (4) + command (4) + a 2-byte name: OpenSIPS's floor.
    min_packet=18,
    # OpenSIPS's BUF_SIZE.
    max_packet=65535,
)
"""The datagram profile with CRC of OpenSIPS 1.10 to 2.1, little-endian."""

DATAGRAM_BIG_ENDIAN = DATAGRAM.with_byte_order("big")
"""The datagram profile as a big-endian OpenSIPS host would send it."""

STREAM = WireFormat(
    name="stream",
    marker=b"P4CK",
    header_fields=((MARKER, "4s"), (TOTAL_LENGTH, "I"), (VERSION, "h")),
    length_code="H",
    checksum=None,
    # header (10) + name length (2) + a 1-byte name + command (4): OpenSIPS 4.0's floor.
    min_packet=17,
    # TCP_BUF_SIZE (65535) less the 20 bytes OpenSIPS 4.0 keeps for a clusterer trailer.
    max_packet=65515,
)
"""The stream profile of OpenSIPS 2.4 to 4.0 (``proto_bin`` over TCP), little-endian."""

STREAM_BIG_ENDIAN = STREAM.with_byte_order("big")
"""The stream profile as a big-endian OpenSIPS host would send it."""


def not_a_wire_format(wire: object) -> TypeError:
    """The error for a ``wire=`` argument that is not a :class:`WireFormat`."""
    return TypeError(
        f"wire must be a binif.WireFormat (binif.DATAGRAM, binif.STREAM, ...),"
        f" not {type(wire).__name__} {wire!r}"
    )
