"""Replay jobs on SQLite and PostgreSQL with the in-memory broker: the set is fixed at the
start, each delivery is published once per replay request, and a killed job resumes."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import AuditEntry, Delivery, EventRow, ReplayItem, ReplayJob
from common.db.statuses import DeliveryStatus, ReplayItemStatus, ReplayJobStatus, SubscriptionStatus
from common.errors import PublishError
from common.metrics import Metrics
from common.transport import MemoryTransport, Transport
from common.transport import topology as tp
from common.wire import DeliveryMessage, decode, utcnow
from dispatcher.deadletters import DeadFilter
from dispatcher.replay import JobBusy, ReplayRefused, Runner
from dispatcher.replay import jobs as replayjobs
from dispatcher.replay import runner as replay
from tests import builders
from tests.dead_letters import Dead, dead_letter, published, published_copies


@pytest.fixture
def transport() -> MemoryTransport:
    memory = MemoryTransport()
    memory.declare(tp.build((1.0,)))
    return memory


@pytest.fixture
def world(sessions: sessionmaker[Session]) -> dict[str, Any]:
    """Two subscriptions of one tenant, five dead letters each."""
    with sessions() as session, session.begin():
        tenant = builders.tenant(session).id
        a, _ = builders.subscription(session, tenant, "http://127.0.0.1:9/a")
        b, _ = builders.subscription(session, tenant, "http://127.0.0.1:9/b")
        dead = {
            a.id: [dead_letter(session, tenant, a.id) for _ in range(5)],
            b.id: [dead_letter(session, tenant, b.id) for _ in range(5)],
        }
    return {"tenant": tenant, "a": a.id, "b": b.id, "dead": dead}


def start(sessions: sessionmaker[Session], dead: DeadFilter, **options: Any) -> str:
    with sessions() as session, session.begin():
        job, _ = replayjobs.create(session, dead, actor="test", rate_per_s=None, **options)
        return job.id


def rows(sessions: sessionmaker[Session], ids: list[str]) -> dict[str, Delivery]:
    with sessions() as session:
        return {r.id: r for r in session.scalars(select(Delivery).where(Delivery.id.in_(ids)))}


def ids_of(dead: list[Dead]) -> list[str]:
    return [d.id for d in dead]


def test_a_replay_publishes_each_dead_delivery_once_and_reopens_it(
    sessions: sessionmaker[Session], transport: MemoryTransport, world: dict[str, Any]
) -> None:
    wanted = ids_of(world["dead"][world["a"]])
    job_id = start(sessions, DeadFilter(tenant=world["tenant"], subscription=world["a"]))

    metrics = Metrics()
    job = Runner(transport, sessions, job_id, metrics=metrics).run()

    assert (job.state, job.total, job.done, job.failed, job.skipped) == (
        ReplayJobStatus.COMPLETED,
        5,
        5,
        0,
        0,
    )
    assert metrics.replay_messages.labels(result="published")._value.get() == 5
    assert metrics.deliveries_enqueued.labels(origin="replay")._value.get() == 5
    assert (metrics.replay_jobs_running._value.get(), metrics.replay_remaining._value.get()) == (
        0,
        0,
    )
    copies = published_copies(transport)
    assert sorted(c.delivery_id for c in copies) == sorted(wanted)
    assert all(c.replay and c.attempt == 1 for c in copies)
    after = rows(sessions, wanted)
    assert {r.status for r in after.values()} == {DeliveryStatus.PENDING}
    assert {(r.replay_count, r.attempts, r.dead_reason) for r in after.values()} == {(1, 0, None)}
    untouched = rows(sessions, ids_of(world["dead"][world["b"]]))
    assert {r.status for r in untouched.values()} == {DeliveryStatus.DEAD}


def test_the_copy_keeps_the_event_so_the_webhook_id_stays_the_same(
    sessions: sessionmaker[Session], transport: MemoryTransport, world: dict[str, Any]
) -> None:
    first = world["dead"][world["a"]][0]
    Runner(transport, sessions, start(sessions, DeadFilter(ids=(first.id,)))).run()

    (copy,) = published_copies(transport)
    assert (copy.delivery_id, copy.event_id, copy.event.id) == (
        first.id,
        first.event_id,
        first.event_id,
    )


def test_the_copy_decodes_to_the_message_the_wire_models_build(
    sessions: sessionmaker[Session], transport: MemoryTransport, world: dict[str, Any]
) -> None:
    # Built as text around the stored data (copies.body): it must say what
    # DeliveryMessage says, for an operation, nesting, unicode and a whole-second timestamp.
    event = builders.event(
        world["tenant"],
        operation="sync",
        timestamp=datetime(2026, 12, 1, 23, 0, 0, tzinfo=UTC),
        data={"title": 'Grüße \u2603 "quoted"', "items": [{"n": 1}, None, 2.5, True]},
    )
    with sessions() as session, session.begin():
        message = builders.delivery(session, event, world["a"])
        row = session.get(Delivery, message.delivery_id)
        assert row is not None
        row.status, row.dead_reason = DeliveryStatus.DEAD, "max_attempts"

    Runner(transport, sessions, start(sessions, DeadFilter(ids=(message.delivery_id,)))).run()

    (copy,) = published_copies(transport)
    expected = DeliveryMessage(
        delivery_id=message.delivery_id,
        event_id=event.id,
        tenant=world["tenant"],
        subscription_id=world["a"],
        attempt=1,
        event=event,
        replay=True,
    )
    assert copy == expected
    assert copy.event.webhook_body() == event.webhook_body()


def test_dry_run_plan_counts_and_changes_nothing(
    sessions: sessionmaker[Session], transport: MemoryTransport, world: dict[str, Any]
) -> None:
    everything = ids_of(world["dead"][world["a"]] + world["dead"][world["b"]])
    before = {
        i: (r.status, r.replay_count, r.updated_at) for i, r in rows(sessions, everything).items()
    }

    with sessions() as session:
        plan = replayjobs.plan(session, DeadFilter(tenant=world["tenant"]))

    assert plan.summary.total == 10
    assert plan.summary.by_subscription == {world["a"]: 5, world["b"]: 5}
    assert plan.summary.by_reason == {"max_attempts": 10}
    assert set(plan.summary.sample_ids) <= set(everything) and plan.summary.sample_ids
    after = {
        i: (r.status, r.replay_count, r.updated_at) for i, r in rows(sessions, everything).items()
    }
    assert after == before
    assert published_copies(transport) == []
    with sessions() as session:
        assert session.scalars(select(ReplayJob)).all() == []


def test_no_filter_is_refused_unless_all_is_given(
    sessions: sessionmaker[Session], world: dict[str, Any]
) -> None:
    with pytest.raises(ReplayRefused, match="set all") as refused:
        start(sessions, DeadFilter(tenant=world["tenant"]))
    assert refused.value.worded({"all": "--all"}).endswith("or set --all")
    assert start(sessions, DeadFilter(tenant=world["tenant"]), everything=True)


@pytest.mark.parametrize("status", [SubscriptionStatus.PAUSED, SubscriptionStatus.DISABLED])
def test_paused_or_disabled_subscriptions_are_refused_unless_forced(
    sessions: sessionmaker[Session], world: dict[str, Any], status: str
) -> None:
    from common.db.models import Subscription

    with sessions() as session, session.begin():
        sub = session.get(Subscription, world["a"])
        assert sub is not None
        sub.status = status
    dead = DeadFilter(subscription=world["a"])
    with pytest.raises(ReplayRefused, match=status):
        start(sessions, dead)
    job_id = start(sessions, dead, force=True)
    with sessions() as session:
        entry = session.scalars(select(AuditEntry).where(AuditEntry.resource_id == job_id)).one()
    assert status in entry.details["forced"]


def test_the_set_is_fixed_at_the_start(
    sessions: sessionmaker[Session], transport: MemoryTransport, world: dict[str, Any]
) -> None:
    job_id = start(sessions, DeadFilter(subscription=world["a"]))
    with sessions() as session, session.begin():  # dies after the job started
        late = dead_letter(session, world["tenant"], world["a"])

    Runner(transport, sessions, job_id).run()

    assert late.id not in {c.delivery_id for c in published_copies(transport)}
    assert rows(sessions, [late.id])[late.id].status == DeliveryStatus.DEAD


def test_two_jobs_on_overlapping_sets_send_each_delivery_once(
    sessions: sessionmaker[Session], transport: MemoryTransport, world: dict[str, Any]
) -> None:
    first = start(sessions, DeadFilter(tenant=world["tenant"]), everything=True)
    second = start(sessions, DeadFilter(subscription=world["a"]))
    runners = [Runner(transport, sessions, job, batch_size=2) for job in (first, second)]
    threads = [threading.Thread(target=r.run) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    copies = [c.delivery_id for c in published_copies(transport)]
    assert sorted(copies) == sorted(ids_of(world["dead"][world["a"]] + world["dead"][world["b"]]))
    with sessions() as session:
        jobs = [session.get(ReplayJob, j) for j in (first, second)]
    assert sum(j.done for j in jobs if j) == 10
    assert sum(j.skipped for j in jobs if j) == 5


def test_running_a_finished_job_again_sends_nothing(
    sessions: sessionmaker[Session], transport: MemoryTransport, world: dict[str, Any]
) -> None:
    job_id = start(sessions, DeadFilter(subscription=world["a"]))
    Runner(transport, sessions, job_id).run()
    assert len(published_copies(transport)) == 5

    with pytest.raises(JobBusy, match="completed"):
        Runner(transport, sessions, job_id).run()
    assert published_copies(transport) == []


class FailingAfter(Transport):
    """A transport whose publishes fail after `n` successful ones (a broker that went away)."""

    def __init__(self, inner: MemoryTransport, n: int) -> None:
        self.inner, self.left = inner, n

    def declare(self, topology: tp.Topology) -> None:
        self.inner.declare(topology)

    def publish(self, messages: Any, *, timeout_s: float = 30.0) -> None:
        if self.left <= 0:
            raise PublishError("broker gone")
        self.left -= 1
        self.inner.publish(messages, timeout_s=timeout_s)

    def consume(self, queue: str, *, prefetch: int) -> Any:
        return self.inner.consume(queue, prefetch=prefetch)

    def consume_many(self, queues: Any, *, prefetch: int) -> Any:
        return self.inner.consume_many(queues, prefetch=prefetch)

    def queue_depth(self, queue: str) -> int:
        return self.inner.queue_depth(queue)

    def purge(self, queue: str) -> int:
        return self.inner.purge(queue)

    def close(self) -> None:
        self.inner.close()


def test_a_job_that_failed_mid_way_resumes_without_loss_or_repeat(
    sessions: sessionmaker[Session], transport: MemoryTransport, world: dict[str, Any]
) -> None:
    job_id = start(sessions, DeadFilter(tenant=world["tenant"]), everything=True)
    failed = Runner(FailingAfter(transport, 2), sessions, job_id, batch_size=3).run()
    assert (
        failed.state == ReplayJobStatus.FAILED
        and failed.done == 6
        and "broker gone" in (failed.error or "")
    )
    with sessions() as session:
        claimed = session.scalars(
            select(ReplayItem).where(
                ReplayItem.job_id == job_id, ReplayItem.state == ReplayItemStatus.CLAIMED
            )
        ).all()
    # Claimed, never published (the failed batch, and the next one prepared meanwhile).
    assert len(claimed) == 10 - failed.done

    monkey_grace = replay.AMBIGUOUS_GRACE_S
    replay.AMBIGUOUS_GRACE_S = 0.0
    try:
        resumed = Runner(transport, sessions, job_id, batch_size=3).run()
    finally:
        replay.AMBIGUOUS_GRACE_S = monkey_grace

    assert (resumed.state, resumed.done, resumed.skipped) == (ReplayJobStatus.COMPLETED, 10, 0)
    copies = [c.delivery_id for c in published_copies(transport)]
    assert sorted(copies) == sorted(ids_of(world["dead"][world["a"]] + world["dead"][world["b"]]))


def test_a_runner_whose_job_was_taken_over_stops_and_the_successor_sends_the_rest_once(
    sessions: sessionmaker[Session],
    transport: MemoryTransport,
    world: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stalled runner on another host lost its lease: it must not publish what it claimed
    after that, nor overwrite the job; its successor re-checks those claims."""
    job_id = start(sessions, DeadFilter(tenant=world["tenant"]), everything=True)
    other = "elsewhere.test:4242:run_abcd"

    def taken_over_after_the_first_batch(job: ReplayJob) -> None:
        with sessions() as session, session.begin():
            session.execute(update(ReplayJob).where(ReplayJob.id == job_id).values(runner=other))

    stalled = Runner(
        transport, sessions, job_id, batch_size=2, on_progress=taken_over_after_the_first_batch
    )
    left = stalled.run()
    before = [c.delivery_id for c in published_copies(transport)]
    assert (left.state, left.runner, left.error) == (ReplayJobStatus.RUNNING, other, None)
    assert 2 <= len(before) < 10 and len(set(before)) == len(before)

    # The successor's heartbeat lapses in turn; a third runner takes over and finishes.
    with sessions() as session, session.begin():
        session.execute(update(ReplayJob).where(ReplayJob.id == job_id).values(heartbeat_at=None))
    monkeypatch.setattr(replay, "AMBIGUOUS_GRACE_S", 0.0)
    done = Runner(transport, sessions, job_id, batch_size=2).run()

    assert (done.state, done.done) == (ReplayJobStatus.COMPLETED, 10)
    after = [c.delivery_id for c in published_copies(transport)]
    wanted = ids_of(world["dead"][world["a"]] + world["dead"][world["b"]])
    assert sorted(before + after) == sorted(wanted), "each delivery exactly once in all"


