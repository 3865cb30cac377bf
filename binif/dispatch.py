"""The sans-I/O core of the endpoint: a datagram in, a packet for a handler or a drop reason out.

:class:`Dispatcher` holds the handler registry and the allowlist and classifies
``(datagram, source address)`` into a :class:`~binif.reader.PacketReader` bound
for a registered module, or a :class:`DropReason`. :meth:`Route.target` then
picks, for one packet, the callable that handles it (the module's raw handler
or the typed handler of its command). Nothing here touches a socket, a loop or
a clock: the endpoints (:mod:`binif.endpoint`, over :mod:`binif.runtime`) feed it and count.
"""

from __future__ import annotations

import functools
import inspect
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any, ClassVar, Protocol, TypeVar, cast

from .address import Address, IPNetwork, check_network
from .errors import (
    AddressTypeError,
    AlreadyRegistered,
    BadChecksum,
    BadMarker,
    DecodeError,
    InvalidOption,
    NotRegistered,
    PacketTooLong,
    PacketTooShort,
)
from .reader import PacketReader, _first_field
from .wire import DATAGRAM, WireFormat, not_a_wire_format

__all__ = [
    "ANY_MODULE",
    "Address",
    "AllowList",
    "Dispatcher",
    "DropReason",
    "Handler",
    "LogLimiter",
    "MessageHandler",
    "MessageType",
    "Route",
    "Target",
]

ANY_MODULE = "*"
"""Register a handler under this name to take the packets of every module that has none."""

Handler = Callable[[PacketReader, Address], Awaitable[None]]
"""``async def handler(packet: PacketReader, source: Address) -> None``."""


class DropReason(StrEnum):
    """Why a datagram was not handed to a handler. Every drop has exactly one."""

    TOO_SHORT = "too_short"
    """Shorter than the smallest packet (18 bytes in the datagram profile)."""
    TOO_LONG = "too_long"
    """Longer than the largest packet (65535 bytes)."""
    BAD_MARKER = "bad_marker"
    """Does not start with ``P4CK``."""
    BAD_CHECKSUM = "bad_checksum"
    """The CRC in the header does not match the body."""
    MALFORMED = "malformed"
    """Valid CRC but the module name length or module name is invalid."""
    UNKNOWN_MODULE = "unknown_module"
    """No handler is registered for the packet's module (nor for ``ANY_MODULE``)."""
    UNKNOWN_COMMAND = "unknown_command"
    """The module has only typed handlers and none for this command."""
    UNDECODABLE = "undecodable"
    """The fields did not decode: ``from_packet`` or a raw handler raised a DecodeError."""
    QUEUE_FULL = "queue_full"
    """The module's queue was full when the packet arrived."""
    SOURCE_NOT_ALLOWED = "source_not_allowed"
    """The sender's address is outside the allowlist."""
    SHUTDOWN = "shutdown"
    """Still queued (or being handled) when the endpoint closed after its drain timeout."""
    BAD_VERSION = "bad_version"
    """The packet's layout version is not one its handler reads (``versions=``, a message's)."""


_FRAME_REASONS: dict[type[DecodeError], DropReason] = {
    PacketTooShort: DropReason.TOO_SHORT,
    PacketTooLong: DropReason.TOO_LONG,
    BadMarker: DropReason.BAD_MARKER,
    BadChecksum: DropReason.BAD_CHECKSUM,
}


def reason_for(error: DecodeError) -> DropReason:
    """The drop reason for an error raised by :meth:`PacketReader.parse`."""
    return _FRAME_REASONS.get(type(error), DropReason.MALFORMED)


class MessageType(Protocol):
    """What :meth:`Dispatcher.register_message` needs of a typed message class.

    ``MODULE`` and ``COMMAND`` say which packets it describes; ``from_packet``
    decodes one or raises a :class:`~binif.errors.DecodeError`.
    """

    MODULE: ClassVar[str]
    COMMAND: ClassVar[int]

    @classmethod
    def from_packet(cls, reader: PacketReader) -> Any: ...


M = TypeVar("M", bound=MessageType)
MessageHandler = Callable[[M, Address], Awaitable[None]]
"""``async def handler(message: M, source: Address) -> None``."""


@dataclass(frozen=True, slots=True)
class Target:
    """What handles one packet: a callable, its first argument, and its time limit."""

    handler: Callable[[Any, Address], Awaitable[None]]
    """The coroutine function to await."""
    timeout: float | None
    """Seconds before the call is cancelled and counted as a timeout; None for no limit."""
    decode: Callable[[PacketReader], Any] | None = None
    """Turns the packet into the handler's first argument; None passes the reader itself."""
    versions: frozenset[int] | None = None
    """The layout versions the handler reads (stream profile); None for any."""


