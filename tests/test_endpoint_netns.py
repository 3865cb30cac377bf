"""Endpoint behaviour that needs a network of its own: each test makes a namespace holding
only ``lo`` and runs this file inside it (``ip netns exec``) on asyncio or uvloop.

- Real flow control. On the host's loopback the kernel frees a datagram's send
  buffer as soon as it is handed over, so ``sendto`` never blocks and flow control
  never engages. In the namespace a token-bucket qdisc on ``lo`` holds packets; they
  stay charged to a tiny ``SO_SNDBUF``, ``sendto`` would block, the transport buffers
  and pauses the endpoint, and ``send`` waits: on uvloop (the default loop) too.
- A dual-stack endpoint bound to ``::`` (a wildcard, so only where ``lo`` is the
  only interface): IPv4-mapped destinations get the IPv4 size limit.

Needs root (CI runs as root) for ``ip netns`` and ``tc``: skipped otherwise, failed under CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from endpoint_helpers import packet_of_size

import binif
from binif import DatagramTooLarge, Endpoint, PacketReader, PacketWriter
from binif.endpoint import MAX_DATAGRAM_IPV4, MAX_DATAGRAM_IPV6

LOOPS = ["asyncio", "uvloop"]
BURST = 500
"""Datagrams sent back to back through the rate-limited loopback."""
PAYLOAD = 1000
"""Bytes of filler per datagram: 500 of them are 0.5 MB, well over the 64 KiB high-water mark."""
QDISC = ["tbf", "rate", "20mbit", "burst", "16kb", "limit", "4mb"]
"""20 Mbit/s: the burst takes about 0.2 s to drain; the limit never drops a packet."""


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def _why_not() -> str | None:
    if not sys.platform.startswith("linux"):
        return "not Linux"
    if os.geteuid() != 0:
        return "needs root"
    probe = f"binif-probe-{os.getpid()}"
    try:
        added = _ip("netns", "add", probe)
    except FileNotFoundError:
        return "the ip command is missing (iproute2)"
    if added.returncode != 0:
        return f"ip netns add refused: {added.stderr.strip()}"
    _ip("netns", "del", probe)
    return None


WHY_NOT = _why_not()


def unavailable(why: str) -> None:
    """Skip for a missing capability of this machine; in CI, where it must exist, fail."""
    if os.environ.get("CI"):
        pytest.fail(f"required in CI: {why}")
    pytest.skip(why)


@pytest.fixture
def netns_required() -> None:
    if WHY_NOT is not None:
        unavailable(f"network namespaces: {WHY_NOT}")


@contextlib.contextmanager
def namespace(name: str, qdisc: list[str] | None = None) -> Iterator[str]:
    """A fresh namespace with ``lo`` up (and ``qdisc`` as its root qdisc); deleted after."""
    space = f"binif-{name}-{os.getpid()}"
    assert _ip("netns", "add", space).returncode == 0
    try:
        assert _ip("-n", space, "link", "set", "lo", "up").returncode == 0
        if qdisc is not None:
            command = ["ip", "netns", "exec", space, "tc", "qdisc", "add", "dev", "lo", "root"]
            added = subprocess.run([*command, *qdisc], capture_output=True, text=True)
            if added.returncode != 0:
                unavailable(f"tc qdisc add {' '.join(qdisc)}: {added.stderr.strip()}")
        yield space
    finally:
        _ip("netns", "del", space)


def run_inside(space: str, scenario: str, loop: str) -> dict[str, Any]:
    """Run ``scenario`` of this file in ``space`` on ``loop``; return what it printed."""
    result = subprocess.run(
        ["ip", "netns", "exec", space, sys.executable, __file__, scenario, loop],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    figures: dict[str, Any] = json.loads(result.stdout)
    assert figures["loop"].startswith(loop), figures["loop"]
    return figures


# --- the tests (outside the namespace) -----------------------------------------------------


@pytest.mark.usefixtures("netns_required")
@pytest.mark.parametrize("loop", LOOPS)
def test_a_full_send_buffer_pauses_senders_until_it_drains(loop: str) -> None:
    with namespace("flow", QDISC) as space:
        figures = run_inside(space, "flow", loop)
    assert figures["send_buffer"] < 16 * 1024
    assert figures["sends_that_left_it_paused"] > 0, "flow control never engaged"
    assert figures["received"] == list(range(BURST)), "lost or reordered under flow control"
    assert (figures["packets_sent"], figures["send_errors"]) == (BURST, 0)
    # Paused senders wait: the transport never buffers more than one datagram past its mark.
    _low, high = figures["write_buffer_limits"]
    assert figures["write_buffer_peak"] <= high + figures["datagram_size"]
    assert figures["paused_at_end"] is False and figures["write_buffer_at_end"] == 0
    assert figures["kernel_drops"] == 0


@pytest.mark.usefixtures("netns_required")
@pytest.mark.parametrize("loop", LOOPS)
def test_dual_stack_endpoint_applies_each_familys_size_limit(loop: str) -> None:
    with namespace("dual") as space:
        figures = run_inside(space, "dual_stack", loop)
    assert figures["max_datagram"] == {"mapped": MAX_DATAGRAM_IPV4, "ipv6": MAX_DATAGRAM_IPV6}
    assert figures["sent"] == {"mapped": MAX_DATAGRAM_IPV4, "ipv6": MAX_DATAGRAM_IPV6}
    assert figures["refused"] == {
        "mapped": f"{MAX_DATAGRAM_IPV4 + 1}-byte datagram to [::ffff:127.0.0.1]:"
        f"{figures['port4']} is over the {MAX_DATAGRAM_IPV4}-byte IPv4 UDP payload limit",
        "ipv6": f"{MAX_DATAGRAM_IPV6 + 1}-byte datagram to [::1]:{figures['port6']} is over"
        f" the {MAX_DATAGRAM_IPV6}-byte IPv6 UDP payload limit",
    }
    assert sorted(figures["arrived"]) == [MAX_DATAGRAM_IPV4, MAX_DATAGRAM_IPV6]
    assert figures["send_errors"] == 0


# --- the scenarios (inside the namespace) ----------------------------------------------------


async def flow() -> dict[str, Any]:
    received: list[int] = []
    async with (
        Endpoint(("127.0.0.1", 0)) as rx,
        Endpoint(("127.0.0.1", 0), send_buffer=1) as tx,  # the OS's minimum, about 4.5 KiB
    ):

        @rx.handler("dialog")
        async def collect(packet: PacketReader, source: Any) -> None:
            seq = packet.unpack("si", exact=True)[1]
            assert isinstance(seq, int)
            received.append(seq)

        paused = buffered = 0
        filler = b"x" * PAYLOAD
        for seq in range(BURST):
            packet = PacketWriter("dialog", 2).pack("si", filler, seq).to_bytes()
            await tx.send(packet, rx.local_address)
            paused += tx.paused  # the next send waits for resume_writing
            buffered = max(buffered, tx.transport.get_write_buffer_size())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while len(received) < BURST and loop.time() < deadline:
            await asyncio.sleep(0.01)
        stats = tx.stats
        return {
            "send_buffer": stats.send_buffer,
            "sends_that_left_it_paused": paused,
            "received": received,
            "packets_sent": stats.packets_sent,
            "send_errors": stats.send_errors,
            "paused_at_end": tx.paused,
            "write_buffer_at_end": tx.transport.get_write_buffer_size(),
            "write_buffer_peak": buffered,
            "write_buffer_limits": tx.transport.get_write_buffer_limits(),
            "datagram_size": len(packet),
            "kernel_drops": rx.stats.kernel_drops,
        }


async def dual_stack() -> dict[str, Any]:
    arrived: list[int] = []
    async with (
        Endpoint(("127.0.0.1", 0), recv_buffer=1 << 20) as rx4,
        Endpoint(("::1", 0), recv_buffer=1 << 20) as rx6,
        Endpoint(("::", 0)) as tx,
    ):
        for rx in (rx4, rx6):

            @rx.handler("dialog")
            async def collect(packet: PacketReader, source: Any) -> None:
                arrived.append(len(packet.data))

        destinations = {
            "mapped": ("::ffff:127.0.0.1", rx4.local_address[1], 0, 0),
            "ipv6": rx6.local_address,
        }
        limits = {name: tx.max_datagram(addr) for name, addr in destinations.items()}
        sent, refused = {}, {}
        for name, addr in destinations.items():
            sent[name] = await tx.send(packet_of_size(limits[name]), addr)
            try:
                await tx.send(packet_of_size(limits[name] + 1), addr)
            except DatagramTooLarge as exc:
                refused[name] = str(exc)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while len(arrived) < 2 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        return {
            "max_datagram": limits,
            "sent": sent,
            "refused": refused,
            "arrived": arrived,
            "send_errors": tx.stats.send_errors,
            "port4": rx4.local_address[1],
            "port6": rx6.local_address[1],
        }


async def scenario(name: str) -> dict[str, Any]:
    figures = await {"flow": flow, "dual_stack": dual_stack}[name]()
    figures["loop"] = type(asyncio.get_running_loop()).__module__
    return figures


if __name__ == "__main__":
    print(json.dumps(binif.run(scenario(sys.argv[1]), use_uvloop=sys.argv[2] == "uvloop")))
