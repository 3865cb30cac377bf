"""Endpoint addresses and life cycle: every address checked before the socket sees it.

Bind address, send, send_many, peers= and allow= go through binif.address, the
same on both loops (this file runs on asyncio and uvloop): a mistake raises a
binif error naming the address, sends nothing and leaves the endpoint running.
Host names resolve once, at start(); a dual-stack endpoint reaches IPv4 peers.
An endpoint whose socket closes under it stops and says why.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import pydoc
import re
import socket
from typing import Any

import pytest
from endpoint_helpers import free_udp_port, numbered, wait_until

from binif import (
    AddressTypeError,
    BinError,
    Endpoint,
    EndpointNotRunning,
    InvalidAddress,
    InvalidOption,
    Message,
    PacketReader,
    PacketWriter,
)
from binif.errors import BindError, EndpointInUse


class Collector:
    """A handler that keeps every packet's bytes and source."""

    def __init__(self) -> None:
        self.packets: list[tuple[bytes, Any]] = []

    async def __call__(self, packet: PacketReader, source: Any) -> None:
        self.packets.append((packet.data, source))


BAD_DESTINATIONS: list[tuple[object, type[BinError], str]] = [
    ("127.0.0.1:5999", AddressTypeError, "not str '127.0.0.1:5999'"),
    (("127.0.0.1", "5999"), AddressTypeError, "port .* must be an int, not str '5999'"),
    (("127.0.0.1", 70000), InvalidAddress, "port 70000 .* outside 0..65535"),
    (("127.0.0.1", -1), InvalidAddress, "port -1"),
    (("127.0.0.1", 0), InvalidAddress, "port 0 .* is not a destination"),
    (("127.0.0.1", True), AddressTypeError, "not bool True"),
    (("localhost", 5999), InvalidAddress, "'localhost' in send\\(\\) .* is a host name"),
    (("::1", 5999), InvalidAddress, "is IPv6 and the socket is IPv4"),
    (("300.0.0.1", 5999), InvalidAddress, "neither an IP address nor a host name"),
]


@pytest.mark.parametrize(("addr", "error", "message"), BAD_DESTINATIONS)
async def test_a_bad_destination_is_refused_before_the_socket_and_the_endpoint_goes_on(
    addr: Any, error: type[BinError], message: str
) -> None:
    collect = Collector()
    async with Endpoint() as rx, Endpoint() as tx:
        rx.register("dialog", collect)
        with pytest.raises(error, match=message):
            await tx.send(numbered(1), addr)
        with pytest.raises(error):
            await tx.send_many(numbered(1), [rx.local_address, addr])
        assert tx.running and tx.stats.packets_sent == 0  # send_many sent none either
        assert await tx.send(numbered(2), rx.local_address) > 0
        await wait_until(lambda: len(collect.packets) == 1)
        assert tx.running and tx.stats.send_errors == 0


async def test_a_float_port_equal_to_a_sent_one_is_still_refused() -> None:
    async with Endpoint() as rx, Endpoint() as tx:
        port = rx.local_address[1]
        assert await tx.send(numbered(1), ("127.0.0.1", port)) > 0
        with pytest.raises(AddressTypeError, match="must be an int, not float"):
            await tx.send(numbered(1), ("127.0.0.1", float(port)))


async def test_send_many_refuses_one_address_where_a_list_belongs() -> None:
    async with Endpoint() as tx:
        with pytest.raises(AddressTypeError, match="takes a list of addresses, not the one"):
            await tx.send_many(numbered(1), ("127.0.0.1", 5999))


@pytest.mark.parametrize(
    ("packet", "name"), [(42, "int"), ([1, 2], "list"), ("P4CK", "str"), (None, "NoneType")]
)
async def test_send_takes_packets_not_whatever_bytes_would_take(packet: Any, name: str) -> None:
    async with Endpoint() as rx, Endpoint() as tx:
        with pytest.raises(TypeError, match=f"a packet is a PacketWriter, .* not {name}"):
            await tx.send(packet, rx.local_address)
        with pytest.raises(TypeError, match="a packet is"):
            await tx.send_many(packet, [rx.local_address])
        assert tx.stats.packets_sent == 0