@dataclass(frozen=True, slots=True)
class Route:
    """Everything registered for one module. Replaced, never mutated, on registration."""

    module: str
    """The module name packets carry."""
    raw: Target | None
    """The handler for every command without a typed handler, or None."""
    messages: Mapping[int, Target] = field(default_factory=lambda: MappingProxyType({}))
    """Typed handlers by command."""
    concurrency: int = 1
    """How many packets of this module may be handled at once (1: strictly in order)."""

    def accepts(self, command: int) -> bool:
        """True if some handler takes packets of ``command``."""
        return self.raw is not None or command in self.messages

    def target(self, reader: PacketReader) -> Target | DropReason:
        """The target for ``reader``; ``UNKNOWN_COMMAND`` if no handler takes its command,
        ``BAD_VERSION`` if the handler that does reads other versions."""
        target = self.messages.get(reader.command, self.raw) if self.messages else self.raw
        if target is None:
            return DropReason.UNKNOWN_COMMAND
        versions = target.versions
        if versions is not None and reader.version not in versions:
            return DropReason.BAD_VERSION
        return target


class AllowList:
    """Source networks packets may come from. IPv4-mapped IPv6 sources match IPv4 networks."""

    __slots__ = ("networks", "_cache")

    _CACHE_LIMIT = 4096

    def __init__(self, networks: Iterable[str | IPNetwork]):
        if isinstance(networks, str | bytes):  # one network, not an iterable of its characters
            raise AddressTypeError(
                f"allow= must be a list of networks, not {type(networks).__name__} {networks!r}"
                f" (write [{networks!r}])",
                address=networks,
            )
        self.networks: tuple[IPNetwork, ...] = tuple(check_network(net) for net in networks)
        self._cache: dict[str, bool] = {}

    def allows(self, host: str) -> bool:
        """True if ``host`` (a numeric address as the socket reports it) is in a network."""
        allowed = self._cache.get(host)
        if allowed is None:
            allowed = self._check(host)
            if len(self._cache) >= self._CACHE_LIMIT:
                self._cache.clear()
            self._cache[host] = allowed
        return allowed

    def _check(self, host: str) -> bool:
        try:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            elif ip.scope_id is not None:
                ip = ipaddress.IPv6Address(host.partition("%")[0])
        return any(ip in net for net in self.networks if net.version == ip.version)

    def __repr__(self) -> str:
        return f"AllowList([{', '.join(str(net) for net in self.networks)}])"