def test_a_claim_whose_copy_was_already_taken_is_not_published_again(
    sessions: sessionmaker[Session], transport: MemoryTransport, world: dict[str, Any]
) -> None:
    job_id = start(sessions, DeadFilter(subscription=world["a"]))
    Runner(FailingAfter(transport, 0), sessions, job_id, batch_size=5).run()
    # As if the copy had been published before the crash and a dispatcher settled it.
    with sessions() as session, session.begin():
        for row in session.scalars(select(Delivery).where(Delivery.subscription_id == world["a"])):
            row.status, row.attempts, row.updated_at = "succeeded", 1, utcnow()

    resumed = Runner(transport, sessions, job_id).run()

    assert (resumed.state, resumed.done) == (ReplayJobStatus.COMPLETED, 5)
    assert published_copies(transport) == []


def test_cancel_stops_a_job_nobody_runs_at_once(
    sessions: sessionmaker[Session], world: dict[str, Any]
) -> None:
    job_id = start(sessions, DeadFilter(subscription=world["a"]))
    with sessions() as session, session.begin():
        job = replayjobs.get(session, job_id)
        assert job is not None
        assert replayjobs.cancel(session, job, actor="test").state == ReplayJobStatus.CANCELLED
    with sessions() as session:
        actions = session.scalars(
            select(AuditEntry.action).where(AuditEntry.resource_id == job_id)
        ).all()
    assert sorted(actions) == ["replay.cancel", "replay.start"]


