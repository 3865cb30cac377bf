"""A Wireshark dissector in Lua, generated from the same layouts as the Python messages.

``binif.lua`` ships inside the package; :func:`generate_dissector` rebuilds it
from two :class:`~binif.messages.MessageRegistry` objects (OpenSIPS 2.1's for the
datagram profile, ``OPENSIPS40`` for the stream profile) and what
:mod:`binif.wireshark.stream_layouts` adds (the clusterer's packets, variable
tails), and a test asserts the shipped file
equals a fresh build, so the dissector and the Python layouts never disagree.
Load it with ``tshark -X lua_script:$(binif wireshark-plugin --path)`` or copy it
to a Wireshark plugin folder (``binif wireshark-plugin --write DIR``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..messages import Message, MessageRegistry
from ..opensips21 import OPENSIPS21
from ..opensips40 import OPENSIPS40
from ..wire import DATAGRAM
from .stream_layouts import (
    NO_TRAILER,
    STREAM_NAMES,
    STREAM_PACKETS,
    SYNC_CHUNKS,
    TAILS,
    Field,
    Node,
    Repeat,
    StreamPacket,
    Tail,
    When,
)

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_TCP_PORT",
    "DISSECTOR_PATH",
    "NamedPacket",
    "generate_dissector",
    "stream_packets",
]

DISSECTOR_PATH = Path(__file__).with_name("binif.lua")
"""Where the shipped dissector is installed."""

DEFAULT_PORT = 5062
"""The UDP port decoded unless the ``binif.udp_port`` preference says otherwise."""

DEFAULT_TCP_PORT = 5555
"""The TCP port decoded unless ``binif.tcp_port`` says otherwise (OpenSIPS's proto_bin default)."""

STREAM_MIN = 17
STREAM_MAX = 65515
"""Packet sizes OpenSIPS 4.0 accepts on a stream (WIRE.md part 2)."""

_TEMPLATE_PATH = Path(__file__).with_name("template.lua")
_KIND = {str: "text", bytes: "bytes", int: "int"}
_PROTOFIELD = {
    "text": "ProtoField.string({abbr}, {label}, base.UNICODE, {blurb})",
    "bytes": "ProtoField.bytes({abbr}, {label}, base.NONE, {blurb})",
    "int": "ProtoField.int32({abbr}, {label}, base.DEC, nil, nil, {blurb})",
    "raw_int": "ProtoField.int64({abbr}, {label}, base.DEC, nil, nil, {blurb})",
}


def _lua(text: str) -> str:
    """A Lua string literal (JSON's escapes are valid Lua for this ASCII text)."""
    return json.dumps(text)


def _ident(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", text)


class _Fields:
    """The ProtoField declarations, one per filter name, and the Lua spec of each field."""

    def __init__(self) -> None:
        self.declared: dict[str, str] = {}  # Lua variable -> declaration

    def _declare(self, abbr: str, kind: str, label: str, blurb: str) -> str:
        var = "F." + _ident(abbr[len("binif.") :])
        self.declared.setdefault(
            var,
            f"{var} = "
            + _PROTOFIELD[kind].format(abbr=_lua(abbr), label=_lua(label), blurb=_lua(blurb)),
        )
        return var

    def spec(self, abbr: str, owner: str, name: str, kind: str, raw_prop: str | None) -> str:
        """A Lua field spec; ``raw_prop`` names the decoded value of a raw C integer."""
        var = self._declare(abbr, kind, name, f"{owner} {name}")
        raw = "nil"
        if raw_prop is not None:
            raw = self._declare(
                f"binif.{owner}.{raw_prop}",
                "raw_int",
                raw_prop,
                f"{owner} {name} as a little-endian C integer",
            )
        return f"{{ name = {_lua(name)}, kind = {_lua(kind)}, field = {var}, raw = {raw} }}"


def _kinds(fields: Iterable[tuple[str, str, type]]) -> dict[tuple[str, str], set[str]]:
    kinds: dict[tuple[str, str], set[str]] = {}
    for owner, name, type_ in fields:
        kinds.setdefault((owner, name), set()).add(_KIND[type_])
    return kinds


def _datagram_layouts(registry: MessageRegistry, fields: _Fields) -> list[str]:
    kinds = _kinds(
        (module, field.name, field.type)
        for (module, _command), cls in registry.items()
        for field in cls.FIELDS
    )
    layouts: list[str] = []
    for (module, command), cls in sorted(registry.items()):
        specs = []
        for field in cls.FIELDS:
            shared = len(kinds[(module, field.name)]) == 1
            abbr = (
                f"binif.{module}.{field.name}"
                if shared
                else f"binif.{module}.{command}.{field.name}"
            )
            raw = cls.RAW_INTS.get(field.name)
            specs.append(fields.spec(abbr, module, field.name, _KIND[field.type], raw))
        body = ",\n            ".join(specs)
        layouts.append(
            f"layouts[{_lua(module)}] = layouts[{_lua(module)}] or {{}}\n"
            f"layouts[{_lua(module)}][{int(command)}] = {{\n"
            f"    name = {_lua(registry.name_of(cls))},\n"
            f"    fields = {{\n            {body}\n    }},\n"
            "}"
        )
    return layouts


@dataclass(frozen=True, slots=True)
class NamedPacket:
    """A stream packet type as the dissector shows it."""

    name: str
    packet: StreamPacket
    raw_ints: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Raw C integers in str fields, by field name: the name of their decoded value."""


def _layouts(cls: type[Message]) -> dict[int, tuple[Field, ...]]:
    """A typed message's fixed wire fields, per layout version it reads."""
    # The usrloc and profile messages state their fields per version (VERSIONS,
    # _wire_fields); the dialog ones read one version (VERSION) with FIELDS.
    wire_fields = getattr(cls, "_wire_fields", None)
    versions: frozenset[int] = getattr(cls, "VERSIONS", frozenset())
    if wire_fields is not None and versions:
        return {
            version: tuple((field.name, field.type) for field in wire_fields(version))
            for version in sorted(versions)
        }
    version = getattr(cls, "VERSION", None)
    if not isinstance(version, int):
        raise TypeError(f"{cls.__name__} states no layout version")
    return {version: tuple((field.name, field.type) for field in cls.FIELDS)}


def stream_packets(
    registry: MessageRegistry = OPENSIPS40,
) -> dict[tuple[str, int], NamedPacket]:
    """Every stream packet type the dissector names: the typed messages' (names, fields
    per version, raw integers) and the clusterer's and dialog's from the table."""
    packets = {
        key: NamedPacket(STREAM_NAMES[key], packet) for key, packet in STREAM_PACKETS.items()
    }
    for key, cls in registry.items():
        packet = StreamPacket(_layouts(cls), TAILS.get(key))
        packets[key] = NamedPacket(registry.name_of(cls), packet, cls.RAW_INTS)
    return packets


def _fields_of(nodes: Iterable[Node]) -> Iterable[Field]:
    """Every field in ``nodes``, those inside repeated and optional groups included."""
    for node in nodes:
        if isinstance(node, Repeat | When):
            yield from _fields_of(node.items)
        else:
            yield node


def _stream_fields(packet: StreamPacket) -> Iterable[Field]:
    for nodes in packet.layouts.values():
        yield from _fields_of(nodes)
    if packet.tail is not None:
        yield from packet.tail.item
        if packet.tail.count_field is not None:
            yield packet.tail.count_field


def _stream_layouts(
    packets: Mapping[tuple[str, int], NamedPacket], fields: _Fields
) -> tuple[list[str], list[str]]:
    kinds = _kinds(
        [
            (capability, name, type_)
            for (capability, _), named in packets.items()
            for name, type_ in _stream_fields(named.packet)
        ]
        + [(capability, name, int) for capability, (name, _) in SYNC_CHUNKS.items() if name]
    )
    raw_ints = {
        (capability, name): prop
        for (capability, _), named in packets.items()
        for name, prop in named.raw_ints.items()
    }

    def spec(capability: str, ptype: int, field: Field) -> str:
        name, type_ = field
        shared = len(kinds[(capability, name)]) == 1
        kind = _KIND[type_]
        # A name with two kinds (usrloc's cflags: an int up to v3, then text) gets both.
        abbr = f"binif.{capability}.{name}" if shared else f"binif.{capability}.{name}.{kind}"
        raw = raw_ints.get((capability, name))
        return fields.spec(abbr, capability, name, _KIND[type_], raw)

    def specs(capability: str, ptype: int, items: Iterable[Node]) -> str:
        return "{ " + ", ".join(node(capability, ptype, item) for item in items) + " }"

    def node(capability: str, ptype: int, item: Node) -> str:
        if isinstance(item, Repeat):
            return (
                f'{{ kind = "repeat", count = {_lua(item.count)}, label = {_lua(item.label)},'
                f" items = {specs(capability, ptype, item.items)} }}"
            )
        if isinstance(item, When):
            return (
                f'{{ kind = "when", field = {_lua(item.field)},'
                f" items = {specs(capability, ptype, item.items)} }}"
            )
        return spec(capability, ptype, item)

    def tail(capability: str, ptype: int, tail: Tail) -> str:
        parts = [f"kind = {_lua(tail.kind)}", f"item = {specs(capability, ptype, tail.item)}"]
        if tail.count is not None:
            parts.append(f"count = {_lua(tail.count)}")
        if tail.count_field is not None:
            parts.append(f"count_field = {spec(capability, ptype, tail.count_field)}")
        if tail.when is not None:
            parts.append(f"when = {{ {_lua(tail.when[0])}, {int(tail.when[1])} }}")
        return "{ " + ", ".join(parts) + " }"

    layouts: list[str] = []
    for (capability, ptype), named in sorted(packets.items()):
        cap = _lua(capability)
        layouts.append(
            f"stream_names[{cap}] = stream_names[{cap}] or {{}}\n"
            f"stream_names[{cap}][{ptype}] = {_lua(named.name)}"
        )
        packet = named.packet
        tail_lua = "nil" if packet.tail is None else tail(capability, ptype, packet.tail)
        entries = []
        for version, layout in packet.layouts.items():
            fields_lua = ",\n            ".join(node(capability, ptype, f) for f in layout)
            entries.append(
                f"    [{version}] = {{\n        fields = {{\n            {fields_lua}\n"
                f"        }},\n        tail = {tail_lua},\n    }}"
            )
        versions = ",\n".join(entries)
        layouts.append(
            f"stream_layouts[{cap}] = stream_layouts[{cap}] or {{}}\n"
            f"stream_layouts[{cap}][{ptype}] = {{\n{versions},\n}}"
        )
    sync: list[str] = []
    for capability, (selector, types) in sorted(SYNC_CHUNKS.items()):
        chosen = ", ".join(f"[{choice}] = {ptype}" for choice, ptype in sorted(types.items()))
        selector_lua = "nil" if selector is None else spec(capability, 0, (selector, int))
        sync.append(
            f"sync_chunks[{_lua(capability)}] = {{ selector = {selector_lua},"
            f" types = {{ {chosen} }} }}"
        )
    return layouts, sync


def generate_dissector(
    registry: MessageRegistry = OPENSIPS21,
    *,
    stream_registry: MessageRegistry = OPENSIPS40,
    port: int = DEFAULT_PORT,
    tcp_port: int = DEFAULT_TCP_PORT,
) -> str:
    """Return the Lua source of a dissector for both profiles.

    Each datagram field gets a display filter ``binif.<module>.<field>``, shared
    by the commands of a module that carry a field of that name and kind (so
    ``binif.dialog.callid`` matches created, updated and deleted); a name used
    with two kinds falls back to ``binif.<module>.<command>.<field>``. Stream
    fields are named after their capability: ``binif.dialog-dlg-repl.callid``,
    ``binif.usrloc-contact-repl.aor``; a name whose kind differs between layout
    versions gets the kind too (``binif.usrloc-contact-repl.cflags.int`` in v3,
    ``.cflags.text`` from v4).
    """
    fields = _Fields()
    layouts = _datagram_layouts(registry, fields)
    stream_layouts, sync_chunks = _stream_layouts(stream_packets(stream_registry), fields)
    template = _TEMPLATE_PATH.read_text(encoding="utf-8")
    replacements = {
        "@MARKER@": _lua(DATAGRAM.marker.decode("ascii")),
        "@MIN_PACKET@": str(DATAGRAM.min_packet),
        "@PORT@": str(int(port)),
        "@STREAM_MIN@": str(STREAM_MIN),
        "@STREAM_MAX@": str(STREAM_MAX),
        "@TCP_PORT@": str(int(tcp_port)),
        "@NO_TRAILER@": ", ".join(f"[{_lua(name)}] = true" for name in sorted(NO_TRAILER)),
        "@FIELD_DECLARATIONS@": "\n".join(fields.declared.values()),
        "@FIELD_LIST@": ",\n    ".join(fields.declared),
        "@LAYOUTS@": "\n".join(layouts),
        "@STREAM_LAYOUTS@": "\n".join(stream_layouts),
        "@SYNC_CHUNKS@": "\n".join(sync_chunks),
    }
    for key, value in replacements.items():
        template = template.replace(key, value)
    return template
