"""Layout strings: ``"sssii"`` names the types of consecutive fields.

``s`` is a str field (length-prefixed bytes), ``i`` an int field. A layout is
compiled once per byte order into a plan: one ``None`` per str field and one
struct per run of consecutive ints, so a run of ints costs a single struct call.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from itertools import groupby

from .errors import LayoutError

__all__ = ["INT", "STR", "Plan", "compile_layout"]

STR = "s"
INT = "i"

Plan = tuple[struct.Struct | None, ...]
"""A compiled layout: ``None`` for a str field, a struct for a run of int fields."""


@lru_cache(maxsize=1024)
def compile_layout(layout: str, byte_order_prefix: str = "<") -> Plan:
    """Compile ``layout``; raise :class:`LayoutError` if it is not made of ``s`` and ``i``."""
    if not isinstance(layout, str):
        raise LayoutError(f"a layout is a str of 's' and 'i', not {type(layout).__name__}")
    for position, kind in enumerate(layout):
        if kind not in (STR, INT):
            raise LayoutError(
                f"layout {layout!r}: {kind!r} at position {position} is not 's' (str) or 'i' (int)"
            )
    plan: list[struct.Struct | None] = []
    for kind, group in groupby(layout):
        count = len(list(group))
        if kind == INT:
            plan.append(struct.Struct(f"{byte_order_prefix}{count}i"))
        else:
            plan.extend([None] * count)
    return tuple(plan)
