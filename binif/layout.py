"""Layout strings: ``"sssii"`` names the types of consecutive fields.

``s`` is a str field (length-prefixed bytes), ``i`` an int field. A layout is
compiled once per byte order into runs of one kind, so readers and writers
handle a run of ints with a single struct call.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from itertools import groupby
from typing import NamedTuple

from .errors import LayoutError

__all__ = ["INT", "STR", "Run", "compile_layout"]

STR = "s"
INT = "i"


class Run(NamedTuple):
    """``fields`` consecutive fields of one kind."""

    kind: str
    fields: int
    ints: struct.Struct | None
    """For a run of ints, the struct that packs them all at once."""


@lru_cache(maxsize=1024)
def compile_layout(layout: str, byte_order_prefix: str = "<") -> tuple[Run, ...]:
    """Split ``layout`` into runs of one kind; raise :class:`LayoutError` if invalid."""
    if not isinstance(layout, str):
        raise LayoutError(f"a layout is a str of 's' and 'i', not {type(layout).__name__}")
    for position, kind in enumerate(layout):
        if kind not in (STR, INT):
            raise LayoutError(
                f"layout {layout!r}: {kind!r} at position {position} is not 's' (str) or 'i' (int)"
            )
    runs = []
    for kind, group in groupby(layout):
        count = len(list(group))
        ints = struct.Struct(f"{byte_order_prefix}{count}i") if kind == INT else None
        runs.append(Run(kind, count, ints))
    return tuple(runs)
