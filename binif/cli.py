"""The ``binif`` command line: ``listen``, ``send``, ``decode``, ``wireshark-plugin``.

Packets are shown with the built-in OpenSIPS 2.1 layouts (named fields), or
for a module or command without one, as a best-effort walk listing each
plausible field with its offset and raw bytes. Every failure the user can
cause (a bad address, an unreadable file, a malformed packet) ends in one line
on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from .dispatch import ANY_MODULE, Address, DropReason
from .endpoint import Endpoint
from .errors import BinError, DecodeError, InvalidAddress
from .layout import INT, STR
from .messages import Message, MessageRegistry
from .opensips21 import OPENSIPS21
from .reader import PacketReader
from .runner import run
from .stats import Stats
from .wire import DATAGRAM, DATAGRAM_BIG_ENDIAN, WireFormat
from .writer import PacketWriter

__all__ = ["Analysis", "WalkItem", "analyse", "main", "walk"]

_HEX_SHOWN = 32
"""Raw bytes shown in text output before eliding the rest."""
STR_KIND = "str"


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
    int32 = reader.wire.int32
    pos = reader.rewind().offset
    items: list[WalkItem] = []
    while pos < len(data):
        left = len(data) - pos
        if left < 4:
            items.append(WalkItem(pos, "rest", data[pos:]))
            break
        (n,) = length.unpack_from(data, pos)
        if 0 < n <= left - 4:
            value = data[pos + 4 : pos + 4 + n]
            try:
                text = value.decode()
            except UnicodeDecodeError:
                text = None
            if text is not None and not text.isprintable():
                text = None
            # Printable text, or binary that ends exactly at the end of the packet.
            if text is not None or n == left - 4:
                items.append(WalkItem(pos, STR_KIND, value, text))
                pos += 4 + n
                continue
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

    @property
    def malformed(self) -> bool:
        """True for a bad packet, or fields that do not fit their built-in layout."""
        return self.error is not None


def analyse(
    data: bytes, *, wire: WireFormat = DATAGRAM, registry: MessageRegistry = OPENSIPS21
) -> Analysis:
    """Parse ``data`` and decode it with ``registry``'s layout, or walk it."""
    try:
        reader = PacketReader.parse(data, wire=wire)
    except DecodeError as exc:
        return Analysis(data, error=exc)
    return analyse_reader(reader, registry)


def analyse_reader(reader: PacketReader, registry: MessageRegistry = OPENSIPS21) -> Analysis:
    """Decode an already parsed packet with ``registry``'s layout, or walk it."""
    result = Analysis(reader.data, reader)
    cls = registry.get((reader.module, reader.command))
    if cls is None:
        result.walk = walk(reader)
        return result
    result.name = registry.name_of(cls)
    try:
        result.message = cls.from_packet(reader)
    except DecodeError as exc:
        result.error = exc
        result.walk = walk(reader)
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
        out["message"] = analysis.name
    if analysis.message is not None:
        out["fields"] = {
            spec.name: value.hex() if isinstance(value, bytes) else value
            for spec, value in analysis.message.items()
        }
        raw_ints = _raw_ints(analysis.message)
        if raw_ints:
            out["raw_ints"] = raw_ints
    if analysis.error is not None:
        out["error"] = _error_text(analysis.error)
    if reader is not None and analysis.message is None:
        out["walk"] = [
            {"offset": item.offset, "kind": item.kind, "hex": item.raw.hex(), "value": item.value}
            for item in analysis.walk
        ]
    return out


def _hex(raw: bytes) -> str:
    if not raw:
        return "(empty)"
    if len(raw) > _HEX_SHOWN:
        return f"{raw[:_HEX_SHOWN].hex()}... ({len(raw)} bytes)"
    return raw.hex()


