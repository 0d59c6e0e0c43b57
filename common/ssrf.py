"""The SSRF guard: every outbound URL is checked when a subscription is saved and again at
every attempt, and the request goes to the address that was checked (no DNS rebinding).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna

from common.errors import UnsafeTargetError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]

# Only the well-known prefix has one layout (the IPv4 address in the low 32 bits). The
# local-use 64:ff9b:1::/48 (RFC 8215) may embed it in any RFC 6052 layout (/48: bits
# 48-63 and 72-87), so its low bits say nothing: it is refused with the special ranges.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# IANA's special-purpose ranges, written out so the answer does not depend on the Python
# version's idea of `is_global` (which has moved for 192.0.0.0/24 and 2001::/23).
_SPECIAL = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
        "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
        "::/128", "::1/128", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64",
        "2001::/23", "2001:db8::/32", "2002::/16", "3fff::/20", "5f00::/16", "fc00::/7",
        "fe80::/10", "fec0::/10", "ff00::/8",
    )
)  # fmt: skip


_DIGITS = {
    8: frozenset("01234567"),
    10: frozenset("0123456789"),
    16: frozenset("0123456789abcdefABCDEF"),
}


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
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _number(part: str) -> int | None:
    """The value of one part of a numeric host as `inet_aton` reads it (`0x` hex, leading
    `0` octal, else decimal), or None. Only the base's ASCII digits count: `int()` also
    takes a sign, `_` and other scripts' digits ("-1", "1_0", "\uff11\uff12\uff17")."""
    base = 16 if part[:2].lower() == "0x" else 8 if len(part) > 1 and part[0] == "0" else 10
    digits = part[2:] if base == 16 else part
    if not digits or not _DIGITS[base].issuperset(digits):
        return None
    return int(digits, base)


@functools.lru_cache(maxsize=4096)
def numeric_host(host: str) -> IPAddress | None:
    """The address a numeric host denotes, in any form a C resolver accepts.

    `inet_aton` reads `0x7f.1`, `0177.0.0.1`, `127.1` and `2130706433` as 127.0.0.1, so a
    name made only of such numbers is an address whatever an injected resolver says. A
    host whose last label is a number but which is no address (`-1.0.0.1`, `1.2.3.999`)
    is refused, as the URL standard does, rather than handed to a resolver as a name.
    """
    text = host.rstrip(".")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    parts = text.split(".")
    if not _DIGITS[10].issuperset(parts[-1] or "x") and _number(parts[-1]) is None:
        return None  # a name: no top-level domain is a number
    numbers = [_number(part) for part in parts]
    if len(parts) > 4 or None in numbers:
        raise UnsafeTargetError(f"invalid URL: host {host!r} is not a valid IPv4 address")
    *head, last = [n for n in numbers if n is not None]
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        raise UnsafeTargetError(f"invalid URL: host {host!r} is not a valid IPv4 address")
    value = last
    for index, number in enumerate(head):
        value += number << (8 * (3 - index))
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise UnsafeTargetError(f"invalid URL: host {host!r} is not a valid IPv4 address") from None


