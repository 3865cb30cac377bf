"""The endpoint's sans-I/O core: classification, registry, allowlist, log limiter, stats.

No sockets and no event loop: the core is fed bytes and addresses.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import ipaddress
import json
import logging
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from binif import (
    ANY_MODULE,
    DATAGRAM,
    DATAGRAM_BIG_ENDIAN,
    STREAM,
    AddressTypeError,
    AlreadyRegistered,
    DecodeError,
    DropReason,
    InvalidAddress,
    NotRegistered,
    PacketReader,
    PacketWriter,
    Stats,
)
from binif.dispatch import AllowList, Dispatcher, LogLimiter, Route, Target, reason_for
from binif.stats import Counters, udp_kernel_drops
from binif.wire import WireFormat

VECTORS = Path(__file__).parent / "vectors" / "opensips-2.1"
SOURCE = ("127.0.0.1", 5062)
DIALOG_LAYOUT = "sssssiiissssssssssssiiiii"


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


async def raw_handler(packet: PacketReader, source: Any) -> None:
    """A handler the core never calls."""


@dataclass(frozen=True, slots=True)
class Deleted:
    """A minimal typed message: dialog command 3, three str fields."""

    MODULE: ClassVar[str] = "dialog"
    COMMAND: ClassVar[int] = 3

    callid: bytes
    from_tag: bytes
    to_tag: bytes

    @classmethod
    def from_packet(cls, reader: PacketReader) -> Deleted:
        if (reader.module, reader.command) != (cls.MODULE, cls.COMMAND):
            raise DecodeError("not a dialog delete")
        callid, from_tag, to_tag = reader.unpack("sss", exact=True)
        assert isinstance(callid, bytes) and isinstance(from_tag, bytes)
        assert isinstance(to_tag, bytes)
        return cls(callid, from_tag, to_tag)


async def deleted_handler(message: Deleted, source: Any) -> None:
    """A typed handler the core never calls."""


def dialog_dispatcher(**options: Any) -> Dispatcher:
    dispatcher = Dispatcher(**options)
    dispatcher.register("dialog", raw_handler)
    return dispatcher


# --- classification: every vector lands where OpenSIPS (or better) puts it ---------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dialog-created-1.bin", None),
        ("dialog-updated-2.bin", None),
        ("dialog-deleted-3.bin", None),
        ("crafted-dialog-created-accepted.bin", None),
        ("crafted-dialog-cmd9.bin", None),  # the raw handler takes every command
        # CRC-valid but cut short: the header is fine, the handler's unpack fails later
        ("crafted-dialog-created-truncated-140-crc-ok.bin", None),
        ("crafted-runt-12.bin", DropReason.TOO_SHORT),
        ("crafted-bad-marker.bin", DropReason.BAD_MARKER),
        ("crafted-dialog-created-bad-crc.bin", DropReason.BAD_CHECKSUM),
        ("crafted-dialog-created-truncated-140-full-crc.bin", DropReason.BAD_CHECKSUM),
        ("crafted-unknown-module.bin", DropReason.UNKNOWN_MODULE),
        ("usrloc-contact-insert-1.bin", DropReason.UNKNOWN_MODULE),
    ],
)
def test_classify_vectors(name: str, expected: DropReason | None) -> None:
    data = vector(name)
    verdict = dialog_dispatcher().classify(data, SOURCE)
    if expected is None:
        assert isinstance(verdict, PacketReader)
        assert verdict == PacketReader.parse(data)
        assert verdict.module == "dialog"
    else:
        assert verdict is expected


def test_classify_too_long_and_malformed() -> None:
    dispatcher = dialog_dispatcher()
    assert dispatcher.classify(b"P4CK" + bytes(65532), SOURCE) is DropReason.TOO_LONG
    zero_name = DATAGRAM.frame(struct.pack("<ii", 0, 1) + b"xx")
    assert dispatcher.classify(zero_name, SOURCE) is DropReason.MALFORMED
    not_utf8 = DATAGRAM.frame(struct.pack("<i", 2) + b"\xff\xfe" + struct.pack("<i", 1))
    assert dispatcher.classify(not_utf8, SOURCE) is DropReason.MALFORMED


@pytest.mark.parametrize("wire", [DATAGRAM, STREAM], ids=lambda wire: wire.name)
def test_a_wrong_marker_is_judged_after_the_size_as_the_parser_does(wire: WireFormat) -> None:
    """The dispatcher refuses a foreign marker without parsing, in the parser's order."""
    dispatcher = Dispatcher(wire=wire)
    dispatcher.register("dialog", raw_handler)
    version = 1 if wire.has_version else None
    writer = PacketWriter("dialog", 3, wire=wire, version=version).pack("sss", "c", "f", "t")
    good = writer.to_bytes()
    for data in (
        b"XXXX" + good[4:],  # a valid size: bad marker
        b"XXXX" + bytes(wire.min_packet - 5),  # one byte short: too short first
        b"XXXX" + bytes(wire.max_packet - 3),  # one byte over: too long first (datagram)
        b"P4C",
    ):
        with pytest.raises(DecodeError) as caught:
            PacketReader.parse(data, wire=wire)
        assert dispatcher.classify(data, SOURCE) is reason_for(caught.value)
    assert dispatcher.classify(b"XXXX" + good[4:], SOURCE) is DropReason.BAD_MARKER
    for kind in (bytes, bytearray, memoryview):
        verdict = dispatcher.classify(kind(good), SOURCE)
        assert isinstance(verdict, PacketReader) and verdict.unpack("sss") == (b"c", b"f", b"t")


