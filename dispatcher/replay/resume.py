"""Resuming replay jobs whose runner died, without an operator: a small loop that every
dispatcher process runs beside its delivery work.

A job is an orphan when it is `running`, a runner took it, and that runner is gone: it ran
on this host in a process that no longer exists (kill -9), or on another host and its
heartbeat is older than the lease, or it was a resumer that stopped (a dispatcher shut
down mid-job). A runner on this host whose process still exists is never taken over, even
with a late heartbeat (a loaded machine): only another host has to trust the lease. The
loop looks for orphans every `RESUME_EVERY_S` and runs each to its end with a `Runner`,
whose lease makes this safe: every dispatcher runs the loop, the lease's conditional UPDATE
lets exactly one of them take a job, and the others see `JobBusy`. A job whose runner was
stopped on purpose (SIGTERM or Ctrl-C to `hookline replay start`, which clears the
runner) is not an orphan: it waits for `--resume` or a cancel.

Each takeover is audited (`replay.resume`, actor `dispatcher`) in the transaction that takes
the lease, as a resume through the API or the CLI is: a round that does not take the job
(another dispatcher did, or its take was rolled back and is retried next round) writes
nothing, so a retried resume leaves one entry.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from common.background import BackgroundThread
from common.db.models import ReplayJob
from common.db.statuses import ReplayJobStatus
from common.metrics import Metrics
from common.transport import Transport, topology
from common.wire import utcnow
from dispatcher.replay.jobs import LEASE_S
from dispatcher.replay.lease import JobBusy, on_this_host, runner_gone
from dispatcher.replay.runner import Runner

log = logging.getLogger(__name__)

RESUME_EVERY_S = 5.0
ACTOR = "dispatcher"  # the audit log's actor of a resume no operator asked for


def orphans(session: Session) -> list[str]:
    """Ids of the running jobs whose runner is gone, oldest first."""
    stale = utcnow() - timedelta(seconds=LEASE_S)
    rows = session.execute(
        select(ReplayJob.id, ReplayJob.runner, ReplayJob.heartbeat_at)
        .where(ReplayJob.state == ReplayJobStatus.RUNNING, ReplayJob.runner.is_not(None))
        .order_by(ReplayJob.created_at)
    ).all()
    return [
        r.id
        for r in rows
        if r.heartbeat_at is None
        or runner_gone(r.runner)
        or (not on_this_host(r.runner) and r.heartbeat_at < stale)
    ]


class Resumer(BackgroundThread):
    """Finds orphaned jobs and runs them, one at a time, on its own thread until stopped."""

    def __init__(
        self,
        open_transport: Callable[[], Transport],
        sessionmaker: sessionmaker[Session],
        *,
        retry_tiers_s: Sequence[float],
        publish_timeout_s: float = 30.0,
        metrics: Metrics | None = None,
        every_s: float = RESUME_EVERY_S,
        shards: int = topology.DEFAULT_SHARDS,
        share_per_s: int = topology.DEFAULT_SHARE_PER_S,
    ) -> None:
        super().__init__("replay-resume")
        self._open_transport = open_transport  # a connection of its own, opened when needed
        self._sessionmaker = sessionmaker
        self._retry_tiers_s = tuple(retry_tiers_s)
        self._publish_timeout_s = publish_timeout_s
        self._metrics = metrics
        self._every_s = every_s
        self._shards = shards
        self._share_per_s = share_per_s

    def run(self) -> None:
        while not self.stopping.wait(self._every_s):
            try:
                self.resume_once(self.stopping)
            except Exception:  # the database or broker is away: try again next round
                log.warning("replay resume round failed", exc_info=True)

    def resume_once(self, stop: threading.Event) -> list[str]:
        """Run every orphan found now to its end (or until `stop`); the ids it ran."""
        with self._sessionmaker() as session:
            found = orphans(session)
        ran = []
        for job_id in found:
            if stop.is_set():
                break
            transport = self._open_transport()
            try:
                transport.declare(topology.build(self._retry_tiers_s, self._shards))
                runner = Runner(
                    transport,
                    self._sessionmaker,
                    job_id,
                    publish_timeout_s=self._publish_timeout_s,
                    metrics=self._metrics,
                    keep_claim_on_stop=True,
                    shards=self._shards,
                    share_per_s=self._share_per_s,
                )
                runner.take(resumed_by=ACTOR)  # the lease and its audit entry, together
                log.info("resuming replay job", extra={"job_id": job_id})
                job = runner.run(stop)
            except JobBusy:
                continue  # another process took it first
            finally:
                transport.close()
            ran.append(job_id)
            log.info("resumed replay job", extra={"job_id": job_id, "state": job.state})
        return ran
