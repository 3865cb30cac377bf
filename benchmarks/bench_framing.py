"""Frame a BIN stream: binif's StreamDecoder against a hand-written framing loop.

The stream is the OpenSIPS 4.0.1 dialog CREATED packet with its clusterer
trailer (tests/vectors/opensips-4.0/dialog-create-1.bin, 506 bytes), repeated,
fed in three splits: 64 KB reads, 1448-byte TCP segments (packets cut across
feeds), and one packet per feed. The hand-written loop is what one writes
without binif: keep a buffer, read marker, total length, version, capability and
type from each header, slice the packet out. Both sides read each packet's
version, capability and type. Contenders take turns within each round; figures
are medians in microseconds per packet, ratios the median of per-round ratios.

    python benchmarks/bench_framing.py [--rounds 21] [--packets 2000]
"""

from __future__ import annotations

import argparse
import statistics
import struct
import timeit
from collections.abc import Callable
from pathlib import Path

from checks import require

from binif import StreamDecoder

PACKET = (
    Path(__file__).resolve().parent.parent / "tests/vectors/opensips-4.0/dialog-create-1.bin"
).read_bytes()
_HEAD = struct.Struct("<4sIhH")
_TYPE = struct.Struct("<i")

Frame = tuple[int, bytes, int, bytes]
"""version, capability, type, packet."""


class HandWritten:
    """Frame by the length field with a bytearray buffer; refuse what OpenSIPS refuses."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        buffer = self.buffer
        buffer += data
        frames = []
        end = len(buffer)
        pos = 0
        while end - pos >= 12:
            marker, total, version, name_len = _HEAD.unpack_from(buffer, pos)
            if marker != b"P4CK" or not 17 <= total <= 65515 or name_len > total - 16:
                raise ValueError("bad packet")
            if end - pos < total:
                break
            name_end = pos + 12 + name_len
            (kind,) = _TYPE.unpack_from(buffer, name_end)
            capability = bytes(buffer[pos + 12 : name_end])
            frames.append((version, capability, kind, bytes(buffer[pos : pos + total])))
            pos += total
        del buffer[:pos]
        return frames


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


def consume(version: int | None, capability: str, kind: int) -> None:
    """What a dispatcher reads of each packet."""


def run_binif(chunks: list[bytes]) -> Callable[[], int]:
    def run() -> int:
        decoder = StreamDecoder()
        count = 0
        for chunk in chunks:
            for reader in decoder.feed(chunk):
                consume(reader.version, reader.module, reader.command)
                count += 1
        return count

    return run


def run_hand(chunks: list[bytes]) -> Callable[[], int]:
    def run() -> int:
        framer = HandWritten()
        count = 0
        for chunk in chunks:
            for version, capability, kind, _ in framer.feed(chunk):
                consume(version, capability.decode(), kind)
                count += 1
        return count

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--packets", type=int, default=2000)
    args = parser.parse_args()
    stream = PACKET * args.packets
    splits = {
        "64 KB reads": pieces(stream, 65536),
        "1448-byte segments": pieces(stream, 1448),
        "one packet a feed": pieces(stream, len(PACKET)),
    }
    contenders: dict[str, Callable[[], int]] = {}
    for split, chunks in splits.items():
        contenders[f"{split}: hand-written"] = run_hand(chunks)
        contenders[f"{split}: StreamDecoder"] = run_binif(chunks)
    for name, run in contenders.items():  # every contender frames every packet
        require(run() == args.packets, f"{name} did not frame {args.packets} packets")
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, run in contenders.items():
            samples[name].append(timeit.timeit(run, number=1) / args.packets * 1e6)

    print(f"{len(PACKET)}-byte packets x {args.packets}, {args.rounds} interleaved rounds;")
    print("median us/packet, median of per-round ratios StreamDecoder / hand-written")
    print(f"{'contender':40} {'us/packet':>9} {'ratio':>7}")
    for split in splits:
        hand = samples[f"{split}: hand-written"]
        ours = samples[f"{split}: StreamDecoder"]
        ratio = statistics.median(o / h for o, h in zip(ours, hand, strict=True))
        print(f"{split + ': hand-written':40} {statistics.median(hand):9.2f} {1:7.2f}x")
        print(f"{split + ': StreamDecoder':40} {statistics.median(ours):9.2f} {ratio:7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
