"""Credentials that matched nothing, counted per client address.

Learning that an API key, a portal session or a portal link exists takes a query of the
database every tenant shares, on one of the API's request threads. A key that no tenant
has is remembered for a while (`KeyCache.refuse`), but a client that makes up a new one
for every request would still cost one query each, with no credential at all, as fast as
it can send them.

So each client address gets `HOOKLINE_API_UNKNOWN_CREDENTIALS_PER_S` look-ups a second
that find nothing; beyond them, a credential this process does not already know is
refused at once (429 `too_many_unknown_credentials`, `Retry-After: 1`), without a query,
until the next second. A credential this process has found before (the last `MAX_FOUND`
of them) is never refused here, so the periodic re-check of a live key or session goes on
whatever others send from the same address (a proxy's, say). Counted in memory per API
process, like the threads it protects. An IPv6 address counts by its /64, what one host is
usually given; past `MAX_ADDRESSES` in one second, the addresses not yet seen share one
count, so a flood from many addresses gets one budget between them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from hookline.api.errors import ApiError

MAX_ADDRESSES = 100_000
MAX_FOUND = 100_000  # credentials found, remembered by digest (about 10 MB at most)
SHARED = "*"  # the count of the addresses beyond MAX_ADDRESSES
RETRY_AFTER_S = 1


def too_many_unknown() -> ApiError:
    return ApiError(
        429,
        "too_many_unknown_credentials",
        "too many requests with unknown credentials from this address; "
        f"retry after {RETRY_AFTER_S} s",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def _source(address: str | None) -> str:
    if not address:
        return SHARED
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]  # not an IP (a test client's name): counted as it is
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return f"{int(parsed) >> 64:x}/64"  # the network's upper half names it
    return str(parsed)


def _digest(credential: str) -> bytes:
    return hashlib.sha256(credential.encode("utf-8", "surrogateescape")).digest()


class Misses:
    """Thread-safe; one per API app."""

    def __init__(self, per_s: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_s = per_s
        self._clock = clock
        self._lock = threading.Lock()
        self._second = -1
        self._counts: dict[str, int] = {}
        self._found: OrderedDict[bytes, None] = OrderedDict()

    def check(self, address: str | None, credential: str) -> None:
        """Raise 429 when the address has had its look-ups that found nothing this second,
        unless this process has found `credential` before."""
        digest = _digest(credential)
        source = _source(address)
        with self._lock:
            if digest in self._found:
                return
            counts = self._current()
            if source not in counts and len(counts) >= MAX_ADDRESSES:
                source = SHARED
            spent = counts.get(source, 0) >= self._per_s
        if spent:
            raise too_many_unknown()

    def charge(self, address: str | None) -> None:
        """Count a look-up from the address that found nothing."""
        source = _source(address)
        with self._lock:
            counts = self._current()
            if source not in counts and len(counts) >= MAX_ADDRESSES:
                source = SHARED
            counts[source] = counts.get(source, 0) + 1

    def found(self, credential: str) -> None:
        """Remember a credential a look-up found (a key, a live session)."""
        digest = _digest(credential)
        with self._lock:
            self._found[digest] = None
            self._found.move_to_end(digest)
            if len(self._found) > MAX_FOUND:
                self._found.popitem(last=False)

    def _current(self) -> dict[str, int]:
        second = int(self._clock())
        if second != self._second:
            self._second, self._counts = second, {}
        return self._counts
