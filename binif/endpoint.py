"""The endpoint: a UDP socket whose packets go to per-module async handlers, and a sender.

:class:`Endpoint` is a thin :class:`asyncio.DatagramProtocol` shell around the
sans-I/O :class:`~binif.dispatch.Dispatcher`. ``datagram_received`` classifies
each datagram and appends it to its module's bounded queue (or counts a named
drop); a fixed set of worker tasks per module awaits the handlers. No task is
created per packet, nothing on the receive path blocks or grows without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Final, Literal, SupportsBytes, TypeVar, cast

from .dispatch import (
    ANY_MODULE,
    Address,
    Dispatcher,
    DropReason,
    Handler,
    LogLimiter,
    MessageType,
    Route,
    Target,
)
from .errors import (
    DatagramTooLarge,
    DecodeError,
    EndpointNotRunning,
)
from .reader import PacketReader
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

DEFAULT_QUEUE_SIZE: Final = 4096
"""Packets each module may have waiting before new ones are dropped as ``queue_full``."""
DEFAULT_RECV_BUFFER: Final = 4 * 1024 * 1024
"""SO_RCVBUF requested by default: room for bursts (the OS may grant less)."""
MAX_DATAGRAM_IPV4: Final = 65507
"""Largest UDP payload over IPv4: 65535 - 20 (IP header) - 8 (UDP header)."""
MAX_DATAGRAM_IPV6: Final = 65527
"""Largest UDP payload over IPv6 without jumbograms: 65535 - 8 (UDP header)."""

_YIELD_EVERY: Final = 64
"""A worker yields to the loop after this many packets handled without waiting."""

Packet = PacketWriter | bytes | bytearray | memoryview | SupportsBytes
"""What send accepts: a writer, prebuilt bytes, or anything ``bytes()`` turns into a packet."""

H = TypeVar("H", bound=Handler)
M = TypeVar("M", bound=MessageType)
State = Literal["new", "starting", "running", "closing", "closed"]


class _Lane:
    """One module's bounded queue, its workers and how many packets it still owes."""

    __slots__ = (
        "_route",
        "direct",
        "items",
        "limit",
        "waiters",
        "workers",
        "pending",
        "joiners",
        "retired",
    )

    def __init__(self, route: Route, limit: int) -> None:
        self.route = route
        self.items: deque[tuple[PacketReader, Address]] = deque()
        self.limit = limit
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.workers: list[asyncio.Task[None]] = []
        self.pending = 0
        """Packets queued or being handled."""
        self.joiners: list[asyncio.Future[None]] = []
        self.retired = False

    @property
    def route(self) -> Route:
        return self._route

    @route.setter
    def route(self, route: Route) -> None:
        self._route = route
        raw = route.raw
        # The common case (one raw handler, no typed ones, no timeout) is awaited
        # directly by the worker, without routing by command.
        self.direct: Handler | None = (
            raw.handler if raw is not None and not route.messages and raw.timeout is None else None
        )

    def wake_one(self) -> None:
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def wake_all(self) -> None:
        while self.waiters:
            self.wake_one()

    def settle(self, count: int = 1) -> None:
        self.pending -= count
        if self.pending == 0 and self.joiners:
            for joiner in self.joiners:
                if not joiner.done():
                    joiner.set_result(None)
            self.joiners.clear()

    async def join(self) -> None:
        if self.pending:
            joiner = asyncio.get_running_loop().create_future()
            self.joiners.append(joiner)
            await joiner


