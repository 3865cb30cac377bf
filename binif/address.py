"""Addresses: the one check every address given to binif goes through.

Every bind address, ``send``/``send_many`` destination, ``peers=`` entry and
``allow=`` network is checked here before anything touches a socket, so a
mistake is a :class:`~binif.errors.AddressTypeError` (a ``TypeError``: a str
where a tuple belongs, a port given as a str) or an
:class:`~binif.errors.InvalidAddress` (a ``ValueError``: port 70000, a host that
is not an address) naming the address, the same on asyncio and uvloop.

The rules:

- An address is a ``(host, port)`` tuple, or ``(host, port, flowinfo,
  scope_id)`` for IPv6; ``host`` is a str (or an ``ipaddress`` address), the
  port an int from 1 to 65535 (0 too for a bind address: any free port).
- Host names are resolved once, without blocking the loop
  (:func:`resolve_address`, ``loop.getaddrinfo``): the endpoint does it at
  ``start()`` for its bind address and ``peers=``. ``send`` and ``send_many``
  take numeric addresses only and refuse a name (resolving per packet would
  block or stall the sender; resolve it once with :func:`resolve_address`).
- A checked address is the numeric tuple of the socket's family
  (:func:`numeric_address`): ``(ip, port)`` on an IPv4 socket, ``(ip, port,
  flowinfo, scope_id)`` on an IPv6 one, as the socket reports sources. An IPv6
  endpoint bound to ``::`` is dual-stack and reaches IPv4 addresses as
  IPv4-mapped ones (``::ffff:127.0.0.1``); any other IPv6 endpoint refuses them,
  as an IPv4 endpoint refuses IPv6 addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from typing import Any, Final

from .errors import AddressTypeError, InvalidAddress

__all__ = [
    "Address",
    "IPNetwork",
    "check_address",
    "check_network",
    "format_address",
    "is_ipv6",
    "numeric_address",
    "parse_host_port",
    "resolve_address",
]

Address = tuple[Any, ...]
"""A socket address: ``(host, port)`` for IPv4, ``(host, port, flowinfo, scope_id)`` for IPv6."""

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_HOST_NAME: Final = re.compile(
    r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?"
)
"""A DNS host name (RFC 1123 labels; underscores too, as resolvers accept them)."""


def _show(address: object) -> str:
    return repr(address) if not isinstance(address, list) else repr(tuple(address))


def check_address(
    address: object, *, what: str = "address", any_port: bool = False
) -> tuple[str, int, int, int]:
    """Check an address's shape and types: ``(host, port, flowinfo, scope_id)``.

    ``host`` comes back as a str: an IP address (not yet normalised) or a host
    name. ``any_port`` allows port 0 (a bind address: any free port). Raises
    :class:`AddressTypeError` for a wrong type and :class:`InvalidAddress` for a
    wrong value; ``what`` names the argument in the message.
    """
    if isinstance(address, str | bytes):
        hint = ""
        if isinstance(address, str):
            before, sep, after = address.rpartition(":")
            if sep and after.isascii() and after.isdigit() and before:
                hint = f" (write ({before.strip('[]')!r}, {int(after)}))"
        raise AddressTypeError(
            f"{what} must be a (host, port) tuple, not {type(address).__name__} {address!r}{hint}",
            address=address,
        )
    if not isinstance(address, tuple | list):
        raise AddressTypeError(
            f"{what} must be a (host, port) tuple, not {type(address).__name__} {address!r}",
            address=address,
        )
    if len(address) not in (2, 4):
        raise InvalidAddress(
            f"{what} {_show(address)} must be (host, port) or (host, port, flowinfo, scope_id),"
            f" not {len(address)} items",
            address=address,
        )
    given: object = address[0]
    if isinstance(given, ipaddress.IPv4Address | ipaddress.IPv6Address):
        host = str(given)
    elif isinstance(given, str):
        host = given
    else:
        raise AddressTypeError(
            f"host in {what} {_show(address)} must be a str, not {type(given).__name__}",
            address=address,
        )
    if not host:
        raise InvalidAddress(
            f"{what} {_show(address)} has an empty host (for any address write '0.0.0.0' or '::')",
            address=address,
        )
    port = _check_int(address, 1, "port", 0xFFFF, what)
    if port == 0 and not any_port:
        raise InvalidAddress(
            f"port 0 in {what} {_show(address)} is not a destination", address=address
        )
    flowinfo = scope_id = 0
    if len(address) == 4:
        flowinfo = _check_int(address, 2, "flowinfo", 0xFFFFF, what)
        scope_id = _check_int(address, 3, "scope_id", 0xFFFFFFFF, what)
    return host, port, flowinfo, scope_id


def _check_int(
    address: tuple[Any, ...] | list[Any], index: int, name: str, top: int, what: str
) -> int:
    value = address[index]
    if type(value) is not int:  # bool is an int subclass, and never a port
        raise AddressTypeError(
            f"{name} in {what} {_show(address)} must be an int, not {type(value).__name__}"
            f" {value!r}",
            address=address,
        )
    if not 0 <= value <= top:
        raise InvalidAddress(
            f"{name} {value} in {what} {_show(address)} is outside 0..{top}", address=address
        )
    return value


def _parse_ip(host: str, address: object, what: str) -> tuple[IPAddress, int] | None:
    """The IP address and scope id in ``host``, or None if it is a host name."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if _HOST_NAME.fullmatch(host) and len(host) <= 253 and not host.replace(".", "").isdigit():
            return None
        raise InvalidAddress(
            f"{host!r} in {what} {_show(address)} is neither an IP address nor a host name",
            address=address,
        ) from None
    scope = 0
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        name = ip.scope_id
        try:
            scope = int(name) if name.isdigit() else socket.if_nametoindex(name)
        except OSError:
            raise InvalidAddress(
                f"no network interface {name!r} for {what} {_show(address)}", address=address
            ) from None
        ip = ipaddress.IPv6Address(host.partition("%")[0])
    return ip, scope


