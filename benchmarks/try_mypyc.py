"""The mypyc experiment: the codec and dispatch modules compiled, against the pure-Python ones.

Copies ``binif`` twice into a temporary directory: ``binif`` (to compile) and
``binif_pure`` (left as Python), compiles ``crc``, ``layout``, ``reader``,
``wire`` and ``dispatch`` of the first with mypyc (from the test extra's mypy;
needs a C compiler and the Python headers), then times both in one process,
in interleaved rounds with the garbage collector enabled: speed-up = median of
the per-round ratios pure / compiled.

mypyc's native classes refuse ``object.__new__(PacketReader)``, which the reader
uses to make a reader without running ``__init__`` (whose public form raises):
the compiled copy builds readers through a plain ``__init__`` instead.

    python benchmarks/try_mypyc.py [--rounds 21] [--number 2000]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPILED = ["crc", "layout", "reader", "wire", "dispatch"]

TIMING = """
import gc, statistics, sys, timeit
sys.path[:0] = [{where!r}, {benchmarks!r}]
from baseline import LAYOUT, PACKET
import binif, binif_pure
import binif.dispatch, binif.reader, binif_pure.dispatch
from binif.opensips21 import DialogCreated
from binif_pure.opensips21 import DialogCreated as PureDialogCreated
assert binif.reader.__file__.endswith(".so") and binif_pure.reader.__file__.endswith(".py")
gc.enable()

def contenders(package, message):
    reader = package.PacketReader.parse(PACKET)
    dispatcher = package.dispatch.Dispatcher()
    async def handler(packet, source): pass
    dispatcher.register("dialog", handler)
    values = reader.unpack(LAYOUT)
    unknown = package.PacketWriter("nobody", 1).pack(LAYOUT, *values).to_bytes()
    source = ("127.0.0.1", 5060)
    parse = package.PacketReader.parse
    return {{
        "parse": lambda: parse(PACKET),
        "unpack": lambda: reader.unpack(LAYOUT, exact=True),
        "parse + unpack": lambda: parse(PACKET).unpack(LAYOUT, exact=True),
        "from_packet": lambda: message.from_packet(reader),
        "classify (handled)": lambda: dispatcher.classify(PACKET, source),
        "classify (unknown)": lambda: dispatcher.classify(unknown, source),
    }}

pure = contenders(binif_pure, PureDialogCreated)
compiled = contenders(binif, DialogCreated)
samples = {{name: ([], []) for name in pure}}
for _ in range({rounds}):
    for name in pure:
        samples[name][0].append(timeit.timeit(pure[name], number={number}))
        samples[name][1].append(timeit.timeit(compiled[name], number={number}))
print(f"{{'':20}} {{'pure us':>8}} {{'mypyc us':>9}} {{'speed-up':>9}}")
for name, (ours, theirs) in samples.items():
    ratio = statistics.median(a / b for a, b in zip(ours, theirs))
    pure_us = statistics.median(ours) / {number} * 1e6
    mypyc_us = statistics.median(theirs) / {number} * 1e6
    print(f"{{name:20}} {{pure_us:8.2f}} {{mypyc_us:9.2f}} {{ratio:8.2f}}x")
"""


def without_new(reader_source: str) -> str:
    """The reader module building readers through a plain ``__init__`` (mypyc-compatible)."""
    start = reader_source.index("    def __init__(self, *args: object, **kwargs: object) -> None:")
    end = reader_source.index("\n\n", start)
    patched = (
        reader_source[:start]
        + "    def __init__(self) -> None:\n        pass"
        + reader_source[end:]
    )
    patched = patched.replace("_new_reader(PacketReader)", "PacketReader()")
    return patched.replace("_new_reader = object.__new__\n", "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--number", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="binif-mypyc-") as where:
        shutil.copytree(ROOT / "binif", Path(where) / "binif")
        shutil.copytree(ROOT / "binif", Path(where) / "binif_pure")
        reader = Path(where) / "binif" / "reader.py"
        reader.write_text(without_new(reader.read_text()))
        mypyc = Path(sys.executable).with_name("mypyc")
        modules = [f"binif/{name}.py" for name in COMPILED]
        built = subprocess.run(
            [str(mypyc), *modules], cwd=where, capture_output=True, text=True, check=False
        )
        if built.returncode:
            print(built.stdout[-3000:], built.stderr[-3000:])
            return 1
        print(f"compiled with mypyc: {', '.join(COMPILED)}; {args.rounds} interleaved rounds")
        script = TIMING.format(
            where=where,
            benchmarks=str(ROOT / "benchmarks"),
            rounds=args.rounds,
            number=args.number,
        )
        return subprocess.run([sys.executable, "-c", script], check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
