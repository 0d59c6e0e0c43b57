"""Gauges read from the broker and the database: queue depths, the oldest due delivery,
subscriptions by status, and the backlog spread over tenants and shards (`tenant_backlog`).

One process per deployment should export them (the router does; see docs/operations.md):
they describe shared state, so every replica would report the same numbers. Dashboards
and alerts take `max by (...)` anyway, so two routers do no harm.

The numbers are refreshed by a daemon thread every `interval_s`, not at scrape time, so a
scrape never waits on a hung broker or database. A failed read drops that source's series
(stale numbers would look healthy) and sets `hookline_backlog_up{source}` to 0.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from common import tenant_backlog
from common.background import BackgroundThread
from common.db.models import Delivery, Subscription
from common.db.statuses import DeliveryStatus
from common.metrics import SUBSCRIPTION_STATUSES
from common.transport import Transport
from common.transport.topology import DEFAULT_SHARDS
from common.wire import utcnow

log = logging.getLogger(__name__)

REFRESH_INTERVAL_S = 10.0


class BacklogCollector(BackgroundThread, Collector):
    def __init__(
        self,
        transport: Transport,
        sessions: sessionmaker[Session],
        queues: Sequence[str],
        *,
        shards: int = DEFAULT_SHARDS,
        interval_s: float = REFRESH_INTERVAL_S,
    ) -> None:
        super().__init__("backlog")
        self._transport = transport
        self._sessions = sessions
        self._queues = tuple(queues)
        self._shards = shards
        self._tenants: tenant_backlog.TenantBacklog | None = None
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._depths: dict[str, int] | None = None
        self._oldest_age_s: float | None = None
        self._subscriptions: dict[str, int] | None = None
        self._refreshed = False

    def register(self, registry: CollectorRegistry) -> BacklogCollector:
        registry.register(self)
        return self

    def stop(self, timeout_s: float | None = None) -> None:
        # Not waited for by default: a refresh may hang on a broker for its connect budget.
        super().stop(timeout_s)

    def refresh(self) -> None:
        """Read every number once (the thread calls this; tests may call it directly)."""
        depths: dict[str, int] | None
        try:
            depths = self._transport.queue_depths(self._queues)
        except Exception as exc:  # any failure: report the source down, never crash
            log.warning("backlog: broker read failed", extra={"error": type(exc).__name__})
            depths = None
        try:
            oldest_age_s, subscriptions, tenants = self._read_database()
        except Exception as exc:
            log.warning("backlog: database read failed", extra={"error": type(exc).__name__})
            oldest_age_s, subscriptions, tenants = None, None, None
        with self._lock:
            self._depths = depths
            self._oldest_age_s = oldest_age_s
            self._subscriptions = subscriptions
            self._tenants = tenants
            self._refreshed = True

    def _read_database(self) -> tuple[float, dict[str, int], tenant_backlog.TenantBacklog]:
        now = utcnow()
        due_since = func.coalesce(Delivery.next_attempt_at, Delivery.created_at)
        with self._sessions() as session:
            # A delivery is due when it was never tried, or its retry time has passed.
            oldest: datetime | None = session.scalar(
                select(func.min(due_since)).where(
                    or_(
                        Delivery.status == DeliveryStatus.PENDING,
                        Delivery.status == DeliveryStatus.RETRYING,
                    ),
                    due_since <= now,
                )
            )
            rows = session.execute(
                select(Subscription.status, func.count()).group_by(Subscription.status)
            ).all()
            tenants = tenant_backlog.read(session, now, self._shards)
        counts: dict[str, int] = {status: int(count) for status, count in rows}
        age_s = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
        statuses = {status: int(counts.get(status, 0)) for status in SUBSCRIPTION_STATUSES}
        return age_s, statuses, tenants

    def run(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            self.refresh()
            self.stopping.wait(max(0.0, self._interval_s - (time.monotonic() - started)))

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if not self._refreshed:  # nothing read yet: report nothing rather than "down"
                return
            depths, oldest_age_s = self._depths, self._oldest_age_s
            subscriptions, tenants = self._subscriptions, self._tenants
        up = GaugeMetricFamily(
            "hookline_backlog_up", "Whether the last backlog read of this source worked",
            labels=["source"],
        )  # fmt: skip
        up.add_metric(["broker"], float(depths is not None))
        up.add_metric(["database"], float(subscriptions is not None))
        yield up
        if depths is not None:
            family = GaugeMetricFamily(
                "hookline_queue_messages", "Messages ready in a Hookline queue (unacked not "
                "counted)", labels=["queue"],
            )  # fmt: skip
            for queue, depth in depths.items():
                family.add_metric([queue], float(depth))
            yield family
        if oldest_age_s is not None:
            yield GaugeMetricFamily(
                "hookline_oldest_due_delivery_age_seconds",
                "How long the oldest due delivery (never tried, or retry time passed) waits",
                value=oldest_age_s,
            )
        if subscriptions is not None:
            family = GaugeMetricFamily(
                "hookline_subscriptions", "Subscriptions by status", labels=["status"]
            )
            for status, count in subscriptions.items():
                family.add_metric([status], float(count))
            yield family
        if tenants is not None:
            yield from tenant_backlog.families(tenants)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # dynamic: never pre-checked for name clashes at registration
