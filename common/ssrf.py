"""The SSRF guard: every outbound URL is checked when a subscription is saved and again at
every attempt, and the request goes to the address that was checked (no DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from common.errors import UnsafeTargetError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, through the system resolver."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeTargetError(f"cannot resolve host {host!r}: {exc}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address hidden in a mapped, 6to4, NAT64 or Teredo IPv6 address."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64 or address in _NAT64_LOCAL:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    """True only for globally routable unicast addresses."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public(embedded)
        if address.scope_id:
            return False
    return (
        address.is_global
        and not address.is_multicast
        and not address.is_reserved
        and not address.is_unspecified
        and not address.is_loopback
        and not address.is_link_local
        and not address.is_private
    )


@dataclass(frozen=True)
class Target:
    """A checked outbound URL and the address to connect to."""

    url: str
    scheme: str
    host: str
    port: int
    address: str


def check_url(
    url: str,
    *,
    allow_private: bool = False,
    allow_http: bool = False,
    resolver: Resolver = system_resolver,
) -> Target:
    """Refuse `url` unless it is http(s), credential-free, and every address is allowed."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeTargetError(f"invalid URL: {exc}") from None
    if parts.scheme not in ("https", "http"):
        raise UnsafeTargetError("URL scheme must be https")
    if parts.scheme == "http" and not (allow_http or allow_private):
        raise UnsafeTargetError("plain http is not allowed (set HOOKLINE_ALLOW_HTTP)")
    if parts.username is not None or parts.password is not None:
        raise UnsafeTargetError("credentials in the URL are not allowed; use headers")
    host = parts.hostname
    if not host:
        raise UnsafeTargetError("URL has no host")
    port = port or (443 if parts.scheme == "https" else 80)
    addresses = resolver(host, port)
    if not addresses:
        raise UnsafeTargetError(f"host {host!r} resolves to no address")
    for text in addresses:
        try:
            address = ipaddress.ip_address(text.split("%")[0])
        except ValueError:
            raise UnsafeTargetError(f"resolver returned a non-address {text!r}") from None
        if not allow_private and not is_public(address):
            raise UnsafeTargetError(f"host {host!r} resolves to a non-public address")
    return Target(url=url, scheme=parts.scheme, host=host, port=port, address=addresses[0])