def to_text(analysis: Analysis, prefix: str) -> list[str]:
    """``analysis`` as lines: a summary after ``prefix``, then one line per field."""
    reader = analysis.reader
    size = len(analysis.data)
    if reader is None:
        return [f"{prefix} {size} bytes: {_error_text(analysis.error or DecodeError())}"]
    kind = f"{reader.module}/{reader.command}"
    if analysis.message is not None:
        lines = [f"{prefix} {kind} {analysis.name}, {size} bytes"]
        width = max((len(spec.name) for spec in analysis.message.FIELDS), default=0)
        raw_ints = analysis.message.RAW_INTS
        decoded = _raw_ints(analysis.message)
        for spec, value in analysis.message.items():
            if isinstance(value, bytes):
                shown = _hex(value)
                prop = raw_ints.get(spec.name)
                if prop in decoded:
                    shown += f"  ({prop} {decoded[prop]})"
            elif isinstance(value, str):
                shown = json.dumps(value, ensure_ascii=False)
            else:
                shown = str(value)
            lines.append(f"  {spec.name:<{width}}  {shown}")
        return lines
    if analysis.error is not None:
        head = f"{prefix} {kind} {analysis.name}, {size} bytes: does not fit its layout:"
        lines = [head, f"  {_error_text(analysis.error)}", "  best-effort walk:"]
    else:
        lines = [f"{prefix} {kind}, {size} bytes, no built-in layout; best-effort walk:"]
    for item in analysis.walk:
        if item.kind == STR_KIND:
            note = "(binary)" if item.value is None else json.dumps(item.value, ensure_ascii=False)
            label = f"str[{len(item.raw)}]"
        elif item.kind == "zero":
            note, label = "empty str or int 0", "zero"
        elif item.kind == "int":
            note, label = str(item.value), "int"
        else:
            size = len(item.raw)
            note, label = f"{size} byte{'' if size == 1 else 's'}, too short for a field", "rest"
        lines.append(f"  @{item.offset:<5} {label:<8} {note:<30} {_hex(item.raw)}")
    return lines


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
    return DATAGRAM_BIG_ENDIAN if args.big_endian else DATAGRAM


def _emit(lines: Sequence[str], out: TextIO) -> None:
    out.write("\n".join(lines) + "\n")
    out.flush()


def cmd_decode(args: argparse.Namespace) -> int:
    """Decode saved datagrams (raw .bin files)."""
    failed = False
    for name in args.files:
        try:
            data = Path(name).read_bytes()
        except OSError as exc:
            _fail(f"cannot read {name}: {exc.strerror or exc}")
            failed = True
            continue
        analysis = analyse(data, wire=_wire(args))
        if args.json:
            _emit([json.dumps(to_json(analysis, file=name), ensure_ascii=False)], sys.stdout)
        elif analysis.reader is not None:
            _emit(to_text(analysis, f"{name}:"), sys.stdout)
        if analysis.malformed:
            assert analysis.error is not None
            _fail(f"{name}: {_error_text(analysis.error)}")
            failed = True
    return 1 if failed else 0


# --- send -----------------------------------------------------------------------------


def _parse_field(text: str) -> tuple[str, str | bytes | int | None]:
    kind, sep, value = text.partition(":")
    try:
        if text == "null":
            return STR, None
        if sep and kind == "s":
            return STR, value
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
    return name, value


def build_packet(args: argparse.Namespace) -> tuple[bytes, str]:
    """The packet ``send`` was asked for, and a description of it."""
    wire = _wire(args)
    if args.message is not None:
        if args.fields:
            raise CliError("give either --message with --set, or MODULE COMMAND FIELD...")
        try:
            cls = OPENSIPS21.by_name(args.message)
        except KeyError as exc:
            raise CliError(str(exc.args[0])) from None
        values = dict(_parse_set(cls, assignment) for assignment in args.set)
        message = cls.with_defaults(**values)
        return message.to_bytes(wire=wire), f"{cls.MODULE}/{cls.COMMAND} {args.message}"
    if args.set:
        raise CliError("--set needs --message NAME")
    if len(args.fields) < 2:
        raise CliError("send needs MODULE COMMAND [FIELD...] or --message NAME")
    module, command_text, *fields = args.fields
    try:
        command = int(command_text, 0)
    except ValueError:
        raise CliError(f"bad command {command_text!r}: expected an int") from None
    parsed = [_parse_field(text) for text in fields]
    layout = "".join(kind for kind, _ in parsed)
    writer = PacketWriter(module, command, wire=wire).pack(layout, *(value for _, value in parsed))
    return writer.to_bytes(), f"{module}/{command}"


