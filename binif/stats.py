"""Endpoint counters and their immutable snapshot.

:class:`Counters` is the mutable tally the endpoint bumps on its hot path
(plain attributes, no locking: one event loop owns it). :class:`Stats` is what
``Endpoint.stats`` returns: a frozen copy taken at one instant, with the
accounting invariant as :meth:`Stats.balanced`. Its mappings are read-only
dicts (:class:`FrozenDict`), so ``dataclasses.asdict``, ``copy``, ``pickle``
and ``json`` take a snapshot as they take any dataclass.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, NoReturn, TypeVar

from .dispatch import DropReason

__all__ = [
    "Counters",
    "FrozenDict",
    "Stats",
    "StreamCounters",
    "StreamStats",
    "udp_kernel_drops",
]

K = TypeVar("K")
V = TypeVar("V")


class FrozenDict(dict[K, V]):
    """A dict that refuses changes: the mappings of a :class:`Stats` snapshot."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("a stats snapshot is read-only: take a new one with ep.stats")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenDict[K, V]:
        return self  # nothing inside can change: keys and values are str and int


class Counters:
    """Live counters of one endpoint."""

    __slots__ = (
        "received",
        "dispatched",
        "handled",
        "handler_errors",
        "handler_timeouts",
        "drops",
        "packets_sent",
        "bytes_sent",
        "send_errors",
        "errors_received",
    )

    def __init__(self) -> None:
        self.received = 0
        self.dispatched = 0
        self.handled = 0
        self.handler_errors = 0
        self.handler_timeouts = 0
        self.drops: dict[DropReason, int] = dict.fromkeys(DropReason, 0)
        self.packets_sent = 0
        self.bytes_sent = 0
        self.send_errors = 0
        self.errors_received = 0


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of an endpoint's counters.

    Every datagram received ends in exactly one of: handled, handler error,
    handler timeout, one drop reason, or still pending (queued or in a handler).
    So at any instant ``received == handled + handler_errors + handler_timeouts
    + dropped + pending`` (:meth:`balanced`), and once the queues have drained
    ``pending`` is 0.
    """

    received: int
    """Datagrams read from the socket (or fed to ``datagram_received``)."""
    dispatched: int
    """Packets put on a module's queue."""
    handled: int
    """Packets whose handler returned normally."""
    handler_errors: int
    """Packets whose handler raised (other than a DecodeError, which is ``undecodable``)."""
    handler_timeouts: int
    """Packets whose handler was cancelled by its timeout (not counted in handler_errors)."""
    drops: Mapping[DropReason, int]
    """Datagrams dropped, by reason; every reason is present."""
    pending: int
    """Packets queued or being handled."""
    queue_depths: Mapping[str, int]
    """Packets waiting in each module's queue (not counting those being handled)."""
    packets_sent: int
    """Packets handed to the transport by send, send_many and replicate (and a stream reply)."""
    bytes_sent: int
    """Their total size."""
    send_errors: int
    """Datagrams the OS refused at once (sendto failed)."""
    errors_received: int
    """Errors the OS reported later on the socket, e.g. ICMP port unreachable (``peer_errors``)."""
    recv_buffer: int | None
    """SO_RCVBUF as granted by the OS (Linux reports twice the requested value)."""
    send_buffer: int | None
    """SO_SNDBUF as granted by the OS."""
    kernel_drops: int | None
    """Datagrams the kernel dropped for this socket (Linux /proc/net/udp*), None elsewhere."""
    peer_errors: Mapping[str, int]
    """ICMP errors per destination (``"host:port"``): a peer not listening, unreachable (Linux)."""

    @property
    def dropped(self) -> int:
        """All drops, every reason together."""
        return sum(self.drops.values())

    @property
    def finished(self) -> int:
        """Datagrams fully accounted: handled, failed, timed out or dropped."""
        return self.handled + self.handler_errors + self.handler_timeouts + self.dropped

    def balanced(self) -> bool:
        """The accounting invariant: ``received == finished + pending``."""
        return self.received == self.finished + self.pending

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (drop reasons as str keys), e.g. for JSON or logging."""
        result = {f.name: getattr(self, f.name) for f in fields(self)}
        result["drops"] = {str(reason): count for reason, count in self.drops.items()}
        result["queue_depths"] = dict(self.queue_depths)
        result["peer_errors"] = dict(self.peer_errors)
        return result

    @classmethod
    def capture(
        cls,
        counters: Counters,
        *,
        pending: int,
        queue_depths: Mapping[str, int],
        recv_buffer: int | None = None,
        send_buffer: int | None = None,
        kernel_drops: int | None = None,
        peer_errors: Mapping[str, int] | None = None,
    ) -> Stats:
        """Freeze ``counters`` and the given gauges into a snapshot."""
        return cls(
            received=counters.received,
            dispatched=counters.dispatched,
            handled=counters.handled,
            handler_errors=counters.handler_errors,
            handler_timeouts=counters.handler_timeouts,
            drops=FrozenDict(counters.drops),
            pending=pending,
            queue_depths=FrozenDict(queue_depths),
            packets_sent=counters.packets_sent,
            bytes_sent=counters.bytes_sent,
            send_errors=counters.send_errors,
            errors_received=counters.errors_received,
            recv_buffer=recv_buffer,
            send_buffer=send_buffer,
            kernel_drops=kernel_drops,
            peer_errors=FrozenDict(peer_errors or {}),
        )


def udp_kernel_drops(inode: int, ipv6: bool) -> int | None:
    """The ``drops`` column of /proc/net/udp(6) for the socket with ``inode``; None if unknown."""
    if not sys.platform.startswith("linux") or inode <= 0:
        return None
    path = "/proc/net/udp6" if ipv6 else "/proc/net/udp"
    wanted = str(inode)
    try:
        with open(path, encoding="ascii") as table:
            next(table, None)
            for line in table:
                columns = line.split()
                # sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
                if len(columns) >= 13 and columns[9] == wanted:
                    return int(columns[12])
    except (OSError, ValueError):
        return None
    return None


class StreamCounters(Counters):
    """Live counters of a TCP endpoint: the shared ones, connections and bytes read."""

    __slots__ = (
        "bytes_received",
        "accepted",
        "closed",
        "links_closed",
        "connects",
        "connect_failures",
        "unreachable",
        "pauses",
    )

    def __init__(self, close_reasons: Iterable[str]) -> None:
        super().__init__()
        self.bytes_received = 0
        self.accepted = 0
        self.closed: dict[str, int] = dict.fromkeys(close_reasons, 0)
        self.links_closed: dict[str, int] = dict(self.closed)
        self.connects = 0
        self.connect_failures = 0
        self.unreachable = 0
        self.pauses = 0


@dataclass(frozen=True, slots=True)
class StreamStats(Stats):
    """A snapshot of a :class:`~binif.stream.StreamEndpoint`'s counters.

    ``received`` counts packets (not reads); the accounting invariant of
    :class:`Stats` holds the same. For connections accepted by the listener,
    ``connections_accepted == connections_open + sum(connections_closed.values())``.
    """

    bytes_received: int
    """Bytes read from every accepted connection."""
    connections_accepted: int
    """Connections the listener accepted (those refused at once included)."""
    connections_open: int
    """Accepted connections open now."""
    connections_closed: Mapping[str, int]
    """Accepted connections closed, by reason (``binif.stream.CloseReason``); every one present."""
    links_open: int
    """Outbound connections (to peers' listeners, for send) open now."""
    links_closed: Mapping[str, int]
    """Outbound connections closed, by reason (a loss: ``connection_error``, ``peer_closed``)."""
    connects: int
    """Outbound connections made (the first and every reconnect)."""
    connect_failures: int
    """Outbound connection attempts that failed (each retried after a backoff)."""
    peer_unreachable: int
    """Packets not sent with PeerUnreachable: send found no connection within connect_timeout,
    or reply found the connection it was to answer on closed."""
    read_pauses: int
    """Times a connection stopped reading because a module's queue was full (backpressure)."""

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, as :meth:`Stats.as_dict`, connections closed by reason as a dict."""
        result = Stats.as_dict(self)
        result["connections_closed"] = {str(k): v for k, v in self.connections_closed.items()}
        result["links_closed"] = {str(k): v for k, v in self.links_closed.items()}
        return result

    @classmethod
    def capture_stream(
        cls,
        counters: StreamCounters,
        *,
        pending: int,
        queue_depths: Mapping[str, int],
        connections_open: int,
        links_open: int,
    ) -> StreamStats:
        """Freeze ``counters`` and the given gauges into a snapshot."""
        base = Stats.capture(counters, pending=pending, queue_depths=queue_depths)
        return cls(
            **{f.name: getattr(base, f.name) for f in fields(Stats)},
            bytes_received=counters.bytes_received,
            connections_accepted=counters.accepted,
            connections_open=connections_open,
            connections_closed=FrozenDict(counters.closed),
            links_open=links_open,
            links_closed=FrozenDict(counters.links_closed),
            connects=counters.connects,
            connect_failures=counters.connect_failures,
            peer_unreachable=counters.unreachable,
            read_pauses=counters.pauses,
        )
