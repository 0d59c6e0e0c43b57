"""Deleting expired `Idempotency-Key` answers, so the table does not grow without bound.

The API deletes as it goes, with no thread of its own: after every `SWEEP_EVERY_CLAIMS`
claims, or the first claim `SWEEP_EVERY_S` after the last sweep (and a process's first
claim), one statement deletes at most `SWEEP_BATCH` of the oldest expired rows, once the
answer has been sent. That is ten times the rows the claims in between can have added, so
under any traffic the table holds about one TTL's worth, and the work per sweep is
bounded. Rows are only added by this traffic, so what is left once it stops is all a sweep
would find: `hookline gc` deletes it, a batch per transaction.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from sqlalchemy import delete, select, tuple_
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import IdempotencyRecord
from common.db.session import rowcount, until_short
from common.wire import utcnow

SWEEP_EVERY_CLAIMS = 100
SWEEP_EVERY_S = 60.0
SWEEP_BATCH = 1000
log = logging.getLogger(__name__)


class Sweep:
    """When this process next deletes a batch of expired rows (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claims = 0
        self._last = float("-inf")  # a process's first claim sweeps: it may have been down

    def due(self) -> bool:
        with self._lock:
            self._claims += 1
            if self._claims < SWEEP_EVERY_CLAIMS and time.monotonic() - self._last < SWEEP_EVERY_S:
                return False
            self._claims, self._last = 0, time.monotonic()
            return True

    def run(self, sessions: sessionmaker[Session], ttl_s: float) -> None:
        try:
            delete_expired(sessions, ttl_s=ttl_s, batch_size=SWEEP_BATCH)
        except DBAPIError as exc:  # a deadlock with another sweep, a busy SQLite: next time
            log.warning("idempotency sweep failed", extra={"error": type(exc.orig).__name__})


def delete_expired(sessions: sessionmaker[Session], *, ttl_s: float, batch_size: int) -> int:
    """Delete at most `batch_size` of the oldest rows older than `ttl_s`; how many went."""
    cutoff = utcnow() - timedelta(seconds=ttl_s)
    oldest = (
        select(IdempotencyRecord.scope, IdempotencyRecord.key)
        .where(IdempotencyRecord.created_at < cutoff)
        .order_by(IdempotencyRecord.created_at)
        .limit(batch_size)
    )
    with sessions() as session, session.begin():
        result = session.execute(
            delete(IdempotencyRecord).where(
                tuple_(IdempotencyRecord.scope, IdempotencyRecord.key).in_(oldest)
            )
        )
        return rowcount(result)


def collect_expired(
    sessions: sessionmaker[Session], *, ttl_s: float, batch_size: int = SWEEP_BATCH
) -> int:
    """Delete every expired row, a batch per transaction (`hookline gc`); how many went."""
    return until_short(
        lambda: delete_expired(sessions, ttl_s=ttl_s, batch_size=batch_size), batch_size
    )