async def _send(data: bytes, addr: Address, wire: WireFormat) -> None:
    local = ("::", 0) if ":" in str(addr[0]) else ("0.0.0.0", 0)
    async with Endpoint(local, recv_buffer=None, wire=wire) as ep:
        await ep.send(data, addr)


def cmd_send(args: argparse.Namespace) -> int:
    """Build one packet and send it as a UDP datagram."""
    addr = resolve(*parse_address(args.to, what="--to"))
    if addr[1] == 0:
        raise CliError(f"bad --to address {args.to!r}: port 0")
    data, what = build_packet(args)
    run(_send(data, addr, _wire(args)))
    print(f"sent {what}, {len(data)} bytes, to {format_address(addr)}")
    return 0


# --- listen ---------------------------------------------------------------------------


def format_stats(stats: Stats) -> list[str]:
    """The stats ``listen`` prints when it stops."""
    drops = ", ".join(f"{reason.value} {stats.drops.get(reason, 0)}" for reason in DropReason)
    return [
        f"stats: received {stats.received}, handled {stats.handled},"
        f" dropped {stats.dropped}, handler errors {stats.handler_errors}",
        f"drops: {drops}",
    ]


async def _listen(args: argparse.Namespace, bind: tuple[str, int]) -> Stats:
    as_json = args.json
    stop = asyncio.Event()

    async def show(reader: PacketReader, source: Address) -> None:
        analysis = analyse_reader(reader)
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
    print(
        f"binif: listening on {format_address(endpoint.local_address)} ({loop_name});"
        " Ctrl-C to stop",
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
    """Print every packet that arrives; on Ctrl-C print the endpoint's stats."""
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
        print(DISSECTOR_PATH)
        return 0
    if args.generate:
        DISSECTOR_PATH.write_text(generate_dissector(), encoding="utf-8")
        print(f"wrote {DISSECTOR_PATH}")
        return 0
    source = DISSECTOR_PATH.read_text(encoding="utf-8")
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
    print(f"binif: {message}", file=sys.stderr, flush=True)


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
    common(listen)
    listen.set_defaults(run=cmd_listen)

    send = sub.add_parser(
        "send",
        help="send one packet",
        description="Send MODULE COMMAND with fields s:TEXT, i:INT, x:HEX (raw str) or null,"
        " or a built-in message: --message dialog.created --set callid=... (unset fields"
        " are empty or 0; bytes fields take hex).",
    )
    send.add_argument("--to", required=True, metavar="ADDR:PORT", help="destination")
    send.add_argument("--message", metavar="NAME", help=f"one of {', '.join(OPENSIPS21.names)}")
    send.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="a field of --message"
    )
    send.add_argument("fields", nargs="*", metavar="MODULE COMMAND FIELD")
    common(send)
    send.set_defaults(run=cmd_send)

    decode = sub.add_parser("decode", help="decode saved datagrams (.bin files)")
    decode.add_argument("files", nargs="+", metavar="FILE")
    decode.add_argument("--json", action="store_true", help="one JSON object per line")
    common(decode)
    decode.set_defaults(run=cmd_decode)

    wireshark = sub.add_parser("wireshark-plugin", help="the Wireshark Lua dissector")
    group = wireshark.add_mutually_exclusive_group()
    group.add_argument("--path", action="store_true", help="print where the shipped file is")
    group.add_argument("--write", metavar="PATH", help="copy it to PATH (a file or a folder)")
    group.add_argument(
        "--generate", action="store_true", help="regenerate the shipped file from the layouts"
    )
    wireshark.set_defaults(run=cmd_wireshark)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="binif: %(message)s")
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