class Endpoint(asyncio.DatagramProtocol):
    """A BIN endpoint: receives packets for registered modules and sends packets.

    ``async with Endpoint(("127.0.0.1", 0)) as ep:`` binds and starts it;
    ``ep.register("dialog", handler)`` (or ``@ep.handler("dialog")``) routes a
    module's packets to ``async def handler(packet, source)``. Packets of one
    module are handled one at a time in arrival order unless the handler opts
    into ``concurrency``; each module has a queue of ``queue_size`` packets.

    ``allow`` restricts sources to networks (strings or ``ipaddress`` objects);
    ``recv_buffer``/``send_buffer`` request socket buffer sizes (None keeps the
    OS default); ``peers`` are the destinations of :meth:`replicate`;
    ``drain_timeout`` bounds how long :meth:`close` lets queued packets finish.
    """

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
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, not {queue_size}")
        self.local_addr = tuple(local_addr)
        self.queue_size = queue_size
        self.recv_buffer_requested = recv_buffer
        self.send_buffer_requested = send_buffer
        self.peers: tuple[Address, ...] = tuple(tuple(peer) for peer in peers)
        self.wire = wire
        self.drain_timeout = drain_timeout
        self._core = Dispatcher(wire=wire, allow=allow)
        self._classify = self._core.classify
        self._counters = Counters()
        self._limiter = LogLimiter(logger, log_interval)
        self._lanes: dict[str, _Lane] = {}
        self._retiring: set[_Lane] = set()
        self._state: State = "new"
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

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> Endpoint:
        """Bind the socket and start the workers of every registered module."""
        if self._state != "new":
            raise EndpointNotRunning(f"start() on an endpoint that is {self._state}")
        self._state = "starting"
        loop = asyncio.get_running_loop()
        try:
            sock = await self._bind(loop)
            try:
                self._lost = loop.create_future()
                transport, _ = await loop.create_datagram_endpoint(lambda: self, sock=sock)
            except BaseException:
                sock.close()
                raise
        except BaseException:
            self._state = "new"
            raise
        self._transport = transport
        if self._state != "starting":  # close() was called while binding
            transport.close()
            raise EndpointNotRunning("the endpoint was closed while it started")
        self._state = "running"
        for lane in self._lanes.values():
            self._start_workers(lane)
        return self

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

    async def close(self) -> None:
        """Stop receiving, let queued packets finish (up to ``drain_timeout``), stop workers.

        Packets still queued or in a handler when the timeout passes are
        cancelled and counted as ``shutdown`` drops. Senders waiting on flow
        control get :class:`~binif.errors.EndpointNotRunning`. Idempotent.
        """
        if self._state in ("closing", "closed"):
            while self._state != "closed":
                await asyncio.sleep(0.01)
            return
        if self._state in ("new", "starting"):
            self._state = "closed"
            return
        # The socket's counter goes with it: keep its last value for later snapshots.
        self._closed_kernel_drops = self._kernel_drops()
        self._state = "closing"
        transport, lost = self._transport, self._lost
        if transport is not None:
            transport.close()
        if lost is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(lost), 1.0)
        lanes = [*self._lanes.values(), *self._retiring]
        try:
            async with asyncio.timeout(self.drain_timeout):
                for lane in lanes:
                    await lane.join()
        except TimeoutError:
            left = sum(lane.pending for lane in lanes)
            logger.warning("close: %d packets not handled within %.1fs", left, self.drain_timeout)
        workers = [worker for lane in lanes for worker in lane.workers]
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for lane in lanes:
            left = len(lane.items)
            if left:
                lane.items.clear()
                self._counters.drops[DropReason.SHUTDOWN] += left
                lane.settle(left)
            lane.workers.clear()
        self._retiring.clear()
        self._state = "closed"
        self._writable.set()

    async def __aenter__(self) -> Endpoint:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def join(self) -> None:
        """Wait until every packet queued so far has been handled or dropped."""
        for lane in [*self._lanes.values(), *self._retiring]:
            await lane.join()

    @property
    def running(self) -> bool:
        """True between a successful start() and close()."""
        return self._state == "running"

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

    # --- registry ----------------------------------------------------------------------

    def register(
        self,
        module: str,
        handler: Handler,
        *,
        concurrency: int = 1,
        timeout: float | None = None,
    ) -> None:
        """Route every packet of ``module`` to ``async def handler(packet, source)``.

        ``concurrency`` > 1 lets that many packets of the module be handled at
        once (their order is then not kept); ``timeout`` cancels a call that
        runs longer, counted in ``handler_timeouts``. ``module="*"``
        (``binif.ANY_MODULE``) takes every module that has no handler of its own.
        """
        self._check_open()
        self._install(
            self._core.register(module, handler, concurrency=concurrency, timeout=timeout)
        )

    def handler(
        self, module: str, *, concurrency: int = 1, timeout: float | None = None
    ) -> Callable[[H], H]:
        """Decorator form of :meth:`register`: ``@ep.handler("dialog")``."""

        def decorate(function: H) -> H:
            self.register(module, function, concurrency=concurrency, timeout=timeout)
            return function

        return decorate

    def register_message(
        self,
        message: type[M],
        handler: Callable[[M, Address], Awaitable[None]],
        *,
        concurrency: int = 1,
        timeout: float | None = None,
    ) -> None:
        """Route packets of ``message.MODULE``/``message.COMMAND``, decoded, to ``handler``.

        ``message.from_packet(reader)`` runs in the module's worker, in order; a
        DecodeError from it is an ``undecodable`` drop. Commands of a module
        that has only typed handlers and none for that command are dropped as
        ``unknown_command``.
        """
        self._check_open()
        self._install(
            self._core.register_message(message, handler, concurrency=concurrency, timeout=timeout)
        )

    def on(
        self, message: type[M], *, concurrency: int = 1, timeout: float | None = None
    ) -> Callable[
        [Callable[[M, Address], Awaitable[None]]], Callable[[M, Address], Awaitable[None]]
    ]:
        """Decorator form of :meth:`register_message`: ``@ep.on(DialogCreated)``."""

        def decorate(
            function: Callable[[M, Address], Awaitable[None]],
        ) -> Callable[[M, Address], Awaitable[None]]:
            self.register_message(message, function, concurrency=concurrency, timeout=timeout)
            return function

        return decorate

    def unregister(self, module: str) -> None:
        """Remove the handlers of ``module``. Packets already queued are still handled."""
        self._core.unregister(module)
        lane = self._lanes.pop(module)
        lane.retired = True
        if lane.workers:
            self._retiring.add(lane)
            lane.wake_all()
        elif lane.items:  # fed before start: no worker will ever take them
            self._counters.drops[DropReason.SHUTDOWN] += len(lane.items)
            lane.settle(len(lane.items))
            lane.items.clear()

    def _check_open(self) -> None:
        if self._state in ("closing", "closed"):
            raise EndpointNotRunning(f"the endpoint is {self._state}")

    def _install(self, route: Route) -> None:
        lane = self._lanes.get(route.module)
        if lane is None:
            lane = self._lanes[route.module] = _Lane(route, self.queue_size)
            if self._state == "running":
                # A module registered again while its old queue drains: the new
                # packets wait for the old ones, so the module's order holds.
                prior = [old for old in self._retiring if old.route.module == route.module]
                self._start_workers(lane, after=prior)
        else:
            lane.route = route

    def _start_workers(self, lane: _Lane, after: Sequence[_Lane] = ()) -> None:
        for number in range(lane.route.concurrency):
            worker = asyncio.get_running_loop().create_task(
                self._work(lane, after), name=f"binif-{lane.route.module}-{number}"
            )
            worker.add_done_callback(self._worker_done)
            lane.workers.append(worker)

    def _worker_done(self, worker: asyncio.Task[None]) -> None:
        if not worker.cancelled() and worker.exception() is not None:
            logger.error("worker %s died", worker.get_name(), exc_info=worker.exception())

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
            lane = self._lanes.get(result.module)
            if lane is None:  # the dispatcher found no route of its own: the catch-all's
                lane = self._lanes[ANY_MODULE]
            items = lane.items
            if len(items) < lane.limit:
                items.append((result, addr))
                lane.pending += 1
                counters.dispatched += 1
                waiters = lane.waiters
                if waiters:
                    waiter = waiters.popleft()
                    if waiter.done():  # its worker was cancelled: find another
                        lane.wake_one()
                    else:
                        waiter.set_result(None)
            else:
                self._drop(DropReason.QUEUE_FULL, addr, data, result.module)
        else:
            assert isinstance(result, DropReason)
            self._drop(result, addr, data, None)

    def _drop(self, reason: DropReason, source: Address, data: bytes, module: str | None) -> None:
        self._counters.drops[reason] += 1
        now = time.monotonic()
        limiter = self._limiter
        if limiter.ready(reason, now):
            limiter.emit(
                reason,
                now,
                logging.INFO if reason is DropReason.UNKNOWN_MODULE else logging.WARNING,
                "dropped %d-byte datagram from %s: %s (%s)",
                len(data),
                _format_address(source),
                reason.value,
                self._explain(reason, data, module),
            )

    def _explain(self, reason: DropReason, data: bytes, module: str | None) -> str:
        """A human detail for a drop log line; only computed when a line is logged."""
        if reason is DropReason.QUEUE_FULL:
            return f"module {module!r} has {self.queue_size} packets waiting"
        if reason is DropReason.SOURCE_NOT_ALLOWED:
            return f"not in {self._core.allow!r}"
        try:
            reader = PacketReader.parse(data, wire=self.wire)
        except DecodeError as exc:
            return str(exc)
        return f"module {reader.module!r} command {reader.command}"

    async def _work(self, lane: _Lane, after: Sequence[_Lane] = ()) -> None:
        """One worker: take the lane's packets in order and await their handlers.

        It starts once the lanes in ``after`` (an unregistered module's old
        queue) have drained.
        """
        for prior in after:
            await prior.join()
        items = lane.items
        counters = self._counters
        drops = counters.drops
        loop = asyncio.get_running_loop()
        streak = 0
        while True:
            if not items:
                if lane.retired:
                    self._retire_worker(lane)
                    return
                streak = 0
                waiter = loop.create_future()
                lane.waiters.append(waiter)
                await waiter
                continue
            reader, source = items.popleft()
            direct = lane.direct
            try:
                if direct is not None:
                    await direct(reader, source)
                    counters.handled += 1
                else:
                    await self._deliver(lane.route, reader, source)
            except DecodeError as exc:
                drops[DropReason.UNDECODABLE] += 1
                self._log_failure("undecodable", reader, source, exc)
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    drops[DropReason.SHUTDOWN] += 1
                    raise
                counters.handler_errors += 1
                self._log_failure("handler_error", reader, source, exc)
            except Exception as exc:
                counters.handler_errors += 1
                self._log_failure("handler_error", reader, source, exc)
            finally:
                lane.pending -= 1
                if lane.joiners and not lane.pending:
                    lane.settle(0)
            streak += 1
            if streak >= _YIELD_EVERY:
                streak = 0
                await asyncio.sleep(0)

    async def _deliver(self, route: Route, reader: PacketReader, source: Address) -> None:
        """Route by command, decode a typed message, apply the timeout; count the outcome.

        Exceptions from the handler (or a DecodeError from decoding) propagate
        to the worker, which counts them.
        """
        counters = self._counters
        found = route.target(reader)
        if type(found) is not Target:
            counters.drops[cast(DropReason, found)] += 1
            return
        target = found
        argument: Any = reader if target.decode is None else target.decode(reader)
        if target.timeout is None:
            await target.handler(argument, source)
        else:
            deadline = asyncio.timeout(target.timeout)
            try:
                async with deadline:
                    await target.handler(argument, source)
            except TimeoutError:
                if not deadline.expired():
                    raise
                counters.handler_timeouts += 1
                self._log_failure("handler_timeout", reader, source, None)
                return
        counters.handled += 1

    def _retire_worker(self, lane: _Lane) -> None:
        task = asyncio.current_task()
        if task in lane.workers:
            lane.workers.remove(task)
        if not lane.workers:
            self._retiring.discard(lane)

    def _log_failure(
        self, kind: str, reader: PacketReader, source: Address, exc: BaseException | None
    ) -> None:
        now = time.monotonic()
        key = (kind, reader.module)
        if not self._limiter.ready(key, now):
            return
        if kind == "handler_timeout":
            self._limiter.emit(
                key,
                now,
                logging.WARNING,
                "handler for module %r command %d from %s timed out",
                reader.module,
                reader.command,
                _format_address(source),
            )
        elif kind == "undecodable":
            self._limiter.emit(
                key,
                now,
                logging.WARNING,
                "dropped packet for module %r command %d from %s: undecodable (%s)",
                reader.module,
                reader.command,
                _format_address(source),
                exc,
            )
        else:
            self._limiter.emit(
                key,
                now,
                logging.ERROR,
                "handler for module %r command %d from %s raised %r",
                reader.module,
                reader.command,
                _format_address(source),
                exc,
                exc_info=exc,
            )

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
                f"{len(data)}-byte datagram to {_format_address(addr)} is over the"
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
        lanes: Sequence[_Lane] = [*self._lanes.values(), *self._retiring]
        return Stats.capture(
            self._counters,
            pending=sum(lane.pending for lane in lanes),
            queue_depths={module: len(lane.items) for module, lane in self._lanes.items()},
            recv_buffer=self._recv_buffer,
            send_buffer=self._send_buffer,
            kernel_drops=self._kernel_drops(),
        )

    @property
    def routes(self) -> dict[str, Route]:
        """The registered modules and their routes."""
        return dict(self._core.routes)

    def __repr__(self) -> str:
        where = _format_address(self._sockname) if self._sockname else "unbound"
        return f"Endpoint({where}, {self._state}, modules={sorted(self._lanes)})"


def _format_address(addr: Address | None) -> str:
    if not addr:
        return "?"
    host = str(addr[0])
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"
