"""The ``binif`` command line: ``listen``, ``send``, ``decode``, ``wireshark-plugin``.

Packets are shown with the built-in layouts (named fields): OpenSIPS 2.1's for
the datagram profile (UDP), OpenSIPS 4.0's for the stream profile (TCP, with
the clusterer trailer split off and shown), or for a module or command without
one, as a best-effort walk listing each plausible field with its offset and raw
bytes. ``decode`` reads saved packets, files of stream packets back to back,
or every BIN packet of a pcap (``--pcap``, the ``pcap`` extra). Every failure the user can
cause (a bad address, an unreadable file, a malformed packet) ends in one line
on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from . import __version__
from .address import format_address, parse_host_port
from .cluster.packets import (
    CLUSTERER_EXTRA,
    CLUSTERER_INTERNAL,
    SYNC_CHUNKS,
    ClustererPacket,
    Sync,
    chunk_reader,
)
from .cluster.packets import parse as parse_clusterer
from .dispatch import ANY_MODULE, Address, DropReason
from .endpoint import Endpoint
from .errors import BinError, DecodeError, InvalidAddress
from .framing import StreamDecoder
from .layout import INT, STR
from .messages import Message, MessageRegistry
from .opensips21 import OPENSIPS21
from .opensips40 import OPENSIPS40, Trailer
from .opensips40_usrloc import USRLOC_CAPABILITY, usrloc_chunk
from .reader import PacketReader
from .runner import run
from .stats import Stats, StreamStats
from .stream import StreamEndpoint
from .wire import DATAGRAM, DATAGRAM_BIG_ENDIAN, STREAM, STREAM_BIG_ENDIAN, WireFormat
from .wireshark.stream_layouts import NO_TRAILER, STREAM_NAMES
from .writer import PacketWriter

__all__ = ["Analysis", "WalkItem", "analyse", "analyse_stream", "main", "walk"]

_HEX_SHOWN = 32
"""Raw bytes shown in text output before eliding the rest."""
_TEXT_SHOWN = 200
"""Characters of a str field shown in text output before cutting it, with a count."""
STR_KIND = "str"
BRIDGE_DST = 0xC0000000
"""dst_node_id of a packet forwarded over a cluster bridge (a fourth trailer int before it)."""


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


# --- looking at a packet --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WalkItem:
    """One plausible field found by :func:`walk`."""

    offset: int
    """Byte offset in the packet of the field (its length prefix for a str)."""
    kind: str
    """``str``, ``int``, ``zero`` (empty str or int 0: the wire cannot tell) or ``rest``."""
    raw: bytes
    """The field's bytes: a str's value without its length prefix, an int's 4 bytes."""
    value: str | int | None = None
    """The text of a str, the value of an int."""


def walk(reader: PacketReader) -> list[WalkItem]:
    """Guess the fields of a packet without knowing its layout.

    A length followed by that many bytes of printable UTF-8 (or of anything,
    when they end the packet) is taken as a str, 4 zero bytes as ``zero``,
    anything else as an int; fewer than 4 bytes left are ``rest``. Binary str
    values inside the packet (usrloc's raw C values) show up as ints.
    """
    data = reader.data
    length = reader.wire.length
    prefix = length.size  # 4 bytes in the datagram profile, 2 in the stream profile
    int32 = reader.wire.int32
    pos = reader.rewind().offset
    items: list[WalkItem] = []
    while pos < len(data):
        left = len(data) - pos
        (n,) = length.unpack_from(data, pos) if left >= prefix else (0,)
        if 0 < n <= left - prefix:
            value = data[pos + prefix : pos + prefix + n]
            try:
                text = value.decode()
            except UnicodeDecodeError:
                text = None
            if text is not None and not text.isprintable():
                text = None
            # Printable text, or binary that ends exactly at the end of the packet.
            if text is not None or n == left - prefix:
                items.append(WalkItem(pos, STR_KIND, value, text))
                pos += prefix + n
                continue
        if left < 4:
            items.append(WalkItem(pos, "rest", data[pos:]))
            break
        raw = data[pos : pos + 4]
        (number,) = int32.unpack_from(data, pos)
        items.append(WalkItem(pos, "zero" if number == 0 else "int", raw, number))
        pos += 4
    return items


