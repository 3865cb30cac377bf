"""Typed decoding (``Message.from_packet``) against ``reader.unpack`` of the same layout.

For three real OpenSIPS 2.1 packets (dialog CREATED: 25 fields, 20 of them
text; usrloc contact insert: 17; dialog DELETED: 3), each round times, back
to back on the same parsed reader:

- ``unpack``: ``reader.unpack(LAYOUT, exact=True)``, raw bytes and ints (the baseline);
- ``from_packet``: the typed message, text decoded, frozen instance built;
- ``unpack + __init__``: what one writes by hand with the public API:
  unpack, decode each text field, call the dataclass constructor.

Ratios are medians of the per-round ratios to ``unpack``; the garbage
collector stays enabled, as in a server. Exit status 1 when dialog CREATED's
``from_packet`` is over the target ratio.

Then what a kept message costs afterwards: a full garbage collection over a
table of ``--table`` dialog CREATED messages against one of as many unpacked
tuples (each table alone, best of 5), and the time to read a field.

    python benchmarks/bench_typed.py [--rounds 31] [--number 2000] [--target 1.2] [--table 200000]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import timeit
from collections.abc import Callable
from pathlib import Path

from binif import PacketReader
from binif.messages import Message
from binif.opensips21 import DialogCreated, DialogDeleted, UsrlocContactInserted

VECTORS = Path(__file__).resolve().parent.parent / "tests/vectors/opensips-2.1"
CASES: dict[str, tuple[type[Message], str]] = {
    "dialog CREATED": (DialogCreated, "dialog-created-1.bin"),
    "usrloc contact insert": (UsrlocContactInserted, "usrloc-contact-insert-1.bin"),
    "dialog DELETED": (DialogDeleted, "dialog-deleted-1.bin"),
}


def by_hand(cls: type[Message], reader: PacketReader) -> Message:
    values = reader.unpack(cls.LAYOUT, exact=True)
    return cls(
        *(
            value.decode() if field.type is str else value  # type: ignore[union-attr]
            for field, value in zip(cls.FIELDS, values, strict=True)
        )
    )


def contenders(cls: type[Message], reader: PacketReader) -> dict[str, Callable[[], object]]:
    layout = cls.LAYOUT
    return {
        "unpack": lambda: reader.unpack(layout, exact=True),
        "from_packet": lambda: cls.from_packet(reader),
        "unpack + __init__": lambda: by_hand(cls, reader),
    }


def gate() -> list[str]:
    """What is wrong with the contenders' results (nothing is timed unless this is empty).

    ``from_packet`` must give an instance of the class itself, equal to the
    message built by hand from ``unpack``, and ``unpack`` the captured fields.
    Plain checks, not asserts, so that they hold under ``python -O``.
    """
    failures = []
    for case, (cls, vector) in CASES.items():
        reader = PacketReader.parse((VECTORS / vector).read_bytes())
        message = cls.from_packet(reader)
        if type(message) is not cls:
            failures.append(f"{case}: from_packet gives {type(message).__name__}")
        if message != by_hand(cls, reader):
            failures.append(f"{case}: from_packet and unpack + __init__ differ")
        if len(reader.unpack(cls.LAYOUT, exact=True)) != len(cls.FIELDS):
            failures.append(f"{case}: unpack does not give one value per field")
    return failures


def full_collection(table: dict[int, object]) -> float:
    """Seconds of the fastest of 5 full collections with ``table`` alive."""
    gc.collect()
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        gc.collect()
        best = min(best, time.perf_counter() - started)
    return best


def kept(size: int) -> None:
    """Print the collector's cost of a table of messages and of unpacked tuples."""
    cls, vector = CASES["dialog CREATED"]
    reader = PacketReader.parse((VECTORS / vector).read_bytes())
    layout = cls.LAYOUT
    print(f"\nkept in a table of {size:,} dialog CREATED: full collection, best of 5")
    tuples: dict[int, object] = {index: reader.unpack(layout, exact=True) for index in range(size)}
    print(f"  unpacked tuples   {full_collection(tuples) * 1000:8.1f} ms")
    del tuples
    messages: dict[int, object] = {index: cls.from_packet(reader) for index in range(size)}
    print(f"  messages          {full_collection(messages) * 1000:8.1f} ms")
    del messages
    names = {"message": cls.from_packet(reader), "values": reader.unpack(layout, exact=True)}
    for statement in ("message.callid", "values[0]"):
        timer = timeit.Timer(statement, globals=names)
        seconds = min(timer.repeat(number=1_000_000, repeat=5)) / 1_000_000
        print(f"  read {statement:14} {seconds * 1e9:8.1f} ns")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--target", type=float, default=1.2)
    parser.add_argument("--table", type=int, default=200_000, help="messages kept, 0 for none")
    args = parser.parse_args()

    failures = gate()
    if failures:
        print("gate FAILED, nothing timed:", "; ".join(failures))
        return 1
    timed: dict[tuple[str, str], Callable[[], object]] = {}
    for case, (cls, vector) in CASES.items():
        reader = PacketReader.parse((VECTORS / vector).read_bytes())
        for name, fn in contenders(cls, reader).items():
            timed[case, name] = fn

    samples: dict[tuple[str, str], list[float]] = {key: [] for key in timed}
    for _ in range(args.rounds):
        for key, fn in timed.items():
            seconds = timeit.timeit(fn, number=args.number, setup="import gc; gc.enable()")
            samples[key].append(seconds / args.number * 1e6)

    print(f"{args.rounds} interleaved rounds of {args.number} calls, GC enabled;")
    print("median us/packet, median of per-round ratios to unpack")
    print(f"{'packet':22} {'contender':18} {'us/packet':>10} {'vs unpack':>10}")
    failed = False
    for (case, name), times in samples.items():
        base = samples[case, "unpack"]
        ratio = statistics.median(t / b for t, b in zip(times, base, strict=True))
        line = f"{case:22} {name:18} {statistics.median(times):10.2f} {ratio:9.2f}x"
        if (case, name) == ("dialog CREATED", "from_packet"):
            met = ratio <= args.target
            failed = not met
            line += f"  target {args.target:.1f}x: {'met' if met else 'NOT MET'}"
        print(line)
    if args.table:
        kept(args.table)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