# --- bind address, peers= and allow=: checked when the endpoint is made ----------------------


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"local_addr": "127.0.0.1:5999"}, AddressTypeError, "bind address must be a"),
        ({"local_addr": ("127.0.0.1", 70000)}, InvalidAddress, "port 70000 in bind address"),
        ({"peers": [("127.0.0.1", "5062")]}, AddressTypeError, "port in peers= .* not str"),
        ({"peers": [("127.0.0.1", 0)]}, InvalidAddress, "port 0 in peers= .* not a destination"),
        ({"peers": "127.0.0.1:5062"}, AddressTypeError, "peers= must be a \\(host, port\\)"),
        ({"allow": "10.0.0.0/8"}, AddressTypeError, "allow= must be a list of networks"),
        ({"allow": ["10.0.0.0/33"]}, InvalidAddress, "allow= entry '10.0.0.0/33'"),
    ],
)
def test_endpoint_arguments_are_checked_when_it_is_made(
    options: dict[str, Any], error: type[BinError], message: str
) -> None:
    local = options.pop("local_addr", ("127.0.0.1", 0))
    with pytest.raises(error, match=message):
        Endpoint(local, **options)


def test_wire_that_is_not_a_wire_format_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"wire must be a binif\.WireFormat"):
        Endpoint(wire="datagram")  # type: ignore[arg-type]


async def test_host_names_of_bind_address_and_peers_resolve_at_start() -> None:
    collect = Collector()
    async with Endpoint(("127.0.0.1", 0)) as rx:
        rx.register("dialog", collect)
        port = rx.local_address[1]
        tx = Endpoint(("localhost", 0), peers=[("localhost", port)])
        assert tx.peers == (("localhost", port),)
        async with tx:
            assert tx.local_address[0] in ("127.0.0.1", "::1")
            if tx.local_address[0] == "::1":
                pytest.skip("localhost is ::1 first here")
            assert tx.peers == (("127.0.0.1", port),)
            assert await tx.replicate(numbered(1)) > 0
            await wait_until(lambda: len(collect.packets) == 1)


async def test_a_peer_name_that_does_not_resolve_fails_start_naming_it() -> None:
    ep = Endpoint(peers=[("no-such-host.invalid", 5062)])
    with pytest.raises(InvalidAddress, match=re.escape("cannot resolve 'no-such-host.invalid'")):
        await ep.start()
    assert not ep.running


# --- IPv4 and IPv6 ------------------------------------------------------------------------------


async def test_a_dual_stack_endpoint_sends_to_ipv4_and_ipv6() -> None:
    collect = Collector()
    async with (
        Endpoint(("127.0.0.1", 0)) as rx4,
        Endpoint(("::1", 0)) as rx6,
        Endpoint(("::", 0)) as tx,
    ):
        rx4.register("dialog", collect)
        rx6.register("dialog", collect)
        assert await tx.send(numbered(4), rx4.local_address) > 0  # ("127.0.0.1", port)
        assert await tx.send(numbered(6), rx6.local_address) > 0
        await wait_until(lambda: len(collect.packets) == 2)
        sources = sorted(str(source[0]) for _, source in collect.packets)
        assert sources == ["127.0.0.1", "::1"]
        assert tx.max_datagram(rx4.local_address) == 65507
        assert tx.max_datagram(rx6.local_address) == 65527


async def test_an_ipv6_only_endpoint_refuses_ipv4_destinations_clearly() -> None:
    async with Endpoint(("::1", 0)) as tx:
        with pytest.raises(InvalidAddress, match="is IPv4 and the socket is IPv6 only"):
            await tx.send(numbered(1), ("127.0.0.1", 5999))


# --- bind failures, single use, nested async with -----------------------------------------------


async def test_bind_failure_names_the_address() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        ep = Endpoint(("127.0.0.1", port))
        with pytest.raises(BindError) as caught:
            await ep.start()
    assert str(caught.value) == f"cannot bind 127.0.0.1:{port}: Address already in use"
    assert caught.value.errno == errno.EADDRINUSE and isinstance(caught.value, OSError)
    assert not ep.running


async def test_an_endpoint_is_single_use_and_says_so() -> None:
    ep = Endpoint()
    async with ep:
        with pytest.raises(EndpointInUse, match=r"already running .* nested `async with`"):
            async with ep:
                pass  # pragma: no cover - never entered
        assert ep.running  # the failed inner start did not close it
    with pytest.raises(EndpointNotRunning, match="closed; an endpoint is single-use"):
        await ep.start()


# --- a transport that closes under the endpoint ------------------------------------------------


async def test_a_transport_closed_under_the_endpoint_stops_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    collect = Collector()
    async with Endpoint() as rx, Endpoint() as tx:
        rx.register("dialog", collect)
        assert await tx.send(numbered(1), rx.local_address) > 0
        with caplog.at_level(logging.ERROR, logger="binif"):
            tx.transport.abort()  # what the loop does on a fatal socket error
            await wait_until(lambda: not tx.running)
        assert isinstance(tx.failure, ConnectionError)
        assert any("closed under it" in record.getMessage() for record in caplog.records)
        with pytest.raises(EndpointNotRunning, match="socket closed under it"):
            await tx.send(numbered(2), rx.local_address)
        with pytest.raises(EndpointNotRunning, match="socket closed under it"):
            await tx.replicate(numbered(2))
        with pytest.raises(EndpointNotRunning, match="transport closed under it"):
            await tx.start()
        assert tx.stats.packets_sent == 1 and tx.stats.balanced()
    assert not tx.running  # close() after the failure works
    assert len(collect.packets) == 1


