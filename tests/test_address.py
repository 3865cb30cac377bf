"""Addresses: one check for every bind address, destination, peer and allowlist entry.

A wrong type is an AddressTypeError (a TypeError), a wrong value an
InvalidAddress (a ValueError), both BinErrors that name the address. Host
names resolve through the loop's getaddrinfo, never on a send.
"""

from __future__ import annotations

import ipaddress
import re
import socket

import pytest

from binif import AddressError, AddressTypeError, BinError, InvalidAddress
from binif.address import (
    check_address,
    check_network,
    format_address,
    numeric_address,
    parse_host_port,
    resolve_address,
)

V4, V6 = socket.AF_INET, socket.AF_INET6


def test_address_errors_are_bin_errors_of_the_right_builtin_kind() -> None:
    assert issubclass(InvalidAddress, AddressError) and issubclass(InvalidAddress, ValueError)
    assert issubclass(AddressTypeError, AddressError) and issubclass(AddressTypeError, TypeError)
    assert issubclass(AddressError, BinError)


# --- shape and types ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("127.0.0.1:5999", r"not str '127.0.0.1:5999' \(write \('127.0.0.1', 5999\)\)"),
        (b"127.0.0.1", "must be a \\(host, port\\) tuple, not bytes"),
        (5999, "must be a \\(host, port\\) tuple, not int 5999"),
        (None, "not NoneType None"),
        (
            ("127.0.0.1", "5999"),
            "port in send\\(\\) \\('127.0.0.1', '5999'\\) must be an int, not str",
        ),
        (("127.0.0.1", True), "port .* must be an int, not bool True"),
        (("127.0.0.1", 5999.0), "must be an int, not float"),
        ((b"127.0.0.1", 5999), "host in send\\(\\) .* must be a str, not bytes"),
        (("::1", 5999, "0", 0), "flowinfo .* must be an int"),
    ],
)
def test_a_wrong_type_is_an_address_type_error_naming_the_address(
    address: object, message: str
) -> None:
    with pytest.raises(AddressTypeError, match=message) as caught:
        check_address(address, what="send()")
    assert caught.value.address is address


@pytest.mark.parametrize(
    ("address", "message"),
    [
        (
            ("127.0.0.1", 70000),
            "port 70000 in address \\('127.0.0.1', 70000\\) is outside 0..65535",
        ),
        (("127.0.0.1", -1), "port -1 .* outside 0..65535"),
        (("127.0.0.1", 0), "port 0 in address .* is not a destination"),
        (("127.0.0.1",), "must be \\(host, port\\) or .* not 1 items"),
        (("127.0.0.1", 1, 2), "not 3 items"),
        (("", 5999), "empty host"),
        (("::1", 5999, 1 << 20, 0), "flowinfo 1048576 .* outside 0..1048575"),
        (("::1", 5999, 0, -1), "scope_id -1"),
    ],
)
def test_a_wrong_value_is_an_invalid_address_naming_the_address(
    address: object, message: str
) -> None:
    with pytest.raises(InvalidAddress, match=message) as caught:
        check_address(address)
    assert caught.value.address is address


def test_port_zero_is_a_bind_address_only() -> None:
    assert check_address(("0.0.0.0", 0), any_port=True) == ("0.0.0.0", 0, 0, 0)
    assert check_address(["::1", 5999]) == ("::1", 5999, 0, 0)  # a list works like a tuple
    assert check_address((ipaddress.ip_address("10.0.0.1"), 1)) == ("10.0.0.1", 1, 0, 0)


# --- numeric addresses for a socket family ---------------------------------------------------


def test_ipv4_socket_takes_ipv4_and_mapped_addresses() -> None:
    assert numeric_address(("127.0.0.1", 5999), V4) == ("127.0.0.1", 5999)
    assert numeric_address(("::ffff:127.0.0.1", 5999), V4) == ("127.0.0.1", 5999)
    with pytest.raises(InvalidAddress, match="is IPv6 and the socket is IPv4"):
        numeric_address(("::1", 5999), V4)


def test_ipv6_socket_gives_four_tuples_and_maps_ipv4_only_when_dual_stack() -> None:
    assert numeric_address(("::1", 5999), V6) == ("::1", 5999, 0, 0)
    assert numeric_address(("0:0::1", 5999, 3, 0), V6) == ("::1", 5999, 3, 0)
    assert numeric_address(("127.0.0.1", 5999), V6, dual_stack=True) == (
        "::ffff:127.0.0.1",
        5999,
        0,
        0,
    )
    for ipv4 in ("127.0.0.1", "::ffff:127.0.0.1"):
        with pytest.raises(InvalidAddress, match="is IPv4 and the socket is IPv6 only"):
            numeric_address((ipv4, 5999), V6)


