"""``binif.cluster.Node``: a Python service as a node of an OpenSIPS cluster.

A thin asyncio shell around :class:`~binif.cluster.core.ClusterCore`, on a
:class:`~binif.stream.StreamEndpoint`: it moves bytes between the endpoint
and the core, arms one timer at the time the core asks for, runs the handlers
of module packets and sync chunks, and paces what it sends to each peer.

::

    async with Node(cluster_id=1, node_id=3, url="bin:127.0.0.1:5557",
                    seeds={1: "bin:127.0.0.1:5555"},
                    capabilities=["dialog-dlg-repl"]) as node:

        @node.on(opensips40.DialogCreated)
        async def created(dialog: opensips40.DialogCreated, node_id: int) -> None: ...

        await node.wait_up(1, timeout=10)
        await node.sync("dialog-dlg-repl")

Pacing: OpenSIPS 4.0.1 resets a connection it cannot keep up with and loses
what was queued behind (WIRE.md, "Flow control"). Every module packet the
node sends (``send``, ``broadcast``, sync replies) goes through a per-peer
queue drained by a token bucket (``rate`` packets a second, bursts of
``burst``); the queue holds at most ``max_waiting`` packets and a sender finding
it full waits for room (counted in ``stats.send_waits``). The clusterer's own
heartbeats skip the queue so they are never late. A node it does not know yet
is answered (UNKNOWN_ID to its PING) on the connection the PING came in on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, TypeVar, cast

from ..dispatch import Address, LogLimiter
from ..errors import BinError, DecodeError, EndpointNotRunning
from ..messages import Message
from ..reader import PacketReader
from ..stats import StreamStats
from ..stream import StreamEndpoint
from ..wire import STREAM
from ..writer import PacketWriter
from . import packets as p
from .core import (
    KNOWN_CAPABILITY_VERSIONS,
    CapabilitiesChanged,
    ClusterConfig,
    ClusterCore,
    ClustererMessage,
    Event,
    ModulePacket,
    NodeAdded,
    NodeRemoved,
    NodeState,
    NodeStateChanged,
    NodeView,
    Refused,
    SyncFinished,
    SyncReceived,
    SyncRequested,
    TopologyChanged,
    parse_url,
)

__all__ = [
    "DEFAULT_BURST",
    "DEFAULT_MAX_WAITING",
    "DEFAULT_RATE",
    "DEFAULT_SYNC_BUFFER",
    "NoSyncDonor",
    "Node",
    "NodeNotUp",
    "NodeStats",
    "SyncResult",
]

logger = logging.getLogger("binif.cluster")

DEFAULT_RATE: Final = 2000.0
"""Module packets a second to each peer: under the ~5,000/s that broke OpenSIPS 4.0.1."""
DEFAULT_BURST: Final = 32
"""Packets sent back to back before the rate applies (OpenSIPS coped with 40-100 in flight)."""
DEFAULT_MAX_WAITING: Final = 4096
"""Packets queued per peer before a sender waits for room."""
DEFAULT_SYNC_BUFFER: Final = 100_000
"""Module packets held back while a sync of their capability runs; past it they go through."""
_CONTROL_LIMIT: Final = 256
"""Clusterer packets queued per peer; past it the oldest is dropped (counted)."""

M = TypeVar("M", bound=Message)
RawHandler = Callable[[PacketReader, int], Awaitable[None]]
"""``async def handler(packet, node_id)``: a module packet without its trailer."""
TypedHandler = Callable[[Any, int], Awaitable[None]]


class NodeNotUp(BinError, LookupError):
    """``send`` to a node that is unknown or not up."""


class NoSyncDonor(BinError, TimeoutError):
    """No up node advertised the capability as ready within the timeout."""


@dataclass(frozen=True, slots=True)
class SyncResult:
    """How a sync went: the donor, the chunks it announced and those received."""

    donor: int
    announced: int
    received: int
    delivered: int
    """Items handed to a typed handler (chunks without a decoder or handler are not)."""


@dataclass(frozen=True, slots=True)
class NodeStats:
    """A snapshot of a node's counters."""

    refusals: Mapping[str, int]
    """Received packets refused by the clusterer checks, by reason."""
    module_packets: int
    """Module packets that passed the checks."""
    handled: int
    """Module packets and sync items a handler returned from."""
    handler_errors: int
    """Handler calls that raised."""
    undecodable: int
    """Module packets or sync chunks a typed handler's class could not decode."""
    unhandled: int
    """Module packets and sync items no handler was registered for."""
    sync_items: int
    """Sync chunks received."""
    sync_requests_declined: int
    """SYNC_REQs not answered because no provider holds the capability."""
    sent: int
    """Module packets written to a peer's connection."""
    send_failed: int
    """Module and sync packets not sent: the peer was unreachable."""
    control_failed: int
    """Clusterer packets (pings, pongs, updates, UNKNOWN_ID replies) not sent: unreachable
    peer, a reply's connection closed, or overflow."""
    send_waits: int
    """``send`` calls that waited for room in a full peer queue."""
    paced: int
    """Times a peer queue waited for the token bucket."""
    queued: int
    """Packets waiting in the peer queues now."""
    endpoint: StreamStats
    """The underlying StreamEndpoint's counters."""


