"""The TCP endpoint: BIN's stream profile (OpenSIPS 2.4 to 4.0, ``proto_bin``) over the runtime.

:class:`StreamEndpoint` listens for connections and dispatches the packets of
every one of them, through the :class:`~binif.runtime.Runtime` both endpoints
share, to the same handlers as the UDP :class:`~binif.endpoint.Endpoint`. It
sends as each OpenSIPS node does: on its own outbound connection to each
peer's listener, made on first use and made again, with capped and jittered
exponential backoff, after a loss. A reply to a received packet can also go
back on the connection that packet came in on (:meth:`StreamEndpoint.reply`),
as OpenSIPS's clusterer answers a node it does not know yet.

Each connection frames its bytes with a sans-I/O
:class:`~binif.framing.StreamDecoder`. Nothing that arrived is dropped for
lack of room: when a module's queue is full the connections feeding it stop
reading (``pause_reading``) until the workers have taken half of it, so TCP
slows the sender. A framing error closes that connection only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Iterable
from enum import StrEnum
from functools import partial
from typing import Final, SupportsBytes, cast

from .address import check_address, format_address, numeric_address, resolve_address
from .dispatch import Address, DropReason, reason_for
from .errors import DecodeError, EndpointNotRunning, InvalidOption, PeerUnreachable
from .framing import StreamDecoder
from .reader import _Head
from .runtime import DEFAULT_QUEUE_SIZE, Lane, Runtime
from .stats import StreamCounters, StreamStats
from .wire import STREAM, WireFormat
from .writer import PacketWriter

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "CloseReason",
    "StreamEndpoint",
]

logger = logging.getLogger("binif")

DEFAULT_MAX_CONNECTIONS: Final = 1024
"""Accepted connections open at once; more are closed as soon as they are accepted."""

WRITE_HIGH_WATER: Final = 1024 * 1024
"""Bytes an outbound connection buffers before send waits for it to drain (asyncio: 64 KiB)."""

Packet = PacketWriter | bytes | bytearray | memoryview | SupportsBytes
"""What send accepts: a writer, prebuilt bytes, or anything ``bytes()`` turns into a packet."""


class CloseReason(StrEnum):
    """Why a connection closed. Every close has exactly one."""

    PEER_CLOSED = "peer_closed"
    """The peer closed its side (end of stream)."""
    CONNECTION_ERROR = "connection_error"
    """The connection broke: reset by the peer, or another socket error."""
    BAD_MARKER = DropReason.BAD_MARKER.value
    """Framing error: a packet does not start with ``P4CK``."""
    TOO_SHORT = DropReason.TOO_SHORT.value
    """Framing error: a total length under the minimum."""
    TOO_LONG = DropReason.TOO_LONG.value
    """Framing error: a total length over the maximum."""
    MALFORMED = DropReason.MALFORMED.value
    """Framing error: the capability (module) name length or name is invalid."""
    READ_TIMEOUT = "read_timeout"
    """Half a packet arrived and the rest did not within ``read_timeout``."""
    IDLE_TIMEOUT = "idle_timeout"
    """Nothing arrived for ``idle_timeout``."""
    MAX_CONNECTIONS = "max_connections"
    """Accepted while ``max_connections`` were open: closed at once."""
    SOURCE_NOT_ALLOWED = DropReason.SOURCE_NOT_ALLOWED.value
    """Accepted from an address outside ``allow``: closed at once."""
    SHUTDOWN = "shutdown"
    """Closed by :meth:`StreamEndpoint.close`."""


_FRAMING_REASONS: Final = {reason.value: reason for reason in CloseReason}


def _framing_reason(error: DecodeError) -> CloseReason:
    """The close reason for a framing error (the codec's drop reason, by name)."""
    return _FRAMING_REASONS.get(reason_for(error).value, CloseReason.MALFORMED)


class _Connection(asyncio.Protocol):
    """One TCP connection, accepted or outbound: reads, frames and dispatches its packets."""

    def __init__(self, endpoint: StreamEndpoint, link: _Link | None = None) -> None:
        self.endpoint = endpoint
        self.link = link
        """The outbound link this connection serves, or None for an accepted one."""
        self.decoder = StreamDecoder(wire=endpoint.wire)
        self.split = self.decoder.split
        self.transport: asyncio.Transport | None = None
        self.peer: Address = ()
        self.reason: CloseReason | None = None
        """Why it closed (or is closing); the first reason found is the one counted."""
        self.stopped = False
        """Set by :meth:`close`: nothing more is read."""
        self.draining = False
        """The endpoint is closing and sent its end of stream: read until the peer's."""
        self.last_read = 0.0
        self.partial_since: float | None = None
        self.blocked_on: set[Lane] = set()
        self.paused = False
        """The transport's write buffer is over its high-water mark: senders wait."""
        self.writable = asyncio.Event()
        self.writable.set()
        self.lost = asyncio.get_running_loop().create_future()

    # --- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport does not subclass asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        if self.link is not None:
            self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peer = transport.get_extra_info("peername")
        self.peer = tuple(peer) if peer else ()
        self.last_read = time.monotonic()
        self.endpoint._connected(self)

    def data_received(self, data: bytes) -> None:
        if self.stopped:  # closed by us: what still comes is not read
            return
        endpoint = self.endpoint
        endpoint._counters.bytes_received += len(data)
        now = self.last_read = time.monotonic()
        try:
            runs, packets = self.split(data)
        except DecodeError as exc:
            self.close(_framing_reason(exc), exc)
            return
        if packets:
            endpoint._dispatch(self, runs, packets)
        decoder = self.decoder
        error = decoder.error
        if error is not None:  # the packets before the bad one were returned, and dispatched
            self.close(_framing_reason(error), error)
            return
        if decoder.buffered:
            if packets or self.partial_since is None:
                self.partial_since = now
        else:
            self.partial_since = None

    def eof_received(self) -> bool:
        if self.reason is None:
            self.reason = CloseReason.SHUTDOWN if self.draining else CloseReason.PEER_CLOSED
        if self.link is not None:
            self.link.forget(self)
        return False  # close our side too (after what we still have to write)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.reason is None and self.draining:
            self.reason = CloseReason.SHUTDOWN
        if self.reason is None:
            self.reason = CloseReason.PEER_CLOSED if exc is None else CloseReason.CONNECTION_ERROR
            if exc is not None:
                self.endpoint._log_close(self, exc)
        self.paused = False
        self.writable.set()
        if not self.lost.done():
            self.lost.set_result(None)
        self.endpoint._disconnected(self)

    def pause_writing(self) -> None:
        self.paused = True
        self.writable.clear()

    def resume_writing(self) -> None:
        self.paused = False
        self.writable.set()

    # --- control -----------------------------------------------------------------------

    def close(self, reason: CloseReason, detail: object = None, *, abort: bool = False) -> None:
        """Close the connection for ``reason`` (the first reason given is the one counted)."""
        self.stopped = True
        if self.reason is None:
            self.reason = reason
            if detail is not None:
                self.endpoint._log_close(self, detail)
        if self.link is not None:
            self.link.forget(self)
        transport = self.transport
        if transport is not None:
            if abort:
                transport.abort()
            elif not transport.is_closing():
                transport.close()

    def block(self, lane: Lane) -> None:
        """Stop reading until ``lane``'s workers have made room."""
        if lane in self.blocked_on:
            return
        self.blocked_on.add(lane)
        lane.blocked.append(partial(self.unblock, lane))
        if len(self.blocked_on) == 1 and self.transport is not None:
            self.transport.pause_reading()
            self.endpoint._counters.pauses += 1

    def unblock(self, lane: Lane) -> None:
        self.blocked_on.discard(lane)
        transport = self.transport
        if not self.blocked_on and transport is not None and not transport.is_closing():
            transport.resume_reading()


class _Link:
    """The endpoint's own outbound connection to one peer's listener, and its reconnects."""

    def __init__(self, endpoint: StreamEndpoint, address: Address) -> None:
        self.endpoint = endpoint
        self.address = address
        self.connection: _Connection | None = None
        self.connector: asyncio.Task[_Connection] | None = None
        self.waiting = 0
        self.failures = 0
        self.retry_at = 0.0
        self.error = "no attempt yet"

    def forget(self, connection: _Connection) -> None:
        """``connection`` is closing: the next send makes a new one."""
        if self.connection is connection:
            self.connection = None

    async def connect(self) -> _Connection:
        """A connection to the peer, made within ``connect_timeout`` or :class:`PeerUnreachable`."""
        endpoint = self.endpoint
        connector = self.connector
        if connector is None:
            connector = self.connector = asyncio.get_running_loop().create_task(
                self._attempts(), name=f"binif-connect-{format_address(self.address)}"
            )
        self.waiting += 1
        try:
            async with asyncio.timeout(endpoint.connect_timeout):
                return await asyncio.shield(connector)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if connector.cancelled() and not (task is not None and task.cancelling()):
                raise EndpointNotRunning(
                    f"the endpoint closed while a send waited to connect to"
                    f" {format_address(self.address)}"
                ) from None
            raise
        except TimeoutError:
            endpoint._counters.unreachable += 1
            raise PeerUnreachable(
                f"no connection to {format_address(self.address)} within"
                f" {endpoint.connect_timeout:g}s ({self.failures} attempts failed;"
                f" last: {self.error})",
                address=self.address,
            ) from None
        finally:
            self.waiting -= 1
            if not self.waiting and not connector.done():
                # Nobody waits: stop trying; the backoff state stays for the next send.
                connector.cancel()
                if self.connector is connector:
                    self.connector = None

    async def _attempts(self) -> _Connection:
        """Try until connected, waiting a capped, jittered, doubling delay after each failure."""
        endpoint = self.endpoint
        loop = asyncio.get_running_loop()
        host, port = self.address[0], self.address[1]
        try:
            while True:
                delay = self.retry_at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    async with asyncio.timeout(endpoint.connect_timeout):
                        _transport, connection = await loop.create_connection(
                            partial(_Connection, endpoint, self), host, port
                        )
                except (OSError, TimeoutError) as exc:
                    self._failed(exc, loop.time())
                    continue
                if connection.reason is not None:  # lost before we saw it
                    self._failed(ConnectionError(f"closed: {connection.reason}"), loop.time())
                    continue
                self.failures = 0
                endpoint._counters.connects += 1
                self.connection = connection
                return connection
        finally:
            if self.connector is asyncio.current_task():
                self.connector = None

    def _failed(self, exc: BaseException, now: float) -> None:
        endpoint = self.endpoint
        self.failures += 1
        endpoint._counters.connect_failures += 1
        self.error = str(exc) or type(exc).__name__
        backoff = min(endpoint.backoff_max, endpoint.backoff_base * 2 ** (self.failures - 1))
        self.retry_at = now + random.uniform(backoff / 2, backoff)
        endpoint._limiter.log(
            ("connect", self.address),
            now,
            logging.WARNING,
            "cannot connect to %s (attempt %d): %s; next try in %.2fs",
            format_address(self.address),
            self.failures,
            self.error,
            self.retry_at - now,
        )


class StreamEndpoint(Runtime):
    """A BIN endpoint over TCP (the stream profile): a listener, handlers, and a sender.

    ``async with StreamEndpoint(("127.0.0.1", 5555)) as ep:`` listens there (port
    0: any free port; ``None``: no listener, send only). Handlers are
    registered as on :class:`~binif.endpoint.Endpoint`; their ``source`` is the
    connection's peer address. ``await ep.send(packet, (host, port))`` writes on
    the endpoint's own connection to that listener; ``await ep.reply(packet,
    source)`` writes back on the connection a handler's packet came in on.

    ``connect_timeout`` bounds how long a send waits for a connection before
    :class:`~binif.errors.PeerUnreachable`; reconnects wait ``backoff_base``
    doubling up to ``backoff_max`` seconds (times a random 0.5 to 1).
    ``read_timeout`` closes a connection holding half a packet that long,
    ``idle_timeout`` (None: never) one that sent nothing that long;
    ``max_connections`` bounds the accepted connections open at once.
    ``allow``, ``queue_size``, ``peers``, ``drain_timeout`` and
    ``log_interval`` mean what they mean on the UDP endpoint, except that a
    full queue pauses reading instead of dropping.
    """

    def __init__(
        self,
        local_addr: tuple[str, int] | Address | None = ("127.0.0.1", 0),
        *,
        allow: Iterable[str | ipaddress.IPv4Network | ipaddress.IPv6Network] | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        peers: Iterable[Address] = (),
        wire: WireFormat = STREAM,
        connect_timeout: float = 5.0,
        read_timeout: float = 5.0,
        idle_timeout: float | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        backoff_base: float = 0.05,
        backoff_max: float = 2.0,
        drain_timeout: float = 5.0,
        log_interval: float = 1.0,
    ) -> None:
        if wire.total_length is None:
            raise InvalidOption(
                f"the {wire.name} profile has no total length: it cannot frame a stream"
            )
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("read_timeout", read_timeout),
            ("backoff_base", backoff_base),
            ("backoff_max", backoff_max),
        ):
            if not value > 0:
                raise InvalidOption(f"{name} must be positive seconds, not {value!r}")
        if idle_timeout is not None and not idle_timeout > 0:
            raise InvalidOption(
                f"idle_timeout must be positive seconds or None, not {idle_timeout!r}"
            )
        if type(max_connections) is not int or max_connections < 1:
            raise InvalidOption(f"max_connections must be an int >= 1, not {max_connections!r}")
        super().__init__(
            wire=wire,
            allow=allow,
            queue_size=queue_size,
            drain_timeout=drain_timeout,
            log_interval=log_interval,
            counters=StreamCounters(CloseReason),
        )
        self._counters: StreamCounters
        if local_addr is not None:
            check_address(local_addr, what="local_addr", any_port=True)
        self.local_addr = None if local_addr is None else tuple(local_addr)
        self.peers: tuple[Address, ...] = tuple(peers)
        for peer in self.peers:
            check_address(peer, what="peers=")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._check = self._core.check
        self._server: asyncio.AbstractServer | None = None
        self._sockname: Address | None = None
        self._accepted: set[_Connection] = set()
        self._links: dict[Address, _Link] = {}
        self._outbound: set[_Connection] = set()
        self._sources: dict[Address, _Connection] = {}
        """Open connections by their peer address (a handler's ``source``), for reply."""
        self._reaper: asyncio.Task[None] | None = None

    # --- the sockets -------------------------------------------------------------------

    async def _open(self) -> None:
        """Resolve the bind address and peers, listen, start the timeout checks."""
        loop = asyncio.get_running_loop()
        self.peers = tuple([await resolve_address(peer, what="peers=") for peer in self.peers])
        if self.local_addr is not None:
            bind = await resolve_address(
                self.local_addr, what="local_addr", any_port=True, passive=True
            )
            self._server = await loop.create_server(
                partial(_Connection, self), bind[0], bind[1], reuse_address=True
            )
            self._sockname = tuple(self._server.sockets[0].getsockname())
        self._reaper = loop.create_task(self._reap(), name="binif-stream-timeouts")

    async def _shut(self) -> None:
        """Stop listening; let peers finish what they are writing; close every connection.

        Each accepted connection gets our end of stream (nothing more is
        written on it) and is read until the peer closes its side, at most ``drain_timeout``:
        a peer that stops sending when it sees the end loses nothing it sent.
        """
        if self._server is not None:
            self._server.close()
        if self._reaper is not None:
            self._reaper.cancel()
        for link in self._links.values():
            if link.connector is not None:
                link.connector.cancel()
        for connection in [*self._outbound]:
            connection.close(CloseReason.SHUTDOWN)
        accepted = [*self._accepted]
        for connection in accepted:
            transport = connection.transport
            connection.draining = True
            if transport is not None and not transport.is_closing() and transport.can_write_eof():
                transport.write_eof()
        pending = [connection.lost for connection in [*accepted, *self._outbound]]
        if pending:
            _done, late = await asyncio.wait(pending, timeout=self.drain_timeout)
            if late:
                for connection in [*self._accepted, *self._outbound]:
                    connection.close(CloseReason.SHUTDOWN, abort=True)
                await asyncio.wait(late, timeout=1.0)

    async def close(self) -> None:
        """Stop accepting, drain the peers' streams and the queues, close every connection.

        Accepted connections are read until their peers close them (at most
        ``drain_timeout``), then queued packets are handled (again at most
        ``drain_timeout``); what is left is counted as ``shutdown`` drops.
        Outbound connections are closed after what was written to them.
        Idempotent.
        """
        await super().close()

    @property
    def local_address(self) -> Address:
        """The address the listener is bound to, e.g. ``("127.0.0.1", 40312)``."""
        if self._sockname is None:
            raise EndpointNotRunning("the endpoint is not listening")
        return self._sockname

    # --- connections ---------------------------------------------------------------------

    def _connected(self, connection: _Connection) -> None:
        if connection.peer:
            self._sources[connection.peer] = connection
        if connection.link is not None:
            self._outbound.add(connection)
            return
        self._counters.accepted += 1
        self._accepted.add(connection)
        allow = self._core.allow
        if self._state != "running":
            connection.close(CloseReason.SHUTDOWN, abort=True)
        elif not connection.peer:  # reset before we could ask who it was
            connection.close(CloseReason.CONNECTION_ERROR, "no peer address", abort=True)
        elif allow is not None and not allow.allows(str(connection.peer[0])):
            connection.close(CloseReason.SOURCE_NOT_ALLOWED, f"not in {allow!r}", abort=True)
        elif len(self._accepted) > self.max_connections:
            connection.close(
                CloseReason.MAX_CONNECTIONS, f"{self.max_connections} already open", abort=True
            )

    def _disconnected(self, connection: _Connection) -> None:
        connection.blocked_on.clear()  # the lanes' callbacks to it now do nothing
        reason = connection.reason or CloseReason.PEER_CLOSED
        if self._sources.get(connection.peer) is connection:
            del self._sources[connection.peer]
        if connection.link is not None:
            connection.link.forget(connection)
            self._outbound.discard(connection)
            self._counters.links_closed[reason] += 1
            return
        self._accepted.discard(connection)
        self._counters.closed[reason] += 1

    def _log_close(self, connection: _Connection, detail: object) -> None:
        reason = connection.reason
        now = time.monotonic()
        self._limiter.log(
            ("close", reason),
            now,
            logging.INFO if reason is CloseReason.PEER_CLOSED else logging.WARNING,
            "closed %s connection %s %s: %s (%s)",
            "outbound" if connection.link is not None else "accepted",
            "to" if connection.link is not None else "from",
            format_address(connection.peer),
            reason,
            detail,
        )

    def _dispatch(
        self, connection: _Connection, runs: list[tuple[_Head, int, int]], packets: list[bytes]
    ) -> None:
        """Queue each packet for its module, or count why not; pause the connection if full."""
        self._counters.received += len(packets)
        for lane in self._admit_all(runs, packets, connection.peer):
            connection.block(lane)

    async def _reap(self) -> None:
        """Close connections stalled on half a packet (``read_timeout``) or idle too long."""
        read_timeout, idle_timeout = self.read_timeout, self.idle_timeout
        tick = min(read_timeout, idle_timeout or read_timeout) / 4
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for connection in [*self._accepted, *self._outbound]:
                if connection.reason is not None or connection.blocked_on:
                    continue  # closing already, or paused by us: not the peer's stall
                since = connection.partial_since
                if since is not None and now - since >= read_timeout:
                    connection.close(
                        CloseReason.READ_TIMEOUT,
                        f"half a packet waited {now - since:.1f}s (read_timeout {read_timeout:g}s)",
                    )
                elif (
                    idle_timeout is not None
                    and connection.link is None  # our own links mostly only write
                    and now - connection.last_read >= idle_timeout
                ):
                    connection.close(
                        CloseReason.IDLE_TIMEOUT,
                        f"nothing for {now - connection.last_read:.1f}s",
                    )

    # --- sending -----------------------------------------------------------------------

    def _link(self, addr: Address) -> _Link:
        if self._state != "running":
            raise EndpointNotRunning(f"send() on an endpoint that is {self._state}")
        host = check_address(addr, what="send address")[0]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        key = numeric_address(addr, family, what="send address")
        link = self._links.get(key)
        if link is None:
            link = self._links[key] = _Link(self, key)
        if type(addr) is tuple:
            self._links[addr] = link
        return link

    async def send(self, packet: Packet, addr: Address) -> int:
        """Write one packet on the connection to the listener at ``addr``; return its size.

        Connects on first use and after a loss (with backoff); raises
        :class:`~binif.errors.PeerUnreachable` when no connection is made within
        ``connect_timeout``. Returns once the bytes are handed to the transport,
        waiting while its buffer is over the high-water mark.
        """
        data = packet if type(packet) is bytes else bytes(packet)
        link = self._links.get(addr) if type(addr) is tuple else None
        if link is None or self._state != "running":
            link = self._link(addr)
        connection = link.connection
        transport = None if connection is None else connection.transport
        if connection is None or transport is None or transport.is_closing():
            # is_closing: a connection failing is never written to (asyncio would drop it)
            connection = await link.connect()
            transport = connection.transport
            assert transport is not None
        return await self._write(connection, transport, data)

    async def reply(self, packet: Packet, source: Address) -> int:
        """Write one packet back on the connection ``source`` sent on; return its size.

        ``source`` is the one a handler was given: the peer's end of an accepted
        connection (or of an outbound one). Nothing is reconnected, since that
        address is not a listener: when the connection has closed, raises
        :class:`~binif.errors.PeerUnreachable` (counted in ``peer_unreachable``).
        Waits, as :meth:`send` does, while the transport's buffer is full.
        """
        if type(source) is not tuple:
            raise TypeError(f"reply source must be a tuple, not {type(source).__name__}")
        data = packet if type(packet) is bytes else bytes(packet)
        if self._state != "running":
            raise EndpointNotRunning(f"reply() on an endpoint that is {self._state}")
        connection = self._sources.get(source)
        transport = None if connection is None else connection.transport
        if (
            connection is None
            or transport is None
            or connection.reason is not None
            or transport.is_closing()
        ):
            self._counters.unreachable += 1
            reason = connection.reason if connection is not None else None
            raise PeerUnreachable(
                f"no open connection from {format_address(source)} to reply on"
                f" ({reason or 'closed'})",
                address=source,
            )
        return await self._write(connection, transport, data)

    async def _write(
        self, connection: _Connection, transport: asyncio.Transport, data: bytes
    ) -> int:
        """Hand ``data`` to ``connection``'s transport, count it, wait while its buffer is full."""
        transport.write(data)
        counters = self._counters
        counters.packets_sent += 1
        counters.bytes_sent += len(data)
        if connection.paused:
            await connection.writable.wait()
            if self._state != "running":
                raise EndpointNotRunning(f"the endpoint closed while a send waited: {self._state}")
        return len(data)

    async def send_many(self, packet: Packet, addrs: Iterable[Address]) -> int:
        """Send one build of ``packet`` to every address in ``addrs``, at once; return total bytes.

        Every destination is tried; if some are unreachable, PeerUnreachable
        names them after the others were sent to.
        """
        data = packet if type(packet) is bytes else bytes(packet)
        destinations = list(addrs)
        for addr in destinations:
            self._link(addr)
        results = await asyncio.gather(
            *(self.send(data, addr) for addr in destinations), return_exceptions=True
        )
        failed = [
            (addr, result)
            for addr, result in zip(destinations, results, strict=True)
            if isinstance(result, BaseException)
        ]
        for _addr, result in failed:
            if not isinstance(result, PeerUnreachable):
                raise result
        if failed:
            names = ", ".join(format_address(addr) for addr, _ in failed)
            raise PeerUnreachable(
                f"{len(failed)} of {len(destinations)} peers unreachable: {names}"
                f" (sent to the others)",
                address=[addr for addr, _ in failed],
            )
        return sum(cast(int, result) for result in results)

    async def replicate(self, packet: Packet) -> int:
        """Send ``packet`` to every address in ``peers``; return total bytes sent."""
        return await self.send_many(packet, self.peers)

    # --- stats ---------------------------------------------------------------------------

    @property
    def stats(self) -> StreamStats:
        """A snapshot of the counters, queue depths and connections, taken now."""
        pending, queue_depths = self._gauges()
        return StreamStats.capture_stream(
            self._counters,
            pending=pending,
            queue_depths=queue_depths,
            connections_open=len(self._accepted),
            links_open=len(self._outbound),
        )

    def __repr__(self) -> str:
        where = format_address(self._sockname) if self._sockname else "not listening"
        return f"StreamEndpoint({where}, {self._state}, modules={sorted(self._lanes)})"
