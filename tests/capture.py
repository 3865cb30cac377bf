"""The TCP payload of tests/vectors/opensips-4.0/capture.pcap, one byte string per direction.

dpkt reads the pcapng file and the Ethernet, IP and TCP headers; here the
segments of each direction are put back in sequence order, retransmitted bytes
once, and a gap is an error.
"""

from __future__ import annotations

import socket
from pathlib import Path

import dpkt
from vectors import OPENSIPS_40

Direction = tuple[str, int, str, int]
"""(source address, source port, destination address, destination port)."""


def tcp_streams(path: Path = OPENSIPS_40 / "capture.pcap") -> dict[Direction, bytes]:
    """Every direction of every TCP connection in the capture that carried bytes."""
    segments: dict[Direction, dict[int, bytes]] = {}
    first_seq: dict[Direction, int] = {}
    with path.open("rb") as file:
        for _, frame in dpkt.pcapng.Reader(file):
            ip = dpkt.ethernet.Ethernet(frame).data
            if not isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) or not isinstance(
                ip.data, dpkt.tcp.TCP
            ):
                continue
            tcp = ip.data
            family = socket.AF_INET if isinstance(ip, dpkt.ip.IP) else socket.AF_INET6
            key = (
                socket.inet_ntop(family, ip.src),
                tcp.sport,
                socket.inet_ntop(family, ip.dst),
                tcp.dport,
            )
            if tcp.flags & dpkt.tcp.TH_SYN:
                first_seq[key] = tcp.seq + 1
            if tcp.data:
                segments.setdefault(key, {})[tcp.seq] = bytes(tcp.data)
    streams = {}
    for key, by_seq in segments.items():
        # Offsets from the first byte, modulo 2**32: sequence numbers wrap.
        by_offset = {(seq - first_seq[key]) % 2**32: data for seq, data in by_seq.items()}
        expected = 0
        parts = []
        for offset in sorted(by_offset):
            data = by_offset[offset]
            if offset > expected:
                raise AssertionError(f"{key}: bytes {expected} to {offset} are missing")
            parts.append(data[expected - offset :])
            expected = max(expected, offset + len(data))
        streams[key] = b"".join(parts)
    return streams