class Dispatcher:
    """Handler registry and classifier: ``classify(data, source)`` -> reader or drop reason."""

    __slots__ = ("wire", "allow", "_routes", "_dropped")

    def __init__(
        self,
        *,
        wire: WireFormat = DATAGRAM,
        allow: Iterable[str | IPNetwork] | None = None,
    ) -> None:
        if not isinstance(wire, WireFormat):
            raise not_a_wire_format(wire)
        self.wire = wire
        self.allow = AllowList(allow) if allow is not None else None
        self._routes: dict[str, Route] = {}
        self._dropped: dict[bytes, DropReason] = {}
        """Why packets of one raw head (version, name, command) of :attr:`wire` are dropped."""

    # --- registry ---------------------------------------------------------------

    @property
    def routes(self) -> Mapping[str, Route]:
        """The current route of every registered module."""
        return MappingProxyType(self._routes)

    def register(
        self,
        module: str,
        handler: Handler,
        *,
        concurrency: int = 1,
        timeout: float | None = None,
        versions: Iterable[int] | None = None,
    ) -> Route:
        """Make ``handler`` take every packet of ``module`` (commands without a typed handler).

        Under :data:`ANY_MODULE` (``"*"``) it takes the packets of every module
        that has no handler of its own, in one queue, in arrival order: a sniffer
        or a catch-all logger, instead of ``unknown_module`` drops. ``versions``
        (stream profile) drops packets of other layout versions as ``bad_version``.
        """
        _check_options(concurrency, timeout)
        _check_module(module)
        check_handler(handler, "register()", "(packet, source)")
        accepted = self._check_versions(versions)
        route = self._routes.get(module)
        if route is not None and route.raw is not None:
            raise AlreadyRegistered(f"a handler is already registered for module {module!r}")
        target = Target(handler, timeout, versions=accepted)
        if route is None:
            route = Route(module, target, concurrency=concurrency)
        else:
            _check_concurrency(route, concurrency)
            route = replace(route, raw=target)
        self._routes[module] = route
        self._dropped.clear()
        return route

    def register_message(
        self,
        message: type[MessageType],
        handler: Callable[[Any, Address], Awaitable[None]],
        *,
        concurrency: int = 1,
        timeout: float | None = None,
    ) -> Route:
        """Make ``handler`` take the packets of ``message.MODULE``/``message.COMMAND``, decoded.

        Several message classes of one module share its route, hence its order
        and its queue; they must agree on ``concurrency``. On the stream profile a
        message class with ``VERSIONS`` (or one ``VERSION``) takes packets of
        those layout versions only (others are ``bad_version`` drops).
        """
        _check_options(concurrency, timeout)
        module, command = _message_key(message)
        check_handler(handler, "register_message()", "(message, source)")
        accepted = _message_versions(message) if self.wire.has_version else None
        target = Target(handler, timeout, message.from_packet, accepted)
        route = self._routes.get(module)
        if route is None:
            route = Route(module, None, MappingProxyType({command: target}), concurrency)
        else:
            if command in route.messages:
                raise AlreadyRegistered(
                    f"a message handler is already registered for {module}/{command}"
                )
            _check_concurrency(route, concurrency)
            route = replace(route, messages=MappingProxyType({**route.messages, command: target}))
        self._routes[module] = route
        self._dropped.clear()
        return route

    def _check_versions(self, versions: Iterable[int] | None) -> frozenset[int] | None:
        if versions is None:
            return None
        if not self.wire.has_version:
            raise ValueError(
                f"the {self.wire.name} profile carries no version: versions= is not for it"
            )
        if isinstance(versions, int | str | bytes):
            raise TypeError(f"versions must be an iterable of ints, e.g. {{4}}, not {versions!r}")
        accepted = frozenset(versions)
        for version in accepted:
            if type(version) is not int or not -0x8000 <= version <= 0x7FFF:
                raise ValueError(f"a version is a signed 16-bit int, not {version!r}")
        if not accepted:
            raise ValueError("versions must name at least one version")
        return accepted

    def unregister(self, module: str) -> Route:
        """Remove every handler of ``module``; return the route that was removed."""
        try:
            route = self._routes.pop(module)
        except KeyError:
            raise NotRegistered(f"no handler is registered for module {module!r}") from None
        self._dropped.clear()
        return route

    # --- classification -----------------------------------------------------------

    def classify(self, data: bytes, source: Address) -> PacketReader | DropReason:
        """Validate one datagram from ``source``: a reader for a registered module, or why not.

        Checks run cheapest and most decisive first: source allowed, then the
        codec's size, marker and checksum, module name, then :meth:`check`.
        A head (version, module, command) once dropped by :meth:`check` is
        dropped again for the same reason, found by its raw bytes after the
        checksum, until the handlers change: a flood for a module nobody
        handles costs no reader.
        """
        allow = self.allow
        if allow is not None and not allow.allows(source[0]):
            return DropReason.SOURCE_NOT_ALLOWED
        wire = self.wire
        # The marker is the first check after the size in both profiles: foreign
        # traffic of a valid size is refused here without raising an exception.
        if (
            type(data) is bytes
            and not data.startswith(wire.marker)
            and wire.min_packet <= len(data) <= wire.max_packet
        ):
            return DropReason.BAD_MARKER
        if type(data) is not bytes:
            try:
                reader = _parse(data, wire=wire)
            except DecodeError as exc:
                return reason_for(exc)
            return self.check(reader)
        try:
            wire.check_frame(data)
            start = wire.header_size
            (name_len,) = wire.length.unpack_from(data, start)
            head = data[wire.version_at : start + wire.length.size + name_len + 4]
            known = self._dropped.get(head)
            if known is not None:
                return known
            reader = _first_field(data, wire)
        except DecodeError as exc:
            return reason_for(exc)
        found = self.check(reader)
        if found is not reader:
            dropped = self._dropped
            if len(dropped) >= _DROPPED_MAX:
                dropped.clear()
            dropped[head] = cast(DropReason, found)
        return found

    def check(self, reader: PacketReader) -> PacketReader | DropReason:
        """A parsed packet (a datagram's, or one a stream delivered): ``reader`` if a handler
        takes it, else why not: unknown module, unknown command, or a version its handler
        does not read."""
        route = self._routes.get(reader.module)
        if route is None:
            route = self._routes.get(ANY_MODULE)
            if route is None:
                return DropReason.UNKNOWN_MODULE
        found = route.target(reader)
        return reader if type(found) is Target else cast(DropReason, found)


_parse = PacketReader.parse

_DROPPED_MAX = 1024
"""Dropped heads a dispatcher keeps (random names cannot grow memory)."""


def _check_module(module: object) -> None:
    if not isinstance(module, str):
        raise TypeError(f"module must be a str (a module name, or '*'), not {module!r}")