def test_classify_big_endian_wire() -> None:
    packet = PacketWriter("dialog", 3, wire=DATAGRAM_BIG_ENDIAN).pack("sss", "c", "f", "t")
    little = dialog_dispatcher()
    big = dialog_dispatcher(wire=DATAGRAM_BIG_ENDIAN)
    verdict = big.classify(packet.to_bytes(), SOURCE)
    assert isinstance(verdict, PacketReader)
    assert verdict.unpack("sss") == (b"c", b"f", b"t")
    assert isinstance(little.classify(packet.to_bytes(), SOURCE), DropReason)


def test_reason_for_maps_every_frame_error() -> None:
    for data, reason in [
        (b"P4CK", DropReason.TOO_SHORT),
        (b"XXXX" + bytes(20), DropReason.BAD_MARKER),
        (b"P4CK" + bytes(20), DropReason.BAD_CHECKSUM),
    ]:
        with pytest.raises(DecodeError) as caught:
            PacketReader.parse(data)
        assert reason_for(caught.value) is reason


# --- allowlist ----------------------------------------------------------------------


def test_allowlist_is_checked_before_decoding() -> None:
    dispatcher = dialog_dispatcher(allow=["10.1.0.0/16", ipaddress.ip_network("::1/128")])
    runt = vector("crafted-runt-12.bin")
    assert dispatcher.classify(runt, ("127.0.0.1", 1)) is DropReason.SOURCE_NOT_ALLOWED
    assert dispatcher.classify(runt, ("10.1.2.3", 1)) is DropReason.TOO_SHORT
    assert dispatcher.classify(runt, ("::1", 1, 0, 0)) is DropReason.TOO_SHORT


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("128.0.0.1", False),
        ("::1", True),
        ("::2", False),
        ("::ffff:127.0.0.1", True),  # IPv4-mapped source on a dual-stack socket
        ("::ffff:10.0.0.1", False),
        ("fe80::1%eth0", True),
        ("fe80::2%2", True),
        ("not-an-address", False),
        ("", False),
    ],
)
def test_allowlist_hosts(host: str, allowed: bool) -> None:
    allow = AllowList(["127.0.0.0/8", "::1", "fe80::/64"])
    assert allow.allows(host) is allowed
    assert allow.allows(host) is allowed  # cached answer is the same


def test_allowlist_verdict_cache_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sources are the sender's choice: more distinct ones than the limit do not grow it."""
    monkeypatch.setattr(AllowList, "_CACHE_LIMIT", 16)
    dispatcher = dialog_dispatcher(allow=["10.0.0.0/24"])
    allow = dispatcher.allow
    assert allow is not None
    runt = vector("crafted-runt-12.bin")
    for number in range(1000):
        host = f"10.0.{number // 250}.{number % 250}"
        verdict = dispatcher.classify(runt, (host, 1))
        expected = DropReason.TOO_SHORT if number < 250 else DropReason.SOURCE_NOT_ALLOWED
        assert verdict is expected, host
        assert len(allow._cache) <= 16
    assert allow.allows("10.0.0.7") and not allow.allows("10.0.1.7")


def test_allowlist_rejects_invalid_network_naming_it() -> None:
    with pytest.raises(InvalidAddress, match=r"allow= entry '300\.1\.1\.1/8' is not a network"):
        AllowList(["300.1.1.1/8"])
    with pytest.raises(AddressTypeError, match=r"not int 10"):
        AllowList(["10.0.0.0/8", 10])  # type: ignore[list-item]
    with pytest.raises(AddressTypeError, match=r"allow= must be a list of networks, not str"):
        AllowList("10.0.0.0/8")


