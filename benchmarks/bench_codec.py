"""Build and parse the real OpenSIPS 2.1 dialog CREATED packet (25 fields).

binif is measured against, in the same run, a hand-written baseline (struct +
zlib, the code one would write inline without a library: benchmarks/baseline.py)
and, when installed, the ``construct`` library. Contenders take turns within
each round; figures are medians in microseconds per packet, ratios the median
of the per-round ratios binif / hand-written baseline. Timing runs with the
garbage collector enabled, as a service runs (``timeit`` disables it by
default, which flatters code that makes many small objects, such as
``push_*``/``pop_*``). Before timing, every contender must build or parse the
vector exactly (checked without ``assert``, so ``python -O`` checks it too).

    python benchmarks/bench_codec.py [--rounds 31] [--number 2000]
"""

from __future__ import annotations

import argparse
import statistics
import timeit
import zlib
from collections.abc import Callable
from typing import Any

import baseline
from baseline import LAYOUT, PACKET

from binif import PacketReader, PacketWriter

VALUES = PacketReader.parse(PACKET).unpack(LAYOUT)
baseline_build = baseline.build
baseline_parse = baseline.parse


# --- binif -------------------------------------------------------------------


def binif_pack() -> bytes:
    return PacketWriter("dialog", 1).pack(LAYOUT, *VALUES).to_bytes()


def binif_push() -> bytes:
    w = PacketWriter("dialog", 1)
    for kind, value in zip(LAYOUT, VALUES, strict=True):
        w = w.push_str(value) if kind == "s" else w.push_int(value)  # type: ignore[arg-type]
    return w.to_bytes()


def binif_unpack() -> tuple[Any, ...]:
    return PacketReader.parse(PACKET).unpack(LAYOUT)


def binif_pop() -> list[Any]:
    r = PacketReader.parse(PACKET)
    out: list[Any] = []
    for kind in LAYOUT:
        v: Any
        v, r = r.pop_str() if kind == "s" else r.pop_int()
        out.append(v)
    return out


def construct_pair() -> tuple[Callable[[], bytes], Callable[[], Any]] | None:
    """Build and parse with the construct library, or None when it is not installed."""
    try:
        from construct import (
            Checksum,
            Const,
            GreedyBytes,
            Int32sl,
            Int32ul,
            Padding,
            Pointer,
            Prefixed,
            RawCopy,
            Struct,
            this,
        )
    except ImportError:
        return None
    str_field = Prefixed(Int32sl, GreedyBytes)
    body = Struct(
        "module" / str_field,
        "command" / Int32sl,
        *[f"f{i}" / (str_field if kind == "s" else Int32sl) for i, kind in enumerate(LAYOUT)],
    )
    # The CRC precedes the body it covers: reserve its slot, fill it in last.
    packet = Struct(
        "marker" / Const(b"P4CK"),
        Padding(4),
        "body" / RawCopy(body),
        "crc"
        / Pointer(4, Checksum(Int32ul, lambda data: zlib.crc32(data) ^ 0xFFFFFFFF, this.body.data)),
    )
    fields = {f"f{i}": v for i, v in enumerate(VALUES)}
    value = {"body": {"value": {"module": b"dialog", "command": 1, **fields}}}
    if packet.build(value) != PACKET:
        raise AssertionError("the construct definition does not rebuild the vector")
    return (lambda: packet.build(value)), (lambda: packet.parse(PACKET))


def interleaved(
    contenders: dict[str, Callable[[], object]], rounds: int, number: int
) -> dict[str, list[float]]:
    """Microseconds per call of each contender, one sample per round, garbage collector on.

    Contenders are timed back to back within each round, so load from other
    processes on a shared machine hits a contender and its baseline alike.
    """
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            # timeit turns the collector off before the setup runs: the setup turns it on.
            timer = timeit.Timer(fn, setup="gc.enable()")
            samples[name].append(timer.timeit(number=number) / number * 1e6)
    return samples


def gate() -> list[str]:
    """Contenders that do not build or parse the vector exactly ([] when all do)."""
    checks = {
        "binif pack()": binif_pack() == PACKET,
        "binif push_*": binif_push() == PACKET,
        "hand-written build": baseline_build(b"dialog", 1, LAYOUT, VALUES) == PACKET,
        "binif unpack()": binif_unpack() == VALUES,
        "binif pop_*": tuple(binif_pop()) == VALUES,
        "hand-written parse": baseline_parse(PACKET, LAYOUT)[2] == VALUES,
    }
    return [f"{name} does not reproduce the vector" for name, ok in checks.items() if not ok]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--number", type=int, default=2000)
    args = parser.parse_args(argv)

    # Every contender must produce the vector's exact bytes and fields first.
    failures = gate()
    if failures:
        print("byte-exactness gate FAILED: nothing timed", *failures, sep="\n  ")
        return 1

    contenders: dict[str, Callable[[], object]] = {
        "build hand-written": lambda: baseline_build(b"dialog", 1, LAYOUT, VALUES),
        "build binif pack()": binif_pack,
        "build binif push_* x25": binif_push,
        "parse hand-written": lambda: baseline_parse(PACKET, LAYOUT),
        "parse binif unpack()": binif_unpack,
        "parse binif pop_* x25": binif_pop,
    }
    pair = construct_pair()
    if pair is not None:
        contenders["build construct"], contenders["parse construct"] = pair
    samples = interleaved(contenders, args.rounds, args.number)
    floors = {"pack()": 1.5, "unpack()": 1.5, "push_* x25": 3.0, "pop_* x25": 3.0}

    print(f"dialog CREATED: {len(PACKET)} bytes, 25 fields; {args.rounds} interleaved rounds")
    print(f"of {args.number} calls each; median us/packet, median of per-round ratios")
    print(f"{'contender':24} {'us/packet':>10} {'vs hand-written':>16} {'floor':>6}  met")
    failed = 0
    for name, times in samples.items():
        op = name.split()[0]
        base = samples[f"{op} hand-written"]
        ratio = statistics.median(t / b for t, b in zip(times, base, strict=True))
        floor = next((f for suffix, f in floors.items() if name.endswith(suffix)), None)
        verdict = ""
        if floor is not None:
            met = ratio <= floor
            failed += not met
            verdict = f"{floor:5.1f}x  {'yes' if met else 'NO'}"
        print(f"{name:24} {statistics.median(times):10.2f} {ratio:15.2f}x {verdict}")
    if pair is None:
        print("(construct is not installed: pip install construct to compare with it)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
