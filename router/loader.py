"""Keeps the router's subscription index current: one cheap query per refresh interval,
and a full rebuild only when the subscriptions table changed.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import Subscription
from common.db.shares import delivery_shares
from common.db.statuses import SubscriptionStatus
from router.index import SubscriptionIndex, Target

log = logging.getLogger(__name__)


class IndexLoader:
    def __init__(self, sessionmaker: sessionmaker[Session], refresh_s: float) -> None:
        self._sessionmaker = sessionmaker
        self._refresh_s = refresh_s
        self._index = SubscriptionIndex()
        self._version: tuple[int, datetime | None] | None = None
        self._checked_at = float("-inf")
        self._shares: dict[str, int] = {}
        self._refreshing = threading.Lock()  # the router's writer threads share the index

    def current(self, *, force: bool = False) -> SubscriptionIndex:
        """The index, rebuilt first if the table changed since the last look. The router's
        writer threads share it: one looks, the others wait for its answer (an index older
        than `refresh_s` would route a new subscription's first events to nobody)."""
        if not force and time.monotonic() - self._checked_at < self._refresh_s:
            return self._index
        with self._refreshing:
            now = time.monotonic()
            if force or now - self._checked_at >= self._refresh_s:
                self._refresh(now)
            return self._index

    def _refresh(self, now: float) -> None:
        with self._sessionmaker() as session:
            # Count and newest change together notice inserts, updates and deletes.
            count, newest = session.execute(
                select(func.count(Subscription.id), func.max(Subscription.updated_at))
            ).one()
            version = (int(count), newest)
            if version != self._version:
                self._index = self._build(session)
                self._version = version
                log.info("subscription index rebuilt", extra={"active": self._index.size})
            self._shares = delivery_shares(session)
        self._checked_at = now

    def shares(self) -> dict[str, int]:
        """Tenants' own delivery shares (common/transport/spill.py), as of the last refresh."""
        return self._shares

    @staticmethod
    def _build(session: Session) -> SubscriptionIndex:
        rows = session.execute(
            select(
                Subscription.id,
                Subscription.tenant_id,
                Subscription.event_types,
                Subscription.operations,
                Subscription.payload_filter,
            ).where(Subscription.status == SubscriptionStatus.ACTIVE)
        )
        return SubscriptionIndex(
            Target(
                subscription_id=row.id,
                tenant_id=row.tenant_id,
                event_types=tuple(row.event_types),
                operations=frozenset(row.operations or ()),
                payload_filter=row.payload_filter,
            )
            for row in rows
        )
