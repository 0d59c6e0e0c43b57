"""A per-subscription rate limit shared by every dispatcher replica, kept in the database.

Time is cut into fixed windows (one second, or longer for rates under one a second). The
`rate_windows` row of a subscription says which window it is in and how many requests of it
have been handed out. A dispatcher claims a small chunk of requests with one conditional
UPDATE (the database serialises the claims, so all replicas together never get more than
the window's allowance) and spends the chunk locally: a database round trip per chunk,
not per delivery. Requests left in a chunk when its window ends are dropped, so the limit
errs on the slow side, by at most one chunk per replica and window.

The windows use each host's clock; hosts are assumed to be NTP-synchronised. A host whose
clock is behind the row's window simply gets nothing until it catches up.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from sqlalchemy import Table, and_, case, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import RateWindow

log = logging.getLogger(__name__)

WINDOW_MS = 1000
CHUNK_FRACTION = 0.05  # of a window's allowance, claimed at a time
OUTAGE_WAIT_S = 1.0

_windows = cast(Table, RateWindow.__table__)


@dataclass
class _Bucket:
    window_ms: int = -1
    tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def plan(per_s: float) -> tuple[int, int, int]:
    """(window length in ms, requests per window, chunk) for a rate of `per_s`."""
    window_ms = max(WINDOW_MS, math.ceil(1000 / per_s))
    allowance = max(1, round(per_s * window_ms / 1000))
    return window_ms, allowance, max(1, math.ceil(allowance * CHUNK_FRACTION))


def claim(
    session: Session, subscription_id: str, window_ms: int, allowance: int, chunk: int
) -> int:
    """Claim up to `chunk` requests of the window starting at `window_ms`: how many were given."""
    c = _windows.c
    fresh = c.window_ms < window_ms
    first = min(chunk, allowance)
    statement = (
        update(_windows)
        .where(c.subscription_id == subscription_id)
        .where(or_(fresh, and_(c.window_ms == window_ms, c.granted < allowance)))
        .values(
            window_ms=window_ms,
            # Each expression sees the row as it was before this UPDATE, on both databases.
            last_grant=case(
                (fresh, first),
                (c.granted + chunk > allowance, allowance - c.granted),
                else_=chunk,
            ),
            granted=case(
                (fresh, first),
                (c.granted + chunk > allowance, allowance),
                else_=c.granted + chunk,
            ),
        )
        .returning(c.last_grant)
    )
    granted = session.execute(statement).scalar_one_or_none()
    return int(granted or 0)


def _insert_row(session: Session, subscription_id: str) -> None:
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    row = {"subscription_id": subscription_id, "window_ms": 0, "granted": 0, "last_grant": 0}
    session.execute(module.insert(_windows).values(row).on_conflict_do_nothing())


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
