"""The UDP endpoint: a datagram socket in front of the shared runtime, and a sender.

:class:`Endpoint` is a thin :class:`asyncio.DatagramProtocol` shell: it binds
the socket, classifies each datagram with the sans-I/O
:class:`~binif.dispatch.Dispatcher` and hands it to its module's bounded queue
in the :class:`~binif.runtime.Runtime` (or counts a named drop); the runtime's
worker tasks await the handlers. No task is created per packet, nothing on the
receive path blocks or grows without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import struct
import sys
import time
from collections.abc import Iterable
from typing import Final, SupportsBytes, cast

from .address import (
    Address,
    IPNetwork,
    check_address,
    format_address,
    numeric_address,
    resolve_address,
)
from .dispatch import DropReason
from .errors import (
    AddressTypeError,
    BindError,
    DatagramTooLarge,
    EndpointNotRunning,
    InvalidOption,
)
from .reader import PacketReader
from .runtime import DEFAULT_QUEUE_SIZE, Runtime
from .stats import Counters, Stats, udp_kernel_drops
from .wire import DATAGRAM, WireFormat
from .writer import PacketWriter, packet_bytes

__all__ = [
    "DEFAULT_QUEUE_SIZE",
    "DEFAULT_RECV_BUFFER",
    "MAX_DATAGRAM_IPV4",
    "MAX_DATAGRAM_IPV6",
    "Endpoint",
]

logger = logging.getLogger("binif")

DEFAULT_RECV_BUFFER: Final = 4 * 1024 * 1024
"""SO_RCVBUF requested by default: room for bursts (the OS may grant less)."""
MAX_DATAGRAM_IPV4: Final = 65507
"""Largest UDP payload over IPv4: 65535 - 20 (IP header) - 8 (UDP header)."""
MAX_DATAGRAM_IPV6: Final = 65527
"""Largest UDP payload over IPv6 without jumbograms: 65535 - 8 (UDP header)."""

Packet = PacketWriter | bytes | bytearray | memoryview | SupportsBytes
"""What send accepts: a writer, prebuilt bytes, or a message (anything with ``__bytes__``)."""

_RECVERR: Final = sys.platform.startswith("linux")
"""Ask Linux for ICMP errors on the unconnected socket (IP_RECVERR), per destination."""
_IP_RECVERR: Final = getattr(socket, "IP_RECVERR", 11)
_IPV6_RECVERR: Final = getattr(socket, "IPV6_RECVERR", 25)
_EXTENDED_ERR: Final = struct.Struct("=IBBBxII")
"""struct sock_extended_err: ee_errno, ee_origin, ee_type, ee_code, pad, ee_info, ee_data."""
_ORIGIN_ICMP: Final = (2, 3)
"""SO_EE_ORIGIN_ICMP and SO_EE_ORIGIN_ICMP6: a router or the peer's host reported it."""
_SEND_ATTEMPTS: Final = 3
"""A send that only collected an earlier datagram's ICMP error is tried again, this often."""
_DESTINATIONS_MAX: Final = 4096
"""Checked destinations kept, so a repeated send skips the check."""


