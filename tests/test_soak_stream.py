"""The stream soak (benchmarks/soak_stream.py) in a small configuration.

``make soak`` runs the full one (1,000,000 packets from the good peer).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import soak_stream

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_small_stream_soak_loses_nothing_and_closes_every_hostile_connection(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = soak_stream.main(["--json", "--packets", "20000", "--hostile", "6"])
    figures = json.loads(capsys.readouterr().out.splitlines()[0])
    assert figures["violations"] == [] and status == 0
    assert figures["good_handled_in_order"] == 20000
    opened, closed = figures["hostile_connections"], figures["closed_by_endpoint"]
    for kind in ("garbage", "too_long", "too_short", "good_then_garbage", "stall"):
        assert opened[kind] > 0 and closed[kind] == opened[kind], kind
    assert 0 < closed["crowd"] < opened["crowd"]
    reasons = figures["connections_closed"]
    for reason in ("bad_marker", "too_long", "too_short", "read_timeout", "max_connections"):
        assert reasons[reason] > 0, reason


def test_stream_soak_fails_when_a_good_packet_is_wrong(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checker is not a rubber stamp: a handler seeing other bytes is a violation."""
    real = soak_stream.good_packet
    monkeypatch.setattr(
        soak_stream, "good_packet", lambda seq, module="soak": real(seq + 1, module)
    )
    status = soak_stream.main(["--json", "--packets", "500", "--hostile", "1"])
    figures = json.loads(capsys.readouterr().out.splitlines()[0])
    assert status == 1
    assert any("out of order" in v for v in figures["violations"])
