"""A per-subscription rate limit shared by every dispatcher replica, kept in the database.

The `rate_windows` row of a subscription is a fixed-window counter of
`common.db.ratewindow` (the API's per-tenant limits use the same claim): a dispatcher claims
a small chunk of a window's requests with one conditional UPDATE and spends the chunk
locally, a database round trip per chunk, not per delivery. All replicas together never get
more than the window's allowance; requests left in a chunk when its window ends are dropped,
so the limit errs on the slow side, by at most one chunk per replica and window.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from sqlalchemy import Table
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from common.db import ratewindow
from common.db.models import RateWindow
from common.db.ratewindow import Window

log = logging.getLogger(__name__)

OUTAGE_WAIT_S = 1.0

_windows = cast(Table, RateWindow.__table__)


@dataclass
class _Bucket:
    window_ms: int = -1
    tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def plan(per_s: float) -> tuple[int, int, int]:
    """(window length in ms, requests per window, chunk) for a rate of `per_s`."""
    window = Window.per_second(per_s)
    return window.length_ms, window.allowance, window.chunk


def claim(
    session: Session, subscription_id: str, window_ms: int, allowance: int, chunk: int
) -> int:
    """Claim up to `chunk` requests of the window starting at `window_ms`: how many were given."""
    key = {"subscription_id": subscription_id}
    return ratewindow.claim(session, _windows, key, window_ms, allowance, chunk)


def _insert_row(session: Session, subscription_id: str) -> None:
    ratewindow.ensure_row(session, _windows, {"subscription_id": subscription_id})


class RateLimiter:
    """Thread-safe; one per dispatcher process."""

    def __init__(
        self, sessionmaker: sessionmaker[Session], *, clock: Callable[[], float] = time.time
    ) -> None:
        self._sessionmaker = sessionmaker
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._known: set[str] = set()  # subscriptions whose row exists
        self._lock = threading.Lock()

    def acquire(self, subscription_id: str, per_s: float) -> float | None:
        """None: one request may go out now. Otherwise the seconds to wait before asking again."""
        window_len, allowance, chunk = plan(per_s)
        with self._lock:
            bucket = self._buckets.setdefault(subscription_id, _Bucket())
        with bucket.lock:
            now_ms = int(self._clock() * 1000)
            window_ms = now_ms - now_ms % window_len
            if bucket.window_ms != window_ms:
                bucket.window_ms, bucket.tokens = window_ms, 0  # last window's rest expires
            if bucket.tokens == 0:
                try:
                    bucket.tokens = self._claim(subscription_id, window_ms, allowance, chunk)
                except SQLAlchemyError:
                    log.warning("rate limit unavailable; deferring", exc_info=True)
                    return OUTAGE_WAIT_S
            if bucket.tokens == 0:
                return max((window_ms + window_len - now_ms) / 1000, 0.001)
            bucket.tokens -= 1
            return None

    def _claim(self, subscription_id: str, window_ms: int, allowance: int, chunk: int) -> int:
        with self._sessionmaker() as session, session.begin():
            if subscription_id not in self._known:
                _insert_row(session, subscription_id)
            granted = claim(session, subscription_id, window_ms, allowance, chunk)
        self._known.add(subscription_id)
        return granted
