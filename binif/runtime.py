"""The transport-free part of an endpoint: per-module lanes, workers, order and accounting.

:class:`Runtime` holds what the UDP :class:`~binif.endpoint.Endpoint` and the
TCP :class:`~binif.stream.StreamEndpoint` share: the handler registry (through
the sans-I/O :class:`~binif.dispatch.Dispatcher`), one :class:`Lane` per
module (a bounded queue and a fixed set of worker tasks that await the
handlers in arrival order), the counters, the rate-limited drop and failure
logs, and the start/close life cycle. A transport shell subclasses it: it
opens and closes its sockets (:meth:`Runtime._open`, :meth:`Runtime._shut`),
classifies what it reads, and hands each packet to :meth:`Runtime._admit` (a
stream's packets, a read at a time, to :meth:`Runtime._admit_all`) or counts a
drop with :meth:`Runtime._drop`. No task is created per packet.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from itertools import repeat
from types import TracebackType
from typing import Any, ClassVar, Final, Literal, Self, TypeVar, cast

from .address import format_address
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
    BadVersion,
    DecodeError,
    EndpointError,
    EndpointInUse,
    EndpointNotRunning,
    InvalidOption,
)
from .reader import PacketReader, _Head, _make
from .stats import Counters
from .wire import WireFormat

__all__ = ["DEFAULT_QUEUE_SIZE", "Lane", "Runtime"]

logger = logging.getLogger("binif")

DEFAULT_QUEUE_SIZE: Final = 4096
"""Packets each module may have waiting (UDP drops past it as ``queue_full``; TCP pauses)."""

_YIELD_EVERY: Final = 64
"""A worker yields to the loop after this many packets handled without waiting."""

_DECIDED_MAX: Final = 1024
"""Packet heads whose decision is kept (random names cannot grow memory)."""

H = TypeVar("H", bound=Handler)
M = TypeVar("M", bound=MessageType)
DirectTyped = tuple[int, Callable[[PacketReader], Any], Callable[[Any, Address], Awaitable[None]]]
"""A lane's lone typed handler: its command, the message decoder, the handler."""
State = Literal["new", "starting", "running", "failed", "closing", "closed"]


class Lane:
    """One module's bounded queue, its workers and how many packets it still owes.

    ``blocked`` holds callbacks of sources paused because the queue was full
    (TCP connections): the workers call them once the queue is down to
    ``resume_at``.
    """

    __slots__ = (
        "_route",
        "direct",
        "direct_typed",
        "items",
        "heads",
        "sources",
        "limit",
        "resume_at",
        "blocked",
        "waiters",
        "workers",
        "pending",
        "joiners",
        "retired",
    )

    def __init__(self, route: Route, limit: int) -> None:
        self.route = route
        self.items: deque[Any] = deque()
        """Queued packets: readers (UDP), or a stream's bytes, read when a worker takes them."""
        self.heads: deque[_Head | None] = deque()
        """The decoded head of each of ``items`` that is bytes; None for a reader."""
        self.sources: deque[Address] = deque()
        """Where each of ``items`` came from (parallel deques: no tuple per packet)."""
        self.limit = limit
        self.resume_at = limit // 2
        self.blocked: list[Callable[[], None]] = []
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
        # Likewise one typed handler and nothing else (no timeout, any version):
        # the worker decodes and awaits it directly for packets of its command.
        self.direct_typed: DirectTyped | None = None
        if raw is None and len(route.messages) == 1:
            ((command, target),) = route.messages.items()
            if target.decode is not None and target.timeout is None and target.versions is None:
                self.direct_typed = (command, target.decode, target.handler)

    def clear(self) -> int:
        """Forget the queued packets; return how many there were."""
        left = len(self.items)
        self.items.clear()
        self.heads.clear()
        self.sources.clear()
        return left

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

    def release(self) -> None:
        """Resume every source paused on this lane."""
        blocked = [*self.blocked]
        self.blocked.clear()  # in place: workers hold the list
        for resume in blocked:
            resume()

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


