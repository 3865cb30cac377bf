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
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Iterable
from typing import Final, SupportsBytes, cast

from .address import format_address
from .dispatch import Address, DropReason
from .errors import DatagramTooLarge, EndpointNotRunning
from .reader import PacketReader
from .runtime import DEFAULT_QUEUE_SIZE, Runtime
from .stats import Counters, Stats, udp_kernel_drops
from .wire import DATAGRAM, WireFormat
from .writer import PacketWriter

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
"""What send accepts: a writer, prebuilt bytes, or anything ``bytes()`` turns into a packet."""


class Endpoint(Runtime, asyncio.DatagramProtocol):
    """A BIN endpoint over UDP: receives packets for registered modules and sends packets.

    ``async with Endpoint(("127.0.0.1", 0)) as ep:`` binds and starts it;
    ``ep.register("dialog", handler)`` (or ``@ep.handler("dialog")``) routes a
    module's packets to ``async def handler(packet, source)``. Packets of one
    module are handled one at a time in arrival order unless the handler opts
    into ``concurrency``; each module has a queue of ``queue_size`` packets,
    and a datagram that finds it full is dropped as ``queue_full``.

    ``allow`` restricts sources to networks (strings or ``ipaddress`` objects);
    ``recv_buffer``/``send_buffer`` request socket buffer sizes (None keeps the
    OS default); ``peers`` are the destinations of :meth:`replicate`;
    ``drain_timeout`` bounds how long :meth:`close` lets queued packets finish.
    """

    _unit = "datagram"

    def __init__(
        self,
        local_addr: tuple[str, int] | Address = ("127.0.0.1", 0),
        *,
        allow: Iterable[str | ipaddress.IPv4Network | ipaddress.IPv6Network] | None = None,
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
        self.local_addr = tuple(local_addr)
        self.recv_buffer_requested = recv_buffer
        self.send_buffer_requested = send_buffer
        self.peers: tuple[Address, ...] = tuple(tuple(peer) for peer in peers)
        self._classify = self._core.classify
        self._transport: asyncio.DatagramTransport | None = None
        self._lost: asyncio.Future[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._in_send = False
        self._send_failed = False
        self._family = socket.AF_INET
        self._sockname: Address | None = None
        self._inode = 0
        self._recv_buffer: int | None = None
        self._closed_kernel_drops: int | None = None
        self._send_buffer: int | None = None

    # --- the socket --------------------------------------------------------------------

    async def _open(self) -> None:
        """Bind the socket and attach this protocol to it."""
        loop = asyncio.get_running_loop()
        sock = await self._bind(loop)
        try:
            self._lost = loop.create_future()
            transport, _ = await loop.create_datagram_endpoint(lambda: self, sock=sock)
        except BaseException:
            sock.close()
            raise
        self._transport = transport

    async def _bind(self, loop: asyncio.AbstractEventLoop) -> socket.socket:
        host, port = self.local_addr[0], self.local_addr[1]
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
        family, _type, proto, _name, sockaddr = infos[0]
        if family == socket.AF_INET6 and len(self.local_addr) == 4:
            sockaddr = self.local_addr
        sock = socket.socket(family, socket.SOCK_DGRAM, proto)
        try:
            sock.setblocking(False)
            self._set_buffer(sock, socket.SO_RCVBUF, self.recv_buffer_requested)
            self._set_buffer(sock, socket.SO_SNDBUF, self.send_buffer_requested)
            sock.bind(sockaddr)
            self._recv_buffer = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            self._send_buffer = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            self._sockname = tuple(sock.getsockname())
            self._inode = os.fstat(sock.fileno()).st_ino
        except BaseException:
            sock.close()
            raise
        self._family = family
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
        if self._inode:
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
        """The socket is closed: nothing more will be received."""
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

        During ``sendto`` it is the OS refusing that datagram (``send_errors``);
        otherwise it reports an earlier datagram, e.g. ICMP port unreachable
        (``errors_received``).
        """
        now = time.monotonic()
        if self._in_send:
            self._send_failed = True
            self._counters.send_errors += 1
            self._limiter.log(
                ("send_error", type(exc)), now, logging.WARNING, "send failed: %r", exc
            )
        else:
            self._counters.errors_received += 1
            self._limiter.log(
                ("error_received", type(exc)), now, logging.WARNING, "socket error: %r", exc
            )

    async def send(self, packet: Packet, addr: Address) -> int:
        """Send one packet to ``addr``; return the bytes sent (0 if the OS refused it).

        Waits while flow control has paused the endpoint. Raises
        :class:`~binif.errors.DatagramTooLarge` before sending a datagram too big
        for the address family.
        """
        data = packet if type(packet) is bytes else bytes(packet)
        transport = self._transport
        if transport is None or self._state != "running":
            raise EndpointNotRunning(f"send() on an endpoint that is {self._state}")
        if len(data) > MAX_DATAGRAM_IPV4:  # below it, any family carries it
            self._check_size(data, addr)
        if not self._writable.is_set():
            await self._wait_writable()
        return self._sendto(transport, data, addr)

    async def send_many(self, packet: Packet, addrs: Iterable[Address]) -> int:
        """Send one build of ``packet`` to every address in ``addrs``; return total bytes sent."""
        data = packet if type(packet) is bytes else bytes(packet)
        destinations = [tuple(addr) for addr in addrs]
        if self._transport is None or self._state != "running":
            raise EndpointNotRunning(f"send_many() on an endpoint that is {self._state}")
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

    async def _wait_writable(self) -> None:
        await self._writable.wait()
        if self._state != "running":
            raise EndpointNotRunning(f"the endpoint closed while a send waited: {self._state}")

    def _check_size(self, data: bytes, addr: Address) -> None:
        limit = self.max_datagram(addr)
        if len(data) > limit:
            family = "IPv6" if limit == MAX_DATAGRAM_IPV6 else "IPv4"
            raise DatagramTooLarge(
                f"{len(data)}-byte datagram to {format_address(addr)} is over the"
                f" {limit}-byte {family} UDP payload limit"
            )

    def max_datagram(self, addr: Address) -> int:
        """Largest datagram this endpoint can send to ``addr``."""
        if self._family == socket.AF_INET6 and not str(addr[0]).startswith("::ffff:"):
            host = str(addr[0])
            if ":" in host:
                return MAX_DATAGRAM_IPV6
        return MAX_DATAGRAM_IPV4

    def _sendto(self, transport: asyncio.DatagramTransport, data: bytes, addr: Address) -> int:
        self._in_send = True
        self._send_failed = False
        try:
            transport.sendto(data, addr)
        except OSError as exc:
            self._in_send = False
            self.error_received(exc)
            return 0
        finally:
            self._in_send = False
        if self._send_failed:
            return 0
        counters = self._counters
        counters.packets_sent += 1
        counters.bytes_sent += len(data)
        return len(data)

    # --- stats ----------------------------------------------------------------------

    def _kernel_drops(self) -> int | None:
        if self._state in ("closing", "closed"):
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
        )

    def __repr__(self) -> str:
        where = format_address(self._sockname) if self._sockname else "unbound"
        return f"Endpoint({where}, {self._state}, modules={sorted(self._lanes)})"
