"""Retention: delete old finished deliveries, their attempts and their events, in batches.

Each batch is its own short transaction over at most `batch_size` deliveries picked by
primary key, so the hot path (the router inserting, the settler updating) never waits
behind a long lock, and an interrupted run simply leaves less to do for the next one.
Only final rows go: pending and retrying deliveries are never touched, and dead letters
stay until they are replayed or purged unless `include_dead` says otherwise.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session, sessionmaker

from common.db.days import on_their_days
from common.db.models import Attempt, Delivery, EventRow, ReplayItem, ReplayJob
from common.db.session import rowcount
from common.db.statuses import DeliveryStatus

BATCH_SIZE = 1000
# A breath between batches, so that writers queued behind one get their turn.
PAUSE_S = 0.02


@dataclass
class Removed:
    deliveries: int = 0
    attempts: int = 0
    events: int = 0
    replay_jobs: int = 0

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)


def collect(
    sessionmaker: sessionmaker[Session],
    cutoff: datetime,
    *,
    include_dead: bool = False,
    batch_size: int = BATCH_SIZE,
    stop: threading.Event | None = None,
    on_batch: Callable[[Removed], None] = lambda _r: None,
) -> Removed:
    """Remove what finished before `cutoff`; returns the counts (also after a stop)."""
    statuses = (
        (DeliveryStatus.SUCCEEDED, DeliveryStatus.CANCELLED, DeliveryStatus.DEAD)
        if include_dead
        else (DeliveryStatus.SUCCEEDED, DeliveryStatus.CANCELLED)
    )
    removed = Removed()
    while stop is None or not stop.is_set():
        with sessionmaker() as session, session.begin():
            found = session.execute(
                select(Delivery.id, Delivery.day)
                .where(Delivery.status.in_(statuses), Delivery.finished_at < cutoff)
                .limit(batch_size)
            ).all()
            if not found:
                break
            ids, days = [row.id for row in found], sorted({row.day for row in found})
            removed.attempts += rowcount(
                session.execute(
                    delete(Attempt).where(
                        Attempt.delivery_id.in_(ids), *on_their_days(Attempt.day, ids)
                    )
                )
            )
            removed.deliveries += rowcount(
                session.execute(
                    delete(Delivery).where(
                        Delivery.id.in_(ids), Delivery.day.in_(days), Delivery.status.in_(statuses)
                    )
                )
            )
        on_batch(removed)
        time.sleep(PAUSE_S)
    removed.events += _events(sessionmaker, cutoff, batch_size, stop)
    removed.replay_jobs += _jobs(sessionmaker, cutoff)
    return removed


def _events(
    sessionmaker: sessionmaker[Session],
    cutoff: datetime,
    batch_size: int,
    stop: threading.Event | None,
) -> int:
    """Events older than the cutoff that no delivery refers to any more."""
    count = 0
    orphan = ~exists().where(
        Delivery.tenant_id == EventRow.tenant_id, Delivery.event_id == EventRow.id
    )
    while stop is None or not stop.is_set():
        with sessionmaker() as session, session.begin():
            keys = session.execute(
                select(EventRow.tenant_id, EventRow.id, EventRow.day)
                .where(EventRow.received_at < cutoff, orphan)
                .limit(batch_size)
            ).all()
            if not keys:
                break
            for tenant_id, event_id, day in keys:
                count += rowcount(
                    session.execute(
                        delete(EventRow).where(
                            EventRow.tenant_id == tenant_id,
                            EventRow.id == event_id,
                            EventRow.day == day,
                            orphan,
                        )
                    )
                )
        time.sleep(PAUSE_S)
    return count


def _jobs(sessionmaker: sessionmaker[Session], cutoff: datetime) -> int:
    """Finished replay jobs and their items (the audit log keeps what they did)."""
    with sessionmaker() as session, session.begin():
        old = list(
            session.scalars(
                select(ReplayJob.id).where(
                    ReplayJob.finished_at.is_not(None), ReplayJob.finished_at < cutoff
                )
            )
        )
        if not old:
            return 0
        session.execute(delete(ReplayItem).where(ReplayItem.job_id.in_(old)))
        return rowcount(session.execute(delete(ReplayJob).where(ReplayJob.id.in_(old))))
