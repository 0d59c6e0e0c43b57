"""The dispatcher's view of subscriptions: what it needs to send, cached in memory.

Entries are loaded on first use (one query by id) and kept fresh by one query every
`subscription_refresh_s` for the rows whose `updated_at` moved, so a delivery never costs a
database read of its own. Secrets and static header values are decrypted once, when a row
is loaded.

An entry is never served older than `refresh_s` (the contract: a change, a rotated-out
secret say, takes effect within HOOKLINE_SUBSCRIPTION_REFRESH_S): a caller that finds its
entry stale while another thread refreshes waits for that refresh, and reloads the entry
itself if the refresh did not bring it up to date.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import Subscription
from common.db.statuses import SubscriptionStatus
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
    propagate_trace: bool = False  # its webhooks carry the attempt's `traceparent`

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
        propagate_trace=row.propagate_trace,
    )


@dataclass(frozen=True)
class _Entry:
    endpoint: Endpoint
    read_at: float  # monotonic: when its row was read (or, by a refresh, last checked)
    stored: int  # the order entries were stored in, to tell what a refresh covered


class SubscriptionCache:
    """Thread-safe; `get` is called from every sending thread."""

    def __init__(
        self, sessionmaker: sessionmaker[Session], box: SecretBox, *, refresh_s: float
    ) -> None:
        self._sessionmaker = sessionmaker
        self._box = box
        self._refresh_s = refresh_s
        self._entries: dict[str, _Entry] = {}
        self._stored = 0  # entries stored so far (the `stored` of the newest)
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._refreshing = threading.Lock()
        self._watermark = utcnow()
        # When the last refresh began to read, and the entries it covered (those stored
        # before it took its list): each of them is as fresh as that.
        self._refreshed_at = time.monotonic()
        self._covered = 0
        self._count: int | None = None  # rows in the table at the last refresh

    def get(self, subscription_id: str) -> Endpoint | None:
        """The subscription, loading it on first use; None if no such row exists."""
        self.refresh_if_due()
        cached = self._cached(subscription_id)
        if cached is not None:
            return cached
        if subscription_id in self._entries:
            # Stale: another thread is refreshing (this one would have). Wait for it rather
            # than sign with what may be a rotated-out secret, or POST to an old URL.
            with self._refreshing:
                pass
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
            read_at = time.monotonic()
            with self._sessionmaker() as session:
                row = session.get(Subscription, subscription_id)
                endpoint = _endpoint(row, self._box) if row is not None else None
            with self._lock:
                self._loading.pop(subscription_id, None)
                if endpoint is not None:
                    self._stored += 1
                    self._entries[subscription_id] = _Entry(endpoint, read_at, self._stored)
                else:
                    self._entries.pop(subscription_id, None)
            return endpoint

    def peek(self, subscription_id: str) -> Endpoint | None:
        """The cached entry, if any, without loading or refreshing: for scheduling hints.
        Without the lock: one dict read is atomic, and a hint may be a moment old."""
        cached = self._entries.get(subscription_id)
        return cached.endpoint if cached is not None else None

    def _cached(self, subscription_id: str) -> Endpoint | None:
        """The entry if it is fresh: read, or confirmed by a refresh, within `refresh_s`."""
        with self._lock:
            cached = self._entries.get(subscription_id)
            refreshed_at = self._refreshed_at if cached and cached.stored <= self._covered else 0.0
        if cached is None:
            return None
        now = time.monotonic()
        if now - cached.read_at >= MAX_ENTRY_AGE_S:
            return None
        if now - max(cached.read_at, refreshed_at) >= self._refresh_s:
            return None
        return cached.endpoint

    def refresh_if_due(self) -> None:
        """One query for rows changed since the last refresh; one caller does it at a time."""
        if time.monotonic() - self._refreshed_at < self._refresh_s:
            return
        if not self._refreshing.acquire(blocking=False):
            return  # another thread is refreshing; `get` waits for it if its entry is stale
        try:
            if time.monotonic() - self._refreshed_at < self._refresh_s:
                return  # done by another thread since the check above
            started = utcnow()
            started_at = time.monotonic()
            since = self._watermark - REFRESH_OVERLAP
            with self._sessionmaker() as session:
                with self._lock:
                    held = set(self._entries)
                    covered = self._stored
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
            with self._lock:
                for endpoint in loaded:
                    self._entries[endpoint.id] = _Entry(endpoint, started_at, covered)
                for subscription_id in gone:
                    self._entries.pop(subscription_id, None)
                self._refreshed_at, self._covered = started_at, covered
            self._watermark = started
        finally:
            self._refreshing.release()

    def mark_disabled(self, subscription_id: str, reason: str | None = None) -> None:
        """Reflect a disable this process just committed, before the next refresh sees it."""
        with self._lock:
            cached = self._entries.get(subscription_id)
            if cached is not None:
                disabled = dataclasses.replace(
                    cached.endpoint, status=SubscriptionStatus.DISABLED, disabled_reason=reason
                )
                self._entries[subscription_id] = dataclasses.replace(cached, endpoint=disabled)