def is_public(address: IPAddress) -> bool:
    """True only for globally routable unicast addresses."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public(embedded)
        if address.scope_id:
            return False
    if any(address.version == net.version and address in net for net in _SPECIAL):
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


@functools.lru_cache(maxsize=4096)
def _allowed(address: IPAddress, allow_private: bool) -> bool:
    if is_public(address):
        return True
    # Private targets are for tests and the dev server; these never name a receiver.
    return allow_private and not (address.is_multicast or address.is_unspecified)


class CachingResolver:
    """Remembers each name's answer for `ttl_s` (failures are not remembered). The
    dispatcher checks the target at every attempt, and a DNS round trip per webhook would
    cost more than the webhook. The guard loses nothing: each attempt still classifies the
    addresses it is given and connects to the one it checked. Thread-safe."""

    def __init__(
        self,
        resolve: Resolver = system_resolver,
        *,
        ttl_s: float = 10.0,
        max_names: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolve = resolve
        self._ttl_s = ttl_s
        self._max_names = max_names
        self._clock = clock
        self._answers: dict[tuple[str, int], tuple[float, Sequence[str]]] = {}
        self._lock = threading.Lock()

    def __call__(self, host: str, port: int) -> Sequence[str]:
        now = self._clock()
        cached = self._answers.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        addresses = self._resolve(host, port)
        with self._lock:
            if len(self._answers) >= self._max_names:
                self._answers.clear()
            self._answers[(host, port)] = (now + self._ttl_s, addresses)
        return addresses


def _addresses(host: str, port: int, resolver: Resolver) -> list[IPAddress]:
    literal = numeric_host(host)
    if literal is not None:
        return [literal]
    found = []
    for text in resolver(host, port):
        if "%" in text:
            raise UnsafeTargetError(f"host {host!r} resolves to a scoped address")
        try:
            found.append(ipaddress.ip_address(text))
        except ValueError:
            # Scoped (`fe80::1%eth0`) or garbage: nothing a public receiver resolves to.
            raise UnsafeTargetError(f"host {host!r} resolves to a non-public address") from None
    if not found:
        raise UnsafeTargetError(f"host {host!r} resolves to no address")
    return found


def check_url(
    url: str,
    *,
    allow_private: bool = False,
    allow_http: bool = False,
    resolver: Resolver = system_resolver,
) -> Target:
    """Refuse `url` unless it is https (or allowed http), credential-free, and every
    address its host denotes or resolves to is public (or private targets are allowed).

    The returned `Target.address` is the one to connect to: callers pin the connection to
    it, so a second DNS answer cannot send the request elsewhere.
    """
    scheme, host, port = _parts(url, allow_private=allow_private, allow_http=allow_http)
    addresses = _addresses(host, port, resolver)
    for address in addresses:
        if not _allowed(address, allow_private):
            raise UnsafeTargetError(f"host {host!r} resolves to a non-public address")
    return Target(url=url, scheme=scheme, host=host, port=port, address=str(addresses[0]))


def ascii_host(host: str) -> str:
    """`host` in ASCII, non-ASCII labels as IDNA A-labels (`bücher.example` is
    `xn--bcher-kva.example`), mapped as browsers map it (UTS #46: case, full-width forms);
    the name a resolver and the receiver's `Host` header know. An ASCII host is as given."""
    if host.isascii():
        return host
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise UnsafeTargetError(
            f"invalid URL: host {host!r} is not a valid internationalised domain name ({exc}); "
            "give its ASCII (punycode, xn--) form"
        ) from None


def ascii_url(url: str) -> str:
    """`url` with its host in ASCII (`ascii_host`), as it is stored and sent; the rest is
    kept as written. `UnsafeTargetError` if the host has no ASCII form."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise UnsafeTargetError(f"invalid URL: {exc}") from None
    if host is None or parts.netloc.isascii():
        return url
    netloc = ascii_host(host) if port is None else f"{ascii_host(host)}:{port}"
    return parts._replace(netloc=netloc).geturl()


@functools.lru_cache(maxsize=4096)
def _parts(url: str, *, allow_private: bool, allow_http: bool) -> tuple[str, str, int]:
    """The checks that depend on the URL alone (the dispatcher repeats them per attempt,
    so they are remembered): scheme, host and port, or `UnsafeTargetError`."""
    if any(ch in url for ch in "\r\n\t\0 \\"):
        raise UnsafeTargetError("invalid URL: it contains whitespace, control or backslash")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeTargetError(f"invalid URL: {exc}") from None
    if parts.scheme not in ("https", "http"):
        raise UnsafeTargetError("URL scheme must be https")
    if parts.scheme == "http" and not (allow_http or allow_private):
        raise UnsafeTargetError("plain http is not allowed (set HOOKLINE_ALLOW_HTTP)")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise UnsafeTargetError("credentials in the URL are not allowed; use headers")
    if not parts.hostname:
        raise UnsafeTargetError("URL has no host")
    # The guard resolves and checks the name that is connected to and sent as `Host`.
    host = ascii_host(parts.hostname)
    if "%" in host:
        raise UnsafeTargetError("invalid URL: zone ids and percent-encoded hosts are refused")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)