# --- registry -----------------------------------------------------------------------


def test_register_twice_is_an_error_and_unregister_works() -> None:
    dispatcher = dialog_dispatcher()
    with pytest.raises(AlreadyRegistered):
        dispatcher.register("dialog", raw_handler)
    route = dispatcher.unregister("dialog")
    assert route.module == "dialog" and route.raw is not None
    data = vector("dialog-created-1.bin")
    assert dispatcher.classify(data, SOURCE) is DropReason.UNKNOWN_MODULE
    with pytest.raises(NotRegistered):
        dispatcher.unregister("dialog")
    dispatcher.register("dialog", raw_handler)
    assert isinstance(dispatcher.classify(data, SOURCE), PacketReader)


def test_any_module_takes_every_module_without_a_handler() -> None:
    dispatcher = Dispatcher()
    dispatcher.register_message(Deleted, deleted_handler)
    unknown = vector("crafted-unknown-module.bin")
    assert dispatcher.classify(unknown, SOURCE) is DropReason.UNKNOWN_MODULE
    catch_all = dispatcher.register(ANY_MODULE, raw_handler)
    assert catch_all.module == "*"
    reader = dispatcher.classify(unknown, SOURCE)
    assert isinstance(reader, PacketReader) and reader.module == "nosuchmod"
    assert catch_all.target(reader) == Target(raw_handler, None)
    # A module with handlers of its own keeps them: its unknown commands are not the catch-all's.
    assert dispatcher.classify(vector("dialog-created-1.bin"), SOURCE) is (
        DropReason.UNKNOWN_COMMAND
    )
    # Frame errors stay drops whatever is registered.
    assert dispatcher.classify(vector("crafted-bad-marker.bin"), SOURCE) is DropReason.BAD_MARKER
    dispatcher.unregister(ANY_MODULE)
    assert dispatcher.classify(unknown, SOURCE) is DropReason.UNKNOWN_MODULE


# --- dropped heads: decided once until the handlers change ---------------------------


def test_a_handler_registered_after_a_drop_takes_the_next_packet_of_that_head() -> None:
    dispatcher = Dispatcher()
    unknown = vector("crafted-unknown-module.bin")
    created = vector("dialog-created-1.bin")
    for _ in range(2):  # the second verdict comes from the dropped head
        assert dispatcher.classify(unknown, SOURCE) is DropReason.UNKNOWN_MODULE
    dispatcher.register("nosuchmod", raw_handler)
    reader = dispatcher.classify(unknown, SOURCE)
    assert isinstance(reader, PacketReader) and reader == PacketReader.parse(unknown)
    dispatcher.register_message(Deleted, deleted_handler)
    assert dispatcher.classify(created, SOURCE) is DropReason.UNKNOWN_COMMAND
    dispatcher.register("dialog", raw_handler)  # joins the typed route of "dialog"
    assert isinstance(dispatcher.classify(created, SOURCE), PacketReader)
    dispatcher.unregister("nosuchmod")
    assert dispatcher.classify(unknown, SOURCE) is DropReason.UNKNOWN_MODULE
    dispatcher.register(ANY_MODULE, raw_handler)
    assert isinstance(dispatcher.classify(unknown, SOURCE), PacketReader)


def test_a_bad_checksum_is_bad_checksum_even_when_its_head_was_dropped() -> None:
    """The checksum comes before the module lookup, as in OpenSIPS, remembered or not."""
    dispatcher = dialog_dispatcher()
    unknown = vector("crafted-unknown-module.bin")
    assert dispatcher.classify(unknown, SOURCE) is DropReason.UNKNOWN_MODULE
    last = len(unknown) - 1
    corrupted = unknown[:last] + bytes([unknown[last] ^ 1])
    assert unknown[DATAGRAM.header_size :][:20] == corrupted[DATAGRAM.header_size :][:20]
    assert dispatcher.classify(corrupted, SOURCE) is DropReason.BAD_CHECKSUM
    assert dispatcher.classify(b"XXXX" + unknown[4:], SOURCE) is DropReason.BAD_MARKER
    assert dispatcher.classify(unknown[:-1], SOURCE) is DropReason.BAD_CHECKSUM
    assert dispatcher.classify(unknown, SOURCE) is DropReason.UNKNOWN_MODULE


