"""BIN packets in a packet capture: UDP datagrams, and TCP streams rebuilt per direction.

Pure functions over the bytes of a pcap or pcapng file (no file or socket I/O):
dpkt (the ``pcap`` extra) parses the file and the link, IP, UDP and TCP headers;
this module follows TCP sequence numbers to rebuild the byte stream of each
direction of each connection and frames it with :class:`~binif.framing.StreamDecoder`,
as a receiving OpenSIPS would. A UDP datagram that starts with ``P4CK`` is one
packet of the datagram profile (OpenSIPS 1.10-2.1); a TCP connection whose first
bytes are ``P4CK`` carries the stream profile (OpenSIPS 2.4-4.0). Other traffic
(SIP, anything) is skipped.

Limits, each counted in :attr:`Capture.skipped`: IP fragments are not reassembled
(BIN datagrams over loopback are not fragmented; bigger ones across a network
may be), and a TCP segment that arrives out of order is taken as a gap: the
bytes of a packet cut by a gap are reported as an :class:`~binif.errors.StreamGap`
and decoding resumes at the next ``P4CK`` marker.
"""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from .errors import BadCapture, BadMarker, DecodeError, StreamGap
from .framing import StreamDecoder
from .reader import PacketReader
from .wire import DATAGRAM, STREAM, WireFormat

__all__ = ["Boundary", "Capture", "CapturedPacket", "Segment", "read_capture"]

Address = tuple[str, int]
Transport = Literal["udp", "tcp"]

_SEQ_MOD = 2**32
# Link types as pcap files number them (LINKTYPE_*, tcpdump.org/linktypes.html).
_ETHERNET = 1
_LOOPBACK = (0, 108)  # BSD loopback, OpenBSD loopback
_LINUX_SLL = 113
_LINUX_SLL2 = 276
_RAW_IP = (101, 228, 229, 12, 14)  # raw IP, raw IPv4, raw IPv6; 12 and 14 in old files
_MARKER = b"P4CK"


class Boundary(Enum):
    """What comes before a TCP segment's bytes, when it is not the previous segment's end."""

    START = "start"
    """The first bytes of a connection (its SYN was seen)."""
    GAP = "gap"
    """Bytes are missing before these: a capture that starts mid-connection, or lost,
    out-of-order or removed segments."""


@dataclass(frozen=True, slots=True)
class Segment:
    """The payload of one UDP datagram or TCP segment, in capture order."""

    frame: int
    """Frame number, from 1, as Wireshark counts."""
    time: float
    """Capture time, seconds since the epoch."""
    transport: Transport
    src: Address
    dst: Address
    data: bytes
    """A datagram; for TCP the segment's new bytes (retransmitted ones trimmed)."""
    boundary: Boundary | None = None
    """TCP only: None when the bytes continue the direction's previous ones."""


@dataclass(frozen=True, slots=True)
class CapturedPacket:
    """One BIN packet found in a capture, or what went wrong in its place."""

    frame: int
    """The frame that carried (or completed) it."""
    time: float
    transport: Transport
    src: Address
    dst: Address
    reader: PacketReader | None
    """The parsed packet, or None when ``error`` says why there is none."""
    error: DecodeError | None = None
    data: bytes = b""
    """The packet's bytes (a bad datagram's too)."""

    @property
    def wire(self) -> WireFormat:
        """The profile the packet was read with (datagram over UDP, stream over TCP)."""
        return DATAGRAM if self.transport == "udp" else STREAM


def _dpkt() -> Any:
    try:
        import dpkt
    except ImportError:  # pragma: no cover (the test extra installs it)
        raise BadCapture("reading captures needs dpkt: pip install 'binif[pcap]'") from None
    return dpkt


def _address(raw: bytes, port: int) -> Address:
    family = socket.AF_INET6 if len(raw) == 16 else socket.AF_INET
    return socket.inet_ntop(family, raw), port


@dataclass(slots=True)
class _Direction:
    """One direction of a TCP connection: where its bytes are, and their BIN framing."""

    next_seq: int | None = None
    boundary: Boundary | None = Boundary.GAP
    decoder: StreamDecoder | None = None
    is_bin: bool | None = None
    """None until the first bytes say; False: not BIN, or refused (until the next start)."""
    last: Segment | None = None
    resync: bool = False


