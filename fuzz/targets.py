"""Fuzz targets: plain functions of one ``bytes`` input, importable without atheris.

Each target feeds its input to binif and checks what came out. A
:class:`~binif.BinError` subclass from the step that takes the input (parse,
build) is the codec saying "malformed" or "cannot encode" and is fine; any other
exception (an ``AssertionError`` from an oracle here included) is a bug, and so
is a ``BinError`` from a check step (parsing back what was built, rebuilding
what was read, encoding what was decoded): :func:`_checked` turns it into one.
The regression test replays every saved input through these same functions, so
an input's meaning must never change: the decoding of inputs below is ours and
deterministic, not atheris's ``FuzzedDataProvider``.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import logging
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from binif import (
    DATAGRAM,
    DATAGRAM_BIG_ENDIAN,
    STREAM,
    STREAM_BIG_ENDIAN,
    BinError,
    DecodeError,
    EncodeError,
    FieldError,
    FieldTypeError,
    IntOutOfRange,
    InvalidModuleName,
    PacketReader,
    PacketTooLarge,
    PacketTooSmall,
    PacketWriter,
    StreamBroken,
    StreamDecoder,
    TrailingBytes,
    TruncatedField,
    WireFormat,
)

__all__ = [
    "TARGETS",
    "VECTORS",
    "codec",
    "dispatch",
    "encode_writer_input",
    "run_one",
    "seeds",
    "stream",
    "stream_dispatch",
    "writer",
]

WIRES = (DATAGRAM, DATAGRAM_BIG_ENDIAN)
VECTORS = Path(__file__).resolve().parent.parent / "tests" / "vectors" / "opensips-2.1"
STREAM_VECTORS = VECTORS.parent / "opensips-4.0"

# The field layouts of OpenSIPS 2.1's modules (WIRE.md), tried on every packet.
KNOWN_LAYOUTS = (
    "sssssiiissssssssssssiiiii",  # dialog 1, 2
    "sss",  # dialog 3
    "ss",  # ul 1, 2
    "ssssssssssssiiiis",  # ul 3, 4
    "ssssi",  # ul 5
)


@contextlib.contextmanager
def _checked(step: str) -> Iterator[None]:
    """Run a check step: a BinError there is a bug of the codec, not a verdict on the input."""
    try:
        yield
    except BinError as exc:
        raise AssertionError(f"{step} raised {type(exc).__name__}: {exc}") from exc


def _layout_from(selector: int) -> str:
    """0 to 31 fields, their kinds taken from the other bits of ``selector``."""
    count = selector & 31
    return "".join("s" if selector >> ((5 + i) % 32) & 1 else "i" for i in range(count))


def _pop(reader: PacketReader, kind: str) -> tuple[bytes | int, PacketReader]:
    return reader.pop_str() if kind == "s" else reader.pop_int()


def _check_unpack_matches_pops(reader: PacketReader, layout: str) -> None:
    """``unpack`` (fast path) and one pop per field (slow path) must agree exactly."""
    popped: list[bytes | int] = []
    pop_error: FieldError | None = None
    current = reader
    for kind in layout:
        before = current.offset
        try:
            value, current = _pop(current, kind)
        except FieldError as exc:
            assert current.offset == before, "a failed pop moved the reader"
            pop_error = exc
            break
        popped.append(value)
    try:
        values, after = reader.unpack_reader(layout)
    except FieldError as exc:
        assert pop_error is not None, f"unpack({layout!r}) failed where pops succeeded: {exc}"
        assert type(exc) is type(pop_error), f"{exc!r} != {pop_error!r}"
        if isinstance(exc, TruncatedField):
            # unpack checks a run of ints at once and names the run's first field.
            assert exc.index <= pop_error.index and exc.offset <= pop_error.offset
        else:
            assert (exc.index, exc.offset) == (pop_error.index, pop_error.offset)
        return
    assert pop_error is None, f"pops failed where unpack({layout!r}) succeeded: {pop_error}"
    assert list(values) == popped
    assert after == current and after.index == reader.index + len(layout)
    try:
        exact = reader.unpack(layout, exact=True)
    except TrailingBytes as exc:
        assert not after.at_end and exc.offset == after.offset
    else:
        assert after.at_end and exact == values


def _check_skips(reader: PacketReader, count: int) -> None:
    for kind in "si":
        current = reader
        by_pops: PacketReader | None = reader
        for _ in range(count):
            try:
                current = by_pops = _pop(current, kind)[1]
            except FieldError:
                by_pops = None
                break
        try:
            skipped = reader.skip_str(count) if kind == "s" else reader.skip_int(count)
        except FieldError:
            assert by_pops is None, f"skip of {count} {kind} failed where pops succeeded"
        else:
            assert by_pops == skipped, f"skip of {count} {kind} differs from pops"


def _walk(reader: PacketReader) -> tuple[str, list[bytes | int]] | None:
    """Greedily pop str, else int, to the end; None if the packet cannot be walked."""
    layout: list[str] = []
    values: list[bytes | int] = []
    current = reader
    while not current.at_end:
        for kind in "si":
            try:
                value, after = _pop(current, kind)
            except FieldError:
                continue
            assert after.offset > current.offset and after.index == current.index + 1
            layout.append(kind)
            values.append(value)
            current = after
            break
        else:
            return None
    return "".join(layout), values


def _read(packet: bytes, wire: WireFormat, selector: int) -> None:
    try:
        reader = PacketReader.parse(packet, wire=wire)
    except DecodeError:
        return
    # The readers' own FieldErrors are compared inside; anything else is a bug.
    with _checked(f"reading a parsed {wire.name} packet"):
        _check_reader(reader, packet, wire, selector)


def _check_reader(reader: PacketReader, packet: bytes, wire: WireFormat, selector: int) -> None:
    assert reader.data == packet and reader.index == 0
    name = reader.module.encode()
    assert reader.offset == wire.header_size + 4 + len(name) + 4
    assert reader.fields == packet[reader.offset :] and reader.rewind() == reader
    assert PacketReader.parse(bytearray(packet), wire=wire) == reader

    _check_unpack_matches_pops(reader, _layout_from(selector))
    for layout in KNOWN_LAYOUTS:
        _check_unpack_matches_pops(reader, layout)
    _check_skips(reader, selector >> 27)

    walked = _walk(reader)
    if walked is not None:
        # Every field read back: rebuilding must give the very same bytes.
        layout, values = walked
        rebuilt = PacketWriter(reader.module, reader.command, wire=wire).pack(layout, *values)
        assert rebuilt.to_bytes() == packet, "writer(reader(packet)) != packet"
        assert rebuilt.size == len(packet)


def codec(data: bytes) -> None:
    """Parse ``data`` as is and with its checksum fixed, then read it every way.

    With the checksum fixed the fuzzer reaches the field readers; the four
    checksum bytes it wrote are then free and choose a layout to unpack.
    """
    for wire in WIRES:
        _read(data, wire, 0)
        if len(data) >= wire.header_size:
            (selector,) = struct.unpack_from("<I", data, 4)
            _read(wire.frame(data[wire.header_size :]), wire, selector)


# --- writer: build from a decoded description, parse back ------------------------------

_MAX_REPEAT = 70_000


class _Input:
    """Reads the writer target's input format; past the end everything is zero."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, size: int) -> bytes:
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def byte(self) -> int:
        chunk = self.take(1)
        return chunk[0] if chunk else 0


