"""What the dissector knows of the stream profile's packets that no typed message states.

The typed messages (``binif.opensips40.OPENSIPS40``: dialog, usrloc, profiles)
give the names and fixed fields of the packets they describe; this module adds
the rest: names and layouts of the clusterer's own packets (with their counted
lists and optional parts as :class:`Repeat` and :class:`When`), and the variable
tails the typed messages handle in code: repeated entries, counted lists, a
value whose type a field gives. Field names follow
``../shared/vectors/opensips-4.0*/manifest.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "NO_TRAILER",
    "STREAM_NAMES",
    "STREAM_PACKETS",
    "SYNC_CHUNKS",
    "TAILS",
    "Field",
    "Node",
    "Repeat",
    "StreamPacket",
    "Tail",
    "When",
]

Field = tuple[str, type]
"""A field's name and Python type (str, bytes or int)."""


@dataclass(frozen=True, slots=True)
class Repeat:
    """``count`` (an int field read before it, here or in an enclosing group) times
    ``items``, each time in a subtree labelled ``label`` and its index."""

    count: str
    label: str
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class When:
    """``items`` only when the int field ``field`` read before is not 0."""

    field: str
    items: tuple[Node, ...]


Node = Field | Repeat | When
"""What a layout lists: a field, a repeated group, or fields present on a condition."""

NO_TRAILER = frozenset({"clusterer-internal"})
"""Capabilities whose packets carry no clusterer trailer (every other one does)."""


@dataclass(frozen=True, slots=True)
class Tail:
    """The variable part after a packet's fixed fields, dissected by the Lua code.

    ``kind`` is one of:

    - ``list``: ``count`` (an int field already read, or ``count_field`` read now)
      times the ``item`` fields; with ``when`` only if that int field has that value;
    - ``typed``: ``item[value - 1]`` where ``value`` is the int field ``count``
      (1 the first item, 2 the second, 0 nothing);
    - ``entries``: the ``item`` fields repeated until the trailer, the field named
      ``value`` present only when ``has_value`` is not 0 (dialog profiles);
    - ``sync``: sync chunks, each dissected with the layout of its capability.
    """

    kind: str
    item: tuple[Field, ...] = ()
    count: str | None = None
    count_field: Field | None = None
    when: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class StreamPacket:
    """A packet type's fixed fields per capability version, and its tail."""

    layouts: Mapping[int, tuple[Node, ...]]
    tail: Tail | None = None


def _packet(
    versions: tuple[int, ...], fields: tuple[Node, ...], tail: Tail | None = None
) -> StreamPacket:
    return StreamPacket({version: fields for version in versions}, tail)


PATH: tuple[Node, ...] = (("path_len", int), Repeat("path_len", "hop", (("path_node", int),)))
CLUSTER_HEAD: tuple[Field, ...] = (("cluster_id", int), ("src_node_id", int))
DESCRIPTION: tuple[Field, ...] = (
    ("url", str),
    ("sip_addr", str),
    ("priority", int),
    ("no_ping_retries", int),
)

STREAM_NAMES: dict[tuple[str, int], str] = {
    ("clusterer-internal", 0): "clusterer.ping",
    ("clusterer-internal", 1): "clusterer.pong",
    ("clusterer-internal", 2): "clusterer.ls_update",
    ("clusterer-internal", 3): "clusterer.full_top_update",
    ("clusterer-internal", 4): "clusterer.unknown_id",
    ("clusterer-internal", 5): "clusterer.node_description",
    ("clusterer-internal", 9): "clusterer.cap_update",
    ("clusterer-extra", 6): "clusterer.remove_node",
    ("clusterer-extra", 8): "clusterer.mi_cmd",
    ("clusterer-extra", 10): "clusterer.sync_req",
    ("clusterer-extra", 11): "clusterer.sync",
    ("clusterer-extra", 12): "clusterer.sync_end",
    ("clusterer-extra", 13): "clusterer.shtag_active",
}
"""binif's name of the packet types no typed message describes (the clusterer's)."""