def test_dropped_heads_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Module names are the sender's choice: more distinct ones than the limit do not grow it."""
    monkeypatch.setattr("binif.dispatch._DROPPED_MAX", 16)
    dispatcher = dialog_dispatcher()
    for number in range(100):
        data = PacketWriter(f"mod{number}", 1).pack("s", "x").to_bytes()
        for _ in range(2):
            assert dispatcher.classify(data, SOURCE) is DropReason.UNKNOWN_MODULE
        assert len(dispatcher._dropped) <= 16
    assert isinstance(dispatcher.classify(vector("dialog-created-1.bin"), SOURCE), PacketReader)


def test_dropped_heads_are_told_apart_by_version() -> None:
    core = Dispatcher(wire=STREAM)
    core.register("dialog", raw_handler, versions={4})
    v5 = PacketWriter("dialog", 1, wire=STREAM, version=5).pack("s", "x").to_bytes()
    v4 = PacketWriter("dialog", 1, wire=STREAM, version=4).pack("s", "x").to_bytes()
    for _ in range(2):
        assert core.classify(v5, SOURCE) is DropReason.BAD_VERSION
        assert isinstance(core.classify(v4, SOURCE), PacketReader)


def test_register_checks_options() -> None:
    dispatcher = Dispatcher()
    with pytest.raises(ValueError):
        dispatcher.register("dialog", raw_handler, concurrency=0)
    with pytest.raises(ValueError):
        dispatcher.register("dialog", raw_handler, timeout=0)
    assert dispatcher.routes == {}


def test_typed_only_module_drops_unknown_commands() -> None:
    dispatcher = Dispatcher()
    route = dispatcher.register_message(Deleted, deleted_handler)
    assert route.accepts(3) and not route.accepts(1)
    deleted = dispatcher.classify(vector("dialog-deleted-1.bin"), SOURCE)
    assert isinstance(deleted, PacketReader)
    target = dispatcher.routes["dialog"].target(deleted)
    assert isinstance(target, Target) and target.handler is deleted_handler
    assert target.decode is not None
    message = target.decode(deleted)
    assert isinstance(message, Deleted) and message.callid.startswith(b"rig21-call-")
    created = vector("dialog-created-1.bin")
    assert dispatcher.classify(created, SOURCE) is DropReason.UNKNOWN_COMMAND
    with pytest.raises(AlreadyRegistered):
        dispatcher.register_message(Deleted, deleted_handler)


def test_raw_handler_takes_commands_without_typed_handler() -> None:
    dispatcher = Dispatcher()
    dispatcher.register_message(Deleted, deleted_handler)
    route = dispatcher.register("dialog", raw_handler, timeout=2.0)
    created = dispatcher.classify(vector("dialog-created-1.bin"), SOURCE)
    assert isinstance(created, PacketReader)
    target = route.target(created)
    assert isinstance(target, Target)
    assert target.handler is raw_handler and target.decode is None and target.timeout == 2.0
    deleted = dispatcher.classify(vector("dialog-deleted-1.bin"), SOURCE)
    assert isinstance(deleted, PacketReader)
    typed = route.target(deleted)
    assert isinstance(typed, Target) and typed.handler is deleted_handler


def test_handlers_of_one_module_share_concurrency() -> None:
    dispatcher = Dispatcher()
    dispatcher.register_message(Deleted, deleted_handler, concurrency=4)
    with pytest.raises(ValueError, match="concurrency 4"):
        dispatcher.register("dialog", raw_handler)
    assert dispatcher.register("dialog", raw_handler, concurrency=4).concurrency == 4


def test_message_class_needs_module_and_command() -> None:
    class Nameless:
        MODULE: ClassVar[Any] = None
        COMMAND: ClassVar[int] = 1

        @classmethod
        def from_packet(cls, reader: PacketReader) -> Nameless:
            return cls()

    with pytest.raises(TypeError):
        Dispatcher().register_message(Nameless, deleted_handler)


# --- handlers are checked when registered, not when the first packet comes -------------


def sync_handler(packet: PacketReader, source: Any) -> None:
    """Not async: could never be awaited."""


async def one_argument(packet: PacketReader) -> None:
    """Async, but the source would not fit."""


async def three_arguments(packet: PacketReader, source: Any, extra: int) -> None:
    """Async, but it needs a third argument."""


class AsyncCallable:
    async def __call__(self, packet: PacketReader, source: Any) -> None:
        """An object whose __call__ is async def is a handler."""


