"""Captures built for tests with dpkt: UDP datagrams and TCP connections, split at will."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import dpkt

Endpoint = tuple[str, int]


def _ip(src: str, dst: str, proto: int, payload: dpkt.Packet) -> dpkt.Packet:
    if ":" in src:
        packet = dpkt.ip6.IP6(
            src=socket.inet_pton(socket.AF_INET6, src),
            dst=socket.inet_pton(socket.AF_INET6, dst),
            nxt=proto,
            hlim=64,
            data=payload,
        )
        packet.plen = len(payload)
        return packet
    return dpkt.ip.IP(
        src=socket.inet_pton(socket.AF_INET, src),
        dst=socket.inet_pton(socket.AF_INET, dst),
        p=proto,
        ttl=64,
        data=payload,
    )


def _ethernet(ip: dpkt.Packet) -> bytes:
    kind = dpkt.ethernet.ETH_TYPE_IP6 if isinstance(ip, dpkt.ip6.IP6) else dpkt.ethernet.ETH_TYPE_IP
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=kind, data=ip))


def udp_frame(src: Endpoint, dst: Endpoint, payload: bytes) -> bytes:
    """An Ethernet frame carrying one UDP datagram."""
    udp = dpkt.udp.UDP(sport=src[1], dport=dst[1], data=payload)
    udp.ulen = len(udp)
    return _ethernet(_ip(src[0], dst[0], dpkt.ip.IP_PROTO_UDP, udp))


def tcp_frame(
    src: Endpoint, dst: Endpoint, seq: int, payload: bytes = b"", flags: int = 0
) -> bytes:
    """An Ethernet frame carrying one TCP segment (ACK set unless it is a bare SYN)."""
    if not flags & dpkt.tcp.TH_SYN:
        flags |= dpkt.tcp.TH_ACK
    tcp = dpkt.tcp.TCP(
        sport=src[1], dport=dst[1], seq=seq % 2**32, flags=flags, win=65535, data=payload
    )
    return _ethernet(_ip(src[0], dst[0], dpkt.ip.IP_PROTO_TCP, tcp))


@dataclass
class TcpFlow:
    """One direction of a TCP connection: hands out frames with running sequence numbers."""

    src: Endpoint
    dst: Endpoint
    seq: int = 1000
    frames: list[bytes] = field(default_factory=list)

    def syn(self) -> bytes:
        frame = tcp_frame(self.src, self.dst, self.seq, flags=dpkt.tcp.TH_SYN)
        self.seq += 1
        return frame

    def send(self, payload: bytes) -> bytes:
        frame = tcp_frame(self.src, self.dst, self.seq, payload, dpkt.tcp.TH_PUSH)
        self.seq += len(payload)
        return frame

    def fin(self) -> bytes:
        frame = tcp_frame(self.src, self.dst, self.seq, flags=dpkt.tcp.TH_FIN)
        self.seq += 1
        return frame


def split(data: bytes, sizes: Iterable[int]) -> list[bytes]:
    """``data`` cut into pieces of the given sizes, cycling through them."""
    sizes = list(sizes)
    pieces, pos, index = [], 0, 0
    while pos < len(data):
        size = sizes[index % len(sizes)]
        pieces.append(data[pos : pos + size])
        pos += size
        index += 1
    return pieces


def pcap_bytes(frames: Sequence[bytes], *, start: float = 1_795_838_000.0) -> bytes:
    """A classic Ethernet pcap of ``frames``, a millisecond apart."""
    out = io.BytesIO()
    writer = dpkt.pcap.Writer(out, linktype=dpkt.pcap.DLT_EN10MB)
    for number, frame in enumerate(frames):
        writer.writepkt(frame, ts=start + number / 1000)
    return out.getvalue()
