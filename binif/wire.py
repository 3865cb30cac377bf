"""The wire format as data: header layout, length-field size, byte order, checksum.

Reader and writer take every size and struct from a :class:`WireFormat`, so a
second generation of the protocol (OpenSIPS 2.4+'s TCP profile: 10-byte header
with total length and version, 2-byte lengths, no CRC) is a new format object
and its framing, not a rewrite of the codec.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from .crc import opensips_crc32
from .errors import BadChecksum, BadMarker, PacketTooLong, PacketTooShort

__all__ = ["DATAGRAM", "DATAGRAM_BIG_ENDIAN", "WireFormat"]

ByteOrder = Literal["little", "big"]
Checksum = Callable[[bytes | memoryview], int]
_STRUCT_PREFIX = {"little": "<", "big": ">"}


@dataclass(frozen=True, slots=True, eq=False)
class WireFormat:
    """One profile of the BIN wire format.

    The datagram profile (OpenSIPS 1.10-2.1) is ``P4CK``, a CRC of the body,
    then the body: name length, module name, command, fields. Every integer is
    in the sender's host order, little-endian in practice. Formats compare and
    hash by identity: use the module's constants or keep the one you made.
    """

    name: str
    """Short name for messages and ``repr``."""
    marker: bytes
    """The bytes every packet starts with."""
    header_layout: str
    """struct codes of the header, without byte order: marker then check value."""
    length_code: str
    """struct code of a str field's (and the module name's) length prefix."""
    checksum: Checksum | None
    """Checksum of the body stored after the marker, or None for no checksum."""
    min_packet: int
    """Shortest packet accepted, header included."""
    max_packet: int
    """Longest packet built or accepted, header included (OpenSIPS's BUF_SIZE)."""
    byte_order: ByteOrder = "little"
    """Order of every integer on the wire."""

    header: struct.Struct = field(init=False, repr=False, compare=False)
    length: struct.Struct = field(init=False, repr=False, compare=False)
    int32: struct.Struct = field(init=False, repr=False, compare=False)
    header_size: int = field(init=False, repr=False, compare=False)
    """Bytes before the body."""

    def __post_init__(self) -> None:
        if self.byte_order not in _STRUCT_PREFIX:
            raise ValueError(f"byte_order must be 'little' or 'big', not {self.byte_order!r}")
        prefix = _STRUCT_PREFIX[self.byte_order]
        object.__setattr__(self, "header", struct.Struct(prefix + self.header_layout))
        object.__setattr__(self, "length", struct.Struct(prefix + self.length_code))
        object.__setattr__(self, "int32", struct.Struct(prefix + "i"))
        object.__setattr__(self, "header_size", self.header.size)

    def with_byte_order(self, byte_order: ByteOrder) -> WireFormat:
        """The same profile with every integer in ``byte_order``."""
        return replace(self, byte_order=byte_order)

    def frame(self, body: bytes) -> bytes:
        """Return the complete packet: header (marker, checksum) then ``body``."""
        check = self.checksum(body) if self.checksum is not None else 0
        return self.header.pack(self.marker, check) + body

    def check_frame(self, data: bytes) -> None:
        """Validate size, marker and checksum in OpenSIPS's order, or raise."""
        size = len(data)
        if size < self.min_packet:
            raise PacketTooShort(
                f"{size}-byte datagram is shorter than the {self.min_packet}-byte minimum"
            )
        if size > self.max_packet:
            raise PacketTooLong(
                f"{size}-byte datagram is longer than the {self.max_packet}-byte maximum"
            )
        marker, check = self.header.unpack_from(data)
        if marker != self.marker:
            raise BadMarker(f"packet starts with {bytes(data[:4])!r}, not {self.marker!r}")
        if self.checksum is not None:
            actual = self.checksum(memoryview(data)[self.header_size :])
            if actual != check:
                raise BadChecksum(
                    f"checksum in header is {check:#010x} but the body's is {actual:#010x}"
                )


DATAGRAM = WireFormat(
    name="datagram",
    marker=b"P4CK",
    header_layout="4sI",
    length_code="i",
    checksum=opensips_crc32,
    # header (8) + name length (4) + command (4) + a 2-byte name: OpenSIPS's floor.
    min_packet=18,
    max_packet=65535,
)
"""The datagram profile with CRC of OpenSIPS 1.10 to 2.1, little-endian."""

DATAGRAM_BIG_ENDIAN = DATAGRAM.with_byte_order("big")
"""The datagram profile as a big-endian OpenSIPS host would send it."""