class SyncCallable:
    def __call__(self, packet: PacketReader, source: Any) -> None:
        """An object whose __call__ is a plain method is not."""


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        (sync_handler, "sync_handler is a plain function: declare it with async def"),
        (SyncCallable(), "SyncCallable.* is a plain function"),
        (lambda packet, source: None, "<lambda> is a plain function"),
        (42, r"needs an async def handler\(packet, source\), not int 42"),
        (None, "not NoneType None"),
        (one_argument, r"one_argument\(packet\) cannot be called with those two arguments"),
        (three_arguments, r"three_arguments\(packet, source, extra\) cannot be called with"),
    ],
)
def test_register_refuses_what_is_not_an_async_two_argument_handler(
    handler: Any, message: str
) -> None:
    dispatcher = Dispatcher()
    with pytest.raises(TypeError, match=message):
        dispatcher.register("dialog", handler)
    typed = message.replace("handler\\(packet, source\\)", "handler\\(message, source\\)")
    with pytest.raises(TypeError, match=typed):
        dispatcher.register_message(Deleted, handler)
    assert dict(dispatcher.routes) == {}  # nothing half registered


async def with_defaults(packet: PacketReader, source: Any, extra: int = 0, *rest: Any) -> None:
    """Extra parameters with defaults are fine."""


@pytest.mark.parametrize(
    "handler",
    [raw_handler, AsyncCallable(), functools.partial(three_arguments, extra=1), with_defaults],
)
def test_register_takes_async_callables_of_two_arguments(handler: Any) -> None:
    dispatcher = Dispatcher()
    assert dispatcher.register("dialog", handler).raw == Target(handler, None)


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (int, "takes a message class .* not <class 'int'>"),
        (Deleted(b"", b"", b""), "takes a message class"),
        (
            type("NoModule", (Deleted,), {"MODULE": None}),
            "NoModule needs a str MODULE and an int COMMAND .* not None and 3",
        ),
        (
            type("BoolCommand", (Deleted,), {"COMMAND": True}),
            "BoolCommand needs a str MODULE and an int COMMAND",
        ),
    ],
)
def test_register_message_names_what_the_class_lacks(message: Any, error: str) -> None:
    with pytest.raises(TypeError, match=error):
        Dispatcher().register_message(message, deleted_handler)


def test_register_refuses_a_module_that_is_not_a_str() -> None:
    with pytest.raises(TypeError, match="module must be a str"):
        Dispatcher().register(b"dialog", raw_handler)  # type: ignore[arg-type]


def test_route_is_immutable() -> None:
    route = Route("dialog", Target(raw_handler, None))
    with pytest.raises(AttributeError):
        route.module = "ul"  # type: ignore[misc]


# --- log limiter ----------------------------------------------------------------------


def test_log_limiter_one_line_per_key_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    limiter = LogLimiter(logging.getLogger("binif.test"), interval=1.0)
    with caplog.at_level(logging.INFO, logger="binif.test"):
        assert limiter.log("a", 10.0, logging.WARNING, "drop %s", "x")
        assert not limiter.log("a", 10.5, logging.WARNING, "drop %s", "x")
        assert not limiter.log("a", 10.9, logging.WARNING, "drop %s", "x")
        assert limiter.log("b", 10.9, logging.WARNING, "other")
        assert limiter.log("a", 11.0, logging.WARNING, "drop %s", "y")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["drop x", "other", "drop y (2 similar suppressed)"]


def test_log_gate_is_the_limiters_state_for_one_key(caplog: pytest.LogCaptureFixture) -> None:
    """A hot path holding a key's gate may test and count without calling the limiter."""
    limiter = LogLimiter(logging.getLogger("binif.test"), interval=1.0)
    gate = limiter.gate("k")
    assert limiter.gate("k") is gate and gate.held == 0
    with caplog.at_level(logging.INFO, logger="binif.test"):
        assert gate.until <= 5.0
        limiter.emit("k", 5.0, logging.WARNING, "first")
        assert gate.until == 6.0
        gate.held += 3  # what a hot path does while 5.0 <= now < 6.0
        assert not limiter.ready("k", 5.5)
        assert limiter.log("k", 6.0, logging.WARNING, "second")
    assert [record.getMessage() for record in caplog.records] == [
        "first",
        "second (4 similar suppressed)",
    ]
    assert gate.held == 0


# --- stats ------------------------------------------------------------------------------


