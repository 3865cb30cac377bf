"""The exception hierarchy: every error binif raises derives from :class:`BinError`.

Split by who is at fault, as h11 does: :class:`DecodeError` means the bytes that
arrived are malformed (the peer's fault), :class:`EncodeError` means the caller
asked for something the wire cannot carry (ours). Both are ``ValueError`` too.
"""

from __future__ import annotations


class BinError(Exception):
    """Root of every exception raised by binif."""


# --- decode side: the received bytes are not a valid packet -------------------


class DecodeError(BinError, ValueError):
    """A received packet is malformed."""


class PacketTooShort(DecodeError):
    """The packet (a datagram, or the length a stream header declares) is below the minimum."""


class PacketTooLong(DecodeError):
    """The packet (a datagram, or the length a stream header declares) is above the maximum."""


class BadMarker(DecodeError):
    """The packet does not start with the ``P4CK`` marker."""


class BadChecksum(DecodeError):
    """The CRC in the header does not match the body."""


class LengthMismatch(DecodeError):
    """The total length in a stream packet's header is not the size of the packet given."""


class BadVersion(DecodeError):
    """The packet's layout version is not the one the message class (or handler) reads."""


class BadNameLength(DecodeError):
    """The module name length is not positive or runs past the packet."""


class BadModuleName(DecodeError):
    """The module name bytes are not valid UTF-8."""


class FieldError(DecodeError):
    """A field cannot be read; ``index`` and ``offset`` say which and where."""

    def __init__(self, message: str, *, index: int, offset: int) -> None:
        super().__init__(message)
        self.index = index
        self.offset = offset


class TruncatedField(FieldError):
    """A field runs past the end of the packet."""


class BadFieldLength(FieldError):
    """A str field declares a negative length."""


class TrailingBytes(FieldError):
    """Bytes are left over after the last field the layout expects."""


class BadFieldText(FieldError):
    """A str field a message declares as text is not valid UTF-8."""


class MessageMismatch(DecodeError):
    """The packet's module or command is not the one the message class describes."""


class BadRawValue(DecodeError):
    """A raw C value carried in a str field has a size no platform uses."""


class StreamBroken(BinError, RuntimeError):
    """A stream decoder was fed again after it refused its stream: close the connection."""


# --- encode side: the caller asked for something the wire cannot carry --------


class EncodeError(BinError, ValueError):
    """A packet cannot be built as asked."""


class PacketTooLarge(EncodeError):
    """The packet would exceed the wire format's maximum size."""


class PacketTooSmall(EncodeError):
    """The packet would be shorter than the smallest one a receiver accepts."""


class StrTooLong(EncodeError):
    """A str field is longer than the wire format's length prefix can state."""


class InvalidVersion(EncodeError):
    """A version missing where the wire format has one, given where it has none, or not int16."""


class IntOutOfRange(EncodeError):
    """An int field is outside the signed 32-bit range."""


class InvalidModuleName(EncodeError):
    """A module name is empty or too long to fit in a packet."""


class UnencodableText(EncodeError):
    """Text given for a str field or module name cannot be encoded as UTF-8."""


class FieldTypeError(EncodeError, TypeError):
    """A value of the wrong type was given for a field, the module name or the command."""


class LayoutError(BinError, ValueError):
    """A layout is invalid.

    A character other than ``s`` and ``i``, values that do not match it in
    number, or a negative number of fields to skip.
    """


class DatagramTooLarge(EncodeError):
    """A datagram is bigger than one UDP datagram of the address family can carry."""


# --- addresses: an address given to binif is not one it can use ---------------


class AddressError(BinError):
    """An address, bind address, peer or allowlist entry cannot be used; ``address`` is it."""

    def __init__(self, message: str, *, address: object) -> None:
        super().__init__(message)
        self.address = address


class InvalidAddress(AddressError, ValueError):
    """An address has the right type but a wrong value: port 70000, a bad host, a host name."""


class AddressTypeError(AddressError, TypeError):
    """An address is of the wrong type: a str where a (host, port) tuple belongs, a str port."""


# --- endpoint: the caller misused the endpoint API ----------------------------


class EndpointError(BinError):
    """The endpoint was used in a way it does not support."""


class EndpointNotRunning(EndpointError, RuntimeError):
    """The endpoint is not running: not started yet, closed, or its socket closed under it."""


class InvalidOption(EndpointError, ValueError):
    """An endpoint or registration option it cannot take: queue_size 0, concurrency 0, ..."""


class EndpointInUse(EndpointError, RuntimeError):
    """start() on an endpoint that is already running (e.g. a nested ``async with``)."""


class BindError(EndpointError, OSError):
    """The socket could not be bound: ``errno``, ``strerror`` the OS's, ``filename`` the address."""

    def __str__(self) -> str:
        return f"cannot bind {self.filename}: {self.strerror}"


class AlreadyRegistered(EndpointError, ValueError):
    """A handler is already registered for this module (or module and command)."""


class NotRegistered(EndpointError, LookupError):
    """No handler is registered for this module."""


class PeerUnreachable(EndpointError, ConnectionError):
    """A stream endpoint could not connect to a peer within ``connect_timeout``.

    The packet given to ``send`` was not sent; ``address`` is the peer's.
    """

    def __init__(self, message: str, *, address: object) -> None:
        super().__init__(message)
        self.address = address


# --- captures: reading BIN traffic out of a pcap -------------------------------


class BadCapture(BinError, ValueError):
    """A file is not a pcap or pcapng capture binif can read, or is cut inside a frame."""


class StreamGap(DecodeError):
    """Bytes of a captured TCP stream are missing inside a packet: that packet is lost."""
