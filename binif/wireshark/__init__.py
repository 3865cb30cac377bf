"""A Wireshark dissector in Lua, generated from the same layouts as the Python messages.

``binif.lua`` ships inside the package; :func:`generate_dissector` rebuilds it
from a :class:`~binif.messages.MessageRegistry` (OpenSIPS 2.1's by default)
and a test asserts the shipped file equals a fresh build, so the dissector and
:mod:`binif.opensips21` never disagree. Load it with
``tshark -X lua_script:$(binif wireshark-plugin --path)`` or copy it to a
Wireshark plugin folder (``binif wireshark-plugin --write DIR``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..messages import MessageRegistry
from ..opensips21 import OPENSIPS21
from ..wire import DATAGRAM

__all__ = ["DEFAULT_PORT", "DISSECTOR_PATH", "generate_dissector"]

DISSECTOR_PATH = Path(__file__).with_name("binif.lua")
"""Where the shipped dissector is installed."""

DEFAULT_PORT = 5062
"""The UDP port decoded unless the ``binif.udp_port`` preference says otherwise."""

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


def generate_dissector(registry: MessageRegistry = OPENSIPS21, *, port: int = DEFAULT_PORT) -> str:
    """Return the Lua source of a dissector for every message in ``registry``.

    Each field gets a display filter ``binif.<module>.<field>``, shared by the
    commands of a module that carry a field of that name and kind (so
    ``binif.dialog.callid`` matches created, updated and deleted); a name used
    with two kinds falls back to ``binif.<module>.<command>.<field>``.
    """
    kinds: dict[tuple[str, str], set[str]] = {}
    for (module, _command), cls in registry.items():
        for field in cls.FIELDS:
            kinds.setdefault((module, field.name), set()).add(_KIND[field.type])

    declared: dict[str, str] = {}  # Lua variable -> declaration
    layouts: list[str] = []
    for (module, command), cls in sorted(registry.items()):
        specs = []
        for field in cls.FIELDS:
            kind = _KIND[field.type]
            shared = len(kinds[(module, field.name)]) == 1
            abbr = (
                f"binif.{module}.{field.name}"
                if shared
                else (f"binif.{module}.{command}.{field.name}")
            )
            var = "f_" + _ident(abbr[len("binif.") :])
            declared.setdefault(
                var,
                f"local {var} = "
                + _PROTOFIELD[kind].format(
                    abbr=_lua(abbr), label=_lua(field.name), blurb=_lua(f"{module} {field.name}")
                ),
            )
            raw = "nil"
            prop = cls.RAW_INTS.get(field.name)
            if prop is not None:
                raw_abbr = f"binif.{module}.{prop}"
                raw = "f_" + _ident(raw_abbr[len("binif.") :])
                declared.setdefault(
                    raw,
                    f"local {raw} = "
                    + _PROTOFIELD["raw_int"].format(
                        abbr=_lua(raw_abbr),
                        label=_lua(prop),
                        blurb=_lua(f"{module} {field.name} as a little-endian C integer"),
                    ),
                )
            specs.append(
                f"{{ name = {_lua(field.name)}, kind = {_lua(kind)}, field = {var}, raw = {raw} }}"
            )
        name = registry.name_of(cls)
        body = ",\n            ".join(specs)
        layouts.append(
            f"layouts[{_lua(module)}] = layouts[{_lua(module)}] or {{}}\n"
            f"layouts[{_lua(module)}][{int(command)}] = {{\n"
            f"    name = {_lua(name)},\n"
            f"    fields = {{\n            {body}\n    }},\n"
            "}"
        )

    template = _TEMPLATE_PATH.read_text(encoding="utf-8")
    replacements = {
        "@MARKER@": _lua(DATAGRAM.marker.decode("ascii")),
        "@MIN_PACKET@": str(DATAGRAM.min_packet),
        "@PORT@": str(int(port)),
        "@FIELD_DECLARATIONS@": "\n".join(declared.values()),
        "@FIELD_LIST@": ",\n    ".join(declared),
        "@LAYOUTS@": "\n".join(layouts),
    }
    for key, value in replacements.items():
        template = template.replace(key, value)
    return template
