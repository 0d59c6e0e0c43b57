"""Fairness gauges, read from the database with the other backlog gauges (`backlog.py`):
how the due backlog is spread over tenants and over the delivery shards they hash to.

Labels stay bounded: the top tenants are exported by rank (`1`..`TOP_TENANTS`), never by
tenant id (the API's delivery listing says who they are), and shards by number, every one
present from the start.

- `hookline_tenant_backlog_top_deliveries{rank}`: due deliveries of the tenants with the
  most, largest first (one tenant far above the rest: a burst);
- `hookline_tenant_backlog_top_age_seconds{rank}`: how long the oldest due delivery of each
  of those same tenants waits;
- `hookline_shard_backlog_age_seconds{shard}`: the oldest due delivery of the tenants
  hashed to each shard (spilled deliveries count in their tenant's shard);
- `hookline_tenants_with_backlog`: tenants with any due delivery.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from common.db.models import Delivery
from common.db.statuses import DeliveryStatus
from common.transport.topology import shard_of

TOP_TENANTS = 5


@dataclass(frozen=True)
class TenantBacklog:
    top: list[tuple[int, float]]  # (due deliveries, oldest age in s), by rank
    shard_age_s: dict[int, float]
    tenants: int


def read(session: Session, now: datetime, shards: int) -> TenantBacklog:
    """One grouped query over the due deliveries (never tried, or retry time passed)."""
    due_since = func.coalesce(Delivery.next_attempt_at, Delivery.created_at)
    rows = session.execute(
        select(Delivery.tenant_id, func.count(), func.min(due_since))
        .where(
            or_(
                Delivery.status == DeliveryStatus.PENDING,
                Delivery.status == DeliveryStatus.RETRYING,
            ),
            due_since <= now,
        )
        .group_by(Delivery.tenant_id)
    ).all()
    per_tenant = [
        (str(tenant), int(count), max(0.0, (now - oldest).total_seconds()))
        for tenant, count, oldest in rows
    ]
    shard_age_s = dict.fromkeys(range(shards), 0.0)
    for tenant, _, age_s in per_tenant:
        shard = shard_of(tenant, shards)
        shard_age_s[shard] = max(shard_age_s[shard], age_s)
    largest = sorted(per_tenant, key=lambda row: row[1], reverse=True)[:TOP_TENANTS]
    return TenantBacklog([(count, age) for _, count, age in largest], shard_age_s, len(rows))


def families(backlog: TenantBacklog) -> Iterator[Metric]:
    deliveries = GaugeMetricFamily(
        "hookline_tenant_backlog_top_deliveries",
        "Due deliveries of the tenants with the most, by rank (1 = most)", labels=["rank"],
    )  # fmt: skip
    ages = GaugeMetricFamily(
        "hookline_tenant_backlog_top_age_seconds",
        "How long the oldest due delivery of each top tenant waits, by rank", labels=["rank"],
    )  # fmt: skip
    for rank in range(TOP_TENANTS):
        count, age_s = backlog.top[rank] if rank < len(backlog.top) else (0, 0.0)
        deliveries.add_metric([str(rank + 1)], float(count))
        ages.add_metric([str(rank + 1)], age_s)
    shards = GaugeMetricFamily(
        "hookline_shard_backlog_age_seconds",
        "How long the oldest due delivery of the tenants hashed to a shard waits",
        labels=["shard"],
    )
    for shard, age_s in backlog.shard_age_s.items():
        shards.add_metric([str(shard)], age_s)
    yield deliveries
    yield ages
    yield shards
    yield GaugeMetricFamily(
        "hookline_tenants_with_backlog", "Tenants with any due delivery", value=backlog.tenants
    )
