"""Resuming orphaned replay jobs without an operator (`dispatcher.replay.resume`), on SQLite
and PostgreSQL with the in-memory broker: which jobs count as orphans, a resumed job
publishing each delivery once, and its one audit entry."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import AuditEntry, ReplayJob
from common.db.statuses import ReplayJobStatus
from common.transport import MemoryTransport
from common.transport import topology as tp
from common.wire import utcnow
from dispatcher.deadletters import DeadFilter
from dispatcher.replay import Runner
from dispatcher.replay import jobs as replayjobs
from dispatcher.replay import runner as replay
from dispatcher.replay.lease import runner_id
from dispatcher.replay.resume import ACTOR, Resumer, orphans
from tests import builders
from tests.dead_letters import dead_letter, published_copies


@pytest.fixture
def broker() -> MemoryTransport:
    memory = MemoryTransport()
    memory.declare(tp.build((1.0,)))
    return memory


@pytest.fixture
def no_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay, "AMBIGUOUS_GRACE_S", 0.0)


def dead_pid() -> int:
    """The pid of a process of this host that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def job_of(sessions: sessionmaker[Session], n: int) -> tuple[str, list[str]]:
    """A running job over `n` dead deliveries of a fresh tenant, and their ids."""
    with sessions() as session, session.begin():
        tenant = builders.tenant(session).id
        sub, _ = builders.subscription(session, tenant, "http://127.0.0.1:9/a")
        ids = [dead_letter(session, tenant, sub.id).id for _ in range(n)]
        job, _ = replayjobs.create(session, DeadFilter(subscription=sub.id), actor="t")
        return job.id, ids


def hold(sessions: sessionmaker[Session], job_id: str, **values: Any) -> None:
    with sessions() as session, session.begin():
        session.execute(update(ReplayJob).where(ReplayJob.id == job_id).values(**values))


def test_orphans_are_running_jobs_whose_runner_is_gone(sessions: sessionmaker[Session]) -> None:
    killed, _ = job_of(sessions, 1)
    lapsed, _ = job_of(sessions, 1)
    alive, _ = job_of(sessions, 1)
    late, _ = job_of(sessions, 1)  # alive on this host, heartbeat late: a loaded machine
    stopped, _ = job_of(sessions, 1)  # SIGTERM to `replay start`: the runner was cleared
    fresh, _ = job_of(sessions, 1)  # created, never taken
    finished, _ = job_of(sessions, 1)
    now = utcnow()
    host = socket.gethostname()[:30]
    hold(sessions, killed, runner=f"{host}:{dead_pid()}:run1", heartbeat_at=now)
    hold(sessions, lapsed, runner="elsewhere:1:run2", heartbeat_at=now - timedelta(minutes=5))
    hold(sessions, alive, runner=runner_id(), heartbeat_at=now)
    hold(sessions, late, runner=runner_id(), heartbeat_at=now - timedelta(minutes=5))
    hold(sessions, stopped, runner=None, heartbeat_at=None)
    hold(sessions, finished, state=ReplayJobStatus.COMPLETED, runner=f"{host}:{dead_pid()}:run3")

    with sessions() as session:
        found = orphans(session)

    assert set(found) == {killed, lapsed}
    assert {alive, late, stopped, fresh, finished}.isdisjoint(found)


def test_a_resumer_finishes_a_killed_job_and_publishes_each_delivery_once(
    sessions: sessionmaker[Session], broker: MemoryTransport, no_grace: None
) -> None:
    job_id, ids = job_of(sessions, 7)
    # A runner that got through one batch of three and was killed with the next claimed.
    stop = threading.Event()
    first = Runner(broker, sessions, job_id, batch_size=3, keep_claim_on_stop=True)
    first.take()
    batch = first._batches.claim(3)
    broker.publish(batch.copies(job_id, first._spill))
    first._batches.mark(batch)
    first._batches.claim(3)  # claimed, never published
    hold(sessions, job_id, runner=f"{socket.gethostname()[:30]}:{dead_pid()}:run9")

    ran = Resumer(lambda: broker, sessions, retry_tiers_s=(1.0,)).resume_once(stop)

    assert ran == [job_id]
    with sessions() as session:
        job = session.get(ReplayJob, job_id)
        assert job is not None
        assert (job.state, job.done, job.skipped, job.runner) == (
            ReplayJobStatus.COMPLETED,
            7,
            0,
            None,
        )
    assert sorted(c.delivery_id for c in published_copies(broker)) == sorted(ids)


def test_a_resumer_that_is_stopped_leaves_the_job_to_the_next_one(
    sessions: sessionmaker[Session], broker: MemoryTransport
) -> None:
    job_id, _ = job_of(sessions, 2)
    stop = threading.Event()
    stop.set()  # its dispatcher is shutting down

    job = Runner(broker, sessions, job_id, keep_claim_on_stop=True).run(stop)

    assert (
        job.state == ReplayJobStatus.RUNNING and job.runner is not None and job.heartbeat_at is None
    )
    with sessions() as session:
        assert orphans(session) == [job_id]


def resumes(sessions: sessionmaker[Session], job_id: str) -> list[AuditEntry]:
    with sessions() as session:
        query = select(AuditEntry).where(
            AuditEntry.action == "replay.resume", AuditEntry.resource_id == job_id
        )
        return list(session.scalars(query.order_by(AuditEntry.id)))


