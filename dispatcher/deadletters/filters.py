"""Which dead letters an operator means: one filter shared by `dlq list`, replay and purge.

The same words everywhere (CLI options, API query parameters, a replay job's stored
filters): tenant, subscription, event type, reason, last status class, time of death.
Every query here runs on the partial indexes over `status = 'dead'` (migration 0004).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select, update
from sqlalchemy.orm import Session

from common.db.days import on_their_days
from common.db.models import Delivery
from common.db.session import rowcount
from common.db.statuses import DeliveryStatus
from common.wire import utcnow

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "none")
SAMPLE_IDS = 10


class FilterError(ValueError):
    """A filter that cannot mean anything (an unknown status class, an empty time range)."""


@dataclass(frozen=True)
class DeadFilter:
    tenant: str | None = None
    subscription: str | None = None
    event_type: str | None = None
    reason: str | None = None
    status_class: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    ids: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.status_class is not None and self.status_class not in STATUS_CLASSES:
            raise FilterError(f"status class must be one of {', '.join(STATUS_CLASSES)}")
        if self.since and self.until and self.since >= self.until:
            raise FilterError("since must be before until")

    @property
    def narrows(self) -> bool:
        """Whether anything beyond the tenant narrows the set (else a replay needs --all)."""
        return any(
            (
                self.subscription,
                self.event_type,
                self.reason,
                self.status_class,
                self.since,
                self.until,
                self.ids,
            )
        )

    def to_json(self) -> dict[str, Any]:
        """The filter as stored on a job and in the audit log (ids as a count only)."""
        values = asdict(self)
        values["ids"] = len(self.ids)
        for name in ("since", "until"):
            if values[name] is not None:
                values[name] = values[name].isoformat()
        return {k: v for k, v in values.items() if v not in (None, 0)}

    def conditions(self) -> list[ColumnElement[bool]]:
        c: list[ColumnElement[bool]] = [Delivery.status == DeliveryStatus.DEAD]
        if self.tenant is not None:
            c.append(Delivery.tenant_id == self.tenant)
        if self.subscription is not None:
            c.append(Delivery.subscription_id == self.subscription)
        if self.event_type is not None:
            c.append(Delivery.event_type == self.event_type)
        if self.reason is not None:
            c.append(Delivery.dead_reason == self.reason)
        if self.status_class == "none":
            c.append(Delivery.last_status_code.is_(None))
        elif self.status_class is not None:
            low = int(self.status_class[0]) * 100
            c.append(and_(Delivery.last_status_code >= low, Delivery.last_status_code < low + 100))
        if self.since is not None:
            c.append(Delivery.finished_at >= self.since)
        if self.until is not None:
            c.append(Delivery.finished_at < self.until)
        if self.ids:
            c.extend((Delivery.id.in_(self.ids), *on_their_days(Delivery.day, self.ids)))
        return c


def page(
    session: Session,
    dead: DeadFilter,
    *,
    limit: int,
    after: tuple[datetime, str] | None = None,
) -> list[Delivery]:
    """Dead deliveries newest death first, `limit` of them, after a cursor position."""
    query: Select[tuple[Delivery]] = select(Delivery).where(*dead.conditions())
    if after is not None:
        at, row_id = after
        query = query.where(
            or_(Delivery.finished_at < at, and_(Delivery.finished_at == at, Delivery.id < row_id))
        )
    query = query.order_by(Delivery.finished_at.desc(), Delivery.id.desc()).limit(limit)
    return list(session.scalars(query))


@dataclass(frozen=True)
class Summary:
    """Counts of a filter's dead letters, by reason and by subscription, with sample ids."""

    total: int
    by_reason: dict[str, int]
    by_subscription: dict[str, int]
    sample_ids: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def summarize(session: Session, dead: DeadFilter) -> Summary:
    """One grouped count (reason by subscription) on the partial index, plus a few ids."""
    rows: Sequence[Any] = session.execute(
        select(Delivery.dead_reason, Delivery.subscription_id, func.count())
        .where(*dead.conditions())
        .group_by(Delivery.dead_reason, Delivery.subscription_id)
    ).all()
    by_reason: Counter[str] = Counter()
    by_subscription: Counter[str] = Counter()
    for reason, subscription_id, count in rows:
        by_reason[reason or "unknown"] += count
        by_subscription[subscription_id] += count
    sample = [row.id for row in page(session, dead, limit=SAMPLE_IDS)]
    return Summary(
        total=sum(by_reason.values()),
        by_reason=dict(by_reason.most_common()),
        by_subscription=dict(by_subscription.most_common()),
        sample_ids=sample,
    )


def purge(session: Session, dead: DeadFilter, *, status: str) -> int:
    """Take matching dead letters out of the dead-letter set (`status`, e.g. cancelled);
    the rows stay for `gc` to remove with the rest of their age. The caller commits."""
    result = session.execute(
        update(Delivery)
        .where(*dead.conditions())
        .values(status=status, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)