def test_stats_snapshot_is_frozen_and_balanced() -> None:
    counters = Counters()
    counters.received = 10
    counters.handled = 4
    counters.handler_errors = 1
    counters.handler_timeouts = 1
    counters.drops[DropReason.BAD_CHECKSUM] = 2
    stats = Stats.capture(counters, pending=2, queue_depths={"dialog": 1})
    assert stats.dropped == 2 and stats.finished == 8 and stats.balanced()
    counters.handled = 99  # the snapshot does not move
    assert stats.handled == 4
    with pytest.raises(AttributeError):
        stats.handled = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        stats.drops[DropReason.TOO_SHORT] = 1  # type: ignore[index]
    assert set(stats.drops) == set(DropReason)
    assert stats.as_dict()["drops"]["bad_checksum"] == 2
    unbalanced = Stats.capture(counters, pending=0, queue_depths={})
    assert not unbalanced.balanced()


def test_kernel_drops_unknown_inode_is_none() -> None:
    assert udp_kernel_drops(0, ipv6=False) is None
    assert udp_kernel_drops(2**62, ipv6=True) is None


def test_dialog_vector_matches_layout() -> None:
    reader = PacketReader.parse(vector("dialog-created-1.bin"))
    assert len(reader.unpack(DIALOG_LAYOUT, exact=True)) == 25


def test_stats_pickle_round_trip() -> None:
    counters = Counters()
    counters.drops[DropReason.QUEUE_FULL] = 3
    stats = Stats.capture(counters, pending=0, queue_depths={"dialog": 2}, kernel_drops=5)
    copy = pickle.loads(pickle.dumps(stats))
    assert copy == stats and copy.drops[DropReason.QUEUE_FULL] == 3
    assert isinstance(next(iter(copy.drops)), DropReason)


def test_stats_is_a_dataclass_that_asdict_and_json_take() -> None:
    counters = Counters()
    counters.drops[DropReason.BAD_CHECKSUM] = 2
    stats = Stats.capture(counters, pending=1, queue_depths={"dialog": 1}, kernel_drops=0)
    plain = dataclasses.asdict(stats)
    assert plain["drops"][DropReason.BAD_CHECKSUM] == 2 and plain["queue_depths"] == {"dialog": 1}
    assert json.loads(json.dumps(plain))["drops"]["bad_checksum"] == 2
    assert copy.deepcopy(stats) == stats and copy.copy(stats) == stats
    with pytest.raises(TypeError, match="a stats snapshot is read-only"):
        plain["drops"][DropReason.BAD_CHECKSUM] = 99


def stream_packet(version: int, command: int = 1, module: str = "dialog") -> PacketReader:
    data = PacketWriter(module, command, wire=STREAM, version=version).pack("s", "x").to_bytes()
    return PacketReader.parse(data, wire=STREAM)


def test_check_routes_a_parsed_stream_packet_by_module_command_and_version() -> None:
    core = Dispatcher(wire=STREAM)
    core.register("dialog", raw_handler, versions={4})
    core.register_message(Versioned, raw_handler)
    packet = stream_packet(4)
    assert core.check(packet) is packet
    assert core.check(stream_packet(5)) is DropReason.BAD_VERSION
    assert core.check(stream_packet(4, module="tm")) is DropReason.UNKNOWN_MODULE
    assert core.check(stream_packet(4, module="usrloc")) is DropReason.UNKNOWN_COMMAND
    typed = stream_packet(4, command=Versioned.COMMAND, module=Versioned.MODULE)
    assert core.check(typed) is typed
    other = stream_packet(3, command=Versioned.COMMAND, module=Versioned.MODULE)
    assert core.check(other) is DropReason.BAD_VERSION


def test_versions_are_checked_at_registration() -> None:
    with pytest.raises(ValueError, match="carries no version"):
        Dispatcher().register("dialog", raw_handler, versions={4})
    core = Dispatcher(wire=STREAM)
    for bad, error in (({70000}, ValueError), (set(), ValueError), (4, TypeError)):
        with pytest.raises(error):
            core.register("dialog", raw_handler, versions=bad)  # type: ignore[arg-type]
    assert "dialog" not in core.routes


@dataclass(frozen=True, slots=True)
class Versioned:
    """A typed message that reads layout version 4 only."""

    MODULE: ClassVar[str] = "usrloc"
    COMMAND: ClassVar[int] = 7
    VERSIONS: ClassVar[frozenset[int]] = frozenset({4})

    @classmethod
    def from_packet(cls, reader: PacketReader) -> Versioned:
        return cls()