@dataclass(slots=True)
class Analysis:
    """What binif makes of one datagram."""

    data: bytes
    reader: PacketReader | None = None
    """None when the datagram is not a valid packet (see ``error``)."""
    name: str | None = None
    """The built-in message name (``dialog.created``) when there is a layout."""
    message: Message | None = None
    """The decoded message, when its layout fits."""
    error: DecodeError | None = None
    """Why the packet, or its fields, could not be decoded."""
    walk: list[WalkItem] = field(default_factory=list)
    """The best-effort walk, for packets without a fitting layout."""
    value: ClustererPacket | None = None
    """A clusterer packet, decoded by :func:`binif.cluster.packets.parse`."""
    chunks: list[object] = field(default_factory=list)
    """The items of a SYNC packet, decoded by their capability (empty when unknown)."""
    trailer: Trailer | None = None
    """A stream packet's clusterer trailer (not in ``clusterer-internal`` packets)."""
    source_cluster: int | None = None
    """The cluster a bridged stream packet comes from (its fourth trailer int)."""

    @property
    def malformed(self) -> bool:
        """True for a bad packet, or fields that do not fit their built-in layout."""
        return self.error is not None


def analyse(data: bytes, *, wire: WireFormat = DATAGRAM) -> Analysis:
    """Parse ``data`` and decode it with the built-in layouts of its profile, or walk it."""
    try:
        reader = PacketReader.parse(data, wire=wire)
    except DecodeError as exc:
        return Analysis(data, error=exc)
    return analyse_any(reader)


def analyse_any(reader: PacketReader) -> Analysis:
    """A parsed packet decoded with OpenSIPS 4.0's layouts (stream) or 2.1's (datagram)."""
    return analyse_stream(reader) if reader.wire.has_version else analyse_reader(reader)


def analyse_stream(reader: PacketReader, registry: MessageRegistry = OPENSIPS40) -> Analysis:
    """Decode a stream packet: split off the clusterer trailer (every capability but
    ``clusterer-internal`` has one), then decode with ``registry``'s layout, or walk it.

    Packets no typed message describes (the clusterer's) are named all the same. A
    packet of an unknown capability too short for a trailer is walked whole.
    """
    key = (reader.module, reader.command)
    cls = registry.get(key)
    result = Analysis(reader.data, reader, name=STREAM_NAMES.get(key))
    if reader.module in (CLUSTERER_INTERNAL, CLUSTERER_EXTRA):
        return _clusterer(result)
    body = reader
    try:
        if reader.module not in NO_TRAILER:
            result.trailer, body = Trailer.split(reader)
            if result.trailer.dst_node_id & 0xFFFFFFFF == BRIDGE_DST:
                result.source_cluster, body = body.pop_back_int()
    except DecodeError as exc:
        result.trailer, body = None, reader
        if cls is not None or result.name is not None:
            result.error = exc  # a known packet without room for its trailer
            result.walk = walk(reader)
            return result
    return _decode(result, registry, body)


def _clusterer(result: Analysis) -> Analysis:
    """A clusterer packet as its typed value (a SYNC's items decoded too), or a walk."""
    assert result.reader is not None
    try:
        value = parse_clusterer(result.reader)
        if isinstance(value, Sync):
            result.chunks = [_sync_item(value, chunk) for chunk in value.chunks]
    except DecodeError as exc:
        result.error = exc
        result.walk = walk(result.reader)
        return result
    result.value = value
    result.trailer = getattr(value, "trailer", None)
    return result


def _sync_item(sync: Sync, chunk: bytes) -> object:
    """One SYNC chunk as its capability's message; the raw bytes for another capability."""
    if sync.capability in SYNC_CHUNKS:
        return SYNC_CHUNKS.decode_chunk(sync.capability, sync.data_version, chunk)
    if sync.capability == USRLOC_CAPABILITY:
        return usrloc_chunk(chunk_reader(sync.capability, sync.data_version, chunk, 0))
    return chunk


def analyse_reader(reader: PacketReader, registry: MessageRegistry = OPENSIPS21) -> Analysis:
    """Decode an already parsed packet with ``registry``'s layout, or walk it."""
    return _decode(Analysis(reader.data, reader), registry, reader)