def _message_key(message: object) -> tuple[str, int]:
    """``(MODULE, COMMAND)`` of a message class, or a TypeError saying what is missing."""
    module = getattr(message, "MODULE", None)
    command = getattr(message, "COMMAND", None)
    if not isinstance(message, type) or not callable(getattr(message, "from_packet", None)):
        raise TypeError(
            f"register_message() takes a message class (MODULE, COMMAND and a from_packet"
            f" classmethod, e.g. a binif.Message subclass), not {message!r}"
        )
    if not isinstance(module, str) or not isinstance(command, int) or isinstance(command, bool):
        raise TypeError(
            f"{message.__name__} needs a str MODULE and an int COMMAND to be registered,"
            f" not {module!r} and {command!r} (declare module= and command= on the class)"
        )
    return module, command


def check_handler(handler: object, where: str, arguments: str) -> None:
    """Refuse at registration what could never handle a packet, with a TypeError saying why.

    A handler is an ``async def`` function (or an object whose ``__call__`` is
    one) that can be called with two positional arguments.
    """
    if not callable(handler):
        raise TypeError(
            f"{where} needs an async def handler{arguments}, not {type(handler).__name__}"
            f" {handler!r}"
        )
    function: Any = handler
    while isinstance(function, functools.partial):
        function = function.func
    call = function if inspect.isroutine(function) else type(function).__call__
    if not inspect.iscoroutinefunction(call):
        raise TypeError(
            f"{where} needs an async def handler{arguments}; {_name(handler)} is a plain"
            " function: declare it with async def"
        )
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):  # no signature to read (e.g. a C callable): trust it
        return
    try:
        signature.bind(None, None)
    except TypeError:
        shown = ", ".join(signature.parameters)
        raise TypeError(
            f"{where} needs an async def handler{arguments}; {_name(handler)}({shown})"
            " cannot be called with those two arguments"
        ) from None


def _name(handler: object) -> str:
    return getattr(handler, "__qualname__", None) or repr(handler)


def _message_versions(message: type[MessageType]) -> frozenset[int] | None:
    """The layout versions a message class reads: its ``VERSIONS``, its ``VERSION``, or None."""
    versions = getattr(message, "VERSIONS", None)
    if versions is None:
        version = getattr(message, "VERSION", None)
        return None if version is None else frozenset((version,))
    return frozenset(versions)


def _check_options(concurrency: int, timeout: float | None) -> None:
    if not isinstance(concurrency, int) or concurrency < 1:
        raise InvalidOption(f"concurrency must be an int >= 1, not {concurrency!r}")
    if timeout is not None and not timeout > 0:
        raise InvalidOption(f"timeout must be positive seconds or None, not {timeout!r}")


def _check_concurrency(route: Route, concurrency: int) -> None:
    if concurrency != route.concurrency:
        raise InvalidOption(
            f"module {route.module!r} already has concurrency {route.concurrency}:"
            f" every handler of one module shares its queue and workers"
        )


class LogGate:
    """One key's state in a :class:`LogLimiter`: when it may log again, lines held back.

    A hot path (the drop of a datagram) keeps its gate and compares the clock
    with ``until`` itself, which costs no call while the key is quiet.
    """

    __slots__ = ("until", "held")

    def __init__(self) -> None:
        self.until = float("-inf")
        """The clock value from which the next line may be logged."""
        self.held = 0
        """Lines not logged since the last one."""


class LogLimiter:
    """At most one log line per key per ``interval`` seconds, counting the lines it held back.

    The clock is passed in (``now``), so the limiter is tested without waiting.
    """

    __slots__ = ("logger", "interval", "_gates")

    def __init__(self, logger: logging.Logger, interval: float = 1.0) -> None:
        self.logger = logger
        self.interval = interval
        self._gates: dict[object, LogGate] = {}

    def gate(self, key: object) -> LogGate:
        """The gate of ``key``, made on first use; a line is due when ``now >= gate.until``."""
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = LogGate()
        return gate

    def ready(self, key: object, now: float) -> bool:
        """True if a line for ``key`` may be logged now; otherwise count it as held back."""
        gate = self.gate(key)
        if now < gate.until:
            gate.held += 1
            return False
        return True

    def emit(
        self,
        key: object,
        now: float,
        level: int,
        message: str,
        *args: object,
        exc_info: BaseException | None = None,
    ) -> None:
        """Log ``message % args`` for ``key`` (after :meth:`ready`), noting lines held back."""
        gate = self.gate(key)
        gate.until = now + self.interval
        held, gate.held = gate.held, 0
        if held:
            message += " (%d similar suppressed)"
            args = (*args, held)
        self.logger.log(level, message, *args, exc_info=exc_info)

    def log(
        self,
        key: object,
        now: float,
        level: int,
        message: str,
        *args: object,
        exc_info: BaseException | None = None,
    ) -> bool:
        """Log ``message % args`` unless ``key`` was logged less than ``interval`` ago."""
        if not self.ready(key, now):
            return False
        self.emit(key, now, level, message, *args, exc_info=exc_info)
        return True
