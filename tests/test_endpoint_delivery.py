"""Endpoint receive side: routing, order, bounded queues, handler failures, drops, shutdown.

Real sockets on 127.0.0.1 and ::1 only. Every test runs on asyncio's default
loop and on uvloop (see conftest.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from endpoint_helpers import (
    DIALOG_LAYOUT,
    assert_accounted,
    burst_size,
    numbered,
    received,
    vector,
    wait_until,
)

from binif import (
    DATAGRAM,
    AlreadyRegistered,
    DecodeError,
    DropReason,
    Endpoint,
    EndpointNotRunning,
    NotRegistered,
    PacketReader,
    PacketWriter,
)

HOSTS = ["127.0.0.1", "::1"]


def seq_of(packet: PacketReader) -> int:
    _callid, seq = packet.unpack("si", exact=True)
    assert isinstance(seq, int)
    return seq


# --- the loop under test ---------------------------------------------------------------


async def test_runs_on_the_requested_loop(request: pytest.FixtureRequest) -> None:
    loop = asyncio.get_running_loop()
    if "uvloop" in request.node.name:
        import uvloop

        assert isinstance(loop, uvloop.Loop)
    else:
        assert type(loop).__module__.startswith("asyncio")


# --- two endpoints ---------------------------------------------------------------------


@pytest.mark.parametrize("host", HOSTS)
async def test_two_endpoints_exchange_packets(host: str) -> None:
    created = vector("dialog-created-1.bin")
    expected = PacketReader.parse(created).unpack(DIALOG_LAYOUT, exact=True)
    at_b: list[tuple[tuple[Any, ...], Any]] = []
    at_a: list[tuple[int, Any]] = []
    async with Endpoint((host, 0)) as a, Endpoint((host, 0)) as b:

        @b.handler("dialog")
        async def backup(packet: PacketReader, source: Any) -> None:
            at_b.append((packet.unpack(DIALOG_LAYOUT, exact=True), source))
            callid, from_tag, to_tag = packet.unpack("sss")
            reply = PacketWriter("dialog", 3).pack("sss", callid, from_tag, to_tag)
            await b.send(reply, source)

        @a.handler("dialog")
        async def active(packet: PacketReader, source: Any) -> None:
            at_a.append((packet.command, source))

        assert await a.send(created, b.local_address) == len(created)
        await wait_until(lambda: len(at_a) == 1)
        assert at_b == [(expected, a.local_address)]
        assert at_a == [(3, b.local_address)]
        for endpoint in (a, b):
            stats = endpoint.stats
            assert (stats.received, stats.handled, stats.packets_sent) == (1, 1, 1)
            assert_accounted(stats, pending=0)
        assert a.stats.bytes_sent == len(created)


async def test_socket_figures_in_stats() -> None:
    async with Endpoint(recv_buffer=1 << 20, send_buffer=1 << 18) as endpoint:
        stats = endpoint.stats
        assert stats.recv_buffer is not None and stats.recv_buffer >= 1 << 18
        assert stats.send_buffer is not None and stats.send_buffer >= 1 << 17
        if sys.platform.startswith("linux"):
            assert stats.kernel_drops == 0
        assert endpoint.local_address[0] == "127.0.0.1" and endpoint.local_address[1] > 0


# --- order and concurrency ---------------------------------------------------------------


async def test_order_kept_under_awaiting_handler_10000_packets() -> None:
    total = 10_000
    seen: list[int] = []
    rng = random.Random(3)
    async with Endpoint(queue_size=total) as rx, Endpoint() as tx:

        @rx.handler("dialog")
        async def handle(packet: PacketReader, source: Any) -> None:
            # Every call awaits; some long enough for many more packets to arrive.
            await asyncio.sleep(0.002 if rng.random() < 0.002 else 0)
            seen.append(seq_of(packet))

        packets = [numbered(seq) for seq in range(total)]
        # Bursts of up to 1000 without yielding, as many as the receive buffer holds.
        burst = burst_size(rx, len(packets[0]), 1000)
        for start in range(0, total, burst):
            for packet in packets[start : start + burst]:
                await tx.send(packet, rx.local_address)
            await received(rx, min(start + burst, total))
        await rx.join()
        assert seen == list(range(total))
        stats = rx.stats
        assert stats.handled == total and stats.dropped == 0
        assert_accounted(stats, pending=0)


async def test_concurrency_is_opt_in_and_bounded() -> None:
    running = 0
    peak = 0
    release = asyncio.Event()
    async with Endpoint() as rx, Endpoint() as tx:

        async def slow(packet: PacketReader, source: Any) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await release.wait()
            running -= 1

        rx.register("dialog", slow, concurrency=3)
        for seq in range(10):
            await tx.send(numbered(seq), rx.local_address)
        await received(rx, 10)
        await wait_until(lambda: running == 3)
        assert rx.stats.queue_depths == {"dialog": 7}
        release.set()
        await rx.join()
        assert peak == 3 and rx.stats.handled == 10


# --- bounded queues ------------------------------------------------------------------------


async def test_queue_full_drops_are_counted_exactly() -> None:
    gate = asyncio.Event()
    started = asyncio.Event()
    handled: list[int] = []
    async with Endpoint(queue_size=5) as rx, Endpoint() as tx:

        @rx.handler("dialog")
        async def blocked(packet: PacketReader, source: Any) -> None:
            started.set()
            await gate.wait()
            handled.append(seq_of(packet))

        await tx.send(numbered(0), rx.local_address)
        await asyncio.wait_for(started.wait(), 5)  # packet 0 is in the handler
        for seq in range(1, 13):  # 5 fit in the queue, 7 do not
            await tx.send(numbered(seq), rx.local_address)
        await received(rx, 13)
        stats = rx.stats
        assert stats.drops[DropReason.QUEUE_FULL] == 7
        assert stats.dispatched == 6 and stats.queue_depths == {"dialog": 5}
        assert_accounted(stats, pending=6)
        gate.set()
        await rx.join()
        assert handled == [0, 1, 2, 3, 4, 5]
        stats = rx.stats
        assert stats.handled == 6 and stats.dropped == 7 and stats.received == 13
        assert_accounted(stats, pending=0)


# --- handler failures ----------------------------------------------------------------------


async def test_handler_exception_and_hang_are_isolated(caplog: pytest.LogCaptureFixture) -> None:
    done: list[int] = []
    async with Endpoint() as rx, Endpoint() as tx:

        async def handle(packet: PacketReader, source: Any) -> None:
            seq = seq_of(packet)
            if seq == 1:
                raise RuntimeError("boom")
            if seq == 2:
                await asyncio.sleep(3600)  # hangs: the timeout cancels it
            done.append(seq)

        rx.register("dialog", handle, timeout=0.1)
        with caplog.at_level(logging.WARNING, logger="binif"):
            for seq in range(4):
                await tx.send(numbered(seq, command=7), rx.local_address)
            await received(rx, 4)
            await rx.join()
        assert done == [0, 3]
        stats = rx.stats
        assert (stats.handled, stats.handler_errors, stats.handler_timeouts) == (2, 1, 1)
        assert_accounted(stats, pending=0)
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "'dialog' command 7" in errors[0].getMessage()
        assert errors[0].exc_info is not None and "boom" in str(errors[0].exc_info[1])
        assert any("timed out" in r.getMessage() for r in caplog.records)


async def test_handler_own_errors_do_not_stop_the_worker() -> None:
    calls = 0
    async with Endpoint() as rx, Endpoint() as tx:

        @rx.handler("dialog")
        async def handle(packet: PacketReader, source: Any) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise asyncio.CancelledError  # not the endpoint's cancellation
            if calls == 2:
                raise TimeoutError("its own timeout, not the endpoint's")

        for seq in range(3):
            await tx.send(numbered(seq), rx.local_address)
        await received(rx, 3)
        await rx.join()
        stats = rx.stats
        assert (stats.handled, stats.handler_errors, stats.handler_timeouts) == (1, 2, 0)
        assert calls == 3


# --- drops by reason ---------------------------------------------------------------------


async def test_each_kind_of_bad_datagram_is_counted_under_its_reason() -> None:
    zero_name = DATAGRAM.frame(b"\x00\x00\x00\x00\x01\x00\x00\x00xx")
    sent = {
        "crafted-runt-12.bin": DropReason.TOO_SHORT,
        "crafted-bad-marker.bin": DropReason.BAD_MARKER,
        "crafted-dialog-created-bad-crc.bin": DropReason.BAD_CHECKSUM,
        "crafted-dialog-created-truncated-140-full-crc.bin": DropReason.BAD_CHECKSUM,
        "crafted-unknown-module.bin": DropReason.UNKNOWN_MODULE,
        # CRC-valid but cut short: rejected whole by the handler's exact unpack,
        # never half applied (OpenSIPS 2.1 half-applied one and crashed on another).
        "crafted-dialog-created-truncated-140-crc-ok.bin": DropReason.UNDECODABLE,
        "crafted-dialog-created-truncated-240-crc-ok.bin": DropReason.UNDECODABLE,
        "crafted-dialog-created-truncated-281-crc-ok.bin": DropReason.UNDECODABLE,
    }
    applied: list[bytes] = []
    async with Endpoint() as rx, Endpoint() as tx:

        @rx.handler("dialog")
        async def handle(packet: PacketReader, source: Any) -> None:
            if packet.command in (1, 2):
                callid = packet.unpack(DIALOG_LAYOUT, exact=True)[0]
                assert isinstance(callid, bytes)
                applied.append(callid)

        for name in sent:
            await tx.send(vector(name), rx.local_address)
        await tx.send(zero_name, rx.local_address)
        await tx.send(vector("dialog-created-1.bin"), rx.local_address)
        await received(rx, len(sent) + 2)
        # Over 65507 bytes cannot travel in a UDP datagram: feed it as the transport would.
        rx.datagram_received(b"P4CK" + bytes(65532), ("127.0.0.1", 9))
        await rx.join()
        stats = rx.stats
        expected = dict.fromkeys(DropReason, 0)
        for reason in sent.values():
            expected[reason] += 1
        expected[DropReason.MALFORMED] += 1
        expected[DropReason.TOO_LONG] += 1
        assert dict(stats.drops) == expected
        assert applied == [b"rig21-call-1@127.0.0.1"] and stats.handled == 1
        assert stats.received == len(sent) + 3
        assert_accounted(stats, pending=0)


async def test_drop_log_lines_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    async with Endpoint(log_interval=60.0) as rx:
        with caplog.at_level(logging.INFO, logger="binif"):
            for _ in range(500):
                rx.datagram_received(vector("crafted-dialog-created-bad-crc.bin"), ("::1", 7))
                rx.datagram_received(vector("crafted-runt-12.bin"), ("127.0.0.1", 7))
        lines = [r.getMessage() for r in caplog.records if r.name == "binif"]
        assert len(lines) == 2
        assert "bad_checksum" in lines[0] and "[::1]:7" in lines[0] and "0x9ecbf25" in lines[0]
        assert "too_short" in lines[1] and "127.0.0.1:7" in lines[1]
        assert rx.stats.drops[DropReason.BAD_CHECKSUM] == 500


# --- allowlist --------------------------------------------------------------------------------


@pytest.mark.parametrize("host", HOSTS)
async def test_allowlist_drops_other_sources_before_decoding(host: str) -> None:
    got: list[int] = []
    other = "10.0.0.0/8" if host == "127.0.0.1" else "2001:db8::/32"
    async with (
        Endpoint((host, 0), allow=[other]) as closed,
        Endpoint((host, 0), allow=[host]) as open_,
        Endpoint((host, 0)) as tx,
    ):

        async def handle(packet: PacketReader, source: Any) -> None:
            got.append(seq_of(packet))

        closed.register("dialog", handle)
        open_.register("dialog", handle)
        await tx.send(numbered(1), closed.local_address)
        await tx.send(vector("crafted-runt-12.bin"), closed.local_address)
        await tx.send(numbered(2), open_.local_address)
        await received(closed, 2)
        await received(open_, 1)
        await open_.join()
        assert got == [2]
        assert closed.stats.drops[DropReason.SOURCE_NOT_ALLOWED] == 2
        assert closed.stats.drops[DropReason.TOO_SHORT] == 0
        assert open_.stats.handled == 1


# --- typed messages -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    """Test message: module ``probe``, command 1, one int."""

    MODULE: ClassVar[str] = "probe"
    COMMAND: ClassVar[int] = 1
    seq: int

    @classmethod
    def from_packet(cls, reader: PacketReader) -> Ping:
        (seq,) = reader.unpack("i", exact=True)
        assert isinstance(seq, int)
        return cls(seq)


@dataclass(frozen=True, slots=True)
class Note:
    """Test message: module ``probe``, command 2, one str."""

    MODULE: ClassVar[str] = "probe"
    COMMAND: ClassVar[int] = 2
    text: str

    @classmethod
    def from_packet(cls, reader: PacketReader) -> Note:
        (text,) = reader.unpack("s", exact=True)
        assert isinstance(text, bytes)
        try:
            return cls(text.decode())
        except UnicodeDecodeError as exc:
            raise DecodeError(f"note is not UTF-8: {exc}") from exc


async def test_typed_messages_share_one_ordered_queue_per_module() -> None:
    log: list[object] = []
    async with Endpoint() as rx, Endpoint() as tx:

        @rx.on(Ping)
        async def on_ping(message: Ping, source: Any) -> None:
            await asyncio.sleep(0)
            log.append(message)

        @rx.on(Note)
        async def on_note(message: Note, source: Any) -> None:
            log.append(message)

        with pytest.raises(AlreadyRegistered):
            rx.register_message(Ping, on_ping)
        sends = [
            PacketWriter("probe", 1).pack("i", 1),
            PacketWriter("probe", 2).pack("s", "two"),
            PacketWriter("probe", 1).pack("i", 3),
            PacketWriter("probe", 9).pack("i", 4),  # no typed handler: unknown_command
            PacketWriter("probe", 1).pack("s", "x"),  # trailing bytes: undecodable
            PacketWriter("probe", 2).pack("s", b"\xff"),  # DecodeError: undecodable
            PacketWriter("probe", 2).pack("s", "five"),
        ]
        for packet in sends:
            await tx.send(packet, rx.local_address)
        await received(rx, len(sends))
        await rx.join()
        assert log == [Ping(1), Note("two"), Ping(3), Note("five")]
        stats = rx.stats
        assert stats.drops[DropReason.UNKNOWN_COMMAND] == 1
        assert stats.drops[DropReason.UNDECODABLE] == 2
        assert stats.handler_errors == 0
        assert stats.handled == 4
        assert_accounted(stats, pending=0)


async def test_any_module_handler_takes_unknown_modules_in_arrival_order() -> None:
    seen: list[tuple[str, int]] = []
    dialogs: list[int] = []
    async with Endpoint() as rx, Endpoint() as tx:

        @rx.handler("*")
        async def everything_else(packet: PacketReader, source: Any) -> None:
            await asyncio.sleep(0)
            seen.append((packet.module, seq_of(packet)))

        @rx.handler("dialog")
        async def dialog(packet: PacketReader, source: Any) -> None:
            dialogs.append(seq_of(packet))

        modules = ["ul", "presence", "dialog", "ul", "nosuchmod", "dialog"]
        for seq, module in enumerate(modules):
            await tx.send(numbered(seq, module), rx.local_address)
        await received(rx, len(modules))
        await rx.join()
        assert seen == [("ul", 0), ("presence", 1), ("ul", 3), ("nosuchmod", 4)]
        assert dialogs == [2, 5]
        rx.unregister("*")
        await tx.send(numbered(6, "ul"), rx.local_address)
        await received(rx, len(modules) + 1)
        stats = rx.stats
        assert stats.drops[DropReason.UNKNOWN_MODULE] == 1
        assert stats.handled == 6
        assert_accounted(stats, pending=0)


# --- registry and lifecycle -----------------------------------------------------------------


async def test_module_registered_again_keeps_order_with_its_draining_queue() -> None:
    order: list[tuple[str, int]] = []
    release = asyncio.Event()
    async with Endpoint() as rx, Endpoint() as tx:

        async def old(packet: PacketReader, source: Any) -> None:
            await release.wait()
            order.append(("old", seq_of(packet)))

        async def new(packet: PacketReader, source: Any) -> None:
            order.append(("new", seq_of(packet)))

        rx.register("dialog", old)
        for seq in range(3):
            await tx.send(numbered(seq), rx.local_address)
        await received(rx, 3)
        rx.unregister("dialog")  # its three packets are still queued or in the handler
        rx.register("dialog", new)
        for seq in range(3, 5):
            await tx.send(numbered(seq), rx.local_address)
        await received(rx, 5)
        await asyncio.sleep(0.01)
        assert order == []  # the new handler waits for the old queue
        release.set()
        await rx.join()
        assert order == [("old", 0), ("old", 1), ("old", 2), ("new", 3), ("new", 4)]
        assert rx.stats.handled == 5
        assert_accounted(rx.stats, pending=0)


async def test_register_unregister_and_lifecycle_errors() -> None:
    endpoint = Endpoint()
    with pytest.raises(EndpointNotRunning):
        _ = endpoint.local_address

    async def handle(packet: PacketReader, source: Any) -> None:
        await asyncio.sleep(0.01)

    endpoint.register("dialog", handle)  # before start: workers start with it
    with pytest.raises(AlreadyRegistered):
        endpoint.register("dialog", handle)
    with pytest.raises(NotRegistered):
        endpoint.unregister("ul")
    await endpoint.start()
    try:
        for seq in range(5):
            endpoint.datagram_received(numbered(seq), ("127.0.0.1", 1))
        endpoint.unregister("dialog")  # the 5 queued packets are still handled
        endpoint.datagram_received(numbered(5), ("127.0.0.1", 1))
        await endpoint.join()
        stats = endpoint.stats
        assert stats.handled == 5 and stats.drops[DropReason.UNKNOWN_MODULE] == 1
        assert_accounted(stats, pending=0)
        assert stats.queue_depths == {}
        endpoint.register("dialog", handle)
        endpoint.datagram_received(numbered(6), ("127.0.0.1", 1))
        await endpoint.join()
        assert endpoint.stats.handled == 6
    finally:
        await endpoint.close()
    await endpoint.close()  # idempotent
    with pytest.raises(EndpointNotRunning):
        endpoint.register("ul", handle)
    with pytest.raises(EndpointNotRunning):
        await endpoint.send(numbered(0), ("127.0.0.1", 9))


async def test_packets_fed_before_start_are_accounted_when_their_module_goes() -> None:
    endpoint = Endpoint()

    async def handle(packet: PacketReader, source: Any) -> None:
        raise AssertionError("no worker runs before start")

    endpoint.register("dialog", handle)
    for seq in range(3):
        endpoint.datagram_received(numbered(seq), ("127.0.0.1", 1))
    assert_accounted(endpoint.stats, pending=3)
    endpoint.unregister("dialog")  # never started: nothing will take them
    stats = endpoint.stats
    assert stats.received == 3 and stats.drops[DropReason.SHUTDOWN] == 3
    assert_accounted(stats, pending=0)
    await endpoint.close()


# --- shutdown ------------------------------------------------------------------------------------


async def test_close_stops_receiving_then_drains_the_queue() -> None:
    handled: list[int] = []
    async with Endpoint() as tx:
        rx = Endpoint()

        @rx.handler("dialog")
        async def handle(packet: PacketReader, source: Any) -> None:
            await asyncio.sleep(0.001)
            handled.append(seq_of(packet))

        await rx.start()
        address = rx.local_address
        for seq in range(200):
            await tx.send(numbered(seq), address)
        await received(rx, 200)
        assert rx.stats.pending > 0
        await rx.close()
        assert handled == list(range(200))
        stats = rx.stats
        assert stats.handled == 200
        assert_accounted(stats, pending=0)
        assert all(worker.done() for lane in rx._lanes.values() for worker in lane.workers)
        await tx.send(numbered(999), address)  # nobody reads it any more
        await asyncio.sleep(0.02)
        assert rx.stats.received == 200


async def test_close_times_out_and_counts_what_was_left() -> None:
    rx = Endpoint(drain_timeout=0.1)

    @rx.handler("dialog")
    async def hang(packet: PacketReader, source: Any) -> None:
        await asyncio.sleep(3600)

    await rx.start()
    for seq in range(4):
        rx.datagram_received(numbered(seq), ("127.0.0.1", 1))
    await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await rx.close()
    assert loop.time() - began < 2
    stats = rx.stats
    assert stats.drops[DropReason.SHUTDOWN] == 4  # 1 in the handler, 3 queued
    assert_accounted(stats, pending=0)
    tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("binif-")]
    assert tasks == []


# --- the accounting invariant under a burst --------------------------------------------------


async def test_accounting_invariant_after_100000_mixed_datagrams() -> None:
    valid = [vector("dialog-created-1.bin"), vector("dialog-updated-1.bin"), numbered(1, command=7)]
    invalid = {
        DropReason.TOO_SHORT: vector("crafted-runt-12.bin"),
        DropReason.BAD_MARKER: vector("crafted-bad-marker.bin"),
        DropReason.BAD_CHECKSUM: vector("crafted-dialog-created-bad-crc.bin"),
        DropReason.UNKNOWN_MODULE: vector("usrloc-contact-insert-1.bin"),
        DropReason.MALFORMED: DATAGRAM.frame(b"\xff\xff\xff\xff\x01\x00\x00\x00xy"),
    }
    undecodable = vector("crafted-dialog-created-truncated-281-crc-ok.bin")
    kinds = [*valid, *invalid.values(), undecodable]
    rng = random.Random(100_000)
    burst = [rng.choice(kinds) for _ in range(100_000)]
    direct, over_socket = burst[:90_000], burst[90_000:]
    layouts = {1: DIALOG_LAYOUT, 2: DIALOG_LAYOUT}
    # The queue holds 400: each 1000-datagram chunk carries about 444 for "dialog",
    # so some are dropped as queue_full, and the rest are handled between chunks.
    async with Endpoint(queue_size=400) as rx, Endpoint() as tx:

        @rx.handler("dialog")
        async def handle(packet: PacketReader, source: Any) -> None:
            packet.unpack(layouts.get(packet.command, "si"), exact=True)

        source = tx.local_address
        for start in range(0, len(direct), 1000):
            for data in direct[start : start + 1000]:
                rx.datagram_received(data, source)
            await rx.join()
        chunk = burst_size(rx, max(len(data) for data in kinds), 500)
        for start in range(0, len(over_socket), chunk):
            for data in over_socket[start : start + chunk]:
                await tx.send(data, rx.local_address)
            await received(rx, len(direct) + min(start + chunk, len(over_socket)))
        await rx.join()
        stats = rx.stats
    assert stats.received == 100_000
    assert_accounted(stats, pending=0)
    for reason, data in invalid.items():
        assert stats.drops[reason] == burst.count(data), reason
    # Packets for "dialog" were handled, undecodable, or (when the burst outran
    # the worker) dropped as queue_full; nothing else happened to them.
    dialog = sum(burst.count(data) for data in valid) + burst.count(undecodable)
    assert dialog == (
        stats.handled + stats.drops[DropReason.UNDECODABLE] + stats.drops[DropReason.QUEUE_FULL]
    )
    assert stats.dispatched == stats.handled + stats.drops[DropReason.UNDECODABLE]
    assert 0 < stats.drops[DropReason.UNDECODABLE] <= burst.count(undecodable)
    assert stats.handler_errors == 0 and stats.handled > 30_000
    assert stats.drops[DropReason.QUEUE_FULL] > 0