def is_ipv6(address: Address) -> bool:
    """True for a numeric address in IPv6 form (four items, as :func:`numeric_address` gives)."""
    return len(address) == 4


def numeric_address(
    address: object,
    family: int,
    *,
    dual_stack: bool = False,
    what: str = "address",
    any_port: bool = False,
) -> Address:
    """The checked numeric tuple of ``address`` for a socket of ``family``.

    ``family`` is ``socket.AF_INET`` (gives ``(ip, port)``) or
    ``socket.AF_INET6`` (gives ``(ip, port, flowinfo, scope_id)``);
    ``dual_stack`` says an IPv6 socket also reaches IPv4 addresses, which then
    come back IPv4-mapped. A host name, or an address the socket cannot reach,
    raises :class:`InvalidAddress`; a wrong type :class:`AddressTypeError`.
    """
    host, port, flowinfo, scope_id = check_address(address, what=what, any_port=any_port)
    parsed = _parse_ip(host, address, what)
    if parsed is None:
        raise InvalidAddress(
            f"{host!r} in {what} {_show(address)} is a host name: binif sends to numeric"
            " addresses only (host names are resolved once, at start(), for the bind address"
            " and peers=; resolve others once with binif.resolve_address)",
            address=address,
        )
    ip, scope = parsed
    scope_id = scope_id or scope
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        mapped: IPAddress = ip.ipv4_mapped
    else:
        mapped = ip
    if family == socket.AF_INET:
        if isinstance(mapped, ipaddress.IPv4Address):
            return (str(mapped), port)
        raise InvalidAddress(
            f"{what} {_show(address)} is IPv6 and the socket is IPv4"
            " (bind the endpoint to an IPv6 address, or '::' for both)",
            address=address,
        )
    if family != socket.AF_INET6:
        raise ValueError(f"family must be socket.AF_INET or socket.AF_INET6, not {family!r}")
    if isinstance(mapped, ipaddress.IPv4Address):
        if not dual_stack:
            raise InvalidAddress(
                f"{what} {_show(address)} is IPv4 and the socket is IPv6 only"
                " (bind the endpoint to '::' for both, or to an IPv4 address)",
                address=address,
            )
        return (f"::ffff:{mapped}", port, flowinfo, 0)
    return (str(ip), port, flowinfo, scope_id)


