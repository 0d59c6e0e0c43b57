"""Running a replay job: claim a batch, publish it confirmed, then mark it — until done.

Why this order sends each delivery once per replay request and loses none:
- **Claim** (one transaction): the job's items go `todo → claimed` only where they are
  still `todo` (a second runner of the same job gets nothing), and the delivery's
  `replay_count` goes up by one only where the delivery is still dead *with the count the
  job saw at its start*. Another job on an overlapping set that claimed it first already
  bumped the count, so this job skips it. The claim stamps `updated_at` with the claim time.
- **Publish**, confirmed: one `replay=True` copy per claimed delivery, attempt 1, same
  delivery id and event (so the same `webhook-id`). The dispatcher's idempotency re-check
  never drops a replay copy, and its settle lets a replay reopen a final row.
- **Mark** (one transaction): the delivery becomes `pending` for its fresh attempt cycle —
  only where it still carries the claim stamp, so a dispatcher that settled the copy first
  is not overwritten — and the items become `sent`.
A runner killed between claim and mark leaves `claimed` items. Resuming resolves them last:
a delivery whose row moved on since its claim was published; one still untouched is
published again (at-least-once: it is re-sent only if its first copy was still queued).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import (
    DEAD,
    ITEM_CLAIMED,
    ITEM_FAILED,
    ITEM_SENT,
    ITEM_SKIPPED,
    ITEM_TODO,
    JOB_CANCELLED,
    JOB_CANCELLING,
    JOB_COMPLETED,
    JOB_FAILED,
    JOB_RUNNING,
    PENDING,
    Delivery,
    ReplayItem,
    ReplayJob,
)
from common.metrics import Metrics
from common.transport import Outgoing, Transport
from common.wire import utcnow
from dispatcher import replaycopy, replayjobs
from dispatcher.replayjobs import LEASE_S
from dispatcher.replaylease import JobBusy, rowcount, runner_gone, runner_id

log = logging.getLogger(__name__)

BATCH_SIZE = 2000
H_REPLAY_JOB = replaycopy.H_REPLAY_JOB
# A copy published just before a kill may still be on its way to a dispatcher: give it
# this long to show up in its row before an untouched claim is published again.
AMBIGUOUS_GRACE_S = 5.0


class Runner:
    """Runs one job to its end in the calling thread. `on_progress(job)` after each batch."""

    def __init__(
        self,
        transport: Transport,
        sessionmaker: sessionmaker[Session],
        job_id: str,
        *,
        publish_timeout_s: float = 30.0,
        batch_size: int = BATCH_SIZE,
        on_progress: Callable[[ReplayJob], None] = lambda _job: None,
        metrics: Metrics | None = None,
    ) -> None:
        self._transport = transport
        self._metrics = metrics
        self._sessionmaker = sessionmaker
        self.job_id = job_id
        self._publish_timeout_s = publish_timeout_s
        self._batch_size = batch_size
        self._on_progress = on_progress
        self._runner_id = runner_id()
        self._started = time.monotonic()
        self._left = 0  # items not gone through yet, for the remaining-messages gauge
        self._counting = threading.Lock()  # counts come from both the claiming and sending thread
        bind = sessionmaker.kw.get("bind")
        self._postgres = getattr(getattr(bind, "dialect", None), "name", "") == "postgresql"

    def _among(self, column: Any, ids: Sequence[str]) -> ColumnElement[bool]:
        return replaycopy.among(column, ids, postgres=self._postgres)

    def run(self, stop: threading.Event | None = None) -> ReplayJob:
        """Take the lease, walk the items, settle the job's state; returns the final row."""
        stop = stop or threading.Event()
        rate, left = self._acquire()
        if self._metrics is not None:
            self._metrics.replay_jobs_running.inc()
            self._metrics.replay_remaining.inc(left)
        try:
            self._walk(ITEM_TODO, rate, stop)
            if not stop.is_set() and not self._cancelling():
                self._resolve_ambiguous(stop)
        except Exception as exc:
            log.warning("replay job failed", exc_info=True, extra={"job_id": self.job_id})
            return self._finish(JOB_FAILED, f"{type(exc).__name__}: {exc}"[:500])
        finally:
            if self._metrics is not None:
                self._metrics.replay_jobs_running.dec()
                self._metrics.replay_remaining.dec(self._left)
        if self._cancelling():
            return self._finish(JOB_CANCELLED)
        if stop.is_set():
            return self._release()
        return self._finish(JOB_COMPLETED)

    def _acquire(self) -> tuple[float | None, int]:
        """Take the job's lease: its rate, and how many items it still has to go through."""
        now = utcnow()
        stale = datetime.fromtimestamp(now.timestamp() - LEASE_S, now.tzinfo)
        with self._sessionmaker() as session, session.begin():
            job = session.get(ReplayJob, self.job_id)
            if job is None:
                raise JobBusy(f"no replay job {self.job_id}")
            holder = job.runner
            free = (
                (ReplayJob.runner.is_(None))
                | (ReplayJob.heartbeat_at.is_(None))
                | (ReplayJob.heartbeat_at < stale)
            )
            if holder is not None and runner_gone(holder):
                free = free | (ReplayJob.runner == holder)  # killed on this host: take over
            taken = rowcount(
                session.execute(
                    update(ReplayJob)
                    .where(
                        ReplayJob.id == self.job_id,
                        ReplayJob.state.in_((JOB_RUNNING, JOB_FAILED)),
                        free,
                    )
                    .values(
                        runner=self._runner_id,
                        heartbeat_at=now,
                        updated_at=now,
                        error=None,
                        state=JOB_RUNNING,
                    )
                    .execution_options(synchronize_session=False)
                )
            )
            session.refresh(job)
        if not taken:
            if job.state != JOB_RUNNING:
                raise JobBusy(f"replay job {self.job_id} is {job.state}")
            raise JobBusy(f"replay job {self.job_id} is being run by another process")
        self._left = max(0, job.total - job.done - job.failed - job.skipped)
        return job.rate_per_s, self._left

    def _cancelling(self) -> bool:
        with self._sessionmaker() as session:
            return session.scalar(select(ReplayJob.state).where(ReplayJob.id == self.job_id)) in (
                JOB_CANCELLING,
                JOB_CANCELLED,
            )

    def _walk(self, state: str, rate: float | None, stop: threading.Event) -> None:
        """Claim and prepare batch k+1 while batch k is published and marked on a second
        thread (one batch in flight at most). A failure surfaces at the next hand-over; a
        batch claimed meanwhile stays `claimed`, and a resume re-checks it like any other."""
        size = self._batch_size if not rate else max(1, min(self._batch_size, int(rate)))
        in_flight: Future[None] | None = None
        with ThreadPoolExecutor(1, thread_name_prefix="replay-publish") as sending:
            try:
                while not stop.is_set() and not self._cancelling():
                    began = time.monotonic()
                    if state != ITEM_TODO and in_flight is not None:
                        # Resolving claims changes their state only once sent: finish the
                        # batch first, or the next select would see the same claims again.
                        in_flight.result()
                        in_flight = None
                    with self._sessionmaker() as session:
                        ids = list(
                            session.scalars(
                                select(ReplayItem.delivery_id)
                                .where(ReplayItem.job_id == self.job_id, ReplayItem.state == state)
                                .order_by(ReplayItem.seq)
                                .limit(size)
                            )
                        )
                    if not ids:
                        return
                    claimed = self._claim(ids) if state == ITEM_TODO else self._reclaim(ids)
                    prepared = self._messages(list(claimed)) if claimed else ([], [])
                    if in_flight is not None:
                        in_flight.result()
                    in_flight = sending.submit(self._send, claimed, *prepared)
                    if rate:
                        # Paced per batch: a recovering endpoint sees at most `rate` copies/s.
                        stop.wait(max(0.0, len(ids) / rate - (time.monotonic() - began)))
            finally:
                if in_flight is not None:
                    in_flight.result()

    def _claim(self, ids: Sequence[str]) -> dict[str, datetime]:
        """Claim these todo items; the delivery ids this job may now publish, with stamps."""
        now = utcnow()
        item = ReplayItem.__table__.c
        base = (
            select(item.base_replay_count)
            .where(item.job_id == self.job_id, item.delivery_id == Delivery.id)
            .scalar_subquery()
        )
        with self._sessionmaker() as session, session.begin():
            session.execute(
                update(ReplayItem)
                .where(
                    ReplayItem.job_id == self.job_id,
                    self._among(ReplayItem.delivery_id, ids),
                    ReplayItem.state == ITEM_TODO,
                )
                .values(state=ITEM_CLAIMED, claimed_at=now)
                .execution_options(synchronize_session=False)
            )
            session.execute(
                update(Delivery)
                .where(
                    self._among(Delivery.id, ids),
                    Delivery.status == DEAD,
                    Delivery.replay_count == base,
                )
                .values(replay_count=Delivery.replay_count + 1, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            won = set(
                session.scalars(
                    select(Delivery.id).where(
                        self._among(Delivery.id, ids), Delivery.updated_at == now
                    )
                )
            )
            lost = [i for i in ids if i not in won]
            if lost:  # no longer dead, or another job claimed it first
                self._set_items(
                    session, lost, ITEM_SKIPPED, "no longer dead, or replayed by another job"
                )
        return {delivery_id: now for delivery_id in won}

    def _reclaim(self, ids: Sequence[str]) -> dict[str, datetime]:
        """Claimed items of a runner that died: which are still untouched since their claim."""
        with self._sessionmaker() as session, session.begin():
            rows = session.execute(
                select(
                    ReplayItem.delivery_id,
                    ReplayItem.claimed_at,
                    Delivery.status,
                    Delivery.updated_at,
                )
                .join(Delivery, Delivery.id == ReplayItem.delivery_id, isouter=True)
                .where(ReplayItem.job_id == self.job_id, self._among(ReplayItem.delivery_id, ids))
            ).all()
            untouched = {
                r.delivery_id: r.claimed_at
                for r in rows
                if r.status == DEAD and r.updated_at == r.claimed_at
            }
            moved = [r.delivery_id for r in rows if r.delivery_id not in untouched]
            if moved:  # its copy was published, and a dispatcher (or the mark) took it
                self._set_items(session, moved, ITEM_SENT)
                self._count(session, done=len(moved))
        return untouched

    def _send(
        self, claimed: dict[str, datetime], sendable: list[Outgoing], missing: list[str]
    ) -> None:
        """Publish a prepared batch, confirmed, then mark it; then a heartbeat and progress."""
        if sendable:
            self._transport.publish(sendable, timeout_s=self._publish_timeout_s)
        if claimed:
            self._mark([m.message_id for m in sendable if m.message_id], claimed, missing)
        with self._sessionmaker() as session, session.begin():
            job = session.get(ReplayJob, self.job_id)
            assert job is not None
            job.heartbeat_at = job.updated_at = utcnow()
        self._on_progress(job)

    def _messages(self, ids: list[str]) -> tuple[list[Outgoing], list[str]]:
        with self._sessionmaker() as session:
            return replaycopy.copies(session, ids, self.job_id, self._among(Delivery.id, ids))

    def _mark(self, sent: list[str], claimed: dict[str, datetime], missing: list[str]) -> None:
        now = utcnow()
        with self._sessionmaker() as session, session.begin():
            by_stamp: dict[datetime, list[str]] = {}
            for delivery_id in sent:  # one stamp per claim batch; resumed claims differ
                by_stamp.setdefault(claimed[delivery_id], []).append(delivery_id)
            for stamp, ids in by_stamp.items():
                session.execute(
                    update(Delivery)
                    .where(
                        self._among(Delivery.id, ids),
                        Delivery.status == DEAD,
                        Delivery.updated_at == stamp,
                    )
                    .values(
                        status=PENDING,
                        attempts=0,
                        dead_reason=None,
                        finished_at=None,
                        next_attempt_at=now,
                        updated_at=now,
                    )
                    .execution_options(synchronize_session=False)
                )
            self._set_items(session, sent, ITEM_SENT)
            if missing:
                self._set_items(session, missing, ITEM_FAILED, "its event no longer exists")
            self._count(session, done=len(sent), failed=len(missing))

    def _set_items(
        self, session: Session, ids: Sequence[str], state: str, error: str | None = None
    ) -> None:
        session.execute(
            update(ReplayItem)
            .where(ReplayItem.job_id == self.job_id, self._among(ReplayItem.delivery_id, ids))
            .values(state=state, error=error)
            .execution_options(synchronize_session=False)
        )
        if state == ITEM_SKIPPED:
            self._count(session, skipped=len(ids))

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
        with self._counting:
            self._left -= done + failed + skipped
        if self._metrics is not None:
            m = self._metrics
            for result, n in (("published", done), ("failed", failed), ("skipped", skipped)):
                m.replay_messages.labels(result=result).inc(n)
            m.deliveries_enqueued.labels(origin="replay").inc(done)
            m.replay_remaining.dec(done + failed + skipped)

    def _resolve_ambiguous(self, stop: threading.Event) -> None:
        with self._sessionmaker() as session:
            left = session.scalar(
                select(ReplayItem.delivery_id)
                .where(ReplayItem.job_id == self.job_id, ReplayItem.state == ITEM_CLAIMED)
                .limit(1)
            )
        if left is None:
            return
        stop.wait(max(0.0, AMBIGUOUS_GRACE_S - (time.monotonic() - self._started)))
        self._walk(ITEM_CLAIMED, None, stop)

    def _release(self) -> ReplayJob:
        """Stopped from outside (SIGTERM): the job stays `running`, for a resume."""
        with self._sessionmaker() as session, session.begin():
            job = session.get(ReplayJob, self.job_id)
            assert job is not None
            job.runner = None
            job.heartbeat_at = None
        return job

    def _finish(self, state: str, error: str | None = None) -> ReplayJob:
        now = utcnow()
        with self._sessionmaker() as session, session.begin():
            job = session.get(ReplayJob, self.job_id)
            assert job is not None
            job.state, job.error, job.updated_at = state, error, now
            job.runner, job.heartbeat_at = None, None
            job.finished_at = now if state != JOB_FAILED else None
            replayjobs.audit(
                session,
                actor=job.actor,
                tenant_id=job.tenant_id,
                action=f"replay.{state}",
                resource_type="replay_job",
                resource_id=job.id,
                details={
                    "total": job.total,
                    "done": job.done,
                    "failed": job.failed,
                    "skipped": job.skipped,
                    "error": error,
                },
            )
        log.info(
            "replay job finished", extra={"job_id": self.job_id, "state": state, "done": job.done}
        )
        return job


__all__ = ["JOB_CANCELLING", "JobBusy", "Runner"]