def test_scoped_ipv6_address_names_its_interface() -> None:
    loopback = socket.if_nameindex()[0]
    index, name = loopback
    assert numeric_address((f"fe80::1%{name}", 5999), V6) == ("fe80::1", 5999, 0, index)
    with pytest.raises(InvalidAddress, match="no network interface 'nosuchif0'"):
        numeric_address(("fe80::1%nosuchif0", 5999), V6)


@pytest.mark.parametrize("host", ["localhost", "backup.example.net"])
def test_host_names_are_refused_where_numeric_addresses_are_needed(host: str) -> None:
    with pytest.raises(InvalidAddress, match=f"'{host}' in send\\(\\) .* is a host name"):
        numeric_address((host, 5999), V4, what="send()")


@pytest.mark.parametrize("host", ["127.0.0.1:5999", "300.1.1.1", "12345", "bad host", "-x.net"])
def test_a_host_that_is_neither_address_nor_name_is_refused(host: str) -> None:
    with pytest.raises(InvalidAddress, match="neither an IP address nor a host name"):
        numeric_address((host, 5999), V4)


# --- resolving names, without blocking the loop ---------------------------------------------


@pytest.mark.both_loops
async def test_resolve_address_resolves_names_and_passes_numbers() -> None:
    assert await resolve_address(("127.0.0.1", 5999)) == ("127.0.0.1", 5999)
    assert await resolve_address(("::1", 5999)) == ("::1", 5999, 0, 0)
    assert await resolve_address(("localhost", 5999), V4) == ("127.0.0.1", 5999)
    assert await resolve_address(("localhost", 0), V4, any_port=True, passive=True) == (
        "127.0.0.1",
        0,
    )
    assert await resolve_address(("localhost", 1), V6, dual_stack=True) in (
        ("::1", 1, 0, 0),
        ("::ffff:127.0.0.1", 1, 0, 0),
    )


@pytest.mark.both_loops
async def test_resolve_address_names_what_did_not_resolve() -> None:
    with pytest.raises(
        InvalidAddress, match=re.escape("cannot resolve 'no-such-host.invalid' in peers=")
    ):
        await resolve_address(("no-such-host.invalid", 5999), what="peers=")
    with pytest.raises(AddressTypeError):
        await resolve_address("localhost:5999")
    with pytest.raises(InvalidAddress, match="port 70000"):
        await resolve_address(("localhost", 70000))


# --- allowlist networks, text addresses ------------------------------------------------------


def test_check_network_takes_strings_and_ipaddress_objects() -> None:
    assert check_network("10.1.2.3/8") == ipaddress.ip_network("10.0.0.0/8")
    assert check_network(ipaddress.ip_network("::1/128")) == ipaddress.ip_network("::1/128")
    assert check_network(ipaddress.ip_address("127.0.0.1")) == ipaddress.ip_network("127.0.0.1/32")
    with pytest.raises(
        InvalidAddress, match=re.escape("allow= entry '10.0.0.0/33' is not a network")
    ):
        check_network("10.0.0.0/33")
    with pytest.raises(AddressTypeError, match=re.escape("not tuple ('10.0.0.1', 5)")):
        check_network(("10.0.0.1", 5))


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("127.0.0.1:5999", ("127.0.0.1", 5999)), ("[::1]:0", ("::1", 0)), ("h:1", ("h", 1))],
)
def test_parse_host_port(text: str, parsed: tuple[str, int]) -> None:
    assert parse_host_port(text) == parsed


@pytest.mark.parametrize("text", ["127.0.0.1", ":5999", "::1:5999", "h:70000", "h:x", "h:٣"])
def test_parse_host_port_refuses_what_is_not_host_colon_port(text: str) -> None:
    with pytest.raises(InvalidAddress, match="expected HOST:PORT, or \\[IPV6\\]:PORT"):
        parse_host_port(text, what="--to")


def test_format_address() -> None:
    assert format_address(("127.0.0.1", 5)) == "127.0.0.1:5"
    assert format_address(("::1", 5, 0, 0)) == "[::1]:5"
    assert format_address(None) == "?"
