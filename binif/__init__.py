"""binif: the OpenSIPS BIN interface for asyncio.

The codec (:class:`PacketWriter`, :class:`PacketReader`, the wire formats and
the error hierarchy) is pure and imports no asyncio.
"""

from __future__ import annotations

from .crc import opensips_crc32
from .errors import (
    BadChecksum,
    BadFieldLength,
    BadFieldText,
    BadMarker,
    BadModuleName,
    BadNameLength,
    BadRawValue,
    BinError,
    DecodeError,
    EncodeError,
    FieldError,
    FieldTypeError,
    IntOutOfRange,
    InvalidModuleName,
    LayoutError,
    MessageMismatch,
    PacketTooLarge,
    PacketTooLong,
    PacketTooShort,
    TrailingBytes,
    TruncatedField,
)
from .messages import Message, MessageField, MessageRegistry
from .reader import Field, PacketReader
from .wire import DATAGRAM, DATAGRAM_BIG_ENDIAN, WireFormat
from .writer import PacketWriter, StrValue

__version__ = "0.1.0"

__all__ = [
    "DATAGRAM",
    "DATAGRAM_BIG_ENDIAN",
    "BadChecksum",
    "BadFieldLength",
    "BadFieldText",
    "BadMarker",
    "BadModuleName",
    "BadNameLength",
    "BadRawValue",
    "BinError",
    "DecodeError",
    "EncodeError",
    "Field",
    "FieldError",
    "FieldTypeError",
    "IntOutOfRange",
    "InvalidModuleName",
    "LayoutError",
    "Message",
    "MessageField",
    "MessageMismatch",
    "MessageRegistry",
    "PacketReader",
    "PacketTooLarge",
    "PacketTooLong",
    "PacketTooShort",
    "PacketWriter",
    "StrValue",
    "TrailingBytes",
    "TruncatedField",
    "WireFormat",
    "opensips_crc32",
]
