"""``binif.run(main())``: run a coroutine on uvloop when it is installed, plain asyncio otherwise.

The library never installs an event loop policy (``uvloop.install()`` is
deprecated on Python 3.12+ and changes the whole process); applications pick
the loop at their entry point, and this is that entry point.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["loop_factory", "run"]

T = TypeVar("T")


def loop_factory(use_uvloop: bool | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The uvloop loop factory, or None for asyncio's default loop.

    ``use_uvloop=None`` uses uvloop if it imports; True requires it (ImportError
    otherwise); False never uses it.
    """
    if use_uvloop is False:
        return None
    try:
        import uvloop
    except ImportError:
        if use_uvloop:
            raise
        return None
    return uvloop.new_event_loop


def run(
    main: Coroutine[Any, Any, T], *, debug: bool | None = None, use_uvloop: bool | None = None
) -> T:
    """Run ``main`` in a new event loop (uvloop when available); return its result."""
    with asyncio.Runner(debug=debug, loop_factory=loop_factory(use_uvloop)) as runner:
        return runner.run(main)
