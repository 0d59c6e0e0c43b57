"""Running a replay job: claim a batch, publish it confirmed, then mark it — until done.

The row states a batch goes through, and why that order sends each delivery once per
replay request and loses none, are in `batch.py`. This module is the runner around
them: the job's lease, the pipeline, pacing, cancelling, and the job's final state.

The pipeline has three stages on three threads, one batch in each at most: the calling
thread claims batch k+2 while a publishing thread publishes batch k+1 (confirmed) and a
marking thread marks batch k. A mark starts only once its own batch's publish was
confirmed; a failed publish is never marked, and surfaces at the next hand-over. Batches
claimed meanwhile stay `claimed`, and a resume re-checks them like any other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import ReplayItem, ReplayJob
from common.db.shares import Shares
from common.db.statuses import ReplayItemStatus, ReplayJobStatus
from common.metrics import Metrics
from common.transport import Transport
from common.transport import topology as tp
from common.transport.spill import Spill
from common.wire import utcnow
from dispatcher.replay import copies, jobs, lease
from dispatcher.replay.batch import Batch
from dispatcher.replay.lease import JobBusy, LeaseLost, runner_id
from dispatcher.replay.rows import Batches

log = logging.getLogger(__name__)

BATCH_SIZE = 5000
H_REPLAY_JOB = copies.H_REPLAY_JOB
# A copy published just before a kill may still be on its way to a dispatcher: give it
# this long to show up in its row before an untouched claim is published again.
AMBIGUOUS_GRACE_S = 5.0
# Marks may trail the publishes by this many batches before the claiming thread waits.
MARKS_BEHIND = 2


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
        keep_claim_on_stop: bool = False,
        shards: int = tp.DEFAULT_SHARDS,
        share_per_s: int = tp.DEFAULT_SHARE_PER_S,
    ) -> None:
        self._transport = transport
        # Copies go to their tenants' shards, by the router's rule (architecture §3).
        self._spill = Spill(shards, share_per_s, Shares(sessionmaker))
        self._keep_claim_on_stop = keep_claim_on_stop
        self._metrics = metrics
        self._sessionmaker = sessionmaker
        self.job_id = job_id
        self._batches = Batches(sessionmaker, job_id)
        self._publish_timeout_s = publish_timeout_s
        self._batch_size = batch_size
        self._on_progress = on_progress
        self._runner_id = runner_id()
        self._started = time.monotonic()
        self._left = 0  # items not gone through yet, for the remaining-messages gauge
        self._counting = threading.Lock()  # counts come from the claiming and marking threads
        self._held: ReplayJob | None = None  # the job as this runner took its lease

    def take(self, *, resumed_by: str | None = None) -> ReplayJob:
        """Take the job's lease now, `JobBusy` if another runner holds it or the job is
        over; `run` then carries on under it. So a caller can answer at once whether a
        resume starts, and run it elsewhere (the API: on a thread of its own). `resumed_by`
        is who resumed it: audited with the lease, so only a resume that took it counts."""
        if self._held is None:
            job = lease.take(self._sessionmaker, self.job_id, self._runner_id, resumed_by)
            self._left = max(0, job.total - job.done - job.failed - job.skipped)
            self._held = job
        return self._held

    def run(self, stop: threading.Event | None = None) -> ReplayJob:
        """Take the lease (unless `take` did), walk the items, settle the job's state;
        returns the final row."""
        stop = stop or threading.Event()
        rate = self.take().rate_per_s
        if self._metrics is not None:
            self._metrics.replay_jobs_running.inc()
            self._metrics.replay_remaining.inc(self._left)
        try:
            self._walk(ReplayItemStatus.TODO, rate, stop)
            if not stop.is_set() and not self._cancelling():
                self._resolve_ambiguous(stop)
            cancelling = self._cancelling()
        except LeaseLost:
            # Its new runner carries on (and re-checks what this one claimed): write nothing.
            log.warning("replay job taken over by another runner", extra={"job_id": self.job_id})
            return self._current()
        except Exception as exc:
            log.warning("replay job failed", exc_info=True, extra={"job_id": self.job_id})
            return self._finish(ReplayJobStatus.FAILED, f"{type(exc).__name__}: {exc}"[:500])
        finally:
            if self._metrics is not None:
                self._metrics.replay_jobs_running.dec()
                self._metrics.replay_remaining.dec(self._left)
        if cancelling:
            return self._finish(ReplayJobStatus.CANCELLED)
        if stop.is_set():
            return self._release()
        return self._finish(ReplayJobStatus.COMPLETED)

    def _cancelling(self) -> bool:
        return self._state() in (ReplayJobStatus.CANCELLING, ReplayJobStatus.CANCELLED)

    def _state(self) -> str | None:
        """The job's state; `LeaseLost` once another runner holds it.

        Asked before every claim and every publish: a runner whose heartbeat lapsed (a
        stalled host) and whose job another host took over stops there, instead of sending
        what its successor will send too."""
        with self._sessionmaker() as session:
            row = session.execute(
                select(ReplayJob.state, ReplayJob.runner).where(ReplayJob.id == self.job_id)
            ).first()
        if row is None:
            return None
        if row.runner is not None and row.runner != self._runner_id:
            raise LeaseLost(f"replay job {self.job_id} is now run by {row.runner}")
        return str(row.state)

    def _current(self) -> ReplayJob:
        with self._sessionmaker() as session:
            job = session.get(ReplayJob, self.job_id)
            assert job is not None
            return job

    def _walk(self, state: str, rate: float | None, stop: threading.Event) -> None:
        """Claim, publish and mark the items in `state` (todo, or claimed on a resume)."""
        size = self._batch_size if not rate else max(1, min(self._batch_size, int(rate)))
        after_seq = 0
        published: Future[None] | None = None
        marks: deque[Future[None]] = deque()
        with (
            ThreadPoolExecutor(1, thread_name_prefix="replay-publish") as publishing,
            ThreadPoolExecutor(1, thread_name_prefix="replay-mark") as marking,
        ):
            try:
                while not stop.is_set() and not self._cancelling():
                    began = time.monotonic()
                    if state == ReplayItemStatus.TODO:
                        batch = self._batches.claim(size)
                    else:
                        batch = self._batches.reclaim(size, after_seq)
                    if not batch.picked:
                        break
                    after_seq = batch.last_seq
                    self._counted(done=batch.done, skipped=batch.skipped)
                    if published is not None:
                        published.result()  # one publish in flight; raises what it raised
                    published = publishing.submit(self._publish, batch)
                    marks.append(marking.submit(self._mark, published, batch))
                    while marks and (marks[0].done() or len(marks) > MARKS_BEHIND):
                        marks.popleft().result()
                    if rate:
                        # Paced per batch: a recovering endpoint sees at most `rate` copies/s.
                        stop.wait(max(0.0, len(batch.stamps) / rate - (time.monotonic() - began)))
            finally:
                # Whatever happened, nothing is left half-way: wait for every stage.
                wait([f for f in (published, *marks) if f is not None])
            for mark in marks:
                mark.result()

    def _publish(self, batch: Batch) -> None:
        if batch.rows:
            self._state()  # still this runner's job: its successor would send these too
            copies = batch.copies(self.job_id, self._spill)
            self._transport.publish(copies, timeout_s=self._publish_timeout_s)

    def _mark(self, published: Future[None], batch: Batch) -> None:
        """Mark a batch once (and only if) its publish was confirmed; then report progress."""
        published.result()
        job = self._batches.mark(batch)
        self._counted(done=len(batch.rows), failed=len(batch.missing))
        self._on_progress(job)

    def _counted(self, *, done: int = 0, failed: int = 0, skipped: int = 0) -> None:
        """Count in this process what the database already counted on the job row."""
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
                .where(
                    ReplayItem.job_id == self.job_id, ReplayItem.state == ReplayItemStatus.CLAIMED
                )
                .limit(1)
            )
        if left is None:
            return
        stop.wait(max(0.0, AMBIGUOUS_GRACE_S - (time.monotonic() - self._started)))
        self._walk(ReplayItemStatus.CLAIMED, None, stop)

    def _release(self) -> ReplayJob:
        """Stopped from outside (SIGTERM): the job stays `running`, for a resume. An operator's
        stop clears the runner, so the job waits for `--resume`; a resumer's stop (its
        dispatcher shuts down) keeps it, so the next resumer carries on."""
        with self._sessionmaker() as session, session.begin():
            job = session.get(ReplayJob, self.job_id)
            assert job is not None
            if not self._keep_claim_on_stop:
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
            job.finished_at = now if state != ReplayJobStatus.FAILED else None
            jobs.audit(
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


__all__ = ["JobBusy", "Runner"]