class Endpoint(Runtime, asyncio.DatagramProtocol):
    """A BIN endpoint over UDP: receives packets for registered modules and sends packets.

    ``async with Endpoint(("127.0.0.1", 0)) as ep:`` binds and starts it;
    ``ep.register("dialog", handler)`` (or ``@ep.handler("dialog")``) routes a
    module's packets to ``async def handler(packet, source)``. Packets of one
    module are handled one at a time in arrival order unless the handler opts
    into ``concurrency``; each module has a queue of ``queue_size`` packets,
    and a datagram that finds it full is dropped as ``queue_full``.

    Handlers are ``async def`` functions taking ``(packet, source)`` (typed
    ones ``(message, source)``), checked when registered.

    Addresses are ``(host, port)`` tuples, or ``(host, port, flowinfo,
    scope_id)`` for IPv6, checked by :mod:`binif.address` before anything
    touches the socket: a wrong type raises ``AddressTypeError``, a bad value
    (port 70000, a host that is no address) ``InvalidAddress``. The bind
    address and ``peers`` may use host names, resolved once at :meth:`start`
    without blocking the loop; :meth:`send` and :meth:`send_many` take numeric
    addresses only. Bound to ``"::"``, the endpoint is dual-stack and sends to
    IPv4 addresses as IPv4-mapped ones; bound to another IPv6 address it
    refuses IPv4 destinations, and an IPv4 endpoint refuses IPv6 ones.

    ``allow`` restricts sources to networks (strings or ``ipaddress`` objects);
    ``recv_buffer``/``send_buffer`` request socket buffer sizes (None keeps the
    OS default); ``peers`` are the destinations of :meth:`replicate`;
    ``drain_timeout`` bounds how long :meth:`close` lets queued packets finish.

    An endpoint is single-use: after :meth:`close` (or once its socket closed
    under it: ``running`` False, ``failure`` says why) create a new one.
    """

    _unit = "datagram"

    def __init__(
        self,
        local_addr: tuple[str, int] | Address = ("127.0.0.1", 0),
        *,
        allow: Iterable[str | IPNetwork] | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        recv_buffer: int | None = DEFAULT_RECV_BUFFER,
        send_buffer: int | None = None,
        peers: Iterable[Address] = (),
        wire: WireFormat = DATAGRAM,
        drain_timeout: float = 5.0,
        log_interval: float = 1.0,
    ) -> None:
        super().__init__(
            wire=wire,
            allow=allow,
            queue_size=queue_size,
            drain_timeout=drain_timeout,
            log_interval=log_interval,
            counters=Counters(),
        )
        for name, size in (("recv_buffer", recv_buffer), ("send_buffer", send_buffer)):
            if size is not None and (type(size) is not int or size < 1):
                raise InvalidOption(f"{name} must be a size in bytes >= 1 or None, not {size!r}")
        check_address(local_addr, what="bind address", any_port=True)
        self.local_addr: Address = tuple(local_addr)
        self.recv_buffer_requested = recv_buffer
        self.send_buffer_requested = send_buffer
        if isinstance(peers, str | bytes):
            check_address(peers, what="peers=")  # a str: refused, with a hint
        given_peers = tuple(peers)
        for peer in given_peers:
            check_address(peer, what="peers=")
        self.peers: tuple[Address, ...] = tuple(tuple(peer) for peer in given_peers)
        """The destinations of :meth:`replicate`: numeric (host names resolved) once started."""
        self._classify = self._core.classify
        self._transport: asyncio.DatagramTransport | None = None
        self._lost: asyncio.Future[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._in_send = False
        self._send_failed = False
        self._family = socket.AF_INET
        self._dual_stack = False
        self._sock: socket.socket | None = None
        self._destinations: dict[Address, Address] = {}
        self._peer_errors: dict[str, int] = {}
        self._retry_send = False
        self.last_send_error: OSError | None = None
        """The OS error of the last datagram the OS refused (``send`` returned 0)."""
        self._sockname: Address | None = None
        self._inode = 0
        self._recv_buffer: int | None = None
        self._closed_kernel_drops: int | None = None
        self._send_buffer: int | None = None

    # --- the socket --------------------------------------------------------------------

    async def _open(self) -> None:
        """Resolve the bind address and peers, bind the socket, attach this protocol to it."""
        loop = asyncio.get_running_loop()
        sock = await self._bind()
        try:
            self.peers = tuple(
                [
                    await resolve_address(
                        peer, self._family, dual_stack=self._dual_stack, what="peers="
                    )
                    for peer in self.peers
                ]
            )
            self._lost = loop.create_future()
            transport, _ = await loop.create_datagram_endpoint(lambda: self, sock=sock)
        except BaseException:
            sock.close()
            raise
        self._transport = transport

    async def _bind(self) -> socket.socket:
        where = await resolve_address(
            self.local_addr, what="bind address", any_port=True, passive=True
        )
        family = socket.AF_INET6 if len(where) == 4 else socket.AF_INET
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as exc:
            raise _bind_error(where, exc) from exc
        try:
            sock.setblocking(False)
            self._set_buffer(sock, socket.SO_RCVBUF, self.recv_buffer_requested)
            self._set_buffer(sock, socket.SO_SNDBUF, self.send_buffer_requested)
            dual_stack = family == socket.AF_INET6 and where[0] == "::"
            if dual_stack:  # whatever the system default, "::" reaches IPv4 too
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            if _RECVERR:
                sock.setsockopt(socket.IPPROTO_IP, _IP_RECVERR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVERR, 1)
            try:
                sock.bind(where)
            except OSError as exc:
                raise _bind_error(where, exc) from exc
            self._recv_buffer = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            self._send_buffer = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            self._sockname = tuple(sock.getsockname())
            self._inode = os.fstat(sock.fileno()).st_ino
        except BaseException:
            sock.close()
            raise
        self._family = family
        self._dual_stack = dual_stack
        self._sock = sock
        return sock

    @staticmethod
    def _set_buffer(sock: socket.socket, option: int, size: int | None) -> None:
        if size is None:
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
        except OSError as exc:
            logger.warning("could not set socket buffer option %d to %d: %s", option, size, exc)

    async def _shut(self) -> None:
        """Close the socket and wait (up to a second) until asyncio lets go of it."""
        # The socket's counter goes with it: keep its last value for later snapshots.
        if self._inode and self.failure is None:  # after a failure, read when it failed
            self._closed_kernel_drops = udp_kernel_drops(
                self._inode, self._family == socket.AF_INET6
            )
        transport, lost = self._transport, self._lost
        if transport is not None:
            transport.close()
        if lost is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(lost), 1.0)

    async def close(self) -> None:
        """Stop receiving, let queued packets finish (up to ``drain_timeout``), stop workers.

        Packets still queued or in a handler when the timeout passes are
        cancelled and counted as ``shutdown`` drops. Senders waiting on flow
        control get :class:`~binif.errors.EndpointNotRunning`. Idempotent.
        """
        await super().close()
        self._writable.set()

    @property
    def local_address(self) -> Address:
        """The address the socket is bound to, e.g. ``("127.0.0.1", 40312)``."""
        if self._sockname is None:
            raise EndpointNotRunning("the endpoint is not started")
        return self._sockname

    @property
    def transport(self) -> asyncio.DatagramTransport:
        """The asyncio transport (e.g. for ``set_write_buffer_limits``)."""
        if self._transport is None:
            raise EndpointNotRunning("the endpoint is not started")
        return self._transport

    # --- receiving ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (asyncio calls this once bound)."""
        # uvloop's UDPTransport does not subclass asyncio.DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        """The socket is closed: nothing more will be received.

        Outside :meth:`close` (the loop closed the transport on a fatal error,
        or something else closed it), the endpoint stops: ``running`` turns
        False, ``failure`` keeps the reason, and :meth:`send` raises
        :class:`~binif.errors.EndpointNotRunning`.
        """
        if self._state == "running":
            self._closed_kernel_drops = self._kernel_drops()
            self._fail(
                exc or ConnectionError("the socket was closed by something else than close()")
            )
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        self._writable.set()

    def datagram_received(self, data: bytes, addr: Address) -> None:
        """Classify one datagram and queue it for its module, or count why it is dropped."""
        counters = self._counters
        counters.received += 1
        result = self._classify(data, addr)
        if type(result) is PacketReader:
            lane = self._lane(result.module)
            if len(lane.items) < lane.limit:
                self._admit(lane, result, addr)
            else:
                self._drop(DropReason.QUEUE_FULL, addr, data, result.module)
        elif isinstance(result, DropReason):
            self._drop(result, addr, data, None)

    # --- sending -------------------------------------------------------------------------

    def pause_writing(self) -> None:
        """The transport's buffer is over its high-water mark: hold senders."""
        self._writable.clear()

    def resume_writing(self) -> None:
        """The transport's buffer drained: let senders go on."""
        self._writable.set()

    @property
    def paused(self) -> bool:
        """True while flow control holds senders."""
        return not self._writable.is_set()

    def error_received(self, exc: Exception) -> None:
        """An OS error on the socket: counted and logged, never fatal.

        On Linux the socket asks for ICMP errors (``IP_RECVERR``): each one says
        which destination did not take a datagram (no one listening, host or
        network unreachable) and is counted in ``errors_received`` and, per
        destination, in ``peer_errors``. An error the OS gives for the datagram
        being sent is a ``send_errors``.
        """
        reports = self._read_error_queue()
        if self._in_send:
            if reports and getattr(exc, "errno", None) in reports:
                # The OS handed this send an earlier datagram's ICMP error instead
                # of sending: the datagram was not sent, try it again.
                self._send_failed = self._retry_send = True
                return
            self._send_failed = True
            self._retry_send = False
            self._counters.send_errors += 1
            self.last_send_error = exc if isinstance(exc, OSError) else OSError(str(exc))
            self._limiter.log(
                ("send_error", type(exc)), time.monotonic(), logging.WARNING, "send failed: %r", exc
            )
        elif not reports:
            self._counters.errors_received += 1
            self._limiter.log(
                ("error_received", type(exc)),
                time.monotonic(),
                logging.WARNING,
                "socket error: %r",
                exc,
            )

    def _read_error_queue(self) -> set[int]:
        """Count the ICMP errors queued on the socket per destination; return their errnos."""
        sock = self._sock
        if not _RECVERR or sock is None:
            return set()
        found: set[int] = set()
        counters = self._counters
        peer_errors = self._peer_errors
        while True:
            try:
                _data, ancillary, _flags, destination = sock.recvmsg(0, 512, socket.MSG_ERRQUEUE)
            except OSError:  # EAGAIN: the queue is empty (or closed)
                return found
            for _level, _type, payload in ancillary:
                if len(payload) < _EXTENDED_ERR.size:
                    continue
                code, origin = _EXTENDED_ERR.unpack_from(payload)[:2]
                if origin not in _ORIGIN_ICMP:
                    continue
                found.add(code)
                where = format_address(destination)
                counters.errors_received += 1
                peer_errors[where] = peer_errors.get(where, 0) + 1
                self._limiter.log(
                    ("peer_error", where),
                    time.monotonic(),
                    logging.WARNING,
                    "datagram to %s not taken: %s (counted in stats.peer_errors)",
                    where,
                    os.strerror(code) if code else "ICMP error",
                )

    async def send(self, packet: Packet, addr: Address) -> int:
        """Send one packet to ``addr``; return the bytes sent (0 if the OS refused it).

        ``packet`` is a :class:`~binif.writer.PacketWriter`, bytes or a message;
        ``addr`` a numeric ``(host, port)`` tuple (see the class docstring).
        Waits while flow control has paused the endpoint. Raises
        :class:`~binif.errors.DatagramTooLarge` before sending a datagram too big
        for the address family, ``AddressTypeError``/``InvalidAddress`` for an
        address it cannot send to, and
        :class:`~binif.errors.EndpointNotRunning` unless running. When the OS
        refuses the datagram, ``last_send_error`` says why.
        """
        data = packet if type(packet) is bytes else packet_bytes(packet)
        transport = self._transport
        if transport is None or self._state != "running":
            raise self._not_running("send()")
        try:
            destination = self._destinations[addr]
        except (KeyError, TypeError):
            destination = self._destination(addr, "send()")
        else:
            if type(addr[1]) is not int:  # 5999.0 == 5999 found it: check the real thing
                destination = self._destination(addr, "send()")
        if len(data) > MAX_DATAGRAM_IPV4:  # below it, any family carries it
            self._check_size(data, destination)
        if not self._writable.is_set():
            await self._wait_writable()
        return self._sendto(transport, data, destination)

    async def send_many(self, packet: Packet, addrs: Iterable[Address]) -> int:
        """Send one build of ``packet`` to every address in ``addrs``; return total bytes sent.

        Every address is checked before the first datagram leaves.
        """
        data = packet if type(packet) is bytes else packet_bytes(packet)
        if self._transport is None or self._state != "running":
            raise self._not_running("send_many()")
        if isinstance(addrs, str | bytes) or (
            isinstance(addrs, tuple) and addrs and isinstance(addrs[0], str)
        ):  # one address where a list of them belongs: send_many(p, ("10.0.0.1", 5062))
            raise AddressTypeError(
                f"send_many() takes a list of addresses, not the one address {addrs!r}",
                address=addrs,
            )
        destinations = [self._checked(addr, "send_many()") for addr in addrs]
        for addr in destinations:
            self._check_size(data, addr)
        total = 0
        for addr in destinations:
            if not self._writable.is_set():
                await self._wait_writable()
            total += self._sendto(self.transport, data, addr)
        return total

    async def replicate(self, packet: Packet) -> int:
        """Send ``packet`` to every address in ``peers``; return total bytes sent."""
        return await self.send_many(packet, self.peers)

    def _not_running(self, where: str) -> EndpointNotRunning:
        if self._state == "failed":
            return EndpointNotRunning(
                f"{where} on an endpoint whose socket closed under it: {self.failure!r}"
            )
        return EndpointNotRunning(f"{where} on an endpoint that is {self._state}")

    def _checked(self, addr: Address, what: str) -> Address:
        """``addr`` as the numeric address the socket takes (``send`` inlines this)."""
        try:
            destination = self._destinations[addr]
        except (KeyError, TypeError):
            return self._destination(addr, what)
        if type(addr[1]) is not int:  # 5999.0 == 5999 found it: check the real thing
            return self._destination(addr, what)
        return destination

    def _destination(self, addr: object, what: str) -> Address:
        """``addr`` checked and made numeric for this socket; remembered for the next send."""
        destination = numeric_address(addr, self._family, dual_stack=self._dual_stack, what=what)
        if type(addr) is tuple and type(addr[1]) is int:
            cache = self._destinations
            if len(cache) >= _DESTINATIONS_MAX:
                cache.clear()
            cache[addr] = destination
        return destination

    async def _wait_writable(self) -> None:
        await self._writable.wait()
        if self._state != "running":
            raise EndpointNotRunning(f"the endpoint closed while a send waited: {self._state}")

    def _check_size(self, data: bytes, addr: Address) -> None:
        limit = _max_datagram(addr)
        if len(data) > limit:
            family = "IPv6" if limit == MAX_DATAGRAM_IPV6 else "IPv4"
            raise DatagramTooLarge(
                f"{len(data)}-byte datagram to {format_address(addr)} is over the"
                f" {limit}-byte {family} UDP payload limit"
            )

    def max_datagram(self, addr: Address) -> int:
        """Largest datagram this endpoint can send to ``addr``."""
        return _max_datagram(
            numeric_address(addr, self._family, dual_stack=self._dual_stack, what="max_datagram()")
        )

    def _sendto(self, transport: asyncio.DatagramTransport, data: bytes, addr: Address) -> int:
        failed = self._attempt(transport, data, addr)
        tries = 1
        # Linux may hand this send an earlier datagram's ICMP error instead of
        # sending it (error_received then asks for a retry): send it again.
        while failed and self._retry_send and tries <= _SEND_ATTEMPTS:
            failed = self._attempt(transport, data, addr)
            tries += 1
        if failed:
            if self._retry_send:  # errors kept arriving: give up on this datagram
                self._counters.send_errors += 1
                self.last_send_error = OSError(
                    errno.EAGAIN, f"ICMP errors kept arriving: {tries} tries, none sent"
                )
            return 0
        counters = self._counters
        counters.packets_sent += 1
        counters.bytes_sent += len(data)
        return len(data)

    def _attempt(self, transport: asyncio.DatagramTransport, data: bytes, addr: Address) -> bool:
        """One sendto; True if it failed (``_retry_send`` then says whether to try again)."""
        self._in_send = True
        self._send_failed = self._retry_send = False
        try:
            transport.sendto(data, addr)
        except OSError as exc:
            self.error_received(exc)
        finally:
            self._in_send = False
        return self._send_failed

    # --- stats ----------------------------------------------------------------------

    def _kernel_drops(self) -> int | None:
        if self._state in ("failed", "closing", "closed"):
            return self._closed_kernel_drops
        if not self._inode:
            return None
        return udp_kernel_drops(self._inode, self._family == socket.AF_INET6)

    @property
    def stats(self) -> Stats:
        """A snapshot of the counters, queue depths and socket figures, taken now."""
        pending, queue_depths = self._gauges()
        return Stats.capture(
            self._counters,
            pending=pending,
            queue_depths=queue_depths,
            recv_buffer=self._recv_buffer,
            send_buffer=self._send_buffer,
            kernel_drops=self._kernel_drops(),
            peer_errors=self._peer_errors,
        )

    def __repr__(self) -> str:
        where = format_address(self._sockname) if self._sockname else "unbound"
        return f"Endpoint({where}, {self._state}, modules={sorted(self._lanes)})"


def _max_datagram(addr: Address) -> int:
    """Largest datagram to a numeric address: IPv6's limit unless IPv4 or IPv4-mapped."""
    if len(addr) == 4 and not addr[0].startswith("::ffff:"):
        return MAX_DATAGRAM_IPV6
    return MAX_DATAGRAM_IPV4


def _bind_error(where: Address, exc: OSError) -> BindError:
    return BindError(exc.errno, exc.strerror or str(exc), format_address(where))
