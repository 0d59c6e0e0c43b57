"""Who runs a replay job: a lease with a heartbeat, and a holder id a successor can check.

A job is run by one process at a time. A runner's heartbeat older than the lease frees the
job for another; on the same host, a holder whose process no longer exists (kill -9) frees
it at once, so `hookline replay start --resume` does not have to wait the lease out.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import ReplayJob
from common.db.session import rowcount
from common.db.statuses import ReplayJobStatus
from common.wire import new_id, utcnow
from dispatcher.replay import jobs
from dispatcher.replay.jobs import LEASE_S

log = logging.getLogger(__name__)


def runner_id() -> str:
    """`host:pid:random`, so a runner on the same host can tell that a holder was killed."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{new_id('run')[-8:]}"


def on_this_host(holder: str) -> bool:
    return holder.partition(":")[0] == socket.gethostname()[:30]


def runner_gone(holder: str) -> bool:
    """Whether `holder` ran on this host in a process that no longer exists."""
    pid_text = holder.partition(":")[2].partition(":")[0]
    if not on_this_host(holder) or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class JobBusy(Exception):
    """Another runner holds the job (its heartbeat is fresh), or the job is finished."""


class LeaseLost(JobBusy):
    """Another runner took the job over while this one ran (its heartbeat had lapsed)."""


def take(
    sessions: sessionmaker[Session], job_id: str, runner: str, resumed_by: str | None
) -> ReplayJob:
    """Take the job's lease for `runner` (`JobBusy` if another holds it or the job is over);
    the job as taken. `resumed_by`: who resumed it, audited in the lease's transaction.

    A commit whose answer is lost may have landed: the job would then stay held by a runner
    that never runs it until the lease lapsed. So on a database error the holder is read
    back once, and a lease that is this runner's is taken as it stands (its audit entry,
    if any, came with it)."""
    try:
        return _take(sessions, job_id, runner, resumed_by)
    except SQLAlchemyError:
        try:
            with sessions() as session:
                job = session.get(ReplayJob, job_id)
        except SQLAlchemyError:
            job = None
        if job is None or job.runner != runner:
            raise
        log.warning(
            "a replay job's lease was taken though its commit failed", extra={"job_id": job_id}
        )
        return job


def _take(
    sessions: sessionmaker[Session], job_id: str, runner: str, resumed_by: str | None
) -> ReplayJob:
    now = utcnow()
    stale = datetime.fromtimestamp(now.timestamp() - LEASE_S, now.tzinfo)
    with sessions() as session, session.begin():
        job = session.get(ReplayJob, job_id)
        if job is None:
            raise JobBusy(f"no replay job {job_id}")
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
                    ReplayJob.id == job_id,
                    ReplayJob.state.in_((ReplayJobStatus.RUNNING, ReplayJobStatus.FAILED)),
                    free,
                )
                .values(
                    runner=runner,
                    heartbeat_at=now,
                    updated_at=now,
                    error=None,
                    state=ReplayJobStatus.RUNNING,
                )
                .execution_options(synchronize_session=False)
            )
        )
        was = job.state
        session.refresh(job)
        if taken and resumed_by is not None:
            # In the lease's transaction: one entry per takeover, none for a take that
            # failed or rolled back. The runner ids say which process took it from which.
            jobs.audit(
                session, actor=resumed_by, tenant_id=job.tenant_id, action="replay.resume",
                resource_type="replay_job", resource_id=job.id,
                details={"was": was, "done": job.done, "total": job.total,
                         "runner": runner, "previous_runner": holder},
            )  # fmt: skip
    if not taken:
        if job.state != ReplayJobStatus.RUNNING:
            raise JobBusy(f"replay job {job_id} is {job.state}")
        raise JobBusy(f"replay job {job_id} is being run by another process")
    return job