class _Outbox:
    """One peer's send queue: clusterer packets first, module packets through a token bucket."""

    def __init__(self, node: Node, node_id: int, address: Address) -> None:
        self.node = node
        self.node_id = node_id
        self.address = address
        self.control: deque[bytes] = deque()
        self.data: deque[bytes] = deque()
        self.wakeup = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.tokens = float(node.burst)
        self.refilled = time.monotonic()
        self.task = asyncio.get_running_loop().create_task(self._run())

    def push_control(self, data: bytes) -> None:
        if len(self.control) >= _CONTROL_LIMIT:
            self.control.popleft()
            self.node._control_failed += 1
        self.control.append(data)
        self.wakeup.set()

    async def push_data(self, data: bytes) -> None:
        while len(self.data) >= self.node.max_waiting:
            if self.node._closing:
                raise EndpointNotRunning(f"{self.node!r} closed while a send waited for room")
            self.node._send_waits += 1
            self.room.clear()
            await self.room.wait()
        self.data.append(data)
        self.wakeup.set()

    async def _run(self) -> None:
        node = self.node
        send = node._endpoint.send
        while True:
            if self.control:
                await self._write(send, self.control.popleft(), control=True)
                continue
            if not self.data:
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            now = time.monotonic()
            self.tokens = min(node.burst, self.tokens + (now - self.refilled) * node.rate)
            self.refilled = now
            if self.tokens < 1:
                node._paced += 1
                await asyncio.sleep((1 - self.tokens) / node.rate)
                continue
            for _ in range(min(int(self.tokens), len(self.data))):
                self.tokens -= 1
                if not await self._write(send, self.data.popleft(), control=False):
                    break
                if self.control:
                    break
            if len(self.data) < node.max_waiting:
                self.room.set()

    async def _write(
        self, send: Callable[[bytes, Address], Awaitable[int]], data: bytes, *, control: bool
    ) -> bool:
        try:
            await send(data, self.address)
        except (BinError, OSError) as error:
            # PeerUnreachable, EndpointNotRunning, or the connection failed under the
            # write: what waits for the peer cannot go either (counted, logged).
            if control:
                lost = 1
                self.node._control_failed += 1
            else:
                lost = 1 + len(self.data)
                self.data.clear()
                self.room.set()
                self.node._send_failed += lost
            self.node._log(
                ("unreachable", self.node_id),
                logging.WARNING,
                "node %d unreachable, %d packets not sent: %s",
                self.node_id,
                lost,
                error,
            )
            return False
        if not control:
            self.node._sent += 1
        return True


