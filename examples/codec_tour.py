"""A tour of the codec: build a packet, show it, parse it back, decode a real one.

Run with ``make demo-codec`` (or ``python examples/codec_tour.py``).
"""

from __future__ import annotations

from pathlib import Path

from binif import BinError, PacketReader, PacketWriter

VECTORS = Path(__file__).resolve().parent.parent / "tests/vectors/opensips-2.1"
DIALOG_CREATED = "sssssiiissssssssssssiiiii"


def hexdump(data: bytes) -> str:
    """Offsets, hex and printable bytes, 16 a line."""
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset : offset + 16]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:04x}  {chunk.hex(' '):<47}  {text}")
    return "\n".join(lines)


def main() -> None:
    # Build: module, command, then fields. Each push returns a new writer.
    deleted = PacketWriter("dialog", 3).pack("sss", "call-42@example.net", "tag-a", "tag-b")
    packet = deleted.to_bytes()
    print(f"built a dialog DELETED packet, {len(packet)} bytes:")
    print(hexdump(packet))

    # Parse: validated on the way in; pops return the value and a new reader.
    reader = PacketReader.parse(packet)
    callid, rest = reader.pop_str()
    print(f"\nparsed: module={reader.module!r} command={reader.command} callid={callid!r}")
    print(f"remaining fields: {rest.unpack('ss', exact=True)}")

    # A real packet captured from OpenSIPS 2.1.5: dialog CREATED, 25 fields.
    real = (VECTORS / "dialog-created-1.bin").read_bytes()
    fields = PacketReader.parse(real).unpack(DIALOG_CREATED, exact=True)
    print(f"\nOpenSIPS 2.1.5 dialog CREATED ({len(real)} bytes): callid={fields[0]!r}")
    print(f"  from {fields[3]!r} to {fields[4]!r}, state {fields[7]!r}, timeout {fields[22]!r}")
    rebuilt = PacketWriter("dialog", 1).pack(DIALOG_CREATED, *fields).to_bytes()
    print(f"  rebuilt byte for byte: {rebuilt == real}")

    # A packet cut inside a field: OpenSIPS 2.1 crashed on this one; binif says why.
    cut = (VECTORS / "crafted-dialog-created-truncated-240-crc-ok.bin").read_bytes()
    try:
        PacketReader.parse(cut).unpack(DIALOG_CREATED)
    except BinError as error:
        print(f"\ntruncated packet refused: {type(error).__name__}: {error}")


if __name__ == "__main__":
    main()
