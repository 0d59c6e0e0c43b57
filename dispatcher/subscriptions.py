"""The dispatcher's view of subscriptions: what it needs to send, cached in memory.

Entries are loaded on first use (one query by id) and kept fresh by one query every
`subscription_refresh_s` for the rows whose `updated_at` moved, so a delivery never costs a
database read of its own. Secrets and static header values are decrypted once, when a row
is loaded.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import SUB_DISABLED, Subscription
from common.secretbox import SecretBox
from common.wire import utcnow

# Rows committed a little after a refresh read, with an earlier `updated_at` (clock skew
# between hosts, long transactions), are still seen by the next refresh.
REFRESH_OVERLAP = timedelta(seconds=5)
# Deletes are noticed by the refresh's row count; an entry also expires after this age,
# for what the count cannot tell (a delete and an insert between two refreshes).
MAX_ENTRY_AGE_S = 300.0


@dataclass(frozen=True)
class Endpoint:
    """One subscription as the dispatcher sees it. Static headers are already plain."""

    id: str
    tenant_id: str
    url: str
    status: str
    headers: dict[str, str] = field(default_factory=dict)
    secret: str = ""
    previous_secret: str | None = None
    previous_secret_expires_at: datetime | None = None
    max_in_flight: int | None = None
    rate_limit_per_s: float | None = None
    disabled_reason: str | None = None  # set when Hookline disabled it (410, auto-disable)

    signing_key: str | None = None  # `whsk_...`: adds an ed25519 (`v1a`) signature

    def secrets_at(self, now: datetime) -> tuple[str, ...]:
        """The keys that sign now: the current secret, the previous one during rotation,
        and the ed25519 signing key if the subscription has one (`common.signing` tells
        them apart by prefix)."""
        keys: tuple[str, ...] = (self.secret,)
        expires = self.previous_secret_expires_at
        if self.previous_secret is not None and expires is not None and expires > now:
            keys = (self.secret, self.previous_secret)
        return keys + ((self.signing_key,) if self.signing_key else ())


def _endpoint(row: Subscription, box: SecretBox) -> Endpoint:
    return Endpoint(
        id=row.id,
        tenant_id=row.tenant_id,
        url=row.url,
        status=row.status,
        headers=box.open_values(row.headers or {}),
        secret=box.open(row.secret_enc),
        previous_secret=box.open(row.previous_secret_enc) if row.previous_secret_enc else None,
        previous_secret_expires_at=row.previous_secret_expires_at,
        max_in_flight=row.max_in_flight,
        rate_limit_per_s=row.rate_limit_per_s,
        signing_key=box.open(row.signing_key_enc) if row.signing_key_enc else None,
        disabled_reason=row.disabled_reason,
    )


class SubscriptionCache:
    """Thread-safe; `get` is called from every sending thread."""

    def __init__(
        self, sessionmaker: sessionmaker[Session], box: SecretBox, *, refresh_s: float
    ) -> None:
        self._sessionmaker = sessionmaker
        self._box = box
        self._refresh_s = refresh_s
        self._entries: dict[str, tuple[Endpoint, float]] = {}  # id -> (endpoint, loaded at)
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._refreshing = threading.Lock()
        self._watermark = utcnow()
        self._refreshed_at = time.monotonic()
        self._count: int | None = None  # rows in the table at the last refresh

    def get(self, subscription_id: str) -> Endpoint | None:
        """The subscription, loading it on first use; None if no such row exists."""
        self.refresh_if_due()
        cached = self._cached(subscription_id)
        if cached is not None:
            return cached
        # One load per id: a burst for a new subscription must not become a burst of reads.
        with self._lock:
            loading = self._loading.setdefault(subscription_id, threading.Lock())
        with loading:
            cached = self._cached(subscription_id)
            if cached is not None:
                return cached
            with self._sessionmaker() as session:
                row = session.get(Subscription, subscription_id)
                endpoint = _endpoint(row, self._box) if row is not None else None
            with self._lock:
                self._loading.pop(subscription_id, None)
                if endpoint is not None:
                    self._entries[subscription_id] = (endpoint, time.monotonic())
            return endpoint

    def peek(self, subscription_id: str) -> Endpoint | None:
        """The cached entry, if any, without loading or refreshing: for scheduling hints.
        Without the lock: one dict read is atomic, and a hint may be a moment old."""
        cached = self._entries.get(subscription_id)
        return cached[0] if cached is not None else None

    def _cached(self, subscription_id: str) -> Endpoint | None:
        with self._lock:
            cached = self._entries.get(subscription_id)
        if cached is None or time.monotonic() - cached[1] >= MAX_ENTRY_AGE_S:
            return None
        return cached[0]

    def refresh_if_due(self) -> None:
        """One query for rows changed since the last refresh; one caller does it at a time."""
        if time.monotonic() - self._refreshed_at < self._refresh_s:
            return
        if not self._refreshing.acquire(blocking=False):
            return  # another thread is refreshing; the entries it replaces are fine meanwhile
        try:
            started = utcnow()
            since = self._watermark - REFRESH_OVERLAP
            with self._sessionmaker() as session:
                with self._lock:
                    held = set(self._entries)
                # The table's row count rides along (one row even when nothing changed): a
                # deleted row never shows up as changed, but the count tells it went away.
                total = select(func.count().label("n")).select_from(Subscription).subquery()
                found = session.execute(
                    select(total.c.n, Subscription)
                    .select_from(total)
                    .outerjoin(Subscription, Subscription.updated_at >= since)
                ).all()
                count = int(found[0][0])
                rows = [row for _, row in found if row is not None]
                loaded = [_endpoint(row, self._box) for row in rows if row.id in held]
                gone: set[str] = set()
                if self._count is not None and count != self._count and held:
                    present = set(
                        session.scalars(select(Subscription.id).where(Subscription.id.in_(held)))
                    )
                    gone = held - present
                self._count = count
            self._store(loaded)
            if gone:
                with self._lock:
                    for subscription_id in gone:
                        self._entries.pop(subscription_id, None)
            self._watermark = started
            self._refreshed_at = time.monotonic()
        finally:
            self._refreshing.release()

    def mark_disabled(self, subscription_id: str, reason: str | None = None) -> None:
        """Reflect a disable this process just committed, before the next refresh sees it."""
        with self._lock:
            cached = self._entries.get(subscription_id)
            if cached is not None:
                endpoint, loaded_at = cached
                disabled = dataclasses.replace(
                    endpoint, status=SUB_DISABLED, disabled_reason=reason
                )
                self._entries[subscription_id] = (disabled, loaded_at)

    def _store(self, endpoints: Iterable[Endpoint]) -> None:
        now = time.monotonic()
        with self._lock:
            for endpoint in endpoints:
                self._entries[endpoint.id] = (endpoint, now)
