"""The soak (benchmarks/soak.py) in a small configuration: 20,000 datagrams from 2 senders.

``make soak`` runs the full one (1,000,000 datagrams, 4 senders).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import soak

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc/net/udp")


def run_soak(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    status = soak.main(["--json", *argv])
    out = capsys.readouterr().out
    return status, json.loads(out.splitlines()[0])


RATES = ["40000", "10000", "2500"]
"""A run with kernel drops can only check bounds: it is tried again, slower."""


def test_small_soak_accounts_for_every_datagram(capsys: pytest.CaptureFixture[str]) -> None:
    for rate in RATES:
        status, figures = run_soak(capsys, "--datagrams", "20000", "--senders", "2", "--rate", rate)
        assert figures["violations"] == []
        assert status == 0
        if figures["checks"] == "exact":
            break
        assert figures["checks"] == "bounds" and figures["kernel_drops"] > 0
    assert figures["checks"] == "exact", (
        f"the kernel dropped datagrams at every rate down to {rate}/s: the per-outcome"
        f" checks never ran (last run: {figures['kernel_drops']} kernel drops)"
    )
    assert figures["kernel_drops"] == 0
    assert figures["datagrams_sent"] == 20000
    assert figures["received"] + figures["kernel_drops"] == 20000
    assert set(figures["kinds_sent"]) == set(soak.KINDS)
    # Every kind of bad datagram reached the endpoint and was counted under its reason.
    for reason in (
        "too_short",
        "bad_marker",
        "bad_checksum",
        "malformed",
        "unknown_module",
        "undecodable",
        "source_not_allowed",
    ):
        assert figures["drops"].get(reason, 0) > 0, reason
    assert figures["handled"] > 0 and figures["handler_errors"] > 0
    accepted = figures["accepted_by_checker"]
    assert sum(accepted.values()) == figures["handled"] + figures["handler_errors"]
    assert accepted["soak"] > 0 and accepted["dialog"] > 0 and accepted["ul"] > 0
    assert figures["probe_after_flood"] == "200/200"
    assert figures["max_size_packets_handled"] > 0


def test_soak_fails_when_a_handler_sees_a_wrong_packet(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checker is not a rubber stamp: a payload that does not match is a violation."""
    monkeypatch.setattr(soak, "payload", lambda sender, seq, size: b"?" * size)
    status, figures = run_soak(capsys, "--datagrams", "2000", "--senders", "1", "--probe", "10")
    assert status == 1
    assert any("payload does not match" in v for v in figures["violations"])
