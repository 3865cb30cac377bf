"""The test run's own summary: a tool that is missing here is named, not silently skipped."""

from __future__ import annotations

from pathlib import Path

from conftest import missing_tool_lines


def test_missing_tshark_and_lua_are_named_with_how_to_install() -> None:
    reasons = [
        "('tests/test_wireshark.py', 53, 'Skipped: tshark is not installed (apt-get ...)')",
        "('tests/test_wireshark.py', 53, 'Skipped: tshark is not installed (apt-get ...)')",
        "('tests/test_wireshark.py', 220, 'Skipped: no Lua 5.3+ interpreter (apt-get ...)')",
        "('tests/test_endpoint_send.py', 155, 'Skipped: uvloop transport socket...')",
    ]
    assert missing_tool_lines(reasons) == [
        "binif: 2 tests skipped: tshark (apt-get install tshark) missing here;"
        " CI installs it (.ci/run), so they run there",
        "binif: 1 test skipped: Lua 5.3+ (apt-get install lua5.4) missing here;"
        " CI installs it (.ci/run), so they run there",
    ]
    assert missing_tool_lines(reasons[3:]) == []


def test_the_skip_reason_it_looks_for_is_the_one_test_wireshark_gives() -> None:
    source = (Path(__file__).parent / "test_wireshark.py").read_text(encoding="utf-8")
    assert 'pytest.skip("tshark is not installed' in source
    assert 'pytest.skip("no Lua 5.3+ interpreter' in source