@dataclass
class Capture:
    """A capture file's frames, read lazily from its bytes.

    ``Capture(data)`` checks the file header; iterating :meth:`segments` or
    :meth:`packets` reads the frames. ``frames`` and ``skipped`` (frames that
    carry no UDP or TCP payload this module can use, by reason) are complete
    once the iteration has ended.
    """

    data: bytes
    link_type: int = field(init=False)
    frames: int = field(init=False, default=0)
    skipped: dict[str, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        dpkt = _dpkt()
        try:
            self._reader = dpkt.pcap.UniversalReader(io.BytesIO(self.data))
        except (ValueError, dpkt.UnpackError) as exc:
            raise BadCapture(f"not a pcap or pcapng file ({exc})") from None
        self.link_type = int(self._reader.datalink())
        self._link = self._link_parser(dpkt, self.link_type)

    @staticmethod
    def _link_parser(dpkt: Any, link: int) -> Any:
        if link == _ETHERNET:
            return lambda buf: dpkt.ethernet.Ethernet(buf).data
        if link in _LOOPBACK:
            return lambda buf: dpkt.loopback.Loopback(buf).data
        if link == _LINUX_SLL:
            return lambda buf: dpkt.sll.SLL(buf).data
        if link == _LINUX_SLL2:
            return lambda buf: dpkt.sll2.SLL2(buf).data
        if link in _RAW_IP:
            return lambda buf: (dpkt.ip6.IP6 if buf[:1] >= b"\x60" else dpkt.ip.IP)(buf)
        raise BadCapture(
            f"link type {link} is not supported (Ethernet, loopback, Linux cooked or raw IP)"
        )

    def _skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def _frames(self) -> Iterator[tuple[int, float, Any]]:
        """(frame number, time, IP packet) of each frame; others counted as skipped."""
        dpkt = _dpkt()
        number = 0
        reader = iter(self._reader)
        while True:
            try:
                stamp, buf = next(reader)
            except StopIteration:
                break
            except (ValueError, dpkt.UnpackError, IndexError) as exc:
                raise BadCapture(f"frame {number + 1} cannot be read: {exc}") from None
            number += 1
            self.frames = number
            try:
                ip = self._link(buf)
            except (dpkt.UnpackError, ValueError, IndexError):
                self._skip("unreadable frame")
                continue
            if isinstance(ip, dpkt.ip.IP):
                if ip.mf or ip.offset:
                    self._skip("IP fragment")
                    continue
            elif isinstance(ip, dpkt.ip6.IP6):
                if 44 in ip.extension_hdrs:
                    self._skip("IP fragment")
                    continue
            else:
                self._skip("not IP")
                continue
            yield number, float(stamp), ip

    def segments(self) -> Iterator[Segment]:
        """Every UDP datagram and every TCP segment with new bytes, in capture order."""
        dpkt = _dpkt()
        flows: dict[tuple[Address, Address], _Direction] = {}
        for number, stamp, ip in self._frames():
            payload = ip.data
            if isinstance(payload, dpkt.udp.UDP):
                data = bytes(payload.data)
                if payload.ulen >= 8:
                    data = data[: payload.ulen - 8]  # link padding after the datagram
                src, dst = _address(ip.src, payload.sport), _address(ip.dst, payload.dport)
                yield Segment(number, stamp, "udp", src, dst, data)
            elif isinstance(payload, dpkt.tcp.TCP):
                src, dst = _address(ip.src, payload.sport), _address(ip.dst, payload.dport)
                segment = self._tcp(flows, number, stamp, src, dst, payload, dpkt)
                if segment is not None:
                    yield segment
            else:
                self._skip("not UDP or TCP")

    @staticmethod
    def _tcp(
        flows: dict[tuple[Address, Address], _Direction],
        number: int,
        stamp: float,
        src: Address,
        dst: Address,
        tcp: Any,
        dpkt: Any,
    ) -> Segment | None:
        flow = flows.setdefault((src, dst), _Direction())
        data = bytes(tcp.data)
        seq = tcp.seq
        if tcp.flags & dpkt.tcp.TH_SYN:
            flow.next_seq = (seq + 1) % _SEQ_MOD
            flow.boundary = Boundary.START
            seq = flow.next_seq  # a SYN's data (TCP Fast Open) follows its sequence number
        segment = None
        if data:
            if flow.next_seq is None:
                flow.next_seq = seq
            ahead = (seq - flow.next_seq) % _SEQ_MOD
            if ahead >= _SEQ_MOD // 2:  # behind: a retransmission, or an overlap
                data = data[_SEQ_MOD - ahead :]
            elif ahead:
                flow.boundary = Boundary.GAP
            if data:
                segment = Segment(number, stamp, "tcp", src, dst, data, flow.boundary)
                flow.boundary = None
                flow.next_seq = (seq + len(tcp.data)) % _SEQ_MOD
        if tcp.flags & (dpkt.tcp.TH_FIN | dpkt.tcp.TH_RST):
            flow.next_seq = None
            flow.boundary = Boundary.GAP  # a new SYN makes it START
        return segment

    def packets(self) -> Iterator[CapturedPacket]:
        """Every BIN packet, in the order their last byte was captured, and every error."""
        directions: dict[tuple[Address, Address], _Direction] = {}
        for segment in self.segments():
            if segment.transport == "udp":
                if segment.data[:4] == _MARKER:
                    yield _datagram(segment)
                continue
            flow = directions.setdefault((segment.src, segment.dst), _Direction())
            yield from _stream(flow, segment)
        for flow in directions.values():
            if flow.decoder is not None and flow.decoder.buffered and flow.last is not None:
                yield _error(
                    flow.last,
                    StreamGap(
                        f"the capture ends {flow.decoder.buffered} bytes into a packet"
                        f" (stream offset {flow.decoder.offset})"
                    ),
                )


def _datagram(segment: Segment) -> CapturedPacket:
    try:
        reader = PacketReader.parse(segment.data, wire=DATAGRAM)
    except DecodeError as exc:
        return _error(segment, exc, segment.data)
    return _found(segment, reader)


def _found(segment: Segment, reader: PacketReader) -> CapturedPacket:
    return _packet(segment, reader, None, reader.data)


def _error(segment: Segment, error: DecodeError, data: bytes = b"") -> CapturedPacket:
    return _packet(segment, None, error, data)


def _packet(
    segment: Segment, reader: PacketReader | None, error: DecodeError | None, data: bytes
) -> CapturedPacket:
    return CapturedPacket(
        segment.frame,
        segment.time,
        segment.transport,
        segment.src,
        segment.dst,
        reader,
        error,
        data,
    )


def _stream(flow: _Direction, segment: Segment) -> Iterator[CapturedPacket]:
    """Feed one TCP segment to its direction's decoder; yield what it completes."""
    data = segment.data
    if segment.boundary is not None:
        if flow.decoder is not None and flow.decoder.buffered and flow.is_bin:
            yield _error(
                segment,
                StreamGap(
                    f"bytes missing after {flow.decoder.buffered} bytes of a packet"
                    f" (stream offset {flow.decoder.offset}): packet lost"
                ),
            )
        flow.decoder = StreamDecoder(STREAM)
        # A connection's start must be BIN from its first byte; after a gap, look for the
        # next marker of a direction already known to be BIN (or not known at all).
        flow.resync = segment.boundary is Boundary.GAP and flow.is_bin is not False
        if segment.boundary is Boundary.START:
            flow.is_bin = None
    flow.last = segment
    if flow.decoder is None or (flow.is_bin is False and not flow.resync):
        return
    if flow.resync:
        at = data.find(_MARKER)
        if at < 0:
            return
        if at and flow.is_bin:
            yield _error(
                segment, StreamGap(f"skipped {at} bytes after a gap, to the next P4CK marker")
            )
        data = data[at:]
        flow.resync = False
    try:
        readers = flow.decoder.feed(data)
    except DecodeError as exc:
        if flow.is_bin is None and isinstance(exc, BadMarker):
            flow.is_bin = False  # not BIN traffic: skip the connection silently
            return
        flow.is_bin = False
        yield _error(segment, exc)
        return
    if readers:
        flow.is_bin = True
    for reader in readers:
        yield _found(segment, reader)
    if flow.decoder.error is not None:
        # The packets before a refusal came out; the refusal is raised on the next feed.
        flow.is_bin = False
        yield _error(segment, flow.decoder.error)


def read_capture(data: bytes) -> Capture:
    """A :class:`Capture` of the bytes of a pcap or pcapng file (``BadCapture`` if not one)."""
    return Capture(data)