def killed(sessions: sessionmaker[Session], n: int) -> tuple[str, list[str], str]:
    """A job of `n` dead deliveries whose runner was killed before it began: the job, the
    delivery ids and the dead runner's id."""
    job_id, ids = job_of(sessions, n)
    holder = f"{socket.gethostname()[:30]}:{dead_pid()}:run7"
    hold(sessions, job_id, runner=holder, heartbeat_at=utcnow())
    return job_id, ids, holder


def test_a_job_a_dispatcher_resumed_is_in_the_audit_log_as_the_dispatchers(
    sessions: sessionmaker[Session], broker: MemoryTransport, no_grace: None
) -> None:
    job_id, ids, holder = killed(sessions, 3)

    ran = Resumer(lambda: broker, sessions, retry_tiers_s=(1.0,)).resume_once(threading.Event())

    assert ran == [job_id]
    (entry,) = resumes(sessions, job_id)
    with sessions() as session:
        tenant = session.get_one(ReplayJob, job_id).tenant_id
    assert (entry.actor, entry.tenant_id, entry.resource_type) == (ACTOR, tenant, "replay_job")
    assert (entry.details["was"], entry.details["previous_runner"]) == ("running", holder)
    assert entry.details["runner"].startswith(f"{socket.gethostname()[:30]}:")
    assert entry.details["runner"] != holder
    assert sorted(c.delivery_id for c in published_copies(broker)) == sorted(ids)


def test_a_resume_retried_after_its_take_failed_is_audited_once(
    sessions: sessionmaker[Session], broker: MemoryTransport, no_grace: None
) -> None:
    job_id, ids, holder = killed(sessions, 2)
    failures: list[Session] = []

    def database_goes_away(session: Session) -> None:
        # Once, at the commit of the transaction that takes the lease (and adds the entry).
        taking = any(isinstance(o, AuditEntry) and o.action == "replay.resume" for o in session.new)
        if taking and not failures:
            failures.append(session)
            raise RuntimeError("the connection to the database was lost")

    event.listen(sessions, "before_commit", database_goes_away)
    try:
        resumer = Resumer(lambda: broker, sessions, retry_tiers_s=(1.0,))
        with pytest.raises(RuntimeError, match="connection to the database"):
            resumer.resume_once(threading.Event())  # the round fails: `run` logs, retries
        assert resumes(sessions, job_id) == []
        with sessions() as session:
            assert session.get_one(ReplayJob, job_id).runner == holder  # still an orphan
            assert orphans(session) == [job_id]

        assert resumer.resume_once(threading.Event()) == [job_id]  # the next round
        assert resumer.resume_once(threading.Event()) == []  # nothing left to resume
    finally:
        event.remove(sessions, "before_commit", database_goes_away)

    (entry,) = resumes(sessions, job_id)
    assert (entry.actor, entry.details["previous_runner"]) == (ACTOR, holder)
    with sessions() as session:
        assert session.get_one(ReplayJob, job_id).state == ReplayJobStatus.COMPLETED
    assert sorted(c.delivery_id for c in published_copies(broker)) == sorted(ids)


def test_a_take_whose_commit_landed_but_whose_answer_was_lost_runs_the_job_at_once(
    sessions: sessionmaker[Session], broker: MemoryTransport, no_grace: None
) -> None:
    """The lease's commit reaches the database and the error comes after it, as when the
    connection drops before the answer: the runner reads the holder back, finds itself, and
    runs the job in the same round, instead of leaving it held by a runner that never runs
    it until the lease lapses (it is no orphan meanwhile: its holder's process lives)."""
    job_id, ids, holder = killed(sessions, 2)
    taking: list[Session] = []

    def lease_in_commit(session: Session) -> None:
        if any(isinstance(o, AuditEntry) and o.action == "replay.resume" for o in session.new):
            taking.append(session)

    def answer_lost(session: Session) -> None:
        if session in taking and len(taking) == 1:
            taking.append(session)  # once
            raise OperationalError("COMMIT", None, ConnectionError("server closed the connection"))

    event.listen(sessions, "before_commit", lease_in_commit)
    event.listen(sessions, "after_commit", answer_lost)
    try:
        ran = Resumer(lambda: broker, sessions, retry_tiers_s=(1.0,)).resume_once(threading.Event())
    finally:
        event.remove(sessions, "before_commit", lease_in_commit)
        event.remove(sessions, "after_commit", answer_lost)

    assert len(taking) == 2  # the lease's commit did fail, after landing
    assert ran == [job_id]
    (entry,) = resumes(sessions, job_id)
    assert entry.details["previous_runner"] == holder
    with sessions() as session:
        assert session.get_one(ReplayJob, job_id).state == ReplayJobStatus.COMPLETED
    assert sorted(c.delivery_id for c in published_copies(broker)) == sorted(ids)


def test_two_dispatchers_resuming_one_job_leave_one_entry(
    sessions: sessionmaker[Session], broker: MemoryTransport, no_grace: None
) -> None:
    job_id, ids, _ = killed(sessions, 40)
    together = threading.Barrier(2)
    ran: list[list[str]] = []

    def dispatcher() -> None:
        resumer = Resumer(lambda: broker, sessions, retry_tiers_s=(1.0,))
        together.wait()
        ran.append(resumer.resume_once(threading.Event()))

    threads = [threading.Thread(target=dispatcher) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(ran) == [[], [job_id]]  # one took it; the other found it busy or done
    assert [e.actor for e in resumes(sessions, job_id)] == [ACTOR]
    assert sorted(c.delivery_id for c in published_copies(broker)) == sorted(ids)
