"""StreamDecoder: the bytes of a BIN stream, in any split, in; complete packets out.

Sans-I/O, as h11's and h2's connection cores: the caller reads the socket and
feeds what arrived; the decoder never touches a socket or a clock. Packets on
a stream follow each other, each delimited by the total length in its header
(WIRE.md part 2). The decoder refuses what OpenSIPS 4.0.1 refuses on a
connection, with the codec's precise errors, in its order: a wrong marker
(``BadMarker``), a declared length under the minimum (``PacketTooShort``) or
over the maximum (``PacketTooLong``), checked as soon as a header is in; then,
once the packet is complete, a capability length past the packet
(``BadNameLength``; OpenSIPS drops only that packet, binif the stream), and an
empty or non-UTF-8 capability name (``BadNameLength``, ``BadModuleName``), which
OpenSIPS would match to no capability.
After a refusal the stream cannot be re-synchronised: the connection must be
closed, and the decoder refuses further input.
"""

from __future__ import annotations

from .errors import DecodeError, StreamBroken
from .reader import PacketReader, _first_field, _Head, _make
from .wire import STREAM, WireFormat

__all__ = ["StreamDecoder"]


class StreamDecoder:
    """Turns the bytes of one connection into :class:`PacketReader`\\ s.

    ``feed(data)`` returns the packets the bytes fed so far complete, keeping
    a partial packet until the rest arrives (``split(data)``: the same as
    bytes, in runs sharing a decoded head). A packet is sliced once out of the
    bytes fed; one that completes a partial packet is sliced out of the buffer
    joined to the next bytes fed. The buffer only ever holds the unfinished
    packet, so feeding costs time in proportion to the bytes fed, however they
    are split.
    """

    __slots__ = ("_buffer", "_consumed", "_error", "_head", "_key", "_need", "_raised", "wire")

    wire: WireFormat
    """The profile of the stream (one with a total-length field)."""

    def __init__(self, wire: WireFormat = STREAM) -> None:
        if wire.total_length is None:
            raise ValueError(
                f"the {wire.name} profile has no total length to frame a stream by:"
                " each datagram is one packet"
            )
        self.wire = wire
        self._buffer = bytearray()
        self._need = wire.header_size
        self._consumed = 0
        self._error: DecodeError | None = None
        self._raised = False
        self._key = b""
        self._head: _Head | None = None

    @property
    def buffered(self) -> int:
        """Bytes held of a packet not yet complete (0 between packets)."""
        return len(self._buffer)

    @property
    def offset(self) -> int:
        """Stream offset of the next packet: the bytes of every complete packet so far.

        After a refusal, the offset of the packet refused.
        """
        return self._consumed

    @property
    def error(self) -> DecodeError | None:
        """The error that ended the stream, or None while it is good."""
        return self._error

    def feed(self, data: bytes | bytearray | memoryview) -> list[PacketReader]:
        """Take the next bytes of the stream; return the packets they complete, in order.

        Raises the codec's :class:`~binif.errors.DecodeError` at the first bad
        packet. Packets completed before it are never lost: when this call
        completed some, it returns them, keeps the error in :attr:`error` and
        raises it on the next call. Once the error has been raised, feeding
        again raises :class:`~binif.errors.StreamBroken`.
        """
        runs, packets = self.split(data)
        return [
            _make(head, packet, head.fields_offset, 0)
            for head, start, stop in runs
            for packet in packets[start:stop]
        ]

    def split(
        self, data: bytes | bytearray | memoryview
    ) -> tuple[list[tuple[_Head, int, int]], list[bytes]]:
        """:meth:`feed`, with the complete packets as bytes and runs of one decoded head.

        Each run ``(head, start, stop)`` says that ``packets[start:stop]`` share
        ``head`` (module, command, version). An endpoint queues the bytes (which
        the garbage collector does not track) a run at a time, and makes each
        reader when a worker takes the packet.
        """
        if self._error is not None:
            self._raise_stored()
        buffer = self._buffer
        if buffer:
            if len(buffer) + len(data) < self._need:
                buffer += data
                return [], []
            # One copy into bytes, sliced below without views (as a hand-written loop does).
            chunk = b"".join((buffer, data))
            buffer.clear()
        elif type(data) is bytes:
            chunk = data
        else:
            chunk = bytes(data)
        starts: list[tuple[_Head, int]] = []
        packets: list[bytes] = []
        add_packet = packets.append
        end = len(chunk)
        pos = 0
        wire = self.wire
        header_size = wire.header_size
        unpack_header = wire.header.unpack_from
        total_index = wire._total_index
        marker, least, most = wire.marker, wire.min_packet, wire.max_packet
        version_at = wire.version_at
        # The head bytes (version, name length, name, command) of the last packet and
        # their decoded form: the packets of one connection mostly share them.
        key, head = self._key, self._head
        if head is not None:  # the first packets may share the last call's head
            starts.append((head, 0))
        error: DecodeError | None = None
        try:
            while end - pos >= header_size:
                header = unpack_header(chunk, pos)
                size = header[total_index]
                if header[0] != marker or size < least or size > most:
                    wire.packet_length(chunk, pos)  # raises the precise error
                stop = pos + size
                if stop > end:
                    break
                # Slicing the whole of a bytes object returns it: one packet fed is not copied.
                packet = chunk[pos:stop]
                if head is None or not packet.startswith(key, version_at):
                    # The header is checked: what is left is the head.
                    head = _first_field(packet, wire)._head
                    key = packet[version_at : head.fields_offset]
                    starts.append((head, len(packets)))
                add_packet(packet)
                pos = stop
        except DecodeError as exc:
            error = exc
        self._key, self._head = key, head
        self._consumed += pos
        if error is not None:
            self._error = error
            buffer.clear()
            if not packets:
                self._raised = True
                raise error
            return _runs(starts, len(packets)), packets
        left = end - pos
        if left:
            buffer += memoryview(chunk)[pos:]
        self._need = wire.packet_length(buffer) if left >= header_size else header_size
        return _runs(starts, len(packets)), packets

    def _raise_stored(self) -> None:
        error = self._error
        assert error is not None
        if not self._raised:
            self._raised = True
            raise error
        raise StreamBroken(
            f"the stream was refused at byte offset {self._consumed}"
            f" ({type(error).__name__}: {error}): close the connection"
        ) from error

    def __repr__(self) -> str:
        state = "broken" if self._error is not None else "good"
        return (
            f"StreamDecoder({self.wire.name}, {state}, offset={self._consumed},"
            f" buffered={len(self._buffer)})"
        )


def _runs(starts: list[tuple[_Head, int]], count: int) -> list[tuple[_Head, int, int]]:
    """``(head, start, stop)`` for each non-empty run, from the heads and where each began."""
    runs = []
    for number, (head, start) in enumerate(starts):
        stop = starts[number + 1][1] if number + 1 < len(starts) else count
        if stop > start:
            runs.append((head, start, stop))
    return runs
