"""Shared test setup: endpoint tests run on both asyncio's default loop and uvloop.

pytest-asyncio 1.x parametrizes a test over the loop factories that the
``pytest_asyncio_loop_factories`` hook returns. Tests in ``test_endpoint*.py`` and
``test_stream_endpoint*.py`` files (or marked ``both_loops``) get both; every
other async test keeps the default loop alone, so it runs once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

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


MISSING_TOOLS = {
    "tshark is not installed": "tshark (apt-get install tshark)",
    "no Lua 5.3+ interpreter": "Lua 5.3+ (apt-get install lua5.4)",
}
"""Skip reasons that mean a tool is missing here, and what installs it (as .ci/run does)."""


def missing_tool_lines(skip_reasons: list[str]) -> list[str]:
    """One line per missing tool whose tests were skipped: said at the end, not buried."""
    lines = []
    for marker, tool in MISSING_TOOLS.items():
        count = sum(marker in reason for reason in skip_reasons)
        if count:
            lines.append(
                f"binif: {count} test{'s' if count > 1 else ''} skipped: {tool} missing here;"
                " CI installs it (.ci/run), so they run there"
            )
    return lines


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Say which tests a missing tool skipped, even under ``-q``."""
    reasons = [str(report.longrepr) for report in terminalreporter.stats.get("skipped", [])]
    for line in missing_tool_lines(reasons):
        terminalreporter.write_line(line, yellow=True, bold=True)