_CMATCH = Tail(
    "list",
    item=(("cmatch_param", str),),
    count_field=("cmatch_param_count", int),
    when=("cmatch_mode", 2),
)

STREAM_PACKETS: dict[tuple[str, int], StreamPacket] = {
    ("clusterer-internal", 0): _packet((1,), (*CLUSTER_HEAD, ("req_node_list", int))),
    ("clusterer-internal", 1): _packet(
        (1,), (*CLUSTER_HEAD, ("nr_nodes", int), Repeat("nr_nodes", "node", (("node_id", int),)))
    ),
    ("clusterer-internal", 2): _packet(
        (1,),
        (
            *CLUSTER_HEAD,
            ("ls_seq_no", int),
            ("timestamp", int),
            ("neigh_id", int),
            ("new_link_state", int),
            *PATH,
        ),
    ),
    ("clusterer-internal", 3): _packet(
        (1,),
        (
            *CLUSTER_HEAD,
            ("top_seq_no", int),
            ("timestamp", int),
            ("no_nodes", int),
            Repeat(
                "no_nodes",
                "node",
                (
                    ("node_id", int),
                    ("has_description", int),
                    When("has_description", DESCRIPTION),
                    ("ls_seq_no", int),
                    ("ls_timestamp", int),
                    ("no_neigh", int),
                    Repeat("no_neigh", "neighbour", (("neigh", int),)),
                ),
            ),
            *PATH,
        ),
    ),
    ("clusterer-internal", 4): _packet((1,), CLUSTER_HEAD),
    ("clusterer-internal", 5): _packet((1,), (*CLUSTER_HEAD, *DESCRIPTION, *PATH)),
    ("clusterer-internal", 9): _packet(
        (1,),
        (
            *CLUSTER_HEAD,
            ("cap_seq_no", int),
            ("timestamp", int),
            ("nr_nodes", int),
            Repeat(
                "nr_nodes",
                "node",
                (
                    ("node_id", int),
                    ("nr_cap", int),
                    Repeat("nr_cap", "capability", (("name", str), ("state", int))),
                ),
            ),
            ("require_reply", int),
            *PATH,
        ),
    ),
    ("clusterer-extra", 6): _packet((1,), (("target_node_id", int),)),
    ("clusterer-extra", 8): _packet(
        (1,),
        (
            ("cmd_name", str),
            ("no_params", int),
            Repeat("no_params", "param", (("cmd_param", str),)),
        ),
    ),
    ("clusterer-extra", 10): _packet((3,), (("capability", str),)),
    ("clusterer-extra", 11): _packet(
        (3,), (("capability", str), ("data_version", int)), Tail("sync")
    ),
    ("clusterer-extra", 12): _packet((3,), (("capability", str), ("sync_chunks", int))),
    ("clusterer-extra", 13): _packet((1,), (("sharing_tag", str),)),
}
"""The layout of each packet type no typed message describes: fixed fields (no
trailer) and the tail."""

TAILS: dict[tuple[str, int], Tail] = {
    ("dialog-dlg-repl", 5): Tail("typed", (("value", str), ("int_value", int)), "val_type"),
    ("usrloc-contact-repl", 3): _CMATCH,
    ("usrloc-contact-repl", 4): _CMATCH,
    ("usrloc-contact-repl", 5): _CMATCH,
    ("dialog-prof-repl", 4): Tail(
        "entries", (("profile", str), ("has_value", int), ("value", str), ("count", int))
    ),
}
"""The variable tails of packets whose typed message gives the fixed fields."""

SYNC_CHUNKS: dict[str, tuple[str | None, dict[int, int]]] = {
    "dialog-dlg-repl": (None, {0: 1}),
    "usrloc-contact-repl": ("is_contact", {0: 1, 1: 3}),
}
"""How a SYNC chunk of a capability is laid out: an int field choosing the packet type
whose fields follow (None: no such field, always the type under 0)."""