def test_every_replay_writes_audit_rows_with_who_filters_and_counts(
    sessions: sessionmaker[Session], transport: MemoryTransport, world: dict[str, Any]
) -> None:
    job_id = start(sessions, DeadFilter(subscription=world["a"], reason="max_attempts"))
    Runner(transport, sessions, job_id).run()
    with sessions() as session:
        entries = session.scalars(
            select(AuditEntry).where(AuditEntry.resource_id == job_id).order_by(AuditEntry.id)
        ).all()
    assert [e.action for e in entries] == ["replay.start", "replay.completed"]
    assert {e.actor for e in entries} == {"test"}
    assert entries[0].details["filters"] == {"subscription": world["a"], "reason": "max_attempts"}
    assert entries[1].details["done"] == 5


def test_a_replay_copy_carries_the_context_its_event_was_routed_in(
    sessions: sessionmaker[Session], transport: MemoryTransport, world: dict[str, Any]
) -> None:
    # So the replayed attempts join the event's trace (the router stored the context).
    traced, untraced = world["dead"][world["a"]][:2]
    routed_in = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with sessions() as session, session.begin():
        stored = update(EventRow).where(EventRow.id == traced.event_id)
        session.execute(stored.values(traceparent=routed_in))

    Runner(transport, sessions, start(sessions, DeadFilter(ids=(traced.id, untraced.id)))).run()

    headers = {decode(DeliveryMessage, m.body).delivery_id: m.headers for m in published(transport)}
    assert headers[traced.id]["traceparent"] == routed_in
    assert "traceparent" not in headers[untraced.id]