class Node:
    """This process as node ``node_id`` of cluster ``cluster_id`` (see the module docstring).

    ``capabilities`` lists the capabilities served: names known to binif take
    OpenSIPS 4.0's layout version (``dialog-dlg-repl`` 4, ``usrloc-contact-repl``
    5, ``dialog-prof-repl`` 4); give a mapping name -> version for others. The
    timers default to OpenSIPS's (ping every 4 s, 1 s timeout, 3 retries, a
    down node pinged again after 60 s). ``listen`` defaults to the URL's
    address. ``rate``/``burst``/``max_waiting`` pace what goes to each peer.
    """

    def __init__(
        self,
        cluster_id: int,
        node_id: int,
        url: str,
        seeds: Mapping[int, str] | None = None,
        capabilities: Iterable[str] | Mapping[str, int] = ("dialog-dlg-repl",),
        *,
        sip_addr: str = "",
        priority: int = 50,
        ping_retries: int = 3,
        ping_interval: float = 4.0,
        ping_timeout: float = 1.0,
        node_timeout: float = 60.0,
        listen: tuple[str, int] | None = None,
        rate: float = DEFAULT_RATE,
        burst: int = DEFAULT_BURST,
        max_waiting: int = DEFAULT_MAX_WAITING,
        connect_timeout: float = 1.0,
        sync_buffer: int = DEFAULT_SYNC_BUFFER,
    ) -> None:
        if isinstance(capabilities, Mapping):
            versions = dict(capabilities)
        else:
            versions = {}
            for name in capabilities:
                if name not in KNOWN_CAPABILITY_VERSIONS:
                    raise ValueError(
                        f"{name!r} has no known version: give capabilities={{{name!r}: version}}"
                    )
                versions[name] = KNOWN_CAPABILITY_VERSIONS[name]
        self.config = ClusterConfig(
            cluster_id=cluster_id,
            node_id=node_id,
            url=url,
            seeds=dict(seeds or {}),
            capabilities=versions,
            sip_addr=sip_addr,
            priority=priority,
            ping_retries=ping_retries,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            node_timeout=node_timeout,
        )
        if not rate > 0 or burst < 1 or max_waiting < 1:
            raise ValueError("rate must be positive, burst and max_waiting at least 1")
        if sync_buffer < 0:
            raise ValueError(f"sync_buffer must be 0 or more, not {sync_buffer}")
        self.sync_buffer = sync_buffer
        self.rate = float(rate)
        self.burst = burst
        self.max_waiting = max_waiting
        self._listen = listen if listen is not None else parse_url(url)
        self._endpoint = StreamEndpoint(self._listen, connect_timeout=connect_timeout)
        for module in (p.CLUSTERER_INTERNAL, p.CLUSTERER_EXTRA, *versions):
            self._endpoint.register(module, self._received)
        self._core: ClusterCore | None = None
        self._time: Callable[[], float] = time.monotonic
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.Handle | None = None
        self._timer_at: float | None = None
        self._outboxes: dict[int, _Outbox] = {}
        self._replies: deque[tuple[bytes, Address]] = deque()
        """Answers to go back on the connection their request came in on (see _received)."""
        self._raw: dict[str, RawHandler] = {}
        self._typed: dict[tuple[str, int], tuple[type[Message], TypedHandler]] = {}
        self._by_class: dict[type, TypedHandler] = {}
        self._providers: dict[str, Callable[[], Iterable[Message]]] = {}
        self._changed = asyncio.Event()
        """Set (and replaced) whenever a node's state or capabilities change."""
        self._syncs: dict[tuple[int, str], asyncio.Future[SyncResult]] = {}
        self._buffers: dict[str, deque[ModulePacket]] = {}
        """Module packets held while a sync of their capability runs."""
        self._sync_delivered: dict[tuple[int, str], int] = {}
        self._limiter = LogLimiter(logger)
        self._module_packets = self._handled = self._handler_errors = 0
        self._undecodable = self._unhandled = self._sync_items = 0
        self._sent = self._send_failed = self._send_waits = self._paced = 0
        self._control_failed = 0

    # --- life cycle ---------------------------------------------------------------------

    async def start(self) -> Node:
        """Listen on the URL's address and start pinging the seeds."""
        self._loop = asyncio.get_running_loop()
        self._time = self._loop.time
        self._core = ClusterCore(self.config, now=self._loop.time(), wall_time=time.time())
        for capability, provider in self._providers.items():
            self._core.set_provider(capability, _chunks_of(provider), self._loop.time())
        await self._endpoint.start()
        self._pump()
        return self

    async def close(self) -> None:
        """Stop the timer and the senders, then close the endpoint (it drains its handlers).

        Packets still queued for a peer are counted in ``stats.send_failed``.
        """
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for outbox in self._outboxes.values():
            outbox.task.cancel()
            outbox.room.set()  # senders waiting for room learn that the node closed
        for outbox in self._outboxes.values():
            with contextlib.suppress(asyncio.CancelledError):
                await outbox.task
            self._send_failed += len(outbox.data)
            self._control_failed += len(outbox.control)
        self._outboxes.clear()
        await self._endpoint.close()
        for future in self._syncs.values():
            if not future.done():
                future.cancel()

    async def __aenter__(self) -> Node:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- what the application sees ------------------------------------------------------

    @property
    def node_id(self) -> int:
        """This node's id."""
        return self.config.node_id

    @property
    def nodes(self) -> Mapping[int, NodeView]:
        """Every other known node: id -> state, url, capabilities, neighbours (read-only)."""
        return self._running_core().nodes

    @property
    def local_address(self) -> Address:
        """The address the node listens on (useful with port 0)."""
        return self._endpoint.local_address

    async def wait_up(self, node_id: int, timeout: float | None = None) -> None:
        """Return once ``node_id`` is up; ``TimeoutError`` after ``timeout`` seconds."""
        await self.wait_state(node_id, NodeState.UP, timeout)

    async def wait_state(
        self, node_id: int, state: NodeState, timeout: float | None = None
    ) -> None:
        """Return once ``node_id`` is in ``state``; ``TimeoutError`` after ``timeout`` seconds."""
        core = self._running_core()
        async with asyncio.timeout(timeout):
            while core.state_of(node_id) is not state:
                await self._changed.wait()

    @property
    def stats(self) -> NodeStats:
        """A snapshot of the counters."""
        core = self._running_core()
        return NodeStats(
            refusals=MappingProxyType({str(k): v for k, v in core.refusals.items()}),
            module_packets=self._module_packets,
            handled=self._handled,
            handler_errors=self._handler_errors,
            undecodable=self._undecodable,
            unhandled=self._unhandled,
            sync_items=self._sync_items,
            sync_requests_declined=core.sync_requests_declined,
            sent=self._sent,
            send_failed=self._send_failed,
            control_failed=self._control_failed,
            send_waits=self._send_waits,
            paced=self._paced,
            queued=sum(len(o.data) + len(o.control) for o in self._outboxes.values()),
            endpoint=self._endpoint.stats,
        )

    # --- handlers ---------------------------------------------------------------------

    def register(self, capability: str, handler: RawHandler) -> None:
        """Hand every checked packet of ``capability`` to ``async def handler(packet, node_id)``.

        ``packet`` is the reader without the clusterer trailer. Typed handlers
        (:meth:`on`) of a command take precedence over this one.
        """
        self._check_capability(capability)
        if capability in self._raw:
            raise ValueError(f"{capability!r} already has a handler")
        self._raw[capability] = handler

    def on(self, message: type[M]) -> Callable[[Callable[[M, int], Awaitable[None]]], Any]:
        """Decorator: ``async def handler(message, node_id)`` for one typed message class.

        Sync chunks decoded into that class (a DialogCreated per dialog of a
        dialog sync) go to the same handler.
        """
        self._check_capability(message.MODULE)

        def decorate(handler: Callable[[M, int], Awaitable[None]]) -> Any:
            key = (message.MODULE, message.COMMAND)
            if key in self._typed:
                raise ValueError(f"{message.__name__} already has a handler")
            self._typed[key] = (message, handler)
            self._by_class[message] = handler
            return handler

        return decorate

    def provide(self, capability: str, provider: Callable[[], Iterable[Message]] | None) -> None:
        """Declare that ``provider()`` returns every item this node holds for ``capability``.

        Only then is the capability advertised ready (state 1), which makes
        this node a sync donor: an OpenSIPS node syncing from it deletes every
        item it does not send. ``None`` withdraws the declaration.
        """
        self._check_capability(capability)
        if provider is None:
            self._providers.pop(capability, None)
        else:
            self._providers[capability] = provider
        if self._core is not None and self._loop is not None:
            chunks = None if provider is None else _chunks_of(provider)
            self._core.set_provider(capability, chunks, self._loop.time())
            self._pump()

    # --- sending ----------------------------------------------------------------------

    async def send(self, packet: Message | PacketWriter, node_id: int) -> None:
        """Queue ``packet`` (a module packet, without trailer) for ``node_id``, trailer added.

        Returns once queued (waiting while the peer's queue is full); raises
        :class:`NodeNotUp` for a node that is not up. Delivery failures are
        counted in ``stats.send_failed``.
        """
        writer = self._writer(packet)
        core = self._running_core()
        if core.state_of(node_id) is not NodeState.UP:
            raise NodeNotUp(f"node {node_id} is {core.state_of(node_id) or 'unknown'}, not up")
        await self._outbox(node_id).push_data(core.trailer(node_id).append_to(writer).to_bytes())

    async def broadcast(self, packet: Message | PacketWriter) -> int:
        """Queue ``packet`` for every up node that serves its capability; return how many."""
        writer = self._writer(packet)
        core = self._running_core()
        targets = core.destinations(writer.module)
        for node_id in targets:
            data = core.trailer(node_id).append_to(writer).to_bytes()
            await self._outbox(node_id).push_data(data)
        return len(targets)

    async def sync(
        self, capability: str, *, timeout: float = 30.0, donor: int | None = None
    ) -> SyncResult:
        """Ask a donor for ``capability``'s items and return once its SYNC_END is in.

        Each item goes to the typed handler of its class as it arrives (for
        dialogs, the ``DialogCreated`` handler). Module packets of the
        capability that arrive meanwhile are held and handed on after the last
        item (as OpenSIPS does), up to ``sync_buffer`` of them; they are also
        released when the sync fails. The donor is ``donor`` or the first up
        node advertising the capability ready; :class:`NoSyncDonor` when none
        shows up within ``timeout``, ``TimeoutError`` when SYNC_END does not.
        """
        self._check_capability(capability)
        core = self._running_core()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (chosen := donor if donor is not None else core.sync_donor(capability)) is None:
            try:
                async with asyncio.timeout_at(deadline):
                    await self._changed.wait()
            except TimeoutError:
                raise NoSyncDonor(
                    f"no up node advertised {capability!r} ready within {timeout:g}s"
                ) from None
        if capability in self._buffers:
            raise RuntimeError(f"a sync of {capability!r} is already under way")
        key = (chosen, capability)
        future: asyncio.Future[SyncResult] = loop.create_future()
        self._syncs[key] = future
        self._sync_delivered[key] = 0
        self._buffers[capability] = deque()
        core.request_sync(capability, chosen)
        self._pump()
        try:
            async with asyncio.timeout_at(deadline):
                return await future
        finally:
            self._syncs.pop(key, None)
            self._sync_delivered.pop(key, None)
            await self._release(capability)

    # --- the shell: bytes in, core, bytes and handlers out -------------------------------

    async def _received(self, reader: PacketReader, source: Address) -> None:
        core = self._core
        if core is None:
            return
        packet = core.receive_packet(reader, source[0], source, self._time())
        if core.has_output:
            for event in self._pump():
                if type(event) is SyncReceived:
                    await self._deliver_sync(event)
                elif type(event) is SyncFinished:
                    await self._finish_sync(event)
            while self._replies:
                await self._reply(*self._replies.popleft())
        if packet is None:
            return
        self._module_packets += 1
        buffers = self._buffers
        if buffers:
            held = buffers.get(packet.capability)
            if held is not None and len(held) < self.sync_buffer:
                held.append(packet)  # delivered after the sync, as OpenSIPS does
                return
        # The hot path, inline: a checked module packet to its handler.
        target = self._target(packet)
        if target is None:
            return
        handler, message = target
        try:
            await handler(message, packet.node_id)
        except Exception as error:
            self._handler_failed(packet.capability, error)
            return
        self._handled += 1

    def _target(self, packet: ModulePacket) -> tuple[TypedHandler, object] | None:
        """The handler of a checked module packet and what it gets, or None (counted)."""
        packet_reader = packet.packet
        typed = self._typed.get((packet.capability, packet_reader.command))
        if typed is not None:
            cls, handler = typed
            try:
                return handler, cls.from_packet(packet_reader)
            except DecodeError as error:
                self._undecodable += 1
                self._log(("undecodable", cls), logging.WARNING, "%s: %s", cls.__name__, error)
                return None
        raw = self._raw.get(packet.capability)
        if raw is None:
            self._unhandled += 1
            return None
        return raw, packet_reader

    async def _finish_sync(self, event: SyncFinished) -> None:
        """SYNC_END: hand on what was held back during the sync, then end the sync() call."""
        key = (event.node_id, event.capability)
        future = self._syncs.get(key)
        if future is None:
            return  # not a sync this node asked for (or it timed out)
        await self._release(event.capability)
        if not future.done():
            delivered = self._sync_delivered.pop(key, 0)
            future.set_result(SyncResult(event.node_id, event.announced, event.received, delivered))

    async def _release(self, capability: str) -> None:
        """Deliver the packets held during a sync, in order, then stop holding them."""
        held = self._buffers.get(capability)
        if held is None:
            return
        while held:
            packet = held.popleft()
            target = self._target(packet)
            if target is not None:
                await self._call(target[0], target[1], packet.node_id, capability)
        del self._buffers[capability]  # nothing arrived since the deque emptied: no await

    def _pump(self) -> list[Event]:
        """Send what the core queued, apply its events, re-arm the timer; return the events."""
        core = self._running_core()
        for transmit in core.datagrams_to_send():
            if self._closing:
                self._control_failed += 1  # the node is closing: nothing goes out any more
                continue
            if transmit.node_id is None:
                # An answer to a node not known yet (UNKNOWN_ID): on the connection the
                # request came in on, which only a received packet produces (_received).
                self._replies.append((transmit.data, cast(Address, transmit.reply_on)))
                continue
            try:
                outbox = self._outbox(transmit.node_id)
            except KeyError:  # the node was removed: the core no longer knows its URL
                self._control_failed += 1
                continue
            if transmit.paced:
                outbox.data.append(transmit.data)  # sync replies: paced, not bounded here
                outbox.wakeup.set()
            else:
                outbox.push_control(transmit.data)
        events = []
        while (event := core.next_event()) is not None:
            events.append(event)
            self._apply(event)
        self._arm()
        return events

    def _arm(self) -> None:
        """Keep the one timer at the core's next deadline."""
        core, loop = self._core, self._loop
        if core is None or loop is None:
            return
        deadline = core.get_timer()
        if self._timer is not None:
            if deadline == self._timer_at:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer_at = deadline
            self._timer = loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._core is None or self._loop is None or self._closing:
            return
        self._core.handle_timer(self._loop.time())
        self._pump()

    def _apply(self, event: Event) -> None:
        if isinstance(event, NodeStateChanged):
            logger.info("node %d is %s", event.node_id, event.new)
            self._wake()
        elif isinstance(event, CapabilitiesChanged):
            self._wake()
        elif isinstance(event, Refused):
            self._log(
                ("refused", event.reason), logging.WARNING, "refused (%s): %s", event.reason,
                event.detail,
            )  # fmt: skip
        elif isinstance(event, SyncFinished) and event.announced != event.received:
            self._log(
                ("sync", event.capability), logging.WARNING,
                "sync of %s from node %d: %d of %d chunks",
                event.capability, event.node_id, event.received, event.announced,
            )  # fmt: skip
        elif isinstance(event, SyncRequested) and not event.answered:
            self._log(
                ("sync-declined", event.capability), logging.INFO,
                "node %d asked a sync of %s: not a donor (no provider declared)",
                event.node_id, event.capability,
            )  # fmt: skip
        elif isinstance(event, ClustererMessage):
            self._log(
                ("clusterer", event.packet.TYPE), logging.INFO, "ignored clusterer %s",
                event.packet.TYPE.name,
            )  # fmt: skip
        elif isinstance(event, (NodeAdded, NodeRemoved, TopologyChanged)):
            logger.debug("%s", event)

    async def _reply(self, data: bytes, source: Address) -> None:
        """Write a clusterer answer back on the connection from ``source`` (counted if lost)."""
        try:
            await self._endpoint.reply(data, source)
        except (BinError, OSError) as error:
            self._control_failed += 1
            self._log(
                ("reply", source), logging.WARNING, "cannot answer %s: %s", source, error
            )  # fmt: skip

    async def _deliver_sync(self, event: SyncReceived) -> None:
        sync = event.sync
        self._sync_items += len(sync.chunks)
        key = (event.node_id, sync.capability)
        for chunk in sync.chunks:
            try:
                item = p.SYNC_CHUNKS.decode_chunk(sync.capability, sync.data_version, chunk)
            except KeyError:
                self._unhandled += 1
                continue
            except DecodeError as error:
                self._undecodable += 1
                self._log(("undecodable-sync", key), logging.WARNING, "sync chunk: %s", error)
                continue
            handler = self._by_class.get(type(item))
            if handler is None:
                self._unhandled += 1
                continue
            if await self._call(handler, item, event.node_id, sync.capability) and (
                key in self._sync_delivered
            ):
                self._sync_delivered[key] += 1

    async def _call(self, handler: TypedHandler, item: object, node_id: int, what: str) -> bool:
        try:
            await handler(item, node_id)
        except Exception as error:
            self._handler_failed(what, error)
            return False
        self._handled += 1
        return True

    def _handler_failed(self, what: str, error: Exception) -> None:
        self._handler_errors += 1
        self._log(
            ("handler", what), logging.ERROR, "handler of %s failed: %r", what, error,
            exc_info=error,
        )  # fmt: skip

    # --- helpers ----------------------------------------------------------------------

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _outbox(self, node_id: int) -> _Outbox:
        outbox = self._outboxes.get(node_id)
        if outbox is None:
            if self._closing:
                raise EndpointNotRunning(f"{self!r} is closing")
            address = self._running_core().peer_address(node_id)
            outbox = self._outboxes[node_id] = _Outbox(self, node_id, address)
        return outbox

    def _writer(self, packet: Message | PacketWriter) -> PacketWriter:
        if self._closing:
            raise EndpointNotRunning(f"{self!r} is closed")
        if isinstance(packet, Message):
            writer = packet.to_writer(wire=STREAM)
        elif isinstance(packet, PacketWriter):
            writer = packet
        else:
            raise TypeError(f"send a Message or a PacketWriter, not {type(packet).__name__}")
        self._check_capability(writer.module)
        return writer

    def _check_capability(self, capability: str) -> None:
        if capability not in self.config.capabilities:
            raise ValueError(
                f"{capability!r} is not a capability of this node"
                f" (capabilities: {', '.join(self.config.capabilities)})"
            )

    def _running_core(self) -> ClusterCore:
        if self._core is None:
            raise RuntimeError("the node is not started: use 'async with node:'")
        return self._core

    def _log(self, key: object, level: int, message: str, *args: object, **kw: Any) -> None:
        loop = self._loop
        now = loop.time() if loop is not None else time.monotonic()
        self._limiter.log(key, now, level, message, *args, **kw)

    def __repr__(self) -> str:
        config = self.config
        return f"<Node {config.node_id} of cluster {config.cluster_id} at {config.url}>"


def _chunks_of(provider: Callable[[], Iterable[Message]]) -> Callable[[], Iterable[bytes]]:
    def chunks() -> Iterable[bytes]:
        for message in provider():
            yield p.SYNC_CHUNKS.encode_chunk(message)

    return chunks