async def resolve_address(
    address: object,
    family: int = socket.AF_UNSPEC,
    *,
    dual_stack: bool = False,
    what: str = "address",
    any_port: bool = False,
    passive: bool = False,
) -> Address:
    """Like :func:`numeric_address`, but a host name is resolved with ``loop.getaddrinfo``.

    The lookup does not block the event loop (asyncio runs it in its executor,
    uvloop in libuv's pool). With ``family=socket.AF_UNSPEC`` the first address
    found decides the family: a 2-tuple for IPv4, a 4-tuple for IPv6.
    ``passive`` marks a bind address. A name that does not resolve (or resolves
    to nothing the socket reaches) raises :class:`InvalidAddress`.
    """
    host, port, _flowinfo, _scope_id = check_address(address, what=what, any_port=any_port)
    if _parse_ip(host, address, what) is not None:
        return _numeric_any(address, family, dual_stack, what, any_port)
    lookup = socket.AF_UNSPEC if family == socket.AF_INET6 and dual_stack else family
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host,
            port,
            family=lookup,
            type=socket.SOCK_DGRAM,
            flags=socket.AI_PASSIVE if passive else 0,
        )
    except (OSError, UnicodeError) as exc:
        raise InvalidAddress(
            f"cannot resolve {host!r} in {what} {_show(address)}: {getattr(exc, 'strerror', exc)}",
            address=address,
        ) from None
    for info_family, _type, _proto, _name, sockaddr in infos:
        if info_family not in (socket.AF_INET, socket.AF_INET6):
            continue
        try:
            return _numeric_any(tuple(sockaddr), family, dual_stack, what, any_port)
        except InvalidAddress:
            continue
    raise InvalidAddress(
        f"{host!r} in {what} {_show(address)} resolves to no address this socket can reach",
        address=address,
    )


def _numeric_any(
    address: object, family: int, dual_stack: bool, what: str, any_port: bool
) -> Address:
    if family == socket.AF_UNSPEC:
        host = check_address(address, what=what, any_port=any_port)[0]
        parsed = _parse_ip(host, address, what)
        is_v6 = parsed is not None and isinstance(parsed[0], ipaddress.IPv6Address)
        family = socket.AF_INET6 if is_v6 else socket.AF_INET
    return numeric_address(address, family, dual_stack=dual_stack, what=what, any_port=any_port)


def check_network(network: object, *, what: str = "allow=") -> IPNetwork:
    """An allowlist entry: a network string (``"10.0.0.0/8"``, ``"::1"``) or ``ipaddress`` object.

    Host bits set are accepted and masked (``"10.1.2.3/8"`` is ``10.0.0.0/8``).
    """
    if isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return network
    if isinstance(network, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return ipaddress.ip_network(network)
    if not isinstance(network, str):
        raise AddressTypeError(
            f"{what} entries must be network strings or ipaddress networks,"
            f" not {type(network).__name__} {network!r}",
            address=network,
        )
    try:
        return ipaddress.ip_network(network, strict=False)
    except ValueError as exc:
        raise InvalidAddress(
            f"{what} entry {network!r} is not a network: {exc}", address=network
        ) from None


def parse_host_port(text: str, *, what: str = "address") -> tuple[str, int]:
    """``"HOST:PORT"`` or ``"[IPV6]:PORT"`` (command lines, config files) to ``(host, port)``."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""
    if not sep or not host or not port.isascii() or not port.isdigit() or int(port) > 0xFFFF:
        raise InvalidAddress(
            f"bad {what} address {text!r}: expected HOST:PORT, or [IPV6]:PORT", address=text
        )
    return host, int(port)


def format_address(address: Address | None) -> str:
    """``host:port``, with an IPv6 host in brackets; ``?`` for None."""
    if not address:
        return "?"
    host = str(address[0])
    return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