# --- a dead peer shows up, per peer ------------------------------------------------------------


@pytest.mark.parametrize(
    ("bind", "host", "shown"),
    [
        ("127.0.0.1", "127.0.0.1", "127.0.0.1:{}"),
        ("::1", "::1", "[::1]:{}"),
        ("::", "127.0.0.1", "[::ffff:127.0.0.1]:{}"),  # dual stack: the IPv4-mapped form
    ],
)
async def test_a_peer_that_does_not_listen_shows_in_peer_errors(
    bind: str, host: str, shown: str
) -> None:
    collect = Collector()
    async with Endpoint((host, 0)) as live:
        live.register("dialog", collect)
        dead = (host, free_udp_port(host))
        async with Endpoint((bind, 0), peers=[dead, live.local_address[:2]]) as tx:
            for seq in range(20):
                assert await tx.replicate(numbered(seq)) > 0
            key = shown.format(dead[1])
            await wait_until(lambda: tx.stats.peer_errors.get(key) == 20)
            # The live peer lost nothing to its dead neighbour's errors.
            await wait_until(lambda: len(collect.packets) == 20)
            stats = tx.stats
            assert dict(stats.peer_errors) == {key: 20}
            assert (stats.errors_received, stats.send_errors) == (20, 0)
            assert stats.packets_sent == 40 and tx.running
            assert sorted(
                PacketReader.parse(p).unpack("si")[1] for p, _ in collect.packets
            ) == list(range(20))


async def test_peer_errors_reach_json_and_stay_per_peer() -> None:
    dead_a, dead_b = ("127.0.0.1", free_udp_port()), ("127.0.0.1", free_udp_port())
    async with Endpoint(peers=[dead_a, dead_b]) as tx:
        await tx.replicate(PacketWriter("dialog", 3).pack("sss", "c", "f", "t"))
        await tx.send(numbered(1), dead_a)
        keys = {f"127.0.0.1:{dead_a[1]}": 2, f"127.0.0.1:{dead_b[1]}": 1}
        await wait_until(lambda: dict(tx.stats.peer_errors) == keys)
        assert tx.stats.as_dict()["peer_errors"] == keys
    await asyncio.sleep(0)


def test_help_says_handlers_are_async_and_what_addresses_are() -> None:
    text = pydoc.render_doc(Endpoint, renderer=pydoc.plaintext)
    assert "Handlers are ``async def`` functions taking ``(packet, source)``" in text
    assert "Addresses are ``(host, port)`` tuples" in text
    assert "resolved once at :meth:`start`" in text and "single-use" in text


# --- options and message classes, in binif's words -----------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Endpoint(queue_size=0), "queue_size must be an int >= 1, not 0"),
        (lambda: Endpoint(queue_size="10"), "queue_size must be an int >= 1, not '10'"),  # type: ignore[arg-type]
        (lambda: Endpoint(recv_buffer="4M"), "recv_buffer must be a size in bytes"),  # type: ignore[arg-type]
        (lambda: Endpoint(send_buffer=0), "send_buffer must be a size in bytes >= 1 or None"),
        (lambda: Endpoint(drain_timeout=-1), "drain_timeout must be seconds >= 0, not -1"),
        (lambda: Endpoint(log_interval=None), "log_interval must be seconds >= 0, not None"),  # type: ignore[arg-type]
    ],
)
def test_a_bad_option_is_an_invalid_option(make: Any, message: str) -> None:
    with pytest.raises(InvalidOption, match=message):
        make()
    assert issubclass(InvalidOption, ValueError) and issubclass(InvalidOption, BinError)


def test_registration_options_and_message_classes_are_refused_in_binif_words() -> None:
    class Fields(Message):  # a set of fields to reuse: no module=, no command=
        callid: str

    async def on_fields(message: Fields, source: Any) -> None:
        """Never called."""

    ep = Endpoint()
    with pytest.raises(TypeError, match="Fields needs a str MODULE and an int COMMAND"):
        ep.on(Fields)(on_fields)
    with pytest.raises(TypeError, match=r"takes a message class .* not <class 'int'>"):
        ep.register_message(int, on_fields)  # type: ignore[type-var]
    with pytest.raises(InvalidOption, match="concurrency must be an int >= 1, not 0"):
        ep.register("dialog", on_fields, concurrency=0)  # type: ignore[arg-type]
    assert ep.routes == {}