def _decode(result: Analysis, registry: MessageRegistry, body: PacketReader) -> Analysis:
    """``result`` with the message ``registry``'s class decodes from ``body``, or a walk."""
    cls = registry.get((body.module, body.command))
    if cls is None:
        result.walk = walk(body)
        return result
    result.name = registry.name_of(cls)
    try:
        result.message = cls.from_packet(body)
    except DecodeError as exc:
        result.error = exc
        result.walk = walk(body)
    return result


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _raw_ints(message: Message) -> dict[str, int]:
    values = {}
    for prop in message.RAW_INTS.values():
        with contextlib.suppress(DecodeError):  # a size no C integer has: show the hex only
            values[prop] = getattr(message, prop)
    return values


def to_json(analysis: Analysis, **context: Any) -> dict[str, Any]:
    """``analysis`` as a JSON-able dict; bytes fields and raw bytes as hex strings."""
    out: dict[str, Any] = dict(context)
    out["size"] = len(analysis.data)
    reader = analysis.reader
    if reader is not None:
        out["module"] = reader.module
        out["command"] = reader.command
        if reader.version is not None:
            out["version"] = reader.version
        out["message"] = analysis.name
    if analysis.trailer is not None:
        out["trailer"] = dataclasses.asdict(analysis.trailer)
        if analysis.source_cluster is not None:
            out["trailer"]["source_cluster_id"] = analysis.source_cluster
    if analysis.message is not None:
        out.update(_message_json(analysis.message))
    if analysis.value is not None:
        out["fields"] = _value_fields(analysis.value)
    if analysis.chunks:
        out["items"] = [
            _message_json(item) if isinstance(item, Message) else {"hex": _plain(item)}
            for item in analysis.chunks
        ]
    if analysis.error is not None:
        out["error"] = _error_text(analysis.error)
    if reader is not None and analysis.message is None and analysis.value is None:
        out["walk"] = [
            {"offset": item.offset, "kind": item.kind, "hex": item.raw.hex(), "value": item.value}
            for item in analysis.walk
        ]
    return out


def _message_json(message: Message) -> dict[str, Any]:
    """A typed message's name, fields (bytes as hex) and decoded raw integers."""
    out: dict[str, Any] = {"message": _name_of(type(message))}
    out["fields"] = {spec.name: _plain(value) for spec, value in message.items()}
    raw_ints = _raw_ints(message)
    if raw_ints:
        out["raw_ints"] = raw_ints
    return out


def _name_of(cls: type[Message]) -> str | None:
    """The built-in name of a message class (OpenSIPS 4.0's or 2.1's), if it has one."""
    for registry in (OPENSIPS40, OPENSIPS21):
        if registry.get((cls.MODULE, cls.COMMAND)) is cls:
            return registry.name_of(cls)
    return None


def _value_fields(value: ClustererPacket) -> dict[str, Any]:
    """A clusterer packet's fields (its trailer and a SYNC's items are shown apart)."""
    return {
        spec.name: _plain(getattr(value, spec.name))
        for spec in dataclasses.fields(value)
        if spec.name != "trailer" and not (spec.name == "chunks" and isinstance(value, Sync))
    }


