"""binif: the OpenSIPS BIN interface for asyncio.

The codec (:class:`PacketWriter`, :class:`PacketReader`, the wire formats and
the error hierarchy) is pure and imports no asyncio. :class:`Endpoint` is the
asyncio shell that receives, dispatches and sends packets; :func:`run` starts a
program on uvloop when it is available.
"""

from __future__ import annotations

from .address import format_address, resolve_address
from .crc import opensips_crc32
from .dispatch import ANY_MODULE, Address, DropReason, MessageType
from .endpoint import Endpoint
from .errors import (
    AddressError,
    AddressTypeError,
    AlreadyRegistered,
    BadCapture,
    BadChecksum,
    BadFieldLength,
    BadFieldText,
    BadMarker,
    BadModuleName,
    BadNameLength,
    BadRawValue,
    BadVersion,
    BindError,
    BinError,
    DatagramTooLarge,
    DecodeError,
    EncodeError,
    EndpointError,
    EndpointInUse,
    EndpointNotRunning,
    FieldError,
    FieldTypeError,
    IntOutOfRange,
    InvalidAddress,
    InvalidModuleName,
    InvalidOption,
    InvalidVersion,
    LayoutError,
    LengthMismatch,
    MessageMismatch,
    NotRegistered,
    PacketTooLarge,
    PacketTooLong,
    PacketTooShort,
    PacketTooSmall,
    PeerUnreachable,
    StreamBroken,
    StreamGap,
    StrTooLong,
    TrailingBytes,
    TruncatedField,
    UnencodableText,
)
from .framing import StreamDecoder
from .messages import Message, MessageField, MessageRegistry, StreamMessage
from .reader import Field, PacketReader
from .runner import run
from .stats import Stats, StreamStats
from .stream import CloseReason, StreamEndpoint
from .wire import DATAGRAM, DATAGRAM_BIG_ENDIAN, STREAM, STREAM_BIG_ENDIAN, WireFormat
from .writer import PacketWriter, StrValue

__version__ = "0.1.0"

__all__ = [
    "ANY_MODULE",
    "DATAGRAM",
    "DATAGRAM_BIG_ENDIAN",
    "STREAM",
    "STREAM_BIG_ENDIAN",
    "Address",
    "AddressError",
    "AddressTypeError",
    "AlreadyRegistered",
    "BadCapture",
    "BadChecksum",
    "BadFieldLength",
    "BadFieldText",
    "BadMarker",
    "BadModuleName",
    "BadNameLength",
    "BadRawValue",
    "BadVersion",
    "BinError",
    "BindError",
    "CloseReason",
    "DatagramTooLarge",
    "DecodeError",
    "DropReason",
    "EncodeError",
    "Endpoint",
    "EndpointError",
    "EndpointInUse",
    "EndpointNotRunning",
    "Field",
    "FieldError",
    "FieldTypeError",
    "IntOutOfRange",
    "InvalidAddress",
    "InvalidModuleName",
    "InvalidOption",
    "InvalidVersion",
    "LayoutError",
    "LengthMismatch",
    "Message",
    "MessageField",
    "MessageMismatch",
    "MessageRegistry",
    "MessageType",
    "NotRegistered",
    "PacketReader",
    "PacketTooLarge",
    "PacketTooLong",
    "PacketTooShort",
    "PacketTooSmall",
    "PacketWriter",
    "PeerUnreachable",
    "Stats",
    "StrTooLong",
    "StrValue",
    "StreamBroken",
    "StreamDecoder",
    "StreamEndpoint",
    "StreamGap",
    "StreamMessage",
    "StreamStats",
    "TrailingBytes",
    "TruncatedField",
    "UnencodableText",
    "WireFormat",
    "format_address",
    "opensips_crc32",
    "resolve_address",
    "run",
]