class Runtime:
    """Handlers, lanes, workers and counters of one endpoint, whatever its transport.

    ``register(module, handler)`` (or ``@ep.handler(module)``) routes a
    module's packets to ``async def handler(packet, source)``. Packets of one
    module are handled one at a time in arrival order unless the handler opts
    into ``concurrency``; each module has a queue of ``queue_size`` packets.
    ``drain_timeout`` bounds how long :meth:`close` lets queued packets finish.
    """

    _unit: ClassVar[str] = "packet"
    """What the drop log calls one unit read from the transport."""

    def __init__(
        self,
        *,
        wire: WireFormat,
        allow: Iterable[str | ipaddress.IPv4Network | ipaddress.IPv6Network] | None,
        queue_size: int,
        drain_timeout: float,
        log_interval: float,
        counters: Counters,
    ) -> None:
        if not isinstance(queue_size, int) or isinstance(queue_size, bool) or queue_size < 1:
            raise InvalidOption(f"queue_size must be an int >= 1, not {queue_size!r}")
        for name, seconds in (("drain_timeout", drain_timeout), ("log_interval", log_interval)):
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
                raise InvalidOption(f"{name} must be seconds >= 0, not {seconds!r}")
        self.queue_size = queue_size
        self.wire = wire
        self.drain_timeout = drain_timeout
        self._core = Dispatcher(wire=wire, allow=allow)
        self._counters = counters
        self._limiter = LogLimiter(logger, log_interval)
        self._drop_gates = {reason: self._limiter.gate(reason) for reason in DropReason}
        self._lanes: dict[str, Lane] = {}
        self._decided: dict[_Head, Lane | DropReason] = {}
        """Where packets of one head (module, command, version) go, found once per head."""
        self._retiring: set[Lane] = set()
        self._state: State = "new"
        self.failure: BaseException | None = None
        """Why the transport closed under the running endpoint (``running`` is then False)."""

    # --- the transport's part ----------------------------------------------------------

    async def _open(self) -> None:
        """Open the transport (bind, listen). Called by :meth:`start`."""
        raise NotImplementedError

    async def _shut(self) -> None:
        """Stop reading and close the transport. Called by :meth:`close`, before draining."""
        raise NotImplementedError

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> Self:
        """Open the transport and start the workers of every registered module."""
        if self._state != "new":
            raise self._cannot_start()
        self._state = "starting"
        try:
            await self._open()
        except BaseException:
            self._state = "new"
            raise
        if self._state != "starting":  # close() was called while opening
            await self._shut()
            raise EndpointNotRunning("the endpoint was closed while it started")
        self._state = "running"
        for lane in self._lanes.values():
            self._start_workers(lane)
        return self

    def _cannot_start(self) -> EndpointError:
        if self._state in ("starting", "running"):
            return EndpointInUse(
                f"start(): the endpoint is already {self._state} (started twice, or a nested"
                " `async with` on the same endpoint)"
            )
        if self._state == "failed":
            return EndpointNotRunning(
                f"start(): the endpoint stopped when its transport closed under it"
                f" ({self.failure!r}); an endpoint is single-use: create a new one"
            )
        return EndpointNotRunning(
            f"start(): the endpoint is {self._state}; an endpoint is single-use: create a new one"
        )

    def _fail(self, reason: BaseException) -> None:
        """The transport closed under a running endpoint: it stops; ``failure`` says why.

        Workers go on with the packets already queued; :meth:`close` still
        drains and stops them.
        """
        if self._state != "running":
            return
        self._state = "failed"
        self.failure = reason
        logger.error(
            "%r stopped: its transport closed under it (%r); close it and start a new one",
            self,
            reason,
        )

    async def close(self) -> None:
        """Stop receiving, let queued packets finish (up to ``drain_timeout``), stop workers.

        Packets still queued or in a handler when the timeout passes are
        cancelled and counted as ``shutdown`` drops. Idempotent.
        """
        if self._state in ("closing", "closed"):
            while self._state != "closed":
                await asyncio.sleep(0.01)
            return
        if self._state in ("new", "starting"):
            self._state = "closed"
            return
        self._state = "closing"
        await self._shut()
        lanes = [*self._lanes.values(), *self._retiring]
        for lane in lanes:
            lane.release()
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
            left = lane.clear()
            if left:
                self._counters.drops[DropReason.SHUTDOWN] += left
                lane.settle(left)
            lane.workers.clear()
        self._retiring.clear()
        self._state = "closed"

    async def __aenter__(self) -> Self:
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
        """True between a successful start() and close(), unless the transport closed under it."""
        return self._state == "running"

    # --- registry ----------------------------------------------------------------------

    def register(
        self,
        module: str,
        handler: Handler,
        *,
        concurrency: int = 1,
        timeout: float | None = None,
        versions: Iterable[int] | None = None,
    ) -> None:
        """Route every packet of ``module`` to ``async def handler(packet, source)``.

        ``concurrency`` > 1 lets that many packets of the module be handled at
        once (their order is then not kept); ``timeout`` cancels a call that
        runs longer, counted in ``handler_timeouts``. ``module="*"``
        (``binif.ANY_MODULE``) takes every module that has no handler of its own.
        ``versions`` (stream profile only), e.g. ``{4}``: packets of any other
        layout version are dropped as ``bad_version``.
        """
        self._check_open()
        self._install(
            self._core.register(
                module, handler, concurrency=concurrency, timeout=timeout, versions=versions
            )
        )

    def handler(
        self,
        module: str,
        *,
        concurrency: int = 1,
        timeout: float | None = None,
        versions: Iterable[int] | None = None,
    ) -> Callable[[H], H]:
        """Decorator form of :meth:`register`: ``@ep.handler("dialog")``."""

        def decorate(function: H) -> H:
            self.register(
                module, function, concurrency=concurrency, timeout=timeout, versions=versions
            )
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
        self._decided.clear()
        lane = self._lanes.pop(module)
        lane.retired = True
        lane.release()
        if lane.workers:
            self._retiring.add(lane)
            lane.wake_all()
        elif lane.items:  # fed before start: no worker will ever take them
            left = lane.clear()
            self._counters.drops[DropReason.SHUTDOWN] += left
            lane.settle(left)

    @property
    def routes(self) -> dict[str, Route]:
        """The registered modules and their routes."""
        return dict(self._core.routes)

    def _check_open(self) -> None:
        if self._state in ("closing", "closed"):
            raise EndpointNotRunning(f"the endpoint is {self._state}")

    def _install(self, route: Route) -> None:
        self._decided.clear()
        lane = self._lanes.get(route.module)
        if lane is None:
            lane = self._lanes[route.module] = Lane(route, self.queue_size)
            if self._state == "running":
                # A module registered again while its old queue drains: the new
                # packets wait for the old ones, so the module's order holds.
                prior = [old for old in self._retiring if old.route.module == route.module]
                self._start_workers(lane, after=prior)
        else:
            lane.route = route

    def _start_workers(self, lane: Lane, after: Sequence[Lane] = ()) -> None:
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

    def _lane(self, module: str) -> Lane:
        """The lane of a packet the dispatcher accepted: its module's, or the catch-all's."""
        lane = self._lanes.get(module)
        return self._lanes[ANY_MODULE] if lane is None else lane

    def _admit(self, lane: Lane, reader: PacketReader, source: Address) -> None:
        """Queue ``reader`` on ``lane`` and wake a worker (the caller checked the limit)."""
        lane.items.append(reader)
        lane.heads.append(None)
        lane.sources.append(source)
        lane.pending += 1
        self._counters.dispatched += 1
        waiters = lane.waiters
        if waiters:
            waiter = waiters.popleft()
            if waiter.done():  # its worker was cancelled: find another
                lane.wake_one()
            else:
                waiter.set_result(None)

    def _admit_all(
        self, runs: list[tuple[_Head, int, int]], packets: list[bytes], source: Address
    ) -> list[Lane]:
        """Queue a stream's packets for their modules, or count why not; wake the workers.

        ``runs`` say which packets share a decoded head (module, command,
        version): the dispatcher decides once per head until the handlers
        change, and a run is queued at once. The bytes wait in the queue and the
        worker makes the reader. Returns the lanes now at their limit.
        """
        decided = self._decided
        counters = self._counters
        touched: list[Lane] = []
        for head, start, stop in runs:
            where = decided.get(head)
            if where is None:
                where = self._decide(head, packets[start])
            run = packets if stop - start == len(packets) else packets[start:stop]
            if type(where) is Lane:
                where.items.extend(run)
                where.heads.extend(repeat(head, len(run)))
                where.sources.extend(repeat(source, len(run)))
                where.pending += len(run)
                counters.dispatched += len(run)
                if where not in touched:
                    touched.append(where)
            else:
                for packet in run:
                    self._drop(cast(DropReason, where), source, packet, head.module)
        full = []
        for lane in touched:
            for _ in range(min(len(lane.items), len(lane.waiters))):
                lane.wake_one()
            if len(lane.items) >= lane.limit:
                full.append(lane)
        return full

    def _decide(self, head: _Head, packet: bytes) -> Lane | DropReason:
        """Where packets of ``head`` go (their lane, or why they are dropped), kept for the next."""
        reader = _make(head, packet, head.fields_offset, 0)
        result = self._core.check(reader)
        where = self._lane(head.module) if result is reader else cast(DropReason, result)
        if len(self._decided) >= _DECIDED_MAX:
            self._decided.clear()
        self._decided[head] = where
        return where

    def _drop(self, reason: DropReason, source: Address, data: bytes, module: str | None) -> None:
        """Count a drop of the packet ``data`` from ``source`` and log it, rate-limited.

        The drop path of a flood: while the reason's log line is not due, a drop
        costs a counter, a clock read and a comparison.
        """
        self._counters.drops[reason] += 1
        now = time.monotonic()
        gate = self._drop_gates[reason]
        if now < gate.until:
            gate.held += 1
            return
        self._limiter.emit(
            reason,
            now,
            logging.INFO if reason is DropReason.UNKNOWN_MODULE else logging.WARNING,
            "dropped %d-byte %s from %s: %s (%s)",
            len(data),
            self._unit,
            format_address(source),
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
        detail = f"module {reader.module!r} command {reader.command}"
        return detail if reader.version is None else f"{detail} version {reader.version}"

    async def _work(self, lane: Lane, after: Sequence[Lane] = ()) -> None:
        """One worker: take the lane's packets in order and await their handlers.

        It starts once the lanes in ``after`` (an unregistered module's old
        queue) have drained.
        """
        for prior in after:
            await prior.join()
        items = lane.items
        new_reader = object.__new__
        take, take_head, take_source = items.popleft, lane.heads.popleft, lane.sources.popleft
        blocked, joiners, resume_at = lane.blocked, lane.joiners, lane.resume_at
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
            item = take()
            head = take_head()
            source = take_source()
            if head is None:
                reader = item
            else:  # a stream's bytes: the reader is made now, so none is kept while queued
                reader = new_reader(PacketReader)
                reader._head = head
                reader._data = item
                reader._pos = head.fields_offset
                reader._index = 0
            if blocked and len(items) <= resume_at:
                lane.release()
            direct = lane.direct
            try:
                if direct is not None:
                    await direct(reader, source)
                    counters.handled += 1
                elif (typed := lane.direct_typed) is not None and reader.command == typed[0]:
                    await typed[2](typed[1](reader), source)
                    counters.handled += 1
                else:
                    await self._deliver(lane.route, reader, source)
            except DecodeError as exc:
                if type(exc) is BadVersion:
                    drops[DropReason.BAD_VERSION] += 1
                    self._log_failure("bad_version", reader, source, exc)
                else:
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
                if joiners and not lane.pending:
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

    def _retire_worker(self, lane: Lane) -> None:
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
                format_address(source),
            )
        elif kind in ("undecodable", "bad_version"):
            self._limiter.emit(
                key,
                now,
                logging.WARNING,
                "dropped packet for module %r command %d from %s: %s (%s)",
                reader.module,
                reader.command,
                format_address(source),
                kind,
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
                format_address(source),
                exc,
                exc_info=exc,
            )

    # --- stats -------------------------------------------------------------------------

    def _gauges(self) -> tuple[int, dict[str, int]]:
        """Packets pending in every lane, and each module's queue depth, now."""
        lanes: Sequence[Lane] = [*self._lanes.values(), *self._retiring]
        return sum(lane.pending for lane in lanes), {
            module: len(lane.items) for module, lane in self._lanes.items()
        }