StrOrInt = bytes | str | None | int


def _decode_writer_input(data: bytes) -> tuple[int, str, int, list[tuple[str, StrOrInt]]]:
    """flags, module, command, fields as (kind, value); see :func:`encode_writer_input`."""
    src = _Input(data)
    flags = src.byte()
    # Flag 4 lets text carry lone surrogates, which no UTF-8 encoder accepts.
    errors = "surrogateescape" if flags & 4 else "replace"
    module = src.take(src.byte()).decode("utf-8", errors)
    (command,) = struct.unpack("<q", src.take(8).ljust(8, b"\0"))
    if not flags & 2:
        command = (command + 2**31) % 2**32 - 2**31
    fields: list[tuple[str, StrOrInt]] = []
    while src.left > 0:
        tag = src.byte()
        kind = tag & 7
        if kind == 0:
            (value,) = struct.unpack("<i", src.take(4).ljust(4, b"\0"))
            fields.append(("i", value))
        elif kind == 1:  # an int that may not fit in 32 bits
            (value,) = struct.unpack("<q", src.take(8).ljust(8, b"\0"))
            fields.append(("i", value))
        elif kind == 2:
            fields.append(("s", None))
        elif kind == 3:
            fields.append(("s", src.take(tag >> 3)))
        elif kind == 4:
            (size,) = struct.unpack("<H", src.take(2).ljust(2, b"\0"))
            fields.append(("s", src.take(size)))
        elif kind == 5:
            fields.append(("s", src.take(tag >> 3).decode("utf-8", errors)))
        elif kind == 6:  # a large run of one byte, to reach the size limit cheaply
            fill = src.take(1) or b"x"
            fields.append(("s", fill * min((tag >> 3) * 2048 + src.byte(), _MAX_REPEAT)))
        else:  # a value of the wrong type for its field
            fields.append(("i", "1") if tag & 8 else ("s", 1))
    return flags, module, command, fields


