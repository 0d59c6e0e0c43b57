"""The row transitions of a replay job's batches: claim, reclaim and mark, as ORM statements
on any database; on PostgreSQL the claim and the mark run as one statement each instead
(`rows_pg.py`). The states a batch goes through, and why their order is safe, are in
`batch.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Text, cast, select, update
from sqlalchemy.orm import Session, sessionmaker

from common.db.days import on_their_days
from common.db.models import Delivery, EventRow, ReplayItem, ReplayJob
from common.db.statuses import DeliveryStatus, ReplayItemStatus
from common.wire import utcnow
from dispatcher.replay import copies, rows_pg
from dispatcher.replay.batch import Batch, CopyRow

SKIPPED_ERROR = "no longer dead, or replayed by another job"
MISSING_ERROR = "its event no longer exists"


class Batches:
    """The row transitions of one job's batches, on whichever database the job lives in."""

    def __init__(self, sessionmaker: sessionmaker[Session], job_id: str) -> None:
        self._sessionmaker = sessionmaker
        self.job_id = job_id
        bind = sessionmaker.kw.get("bind")
        self._postgres = getattr(getattr(bind, "dialect", None), "name", "") == "postgresql"

    def _among(self, column: Any, ids: Sequence[str]) -> ColumnElement[bool]:
        return copies.among(column, ids, postgres=self._postgres)

    # --- claim ---------------------------------------------------------------------------

    def claim(self, size: int) -> Batch:
        """Claim the job's next `size` todo items; the copies of the deliveries it won."""
        if self._postgres:
            return rows_pg.retrying(lambda: self._claim_pg(size))
        return self._claim_portable(size)

    def _claim_pg(self, size: int) -> Batch:
        now = utcnow()
        with self._sessionmaker() as session, session.begin():
            picked = rows_pg.pick(session, self.job_id, size)
            if not picked:
                return Batch(picked=0)
            rows = rows_pg.claim(session, self.job_id, picked, now)
            won = {r.delivery_id for r in rows}
            lost = [p.delivery_id for p in picked if p.delivery_id not in won]
            if lost:  # no longer dead, or another job claimed it first
                rows_pg.skip(session, self.job_id, lost, SKIPPED_ERROR)
        batch = Batch(picked=len(picked), last_seq=max(p.seq for p in picked), skipped=len(lost))
        for r in rows:
            batch.stamps[r.delivery_id] = now
            if r.event_id is None:
                batch.missing.append(r.delivery_id)
            else:
                batch.rows.append(
                    (
                        r.delivery_id,
                        r.subscription_id,
                        r.tenant_id,
                        r.event_id,
                        r.type,
                        r.operation,
                        r.timestamp,
                        r.data,
                        r.traceparent,
                    )
                )
        return batch

    def _claim_portable(self, size: int) -> Batch:
        now = utcnow()
        item = ReplayItem.__table__.c
        base = (
            select(item.base_replay_count)
            .where(item.job_id == self.job_id, item.delivery_id == Delivery.id)
            .scalar_subquery()
        )
        with self._sessionmaker() as session, session.begin():
            picked = session.execute(
                select(ReplayItem.delivery_id, ReplayItem.seq)
                .where(ReplayItem.job_id == self.job_id, ReplayItem.state == ReplayItemStatus.TODO)
                .order_by(ReplayItem.seq)
                .limit(size)
            ).all()
            ids = [p.delivery_id for p in picked]
            if not ids:
                return Batch(picked=0)
            session.execute(
                update(ReplayItem)
                .where(
                    ReplayItem.job_id == self.job_id,
                    self._among(ReplayItem.delivery_id, ids),
                    ReplayItem.state == ReplayItemStatus.TODO,
                )
                .values(state=ReplayItemStatus.CLAIMED, claimed_at=now)
                .execution_options(synchronize_session=False)
            )
            session.execute(
                update(Delivery)
                .where(
                    self._among(Delivery.id, ids),
                    *on_their_days(Delivery.day, ids),
                    Delivery.status == DeliveryStatus.DEAD,
                    Delivery.replay_count == base,
                )
                .values(replay_count=Delivery.replay_count + 1, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            won = set(
                session.scalars(
                    select(Delivery.id).where(
                        self._among(Delivery.id, ids),
                        *on_their_days(Delivery.day, ids),
                        Delivery.updated_at == now,
                    )
                )
            )
            lost = [i for i in ids if i not in won]
            if lost:  # no longer dead, or another job claimed it first
                self._set_items(session, lost, ReplayItemStatus.SKIPPED, SKIPPED_ERROR)
                self._count(session, skipped=len(lost))
            claimed = [i for i in ids if i in won]
            rows, missing = self._copy_rows(session, claimed)
        return Batch(
            picked=len(ids),
            last_seq=max(p.seq for p in picked),
            stamps=dict.fromkeys(claimed, now),
            rows=rows,
            missing=missing,
            skipped=len(lost),
        )

    def reclaim(self, size: int, after_seq: int) -> Batch:
        """The next claimed items (past `after_seq`) of a runner that died: copies of those
        still untouched since their claim; the ones that moved on are `sent` already."""
        with self._sessionmaker() as session, session.begin():
            items = session.execute(
                select(ReplayItem.delivery_id, ReplayItem.seq, ReplayItem.claimed_at)
                .where(
                    ReplayItem.job_id == self.job_id,
                    ReplayItem.state == ReplayItemStatus.CLAIMED,
                    ReplayItem.seq > after_seq,
                )
                .order_by(ReplayItem.seq)
                .limit(size)
            ).all()
            if not items:
                return Batch(picked=0)
            ids = [item.delivery_id for item in items]
            # Read apart from the items, so that the ids' days reach the query (one partition).
            still_dead = dict(
                session.execute(
                    select(Delivery.id, Delivery.updated_at).where(
                        self._among(Delivery.id, ids),
                        *on_their_days(Delivery.day, ids),
                        Delivery.status == DeliveryStatus.DEAD,
                    )
                )
                .tuples()
                .all()
            )
            untouched = {
                item.delivery_id: item.claimed_at
                for item in items
                if item.delivery_id in still_dead
                and still_dead[item.delivery_id] == item.claimed_at
            }
            moved = [i for i in ids if i not in untouched]
            if moved:  # its copy was published, and a dispatcher (or the mark) took it
                self._set_items(session, moved, ReplayItemStatus.SENT)
                self._count(session, done=len(moved))
            copy_rows, missing = self._copy_rows(session, list(untouched))
        return Batch(
            picked=len(items),
            last_seq=max(item.seq for item in items),
            stamps=untouched,
            rows=copy_rows,
            missing=missing,
            done=len(moved),
        )

    def _copy_rows(self, session: Session, ids: list[str]) -> tuple[list[CopyRow], list[str]]:
        if not ids:
            return [], []
        rows = session.execute(
            select(
                Delivery.id,
                Delivery.subscription_id,
                EventRow.tenant_id,
                EventRow.id,
                EventRow.type,
                EventRow.operation,
                EventRow.timestamp,
                cast(EventRow.data, Text),
                EventRow.traceparent,
            )
            .join(
                EventRow,
                (EventRow.tenant_id == Delivery.tenant_id) & (EventRow.id == Delivery.event_id),
            )
            .where(self._among(Delivery.id, ids), *_on_their_days_with_events(ids))
        ).tuples()
        found: list[CopyRow] = list(rows)
        have = {row[0] for row in found}
        return found, [i for i in ids if i not in have]

    # --- mark ----------------------------------------------------------------------------

    def mark(self, batch: Batch) -> ReplayJob:
        """After the confirmed publish: reopen the deliveries, settle the items, count and
        heartbeat the job. Returns the job's counts (a detached row, for progress)."""
        sent = batch.sent()
        if self._postgres:
            return rows_pg.retrying(lambda: self._mark_pg(batch, sent))
        return self._mark_portable(batch, sent)

    def _mark_pg(self, batch: Batch, sent: list[str]) -> ReplayJob:
        stamps = [batch.stamps[i] for i in sent]
        with self._sessionmaker() as session, session.begin():
            row = rows_pg.mark(
                session, self.job_id, utcnow(), sent, stamps, batch.missing, MISSING_ERROR
            )
        return ReplayJob(
            id=row.id,
            state=row.state,
            total=row.total,
            done=row.done,
            failed=row.failed,
            skipped=row.skipped,
        )

    def _mark_portable(self, batch: Batch, sent: list[str]) -> ReplayJob:
        now = utcnow()
        with self._sessionmaker() as session, session.begin():
            by_stamp: dict[datetime, list[str]] = {}
            for delivery_id in sent:  # one stamp per claim batch; resumed claims differ
                by_stamp.setdefault(batch.stamps[delivery_id], []).append(delivery_id)
            for stamp, ids in by_stamp.items():
                session.execute(
                    update(Delivery)
                    .where(
                        self._among(Delivery.id, ids),
                        *on_their_days(Delivery.day, ids),
                        Delivery.status == DeliveryStatus.DEAD,
                        Delivery.updated_at == stamp,
                    )
                    .values(
                        status=DeliveryStatus.PENDING,
                        attempts=0,
                        dead_reason=None,
                        finished_at=None,
                        next_attempt_at=now,
                        updated_at=now,
                    )
                    .execution_options(synchronize_session=False)
                )
            if sent:
                self._set_items(session, sent, ReplayItemStatus.SENT)
            if batch.missing:
                self._set_items(session, batch.missing, ReplayItemStatus.FAILED, MISSING_ERROR)
            self._count(session, done=len(sent), failed=len(batch.missing))
            job = session.get(ReplayJob, self.job_id)
            assert job is not None
            job.heartbeat_at = job.updated_at = now
        return job

    def _set_items(
        self, session: Session, ids: Sequence[str], state: str, error: str | None = None
    ) -> None:
        session.execute(
            update(ReplayItem)
            .where(ReplayItem.job_id == self.job_id, self._among(ReplayItem.delivery_id, ids))
            .values(state=state, error=error)
            .execution_options(synchronize_session=False)
        )

    def _count(self, session: Session, *, done: int = 0, failed: int = 0, skipped: int = 0) -> None:
        session.execute(
            update(ReplayJob)
            .where(ReplayJob.id == self.job_id)
            .values(
                done=ReplayJob.done + done,
                failed=ReplayJob.failed + failed,
                skipped=ReplayJob.skipped + skipped,
            )
            .execution_options(synchronize_session=False)
        )


def _on_their_days_with_events(ids: Sequence[str]) -> list[ColumnElement[bool]]:
    """The deliveries' and their events' days, as the PostgreSQL claim reads them: an event
    lives on its deliveries' day (`common.db.days`). Nothing for ids without time."""
    on_days = on_their_days(Delivery.day, ids)
    if not on_days:
        return []
    return [*on_days, EventRow.day == Delivery.day, *on_their_days(EventRow.day, ids)]
