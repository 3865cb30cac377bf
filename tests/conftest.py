"""Shared test setup: endpoint tests run on both asyncio's default loop and uvloop.

pytest-asyncio 1.x parametrizes a test over the loop factories that the
``pytest_asyncio_loop_factories`` hook returns. Tests in ``test_endpoint*.py`` and
``test_stream_endpoint*.py`` files (or marked ``both_loops``) get both; every
other async test keeps the default loop alone, so it runs once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
    uvloop = None  # type: ignore[assignment]

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

DEFAULT_ONLY: Mapping[str, LoopFactory] = {"asyncio": asyncio.new_event_loop}
BOTH: Mapping[str, LoopFactory] = (
    {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    if uvloop is not None
    else DEFAULT_ONLY
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_loops: run this async test on asyncio and uvloop")


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, LoopFactory]:
    """Both loops for the endpoint tests, the default loop for everything else."""
    name = item.path.name
    if name.startswith(("test_endpoint", "test_stream_endpoint")) or item.get_closest_marker(
        "both_loops"
    ):
        return BOTH
    return DEFAULT_ONLY
