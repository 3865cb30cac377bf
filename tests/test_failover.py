"""Failover across two hosts (network namespaces): examples/failover.py, checked.

Runs as root (CI does); skipped only when not root or when ``ip netns add`` is
refused. Every address lives inside namespaces the test creates and deletes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import failover

WHY_NOT = failover.netns_available() if sys.platform.startswith("linux") else "not Linux"
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=f"network namespaces: {WHY_NOT}")


def namespaces() -> set[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


def test_backup_holds_exactly_the_dialogs_sent_before_the_kill(tmp_path: Path) -> None:
    result = failover.kill_scenario(tmp_path)
    stats = result["backup_stats"]
    logged = result["ops_logged"]
    assert result["active_exit"] == -signal.SIGKILL
    assert 0 < logged < result["ops_planned"], "the kill was not mid-stream"
    assert result["log_matches_plan"]
    # A packet sent but not yet logged when the kill landed is the only slack.
    assert stats["received"] in (logged, logged + 1)
    assert stats["handled"] == stats["received"]
    assert stats["kernel_drops"] == 0 and sum(stats["drops"].values()) == 0
    assert result["live_dialogs_at_kill"] > 100
    assert result["backup_table"] == result["expected_table"]
    assert result["anomalies"] == {"update_of_unknown": 0, "delete_of_unknown": 0}
    assert result["backup_exit"] == 0
    assert len(result["namespaces"]) == 2 and not set(result["namespaces"]) & namespaces()


def test_lossy_link_shows_in_the_counters_and_breaks_nothing(tmp_path: Path) -> None:
    result = failover.lossy_scenario(tmp_path, loss=0.05, reorder=0.05)
    ops = result["ops"]
    sent, relay, stats = result["active_stats"], result["relay"], result["backup_stats"]
    assert result["exits"] == {"active": 0, "relay": 0, "backup": 0}
    assert sent["packets_sent"] == ops and sent["send_errors"] == 0
    assert relay["received"] == ops
    assert relay["dropped"] + relay["forwarded"] == ops
    assert 0.02 * ops < relay["dropped"] < 0.08 * ops
    assert relay["reordered"] > 0
    # The loss is visible: what the active sent minus what the backup received.
    assert stats["received"] == relay["forwarded"]
    assert sent["packets_sent"] - stats["received"] == relay["dropped"]
    assert stats["kernel_drops"] == 0
    # Every datagram that arrived is accounted for, and none made a handler fail.
    finished = (
        stats["handled"]
        + stats["handler_errors"]
        + stats["handler_timeouts"]
        + sum(stats["drops"].values())
    )
    assert stats["received"] == finished and stats["pending"] == 0
    assert stats["handler_errors"] == 0 and stats["handled"] == stats["received"]
    # UDP cannot repair this: lost creates and deletes leave the table wrong.
    assert result["anomalies"]["update_of_unknown"] > 0
    assert result["wrong_dialogs"] > 0
    assert len(result["namespaces"]) == 3 and not set(result["namespaces"]) & namespaces()