def encode_writer_input(
    module: str, command: int, fields: list[tuple[str, bytes | int]], *, big: bool = False
) -> bytes:
    """Write a ``writer`` input that builds exactly this packet (for seeds)."""
    name = module.encode()
    out = [bytes([int(big)]), bytes([len(name)]), name, struct.pack("<q", command)]
    for kind, value in fields:
        if kind == "i":
            assert isinstance(value, int)
            out.append(b"\0" + struct.pack("<i", value))
        else:
            assert isinstance(value, bytes)
            out.append(b"\4" + struct.pack("<H", len(value)) + value)
    return b"".join(out)


def _as_bytes(value: StrOrInt) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    assert isinstance(value, bytes)
    return value


def _encodable(text: StrOrInt) -> bool:
    try:
        text.encode() if isinstance(text, str) else None
    except UnicodeEncodeError:
        return False
    return True


def _build(
    module: str, command: int, fields: list[tuple[str, StrOrInt]], wire: WireFormat
) -> PacketWriter:
    built = PacketWriter(module, command, wire=wire)
    for kind, value in fields:
        built = built.push_str(value) if kind == "s" else built.push_int(value)  # type: ignore[arg-type]
    return built


def writer(data: bytes) -> None:
    """Build the packet the input describes two ways, then parse it back exactly."""
    flags, module, command, fields = _decode_writer_input(data)
    wire = WIRES[flags & 1]
    values = [value for _, value in fields]
    name_size = len(_as_bytes(module))
    size = wire.header_size + 4 + name_size + 4
    for kind, value in fields:
        size += 4 + (len(_as_bytes(value)) if kind == "s" and not isinstance(value, int) else 0)

    if not all(_encodable(text) for text in [module, *values]):
        try:
            _build(module, command, fields, wire).to_bytes()
        except EncodeError:
            return
        raise AssertionError("built a packet from text that UTF-8 cannot encode")
    try:
        built = _build(module, command, fields, wire)
    except InvalidModuleName:
        assert name_size == 0 or name_size > wire.max_packet - 16
        return
    except FieldTypeError:
        assert any((kind == "s") == isinstance(value, int) for kind, value in fields)
        return
    except IntOutOfRange:
        assert not -(2**31) <= command < 2**31 or any(
            kind == "i" and isinstance(value, int) and not -(2**31) <= value < 2**31
            for kind, value in fields
        )
        return
    except PacketTooLarge:
        assert size > wire.max_packet, f"refused a {size}-byte packet"
        return
    assert size <= wire.max_packet and built.size == size and built.field_count == len(fields)

    with _checked("building the same packet with pack(), then parsing it back"):
        _check_built(built, module, command, fields, wire, size)


def _check_built(
    built: PacketWriter,
    module: str,
    command: int,
    fields: list[tuple[str, StrOrInt]],
    wire: WireFormat,
    size: int,
) -> None:
    layout = "".join(kind for kind, _ in fields)
    values = [value for _, value in fields]
    at_once = PacketWriter(module, command, wire=wire).pack(layout, *values)
    assert at_once.size == size
    if size < wire.min_packet:
        for candidate in (built, at_once):
            try:
                candidate.to_bytes()
            except PacketTooSmall:
                continue
            raise AssertionError(f"built a {size}-byte packet under the minimum")
        return
    packet = built.to_bytes()
    assert len(packet) == size
    assert at_once.to_bytes() == packet, "pack() and push_*() built different packets"
    reader = PacketReader.parse(packet, wire=wire)
    assert (reader.module, reader.command) == (module, command)
    expected = tuple(_as_bytes(v) if k == "s" else v for k, v in fields)
    assert reader.unpack(layout, exact=True) == expected


