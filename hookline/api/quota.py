"""A tenant's shared rate windows, leased by this API process a chunk at a time.

The counters live in `api_rate_windows` (see `common.db.ratewindow`): every API replica
claims from the same row, so together they never admit more than a window's allowance. A
request that finds enough units in this process's lease is admitted on the event loop,
with no thread hop and no query; only a request that empties the lease claims more, on one
of this process's own threads (never the request pool), one claim at a time per counter.
Once the database says a window is spent, this process answers "wait" for the rest of
that window without asking again.

The database being unreachable does not stop ingest: the limit is then not enforced (for a
second at a time, logged) rather than every tenant refused.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import cast

from sqlalchemy import Table
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from common.db import ratewindow
from common.db.models import ApiRateWindow
from common.db.ratewindow import Window

log = logging.getLogger(__name__)

OUTAGE_OPEN_S = 1.0  # how long a failed claim leaves the counter unenforced here
CLAIM_THREADS = 2
MAX_LEASES = 100_000  # (tenant, counter) pairs remembered; the oldest are dropped beyond
_windows = cast(Table, ApiRateWindow.__table__)
_CLAIM = object()  # "this lease cannot answer alone: claim from the database"


@dataclass
class _Lease:
    window_ms: int = -1
    tokens: int = 0
    spent: bool = False  # the database has no more units in this window
    open_until: float = 0.0  # after a database failure: admit without asking until then
    lock: threading.Lock = field(default_factory=threading.Lock)

    def spend(self, now_ms: int, count: int, window: Window) -> float | object | None:
        """None: admitted; seconds to wait; or `_CLAIM`."""
        start = window.start(now_ms)
        if self.window_ms != start:
            self.window_ms, self.tokens, self.spent = start, 0, False  # the rest expires
        if self.tokens >= count:
            self.tokens -= count
            return None
        if now_ms / 1000 < self.open_until:
            return None
        if self.spent:
            return max((start + window.length_ms - now_ms) / 1000, 0.001)
        return _CLAIM


class Quota:
    """Thread-safe; one per API app. `take` admits `count` units of a tenant's counter."""

    def __init__(
        self, sessions: sessionmaker[Session], *, clock: Callable[[], float] = time.time
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._leases: dict[tuple[str, str], _Lease] = {}
        self._known: set[tuple[str, str]] = set()  # counters whose row exists
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(CLAIM_THREADS, thread_name_prefix="quota")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def take(self, tenant_id: str, name: str, count: int, window: Window) -> float | None:
        """None when the `count` units are admitted, else the seconds until the window ends."""
        lease = self._leases.get((tenant_id, name)) or self._lease(tenant_id, name)
        if lease.lock.acquire(blocking=False):
            try:
                answer = lease.spend(int(self._clock() * 1000), count, window)
            finally:
                lease.lock.release()
            if answer is not _CLAIM:
                return cast(float | None, answer)
        future = self._executor.submit(self._take_claiming, lease, (tenant_id, name), count, window)
        return await asyncio.wrap_future(future)

    def spent(self, tenant_id: str, name: str, window: Window) -> float | None:
        """The seconds until `window` ends when this process already knows the tenant has
        no unit left in it (its lease is empty and the database said so), else None. Asks
        nothing and takes nothing: for a refusal that must come before any other work."""
        lease = self._leases.get((tenant_id, name))
        if lease is None:
            return None
        now_ms = self._now_ms()
        if lease.window_ms != window.start(now_ms) or not lease.spent or lease.tokens > 0:
            return None
        if now_ms / 1000 < lease.open_until:
            return None
        return max((lease.window_ms + window.length_ms - now_ms) / 1000, 0.001)

    def take_now(self, tenant_id: str, name: str, count: int, window: Window) -> float | None:
        """`take` for a caller on a worker thread (a sync route)."""
        return self._take_claiming(self._lease(tenant_id, name), (tenant_id, name), count, window)

    def _take_claiming(
        self, lease: _Lease, key: tuple[str, str], count: int, window: Window
    ) -> float | None:
        with lease.lock:  # one claim per counter at a time; the others wait for its units
            now_ms = self._now_ms()
            answer = lease.spend(now_ms, count, window)
            if answer is not _CLAIM:
                return cast(float | None, answer)
            want = min(max(window.chunk, count - lease.tokens), window.allowance)
            try:
                got = self._claim(key, lease.window_ms, window.allowance, want)
            except SQLAlchemyError:
                log.warning("tenant API limit unavailable; admitting", exc_info=True)
                lease.open_until = now_ms / 1000 + OUTAGE_OPEN_S
                return None
            lease.tokens += got
            lease.spent = got < want
            if lease.tokens >= count:
                lease.tokens -= count
                return None
            lease.spent = True
            return max((lease.window_ms + window.length_ms - now_ms) / 1000, 0.001)

    def _claim(self, key: tuple[str, str], window_ms: int, allowance: int, want: int) -> int:
        row = {"tenant_id": key[0], "name": key[1]}
        with self._sessions() as session, session.begin():
            if key not in self._known:
                ratewindow.ensure_row(session, _windows, row)
            granted = ratewindow.claim(session, _windows, row, window_ms, allowance, want)
        self._known.add(key)
        return granted

    def _lease(self, tenant_id: str, name: str) -> _Lease:
        key = (tenant_id, name)
        lease = self._leases.get(key)
        if lease is None:
            with self._lock:
                if len(self._leases) >= MAX_LEASES:
                    self._leases.pop(next(iter(self._leases)))
                lease = self._leases.setdefault(key, _Lease())
        return lease

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)