def _plain(value: object) -> Any:
    """``value`` as JSON-able data: bytes as hex, dataclasses as dicts, tuples as lists."""
    if isinstance(value, bytes):
        return value.hex()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {spec.name: _plain(getattr(value, spec.name)) for spec in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


def _hex(raw: bytes) -> str:
    if not raw:
        return "(empty)"
    if len(raw) > _HEX_SHOWN:
        return f"{raw[:_HEX_SHOWN].hex()}... ({len(raw)} bytes)"
    return raw.hex()


def _quoted(text: str) -> str:
    """A str field's text, quoted; cut after ``_TEXT_SHOWN`` characters with what was left out."""
    if len(text) <= _TEXT_SHOWN:
        return json.dumps(text, ensure_ascii=False)
    left = len(text) - _TEXT_SHOWN
    return f"{json.dumps(text[:_TEXT_SHOWN], ensure_ascii=False)}... ({left:,} more characters)"


def terminal_safe(line: str) -> str:
    """``line`` with every character a terminal could act on written as a JSON escape.

    Module names and str fields come from the network: a control character
    (ESC, the C1 controls), a bidirectional override or a line separator in
    them must not reach the operator's terminal or log as itself. The escape
    (``\\u001b``) keeps a JSON line valid JSON, since such characters can only
    be inside its strings.
    """
    if line.isprintable():
        return line
    return "".join(char if char.isprintable() else _escape(char) for char in line)


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def to_text(analysis: Analysis, prefix: str) -> list[str]:
    """``analysis`` as lines: a summary after ``prefix``, then one line per field."""
    reader = analysis.reader
    size = len(analysis.data)
    if reader is None:
        return [f"{prefix} {size} bytes: {_error_text(analysis.error or DecodeError())}"]
    kind = f"{reader.module}/{reader.command}"
    if reader.version is not None:
        kind += f" v{reader.version}"
    if analysis.name is not None:
        kind += f" {analysis.name}"
    if analysis.message is not None:
        lines = [f"{prefix} {kind}, {size} bytes", *_message_lines(analysis.message, "  ")]
        return lines + _trailer_lines(analysis)
    if analysis.value is not None:
        lines = [f"{prefix} {kind}, {size} bytes"]
        fields = _value_fields(analysis.value)
        width = max((len(name) for name in fields), default=0)
        for name, value in fields.items():
            shown = _quoted(value) if isinstance(value, str) else json.dumps(value)
            lines.append(f"  {name:<{width}}  {shown}")
        for index, item in enumerate(analysis.chunks):
            if isinstance(item, Message):
                lines.append(f"  item {index}: {_name_of(type(item))}")
                lines += _message_lines(item, "    ")
            else:
                raw = item if isinstance(item, bytes) else repr(item).encode()
                lines.append(f"  item {index}: {_hex(raw)}")
        return lines + _trailer_lines(analysis)
    if analysis.error is not None:
        head = f"{prefix} {kind}, {size} bytes: does not fit its layout:"
        lines = [head, f"  {_error_text(analysis.error)}", "  best-effort walk:"]
    else:
        lines = [f"{prefix} {kind}, {size} bytes, no built-in layout; best-effort walk:"]
    for item in analysis.walk:
        if item.kind == STR_KIND:
            note = "(binary)" if not isinstance(item.value, str) else _quoted(item.value)
            label = f"str[{len(item.raw)}]"
        elif item.kind == "zero":
            note, label = "empty str or int 0", "zero"
        elif item.kind == "int":
            note, label = str(item.value), "int"
        else:
            size = len(item.raw)
            note, label = f"{size} byte{'' if size == 1 else 's'}, too short for a field", "rest"
        lines.append(f"  @{item.offset:<5} {label:<8} {note:<30} {_hex(item.raw)}")
    return lines + _trailer_lines(analysis)


def _message_lines(message: Message, indent: str) -> list[str]:
    """One line per field of a typed message; raw C integers with their decoded value."""
    items = list(message.items())
    width = max((len(spec.name) for spec, _ in items), default=0)
    raw_ints = message.RAW_INTS
    decoded = _raw_ints(message)
    lines = []
    for spec, value in items:
        if isinstance(value, bytes):
            shown = _hex(value)
            prop = raw_ints.get(spec.name)
            if prop in decoded:
                shown += f"  ({prop} {decoded[prop]})"
        elif isinstance(value, str):
            shown = _quoted(value)
        else:
            shown = str(value)
        lines.append(f"{indent}{spec.name:<{width}}  {shown}")
    return lines


def _trailer_lines(analysis: Analysis) -> list[str]:
    trailer = analysis.trailer
    if trailer is None:
        return []
    line = (
        f"  trailer: cluster {trailer.cluster_id}, node {trailer.src_node_id}"
        f" to {trailer.dst_node_id & 0xFFFFFFFF:#x}"
        if analysis.source_cluster is not None
        else f"  trailer: cluster {trailer.cluster_id}, node {trailer.src_node_id}"
        f" to {trailer.dst_node_id}"
    )
    if analysis.source_cluster is not None:
        line += f" (bridged from cluster {analysis.source_cluster})"
    return [line]


# --- addresses ------------------------------------------------------------------------


def parse_address(text: str, *, what: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` to ``(host, port)``, or a :class:`CliError`."""
    try:
        return parse_host_port(text, what=what)
    except InvalidAddress as exc:
        raise CliError(str(exc)) from None


def resolve(host: str, port: int) -> Address:
    """The first UDP socket address of ``host``, or a :class:`CliError`."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise CliError(f"cannot resolve {host!r}: {getattr(exc, 'strerror', exc)}") from None
    return tuple(infos[0][4])


# --- decode ---------------------------------------------------------------------------


def _wire(args: argparse.Namespace) -> WireFormat:
    if getattr(args, "stream", False):
        return STREAM_BIG_ENDIAN if args.big_endian else STREAM
    return DATAGRAM_BIG_ENDIAN if args.big_endian else DATAGRAM


def _emit(lines: Sequence[str], out: TextIO) -> None:
    out.write("\n".join(terminal_safe(line) for line in lines) + "\n")
    out.flush()


def _show(analysis: Analysis, prefix: str, as_json: bool, **context: Any) -> bool:
    """Print one packet (text or a JSON line); report it on stderr when it is malformed.

    Returns True for a malformed packet.
    """
    if as_json:
        _emit([json.dumps(to_json(analysis, **context), ensure_ascii=False)], sys.stdout)
    elif analysis.reader is not None:
        _emit(to_text(analysis, prefix), sys.stdout)
    if analysis.error is None:
        return False
    _fail(f"{prefix} {_error_text(analysis.error)}")
    return True


def _read(name: str, as_json: bool) -> bytes | None:
    """The file's bytes; or None, after saying why on stderr (and on stdout with --json)."""
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        error = f"cannot read {name}: {exc.strerror or exc}"
        if as_json:  # like a malformed file: an object with the error, then the stderr line
            _emit([json.dumps({"file": name, "error": error}, ensure_ascii=False)], sys.stdout)
        _fail(error)
        return None


def _decode_stream(name: str, data: bytes, wire: WireFormat, as_json: bool) -> bool:
    """Every packet of a file of stream packets back to back; True if any is bad."""
    decoder = StreamDecoder(wire)
    failed = False
    try:
        readers = decoder.feed(data)
    except DecodeError:
        readers = []
    offset = 0
    for index, reader in enumerate(readers, 1):
        prefix = f"{name}#{index} @{offset}:"
        failed |= _show(
            analyse_stream(reader), prefix, as_json, file=name, index=index, offset=offset
        )
        offset += len(reader.data)
    if decoder.error is not None:
        _fail(f"{name} @{decoder.offset}: {_error_text(decoder.error)}")
        return True
    if decoder.buffered:
        _fail(f"{name} @{decoder.offset}: the file ends {decoder.buffered} bytes into a packet")
        return True
    return failed


def _decode_pcap(name: str, data: bytes, as_json: bool) -> bool:
    """Every BIN packet of a capture; True if any is bad."""
    from .capture import read_capture  # the pcap extra (dpkt), only when asked for

    capture = read_capture(data)
    failed = False
    count = 0
    for packet in capture.packets():
        where = f"{format_address(packet.src)} > {format_address(packet.dst)}"
        prefix = f"{name} frame {packet.frame} {packet.transport} {where}:"
        if packet.reader is not None:
            analysis = analyse_any(packet.reader)
            count += 1
        else:
            assert packet.error is not None
            analysis = Analysis(packet.data, error=packet.error)
        context = {
            "file": name,
            "frame": packet.frame,
            "time": datetime.fromtimestamp(packet.time, UTC).isoformat(timespec="microseconds"),
            "transport": packet.transport,
            "source": format_address(packet.src),
            "destination": format_address(packet.dst),
        }
        failed |= _show(analysis, prefix, as_json, **context)
    skipped = "".join(f", {reason} {n}" for reason, n in sorted(capture.skipped.items()))
    _fail(f"{name}: {count} BIN packets in {capture.frames} frames{skipped}")
    return failed


def cmd_decode(args: argparse.Namespace) -> int:
    """Decode saved datagrams, files of stream packets (--stream) or captures (--pcap)."""
    if args.pcap and (args.stream or args.big_endian):
        raise CliError("--pcap reads each packet by its transport: no --stream or --big-endian")
    failed = False
    for name in args.files:
        data = _read(name, args.json)
        if data is None:
            failed = True
        elif args.pcap:
            failed |= _decode_pcap(name, data, args.json)
        elif args.stream:
            failed |= _decode_stream(name, data, _wire(args), args.json)
        else:
            failed |= _show(analyse(data, wire=_wire(args)), f"{name}:", args.json, file=name)
    return 1 if failed else 0


# --- send -----------------------------------------------------------------------------


def _argument_text(text: str, what: str) -> str:
    """A command-line argument meant as text, or a CliError naming the byte that is not UTF-8.

    Python hands bytes that are not UTF-8 over as lone surrogates (U+DC80 to
    U+DCFF): report the byte the user typed, not the surrogate.
    """
    for index, char in enumerate(text):
        if "\udc80" <= char <= "\udcff":
            raw = text.encode("utf-8", "surrogateescape")
            raise CliError(
                f"{what} {raw!r} is not UTF-8: byte 0x{ord(char) - 0xDC00:02x} at character"
                f" {index}; give raw bytes as hex (x:HEX)"
            )
    return text


def _parse_field(text: str) -> tuple[str, str | bytes | int | None]:
    kind, sep, value = text.partition(":")
    try:
        if text == "null":
            return STR, None
        if sep and kind == "s":
            return STR, _argument_text(value, "field")
        if sep and kind == "x":
            return STR, bytes.fromhex(value.replace(":", ""))
        if sep and kind == "i":
            return INT, int(value, 0)
    except ValueError:
        pass
    raise CliError(f"bad field {text!r}: expected s:TEXT, i:INT, x:HEX or null")


def _parse_set(cls: type[Message], assignment: str) -> tuple[str, str | bytes | int]:
    name, sep, value = assignment.partition("=")
    specs = {spec.name: spec for spec in cls.FIELDS}
    if not sep:
        raise CliError(f"bad --set {assignment!r}: expected FIELD=VALUE")
    spec = specs.get(name)
    if spec is None:
        raise CliError(f"{cls.__name__} has no field {name!r}; fields: {', '.join(specs)}")
    try:
        if spec.type is int:
            return name, int(value, 0)
        if spec.type is bytes:
            return name, bytes.fromhex(value.replace(":", ""))
    except ValueError:
        what = "an int" if spec.type is int else "hex bytes"
        raise CliError(f"bad --set {assignment!r}: {name} takes {what}") from None
    return name, _argument_text(value, f"--set {name}")


def _parse_trailer(text: str) -> Trailer:
    try:
        cluster_id, src_node_id, dst_node_id = (int(part, 0) for part in text.split(","))
    except ValueError:
        raise CliError(f"bad --trailer {text!r}: expected CLUSTER,SRC,DST (three ints)") from None
    return Trailer(cluster_id, src_node_id, dst_node_id)


def build_packet(args: argparse.Namespace) -> tuple[bytes, str]:
    """The packet ``send`` was asked for, and a description of it."""
    wire = _wire(args)
    if not args.stream and (args.trailer is not None or args.version is not None):
        raise CliError("--trailer and --version are for the stream profile: add --stream")
    registry = OPENSIPS40 if args.stream else OPENSIPS21
    if args.message is not None:
        if args.fields:
            raise CliError("give either --message with --set, or MODULE COMMAND FIELD...")
        if args.version is not None:
            raise CliError("--version is for MODULE COMMAND: a --message has its own")
        try:
            cls = registry.by_name(args.message)
        except KeyError as exc:
            raise CliError(str(exc.args[0])) from None
        values = dict(_parse_set(cls, assignment) for assignment in args.set)
        writer = cls.with_defaults(**values).to_writer(wire=wire)
        what = f"{cls.MODULE}/{cls.COMMAND} {args.message}"
    else:
        if args.set:
            raise CliError("--set needs --message NAME")
        if len(args.fields) < 2:
            raise CliError("send needs MODULE COMMAND [FIELD...] or --message NAME")
        if args.stream and args.version is None:
            raise CliError("a stream packet needs --version N (the capability's layout version)")
        module, command_text, *fields = args.fields
        module = _argument_text(module, "module name")
        try:
            command = int(command_text, 0)
        except ValueError:
            raise CliError(f"bad command {command_text!r}: expected an int") from None
        parsed = [_parse_field(text) for text in fields]
        layout = "".join(kind for kind, _ in parsed)
        writer = PacketWriter(module, command, wire=wire, version=args.version)
        writer = writer.pack(layout, *(value for _, value in parsed))
        what = f"{module}/{command}"
    if args.trailer is not None:
        writer = _parse_trailer(args.trailer).append_to(writer)
    return writer.to_bytes(), what


async def _send(data: bytes, addr: Address, wire: WireFormat) -> None:
    if wire.has_version:
        async with StreamEndpoint(None, wire=wire) as stream:
            await stream.send(data, addr)
        return
    local = ("::", 0) if ":" in str(addr[0]) else ("0.0.0.0", 0)
    logging.getLogger("binif").setLevel(logging.ERROR)  # a refused send is our one line
    async with Endpoint(local, recv_buffer=None, wire=wire) as ep:
        if await ep.send(data, addr) == 0:
            error = ep.last_send_error
            reason = error.strerror or str(error) if error is not None else "refused"
            raise CliError(f"send to {format_address(addr)} failed: {reason}")


def cmd_send(args: argparse.Namespace) -> int:
    """Build one packet and send it: a UDP datagram, or on a TCP connection (--stream)."""
    addr = resolve(*parse_address(args.to, what="--to"))
    if addr[1] == 0:
        raise CliError(f"bad --to address {args.to!r}: port 0")
    data, what = build_packet(args)
    run(_send(data, addr, _wire(args)))
    transport = "over TCP " if args.stream else ""
    print(f"sent {what}, {len(data)} bytes, {transport}to {format_address(addr)}")
    return 0


# --- listen ---------------------------------------------------------------------------


def format_stats(stats: Stats) -> list[str]:
    """The stats ``listen`` prints when it stops (a TCP endpoint's connections too)."""
    drops = ", ".join(f"{reason.value} {stats.drops.get(reason, 0)}" for reason in DropReason)
    lines = [
        f"stats: received {stats.received}, handled {stats.handled},"
        f" dropped {stats.dropped}, handler errors {stats.handler_errors}",
        f"drops: {drops}",
    ]
    if isinstance(stats, StreamStats):
        closed = ", ".join(f"{reason} {n}" for reason, n in stats.connections_closed.items())
        lines += [
            f"connections: accepted {stats.connections_accepted}, open {stats.connections_open},"
            f" bytes received {stats.bytes_received}, read pauses {stats.read_pauses}",
            f"closed: {closed}",
        ]
    return lines


async def _listen(args: argparse.Namespace, bind: tuple[str, int]) -> Stats:
    as_json = args.json
    stop = asyncio.Event()

    async def show(reader: PacketReader, source: Address) -> None:
        analysis = analyse_any(reader)
        now = datetime.now(UTC)
        try:
            if as_json:
                record = to_json(
                    analysis,
                    time=now.isoformat(timespec="microseconds"),
                    source=format_address(source),
                )
                _emit([json.dumps(record, ensure_ascii=False)], sys.stdout)
            else:
                stamp = now.astimezone().strftime("%H:%M:%S.%f")[:-3]
                _emit(to_text(analysis, f"{stamp} {format_address(source)}"), sys.stdout)
        except BrokenPipeError:  # the reader went away: `binif listen | head`
            stop.set()
            return
        if analysis.error is not None:
            raise analysis.error  # counted by the endpoint as undecodable

    endpoint: Endpoint | StreamEndpoint
    if args.stream:
        endpoint = StreamEndpoint(bind, wire=_wire(args))
    else:
        endpoint = Endpoint(bind, wire=_wire(args))
    endpoint.register(ANY_MODULE, show)  # every module: none has a handler of its own
    try:
        await endpoint.start()
    except OSError as exc:
        raise CliError(f"cannot listen on {format_address(bind)}: {exc.strerror or exc}") from None
    loop_name = (
        "uvloop"
        if type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        else ("asyncio")
    )
    transport = "TCP " if args.stream else ""
    print(
        f"binif: listening on {transport}{format_address(endpoint.local_address)}"
        f" ({loop_name}); Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await endpoint.close()
    return endpoint.stats


def cmd_listen(args: argparse.Namespace) -> int:
    """Print every packet that arrives (UDP, or TCP with --stream); on Ctrl-C the stats."""
    bind = parse_address(args.bind, what="--bind")
    stats = run(_listen(args, bind))
    if args.json:
        _emit([json.dumps({"stats": stats.as_dict()})], sys.stdout)
    else:
        _emit(format_stats(stats), sys.stdout)
    return 0


# --- wireshark-plugin -----------------------------------------------------------------


def cmd_wireshark(args: argparse.Namespace) -> int:
    """Print the dissector's path or source, or write it somewhere."""
    from .wireshark import DISSECTOR_PATH, generate_dissector

    if args.path:
        if args.write is not None or args.generate:
            raise CliError("--path prints where the shipped file is: no --write or --generate")
        print(DISSECTOR_PATH)
        return 0
    # --generate: a fresh build from the layouts, not the shipped copy
    source = generate_dissector() if args.generate else DISSECTOR_PATH.read_text(encoding="utf-8")
    if args.write is None:
        sys.stdout.write(source)
        return 0
    target = Path(args.write)
    if target.is_dir():
        target = target / DISSECTOR_PATH.name
    try:
        target.write_text(source, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {target}: {exc.strerror or exc}") from None
    print(f"wrote {target}")
    return 0


# --- entry point ----------------------------------------------------------------------


def _fail(message: str) -> None:
    _emit([f"binif: {message}"], sys.stderr)


class SafeFormatter(logging.Formatter):
    """Log lines (drops, handler errors) escaped as :func:`terminal_safe` escapes output."""

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(terminal_safe(line) for line in super().format(record).split("\n"))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="binif", description="Inspect and send OpenSIPS BIN interface packets."
    )
    parser.add_argument("--version", action="version", version=f"binif {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--big-endian", action="store_true", help="integers in big-endian order (rare)"
        )

    listen = sub.add_parser("listen", help="print packets as they arrive")
    listen.add_argument("--bind", required=True, metavar="ADDR:PORT", help="address to listen on")
    listen.add_argument("--json", action="store_true", help="one JSON object per line")
    listen.add_argument(
        "--stream", action="store_true", help="the stream profile over TCP (OpenSIPS 2.4-4.0)"
    )
    common(listen)
    listen.set_defaults(run=cmd_listen)

    send = sub.add_parser(
        "send",
        help="send one packet",
        description="Send MODULE COMMAND with fields s:TEXT, i:INT, x:HEX (raw str) or null,"
        " or a built-in message: --message dialog.created --set callid=... (unset fields"
        " are empty or 0; bytes fields take hex). With --stream, on a TCP connection in the"
        " stream profile (OpenSIPS 2.4-4.0), with the clusterer trailer if --trailer.",
    )
    send.add_argument("--to", required=True, metavar="ADDR:PORT", help="destination")
    send.add_argument(
        "--message",
        metavar="NAME",
        help=f"one of {', '.join(OPENSIPS21.names)}; with --stream one of"
        f" {', '.join(OPENSIPS40.names)}",
    )
    send.add_argument(
        "--stream", action="store_true", help="the stream profile over TCP (OpenSIPS 2.4-4.0)"
    )
    send.add_argument(
        "--version",
        type=int,
        dest="version",
        metavar="N",
        help="--stream MODULE COMMAND: the capability's layout version",
    )
    send.add_argument(
        "--trailer",
        metavar="CLUSTER,SRC,DST",
        help="--stream: append the clusterer trailer (cluster id, source and destination node)",
    )
    send.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="a field of --message"
    )
    send.add_argument("fields", nargs="*", metavar="MODULE COMMAND FIELD")
    common(send)
    send.set_defaults(run=cmd_send)

    decode = sub.add_parser(
        "decode",
        help="decode saved packets, stream files or captures",
        description="Decode saved datagrams (one packet per file), files of stream packets"
        " back to back (--stream), or every BIN packet of pcap/pcapng captures (--pcap: UDP"
        " datagrams and TCP streams per direction, OpenSIPS 2.1 and 4.0 layouts).",
    )
    decode.add_argument("files", nargs="+", metavar="FILE")
    decode.add_argument("--json", action="store_true", help="one JSON object per line")
    kind = decode.add_mutually_exclusive_group()
    kind.add_argument("--stream", action="store_true", help="files of stream-profile packets")
    kind.add_argument("--pcap", action="store_true", help="pcap or pcapng captures")
    common(decode)
    decode.set_defaults(run=cmd_decode)

    wireshark = sub.add_parser("wireshark-plugin", help="the Wireshark Lua dissector")
    wireshark.add_argument("--path", action="store_true", help="print where the shipped file is")
    wireshark.add_argument(
        "--write", metavar="PATH", help="write it to PATH (a file or a folder), not stdout"
    )
    wireshark.add_argument(
        "--generate",
        action="store_true",
        help="build it afresh from the layouts instead of the shipped copy",
    )
    wireshark.set_defaults(run=cmd_wireshark)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(SafeFormatter("binif: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    try:
        status: int = args.run(args)
    except CliError as exc:
        _fail(str(exc))
        return 1
    except BinError as exc:
        _fail(_error_text(exc))
        return 1
    except BrokenPipeError:
        # stdout's reader went away (`binif decode *.bin | head`): stop quietly, and
        # point stdout at /dev/null so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        _fail(str(exc.strerror or exc))
        return 1
    except KeyboardInterrupt:
        return 130
    return status