# --- dispatch: the endpoint's sans-I/O core -------------------------------------------

ALLOWED = ("127.0.0.0/8", "::1/128", "10.231.0.0/16")
SOURCES: tuple[tuple[object, ...], ...] = (
    ("127.0.0.1", 5062),
    ("127.0.0.2", 5062),
    ("192.0.2.7", 5062),  # outside the allowlist
    ("::1", 5062, 0, 0),
    ("::ffff:127.0.0.1", 5062, 0, 0),  # IPv4-mapped, allowed through 127.0.0.0/8
    ("::ffff:192.0.2.7", 5062, 0, 0),
    ("fe80::1%eth0", 5062, 0, 2),
    ("2001:db8::1", 5062, 0, 0),
    ("10.231.1.2", 7000),
    ("10.232.1.2", 7000),
    ("not-an-address", 0),
    ("", 0),
    ("::", 0, 0, 0),
    ("0.0.0.0", 0),
    ("255.255.255.255", 65535),
    ("::ffff:10.231.0.1", 1, 0, 0),
)


def _source_allowed(host: object) -> bool:
    try:
        ip = ipaddress.ip_address(str(host).partition("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in ipaddress.ip_network(net) for net in ALLOWED)


@functools.cache
def _dispatchers() -> tuple[Any, ...]:
    from binif.dispatch import Dispatcher  # imported here: the codec targets do not need it
    from binif.opensips21 import (
        UsrlocContactDeleted,
        UsrlocContactInserted,
        UsrlocContactUpdated,
        UsrlocRecordDeleted,
        UsrlocRecordInserted,
    )

    async def handler(packet: Any, source: Any) -> None:
        """Never called: the target only classifies."""

    made = []
    for wire in WIRES:
        dispatcher = Dispatcher(wire=wire, allow=ALLOWED)
        dispatcher.register("dialog", handler)
        for message in (
            UsrlocRecordInserted,
            UsrlocRecordDeleted,
            UsrlocContactInserted,
            UsrlocContactUpdated,
            UsrlocContactDeleted,
        ):
            dispatcher.register_message(message, handler)
        made.append(dispatcher)
    return tuple(made)


def dispatch(data: bytes) -> None:
    """Classify ``data[1:]`` from the source ``data[0]`` picks; check the verdict.

    Bits of ``data[0]``: 0-3 the source, 4 fix the checksum, 5 big-endian.
    A packet for a typed handler is also decoded as the endpoint would, and a
    decoded OpenSIPS 2.1 message must encode back to the very same bytes.
    """
    from binif.dispatch import DropReason, Target, reason_for
    from binif.opensips21 import lookup

    if not data:
        return
    control, datagram = data[0], data[1:]
    source = SOURCES[control & 15]
    wire = WIRES[control >> 5 & 1]
    dispatcher = _dispatchers()[control >> 5 & 1]
    if control & 16 and len(datagram) >= wire.header_size:
        datagram = wire.frame(datagram[wire.header_size :])

    with _checked("classify (the endpoint's receive path must never raise)"):
        verdict = dispatcher.classify(datagram, source)
    allowed = _source_allowed(source[0])
    if verdict is DropReason.SOURCE_NOT_ALLOWED:
        assert not allowed, f"{source} refused"
        return
    assert allowed, f"{source} let through: {verdict!r}"
    try:
        reader = PacketReader.parse(datagram, wire=wire)
    except DecodeError as exc:
        assert verdict is reason_for(exc), f"{verdict!r} for {exc!r}"
        return
    if isinstance(verdict, DropReason):
        route = dispatcher.routes.get(reader.module)
        if verdict is DropReason.UNKNOWN_MODULE:
            assert route is None
        else:
            assert verdict is DropReason.UNKNOWN_COMMAND, verdict
            assert route is not None and not route.accepts(reader.command)
        return
    assert verdict == reader and verdict.module in dispatcher.routes
    target = dispatcher.routes[verdict.module].target(verdict)
    assert isinstance(target, Target)
    message_type = lookup(verdict.module, verdict.command)
    decode = target.decode or (message_type.from_packet if message_type else None)
    if decode is None:
        return
    try:
        message = decode(verdict)
    except DecodeError:
        return
    with _checked("encoding the decoded message back"):
        encoded = message.to_bytes(wire=wire)
    assert encoded == datagram, "message did not encode back to its packet"


_Decoded = tuple[list[bytes], str | None, int, int]
"""A stream's packets, the error that ended it (type name), its offset, bytes buffered."""


def _decode_stream(wire: WireFormat, pieces: list[bytes]) -> _Decoded:
    """Feed ``pieces`` in order until the decoder refuses the stream."""
    decoder = StreamDecoder(wire)
    packets: list[bytes] = []
    raised: DecodeError | None = None
    for piece in pieces:
        try:
            packets += [reader.data for reader in decoder.feed(piece)]
        except DecodeError as exc:
            raised = exc
            break
    error = decoder.error
    assert raised is None or raised is error, f"raised {raised!r}, kept {error!r}"
    if error is not None:
        if raised is None:  # completed packets came first: the error comes next
            try:
                decoder.feed(b"")
            except DecodeError as exc:
                assert exc is error
            else:
                raise AssertionError("a kept error was not raised on the next feed")
        try:
            decoder.feed(b"\x00")
        except StreamBroken:
            pass
        else:
            raise AssertionError("a refused stream took more bytes")
    return packets, type(error).__name__ if error else None, decoder.offset, decoder.buffered


def stream(data: bytes) -> None:
    """Frame ``data[1:]`` in one feed and in the pieces ``data[0]`` picks: they must agree.

    Bit 7 of ``data[0]`` picks big-endian; bits 0-6 the largest piece (1 to 128
    bytes, each piece's size cycling below it). Every packet returned must be a
    valid packet of its declared length, and the packets must be the stream's
    bytes from its start, in order, up to the refusal or the partial packet kept.
    """
    if not data:
        return
    control, payload = data[0], data[1:]
    wire = (STREAM, STREAM_BIG_ENDIAN)[control >> 7]
    pieces = _pieces(payload, control, (control & 127) + 1)
    whole = _decode_stream(wire, [payload])
    assert _decode_stream(wire, pieces) == whole, "the split changed what was decoded"
    packets, error, offset, buffered = whole
    assert b"".join(packets) == payload[:offset]
    if error is None:
        assert offset + buffered == len(payload)
    with _checked("parsing a packet the stream decoder returned"):
        for packet in packets:
            assert wire.packet_length(packet) == len(packet)
            PacketReader.parse(packet, wire=wire)


def _pieces(payload: bytes, control: int, largest: int) -> list[bytes]:
    """``payload`` cut in pieces of 1 to ``largest`` bytes, their sizes cycling by ``control``."""
    pieces = []
    start = 0
    while start < len(payload):
        size = 1 + (start * 7 + control) % largest
        pieces.append(payload[start : start + size])
        start += size
    return pieces


STREAM_SOURCE = ("127.0.0.1", 5555)


def _stream_endpoint(wire: WireFormat, catch_all: bool) -> tuple[Any, Any]:
    """A StreamEndpoint (never started) and a Dispatcher with the same handlers."""
    from binif import StreamEndpoint
    from binif.dispatch import Dispatcher
    from binif.opensips40 import DialogDeleted

    async def handler(packet: Any, source: Any) -> None:
        """Never called: nothing is started."""

    endpoint = StreamEndpoint(None, wire=wire)
    reference = Dispatcher(wire=wire)
    for registry in (endpoint, reference):
        registry.register("dialog-dlg-repl", handler, versions={4})
        registry.register_message(DialogDeleted, handler)
        registry.register("clusterer", handler)
        if catch_all:
            registry.register("*", handler)
    return endpoint, reference


def stream_dispatch(data: bytes) -> None:
    """Queue ``data[1:]`` as a StreamEndpoint's connection does, in the pieces ``data[0]`` picks.

    Bit 7 of ``data[0]`` picks big-endian, bit 6 a catch-all handler, bits 0-5
    the largest piece (1 to 64 bytes). The endpoint decides once per run of
    packets sharing a head and queues the run's bytes; the oracle is
    :meth:`Dispatcher.check` on each packet's own reader: every packet is
    queued in order on its module's lane (or the catch-all's) with its own
    head, or counted as dropped for the reason check gives; nothing else.
    """
    if not data:
        return
    with _quiet("binif"):  # each input's endpoint would log its first drop of each kind
        _stream_dispatch(data[0], data[1:])


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _stream_dispatch(control: int, payload: bytes) -> None:
    from binif.dispatch import ANY_MODULE, DropReason

    wire = (STREAM, STREAM_BIG_ENDIAN)[control >> 7]
    endpoint, reference = _stream_endpoint(wire, catch_all=bool(control & 64))
    decoder = StreamDecoder(wire)
    queued: dict[str, list[bytes]] = {}
    dropped: dict[DropReason, int] = {}
    for piece in _pieces(payload, control, (control & 63) + 1):
        try:
            runs, packets = decoder.split(piece)
        except DecodeError:
            break
        endpoint._admit_all(runs, packets, STREAM_SOURCE)
        stops = [0, *(stop for _, _, stop in runs)]
        assert [start for _, start, _ in runs] == stops[:-1], "runs are not back to back"
        assert stops[-1] == len(packets), "runs do not cover the packets"
        for head, start, stop in runs:
            for packet in packets[start:stop]:
                with _checked("parsing a packet the stream decoder returned"):
                    reader = PacketReader.parse(packet, wire=wire)
                assert (reader.module, reader.command, reader.version) == (
                    head.module,
                    head.command,
                    head.version,
                ), "a packet queued under another packet's head"
                verdict = reference.check(reader)
                if verdict is reader:
                    module = reader.module if reader.module in reference.routes else ANY_MODULE
                    queued.setdefault(module, []).append(packet)
                else:
                    assert isinstance(verdict, DropReason), verdict
                    dropped[verdict] = dropped.get(verdict, 0) + 1
        if decoder.error is not None:
            break
    counters = endpoint._counters
    for module, lane in endpoint._lanes.items():
        assert list(lane.items) == queued.get(module, []), f"lane {module!r} holds other packets"
        assert [(h.module, h.command, h.version) for h in lane.heads] == [
            (r.module, r.command, r.version)
            for r in (PacketReader.parse(p, wire=wire) for p in lane.items)
        ]
        assert set(lane.sources) <= {STREAM_SOURCE} and len(lane.sources) == len(lane.items)
        assert lane.pending == len(lane.items)
    assert counters.dispatched == sum(len(packets) for packets in queued.values())
    assert {reason: n for reason, n in counters.drops.items() if n} == dropped


TARGETS: dict[str, Callable[[bytes], None]] = {
    "codec": codec,
    "writer": writer,
    "dispatch": dispatch,
    "stream": stream,
    "stream_dispatch": stream_dispatch,
}
"""Every fuzz target by name."""


def run_one(target: Callable[[bytes], None], data: bytes) -> None:
    """Run one input; a :class:`~binif.BinError` escaping the target is accepted."""
    with contextlib.suppress(BinError):
        target(data)


def _manifest_packets() -> list[tuple[str, int, list[tuple[str, bytes | int]]]]:
    manifest = json.loads((VECTORS / "manifest.json").read_text())
    packets = []
    for entry in manifest["files"]:
        if "module" not in entry or "fields" not in entry:
            continue
        fields: list[tuple[str, bytes | int]] = []
        for item in entry["fields"]:
            value = item["value"]
            if item["type"] == "int":
                fields.append(("i", int(value)))
            elif item.get("hex"):
                fields.append(("s", bytes.fromhex(value)))
            else:
                fields.append(("s", str(value).encode()))
        packets.append((entry["module"], int(entry["command"]), fields))
    return packets


def seeds(name: str) -> list[bytes]:
    """The seed inputs of target ``name``, all made from the real 2.1 and 4.0 vectors."""
    vectors = [path.read_bytes() for path in sorted(VECTORS.glob("*.bin"))]
    if name == "codec":
        return vectors
    if name == "dispatch":
        return [bytes([control]) + vector for vector in vectors for control in (0, 1, 2, 3, 32)]
    if name == "writer":
        return [
            encode_writer_input(module, command, fields, big=big)
            for module, command, fields in _manifest_packets()
            for big in (False, True)
        ]
    if name in ("stream", "stream_dispatch"):
        packets = [path.read_bytes() for path in sorted(STREAM_VECTORS.glob("*.bin"))]
        # Each packet alone, then runs of consecutive ones, cut at various sizes.
        runs = [b"".join(packets[i : i + 4]) for i in range(0, len(packets), 4)]
        controls = (0, 9, 127) if name == "stream" else (0, 9, 63, 64 + 9)
        return [bytes([control]) + data for data in packets + runs for control in controls]
    raise KeyError(name)
