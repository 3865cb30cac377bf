"""The benchmarks' own checks: a broken build stops them before any timing, also under -O.

The timings themselves are ``make bench`` and ``make bench-endpoint``; here only
what decides whether a run may be timed at all, and how it is timed.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import binif
from binif.wire import WireFormat

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import bench_codec  # noqa: E402
import bench_endpoint  # noqa: E402


def test_codec_gate_passes_on_this_build() -> None:
    assert bench_codec.gate() == []


def test_codec_gate_names_a_contender_that_is_not_byte_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bench_codec, "binif_pack", lambda: bench_codec.PACKET[:-1])
    assert bench_codec.gate() == ["binif pack() does not reproduce the vector"]


def test_codec_gate_holds_under_python_O() -> None:
    """Asserts vanish under -O; the gate must still stop a broken build before timing."""
    script = (
        f"import sys; sys.path.insert(0, {str(BENCHMARKS)!r}); import bench_codec\n"
        "bench_codec.binif_unpack = lambda: ()\n"
        "bench_codec.interleaved = None  # timing would fail loudly\n"
        "sys.exit(bench_codec.main(['--rounds', '1', '--number', '1']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-O", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "gate FAILED" in result.stdout and "binif unpack()" in result.stdout


def test_codec_timing_runs_with_the_garbage_collector_on() -> None:
    seen: list[bool] = []
    samples = bench_codec.interleaved({"probe": lambda: seen.append(gc.isenabled())}, 2, 3)
    assert len(samples["probe"]) == 2 and seen == [True] * 6


async def test_endpoint_gate_passes_on_this_build() -> None:
    assert await bench_endpoint.correctness_gate() == []


async def test_endpoint_gate_fails_without_the_checksum(monkeypatch: pytest.MonkeyPatch) -> None:
    """A build that skips the frame checks would pass every speed floor: not this gate."""
    monkeypatch.setattr(WireFormat, "check_frame", lambda self, data: None)
    failures = await bench_endpoint.correctness_gate()
    assert any("bad_checksum" in failure for failure in failures), failures


async def test_endpoint_gate_fails_when_values_decode_wrong(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_unpack = binif.PacketReader.unpack

    def byte_swapped(self: binif.PacketReader, layout: str, *, exact: bool = False) -> Any:
        values = real_unpack(self, layout, exact=exact)
        return tuple(
            int.from_bytes(v.to_bytes(4, "little", signed=True), "big", signed=True)
            if isinstance(v, int)
            else v
            for v in values
        )

    monkeypatch.setattr(binif.PacketReader, "unpack", byte_swapped)
    failures = await bench_endpoint.correctness_gate()
    assert any("decoding to" in failure for failure in failures), failures


# --- bench_typed and bench_backup ------------------------------------------------------------

import bench_backup  # noqa: E402
import bench_typed  # noqa: E402


def test_typed_gate_passes_on_this_build() -> None:
    assert bench_typed.gate() == []


def test_typed_gate_names_a_decoder_that_differs_from_unpack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def wrong(cls: Any, reader: binif.PacketReader) -> Any:
        return cls.with_defaults()

    cases = {"dialog DELETED": bench_typed.CASES["dialog DELETED"]}
    monkeypatch.setattr(bench_typed, "CASES", cases)
    monkeypatch.setattr(bench_typed.DialogDeleted, "from_packet", classmethod(wrong))
    assert bench_typed.gate() == ["dialog DELETED: from_packet and unpack + __init__ differ"]


def test_backup_gate_passes_on_this_build() -> None:
    assert bench_backup.gate() == []


def test_backup_gate_refuses_packets_that_are_not_distinct_dialogs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bench_backup, "dialogs", lambda count: [bench_backup.PACKET] * count)
    assert bench_backup.gate() == ["100 packets carry 1 call-ids"]


def test_backup_counts_full_collections_and_the_longest_pause() -> None:
    with bench_backup.Collections() as collections:
        gc.collect(0)
        assert collections.full == 0
        gc.collect()
    assert collections.full == 1
    assert collections.longest > 0
    assert collections._observe not in gc.callbacks


def test_backup_names_the_handlers_it_knows() -> None:
    assert bench_backup.handler_list("raw,typed-values") == ["raw", "typed-values"]
    with pytest.raises(argparse.ArgumentTypeError, match="not 'raw,typo'"):
        bench_backup.handler_list("raw,typo")
