"""The limits in force for each tenant, cached per API process.

Ingest asks for a tenant's limits on every request, so they are kept for `TTL_S`: an
override set through this process applies here at once (`forget`), in other API processes
within `TTL_S`. When an entry expires one caller reloads it while the others keep the old
one, so a tenant's requests in flight do not all query at once. Loads run on this book's
own thread, never the request pool.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.orm import Session, sessionmaker

from common.db.models import TenantApiLimits
from common.settings import Settings
from hookline.services.limits import Limits, effective

TTL_S = 5.0
MAX_ENTRIES = 100_000


class LimitBook:
    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self._sessions = sessions
        self._settings = settings
        # tenant -> (expires at, limits, a caller is reloading them)
        self._entries: OrderedDict[str, tuple[float, Limits, bool]] = OrderedDict()
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="limits")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def of(self, tenant_id: str) -> Limits:
        """The tenant's limits: cached on the event loop, else loaded on the book's thread."""
        cached = self._cached(tenant_id)
        if cached is not None:
            return cached
        return await asyncio.wrap_future(self._executor.submit(self._load, tenant_id))

    def of_now(self, tenant_id: str) -> Limits:
        """`of` for a caller on a worker thread (a sync route)."""
        return self._cached(tenant_id) or self._load(tenant_id)

    def forget(self, tenant_id: str) -> None:
        """Drop the tenant's entry (its overrides changed in this process)."""
        with self._lock:
            self._entries.pop(tenant_id, None)

    def _cached(self, tenant_id: str) -> Limits | None:
        entry = self._entries.get(tenant_id)  # the common case needs no lock: one dict read
        if entry is not None and time.monotonic() < entry[0]:
            return entry[1]
        with self._lock:
            entry = self._entries.get(tenant_id)
            if entry is None:
                return None
            expires, limits, reloading = entry
            now = time.monotonic()
            if now < expires or (reloading and now < expires + TTL_S):
                return limits
            self._entries[tenant_id] = (expires, limits, True)
            return None

    def _load(self, tenant_id: str) -> Limits:
        with self._sessions() as session:
            limits = effective(session.get(TenantApiLimits, tenant_id), self._settings)
        with self._lock:
            self._entries[tenant_id] = (time.monotonic() + TTL_S, limits, False)
            self._entries.move_to_end(tenant_id)
            while len(self._entries) > MAX_ENTRIES:
                self._entries.popitem(last=False)
        return limits
