"""A short-lived cache of API key lookups, so ingest does not pay a query per request.

Keys that exist are cached for `HOOKLINE_API_KEY_CACHE_S` (default 1 s), at most
`MAX_ENTRIES`. A hash that no key has is remembered apart, as long and as many, so that a
client retrying a wrong key costs one look-up a period rather than one a request (and a
request that two layers authenticate, the idempotency claim's and the route's, one in
all); kept apart so that a flood of made-up keys never pushes out a real one. No key can
appear later under a remembered hash: a key's token is known only once it is issued.

When an entry of a key expires, one caller looks the key up again while concurrent callers
keep using the old entry, for at most one more TTL: without that, every request in flight
would query at the same moment.
Revoking a key through the API drops it here at once; other API processes see the
revocation within two TTLs.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class KeyRecord:
    id: str
    tenant_id: str
    scopes: frozenset[str]
    allowed_cidrs: tuple[str, ...]
    revoked_at: datetime | None


class KeyCache:
    def __init__(self, ttl_s: float, max_entries: int = MAX_ENTRIES) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        # hash -> (expires at, record, a caller is refreshing it)
        self._entries: OrderedDict[str, tuple[float, KeyRecord, bool]] = OrderedDict()
        self._missing: OrderedDict[str, float] = OrderedDict()  # hash -> expires at
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> KeyRecord | None:
        """The cached record, or None: then the caller looks it up and `put`s it."""
        with self._lock:
            entry = self._entries.get(key_hash)
            if entry is None:
                return None
            expires, record, refreshing = entry
            now = time.monotonic()
            if now < expires:
                return record
            if refreshing and now < expires + self._ttl_s:
                return record
            self._entries[key_hash] = (expires, record, True)
            return None

    def peek(self, key_hash: str) -> KeyRecord | None:
        """The record while it is fresh, else None; unlike `get`, never asks the caller to
        look it up (for a check that can do without one)."""
        with self._lock:
            entry = self._entries.get(key_hash)
            if entry is None or time.monotonic() >= entry[0]:
                return None
            return entry[1]

    def put(self, key_hash: str, record: KeyRecord) -> None:
        if self._ttl_s <= 0:
            return
        with self._lock:
            self._entries[key_hash] = (time.monotonic() + self._ttl_s, record, False)
            self._entries.move_to_end(key_hash)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def refuse(self, key_hash: str) -> None:
        """Remember that no key has this hash, for one TTL."""
        if self._ttl_s <= 0:
            return
        with self._lock:
            self._missing[key_hash] = time.monotonic() + self._ttl_s
            self._missing.move_to_end(key_hash)
            while len(self._missing) > self._max:
                self._missing.popitem(last=False)

    def refused(self, key_hash: str) -> bool:
        """Whether no key had this hash less than a TTL ago."""
        with self._lock:
            expires = self._missing.get(key_hash)
            if expires is None:
                return False
            if time.monotonic() < expires:
                return True
            del self._missing[key_hash]
            return False

    def forget(self, key_id: str) -> None:
        """Drop every entry of the key with this id (revocation)."""
        with self._lock:
            for key_hash in [h for h, (_, r, _) in self._entries.items() if r.id == key_id]:
                del self._entries[key_hash]
