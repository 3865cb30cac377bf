"""Fuzzing in the test run: every saved failing input replayed, and a short bounded fuzz.

The targets live in ``fuzz/targets.py``; anything but a ``BinError`` escaping
one of them is a bug. The long runs are ``make fuzz``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import binif

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "fuzz" / "run.py"
REGRESSIONS = ROOT / "tests" / "fuzz_regressions"
BOUNDED_RUNS = 4000


def _load_targets() -> ModuleType:
    spec = importlib.util.spec_from_file_location("binif_fuzz_targets", ROOT / "fuzz/targets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


targets = _load_targets()


def _known_open() -> dict[str, str]:
    known = {}
    for line in (REGRESSIONS / "known_open.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, why = line.partition(" ")
            known[name] = why.strip()
    return known


KNOWN_OPEN = _known_open()


def _regression_cases() -> list[object]:
    cases: list[object] = []
    for path in sorted(REGRESSIONS.glob("*/*")):
        name = f"{path.parent.name}/{path.name}"
        marks = []
        if name in KNOWN_OPEN:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_OPEN[name]))
        cases.append(pytest.param(path, id=name, marks=marks))
    return cases


@pytest.mark.parametrize("path", _regression_cases())
def test_saved_failure_no_longer_fails(path: Path) -> None:
    targets.run_one(targets.TARGETS[path.parent.name], path.read_bytes())


def test_known_open_entries_exist() -> None:
    for name in KNOWN_OPEN:
        assert (REGRESSIONS / name).is_file(), name


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_every_seed_passes(name: str) -> None:
    seeds = targets.seeds(name)
    assert len(seeds) >= 20
    for data in seeds:
        targets.run_one(targets.TARGETS[name], data)


def test_only_bin_errors_are_accepted() -> None:
    def malformed(data: bytes) -> None:
        raise binif.TruncatedField("cut", index=0, offset=0)

    def buggy(data: bytes) -> None:
        raise KeyError("a bug")

    targets.run_one(malformed, b"")
    with pytest.raises(KeyError):
        targets.run_one(buggy, b"")


@pytest.mark.parametrize(
    ("name", "owner", "attribute"),
    [
        ("writer", binif.PacketReader, "unpack"),  # parsing back what the writer built
        ("codec", binif.PacketWriter, "pack"),  # rebuilding the fields the reader walked
        ("dispatch", binif.Message, "to_bytes"),  # encoding the message it decoded
    ],
)
def test_a_bin_error_in_a_check_step_is_a_failure(
    name: str, owner: type, attribute: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the step that takes the input may answer with a BinError; a check step may not."""

    def cut(*args: object, **kwargs: object) -> None:
        raise binif.TruncatedField("cut short by the test", index=0, offset=0)

    monkeypatch.setattr(owner, attribute, cut)
    with pytest.raises(AssertionError, match="raised TruncatedField: cut short by the test"):
        for data in targets.seeds(name):
            targets.run_one(targets.TARGETS[name], data)


def test_codec_oracle_catches_a_wrong_pop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The codec target notices an int read wrong (so its checks can fail)."""
    real_pop_int = binif.PacketReader.pop_int

    def off_by_one(self: binif.PacketReader) -> tuple[int, binif.PacketReader]:
        value, after = real_pop_int(self)
        return value + 1, after

    monkeypatch.setattr(binif.PacketReader, "pop_int", off_by_one)
    packet = (ROOT / "tests/vectors/opensips-2.1/dialog-created-1.bin").read_bytes()
    with pytest.raises(AssertionError):
        targets.run_one(targets.codec, packet)


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_bounded_fuzz_run(name: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    result = subprocess.run(
        [
            sys.executable,
            str(RUNNER),
            name,
            f"-runs={BOUNDED_RUNS}",
            "-seed=1",
            f"-artifact_prefix={tmp_path}/",
            str(tmp_path / "corpus"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    crashes = {p.name: p.read_bytes().hex() for p in tmp_path.glob("crash-*")}
    assert result.returncode == 0 and not crashes, (
        f"fuzz target {name} failed; copy the input to tests/fuzz_regressions/{name}/:"
        f" {crashes}\n{result.stderr[-4000:]}"
    )
    assert f"Done {BOUNDED_RUNS} runs" in result.stderr


def test_stream_oracle_catches_a_lost_packet(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stream target notices a decoder that drops a packet when fed in pieces."""
    real_feed = binif.StreamDecoder.feed

    def lossy(
        self: binif.StreamDecoder, data: bytes | bytearray | memoryview
    ) -> list[binif.PacketReader]:
        return real_feed(self, data)[1:]

    monkeypatch.setattr(binif.StreamDecoder, "feed", lossy)
    packet = (ROOT / "tests/vectors/opensips-4.0/dialog-create-1.bin").read_bytes()
    with pytest.raises(AssertionError, match="the split changed"):
        targets.run_one(targets.stream, bytes([5]) + packet * 3)


def test_stream_dispatch_oracle_catches_a_decision_that_ignores_the_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stream_dispatch target notices an endpoint that queues a version its handler refuses."""
    from binif.reader import _Head
    from binif.runtime import Lane, Runtime

    def careless(self: Runtime, head: _Head, packet: bytes) -> Lane:
        return self._lane(head.module)  # no check of command or version

    monkeypatch.setattr(Runtime, "_decide", careless)
    good = binif.PacketWriter("dialog-dlg-repl", 1, wire=binif.STREAM, version=4).push_int(1)
    other = binif.PacketWriter("dialog-dlg-repl", 1, wire=binif.STREAM, version=5).push_int(1)
    targets.run_one(targets.stream_dispatch, bytes([9]) + bytes(good) * 2)  # agrees
    with pytest.raises(AssertionError, match="holds other packets"):
        targets.run_one(targets.stream_dispatch, bytes([9]) + bytes(good) + bytes(other))
