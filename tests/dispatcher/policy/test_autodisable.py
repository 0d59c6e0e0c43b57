"""Auto-disable: the failure streak kept on each subscription, the disable after too long or
too many dead deliveries in a row, and the operational event it emits; on both databases."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import DEAD, PENDING, SUB_ACTIVE, SUB_DISABLED, Delivery, Subscription
from common.db.session import make_engine, make_sessionmaker
from common.errors import PublishError
from common.metrics import Metrics
from common.transport import Consumer, MemoryTransport, Message, Outgoing
from common.transport import topology as tp
from common.wire import DeliveryMessage, Event, decode, utcnow
from dispatcher.http import SendResult
from dispatcher.outcome import Attempted
from dispatcher.policy import autodisable as health
from dispatcher.policy.retry import SUCCESS, DeadReason, Decision, Verdict, dead
from dispatcher.settle import Settler
from dispatcher.settle import settler as settle_module
from tests import builders
from tests.dispatcher.conftest import Harness, make_settings

RETRY = Decision(Verdict.RETRY, delay_s=0.1)
EXHAUSTED = dead(DeadReason.MAX_ATTEMPTS)


@pytest.fixture
def db(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def given(harness: Harness, count: int) -> list[DeliveryMessage]:
    with harness.db() as session, session.begin():
        tenant = builders.tenant(session)
        sub, _ = builders.subscription(session, tenant.id, "http://a.test")
        return [builders.delivery(session, builders.event(tenant.id), sub.id) for _ in range(count)]


def consuming(
    harness: Harness,
    deliveries: Sequence[DeliveryMessage],
    policy: health.Policy,
    metrics: Metrics | None = None,
) -> tuple[Consumer, list[Message], Settler]:
    """Publish the deliveries, take their messages, and a real settler for that consumer."""
    for delivery in deliveries:
        harness.publish(delivery)
    consumer = harness.transport.consume(tp.DELIVERIES, prefetch=100)
    messages = []
    for message in consumer:
        assert message is not None
        messages.append(message)
        if len(messages) == len(deliveries):
            break
    settler = Settler(
        consumer, harness.transport, harness.db, metrics or Metrics(CollectorRegistry()),
        publish_timeout_s=5, policy=policy,
    )  # fmt: skip
    return consumer, messages, settler


def settle(harness: Harness, outcomes: list[tuple[DeliveryMessage, Decision, int | None]],
           policy: health.Policy, metrics: Metrics | None = None) -> None:  # fmt: skip
    """Settle attempts of the given deliveries as one batch, through a real settler."""
    consumer, messages, settler = consuming(harness, [d for d, _, _ in outcomes], policy, metrics)
    settler.settle(
        [
            Attempted(m, d, decision, SendResult(code, 0.1), utcnow())
            for m, (d, decision, code) in zip(messages, outcomes, strict=True)
        ]
    )
    consumer.close()


def subscription(harness: Harness, subscription_id: str) -> Subscription:
    with harness.db() as session:
        row = session.get(Subscription, subscription_id)
        assert row is not None
        return row


def disabled_events(harness: Harness) -> list[Event]:
    return [decode(Event, body) for body, _ in harness.take(tp.EVENTS)]


LENIENT = health.Policy(failing_for=timedelta(days=5), dead_in_a_row=3)


def test_failures_start_a_streak_and_a_success_ends_it(harness: Harness) -> None:
    first, second = given(harness, 2)
    settle(harness, [(first, RETRY, 500), (second, EXHAUSTED, 500)], LENIENT)
    row = subscription(harness, first.subscription_id)
    assert row.failing_since is not None and row.consecutive_dead == 1
    updated_at = row.updated_at
    third = given_more(harness, first)
    settle(harness, [(third, SUCCESS, 200)], LENIENT)
    row = subscription(harness, first.subscription_id)
    assert (row.failing_since, row.consecutive_dead, row.status) == (None, 0, SUB_ACTIVE)
    assert row.updated_at == updated_at, "a streak change made every cache reload the row"


def given_more(harness: Harness, like: DeliveryMessage) -> DeliveryMessage:
    with harness.db() as session, session.begin():
        return builders.delivery(session, builders.event(like.tenant), like.subscription_id)


def test_n_dead_deliveries_in_a_row_disable_and_emit_the_event(harness: Harness) -> None:
    deliveries = given(harness, 4)
    *exhausted, waiting = deliveries
    metrics = Metrics(CollectorRegistry())
    settle(harness, [(d, EXHAUSTED, 500) for d in exhausted], LENIENT, metrics)
    row = subscription(harness, waiting.subscription_id)
    assert (row.status, row.disabled_reason) == (SUB_DISABLED, "failing")
    assert metrics.subscriptions_disabled.labels(reason="failing")._value.get() == 1
    assert (row.failing_since, row.consecutive_dead) == (None, 0), "re-enabled, it would die"
    with harness.db() as session:
        pending = session.get(Delivery, waiting.delivery_id)
        assert pending is not None
        assert (pending.status, pending.dead_reason) == (DEAD, "endpoint_disabled")
    [event] = disabled_events(harness)
    assert (event.tenant, event.type) == (waiting.tenant, "hookline.subscription.disabled")
    assert event.data["subscription_id"] == waiting.subscription_id
    assert event.data["reason"] == "failing"


class EventsRefusedOnce(MemoryTransport):
    """The broker refuses the first publish of an operational event (e.g. it just went)."""

    refused = 0

    def publish(self, messages: Sequence[Outgoing], *, timeout_s: float = 30.0) -> None:
        if not self.refused and any(m.exchange == tp.EVENTS for m in messages):
            self.refused += 1
            raise PublishError("no confirm in time")
        super().publish(messages, timeout_s=timeout_s)


def test_a_disable_is_committed_only_once_its_event_is_published(
    db: sessionmaker[Session],
) -> None:
    harness = Harness(make_settings(), EventsRefusedOnce(), db)
    *exhausted, waiting = given(harness, 4)
    with pytest.raises(PublishError):
        settle(harness, [(d, EXHAUSTED, 500) for d in exhausted], LENIENT)
    row = subscription(harness, waiting.subscription_id)
    assert (row.status, row.consecutive_dead) == (SUB_ACTIVE, 0), "disabled unannounced"
    assert disabled_events(harness) == []
    # The batch was not acked, so it comes back; now the broker answers.
    settle(harness, [(d, EXHAUSTED, 500) for d in exhausted], LENIENT)
    assert subscription(harness, waiting.subscription_id).status == SUB_DISABLED
    [event] = disabled_events(harness)
    assert event.data["subscription_id"] == waiting.subscription_id


def test_failing_for_the_whole_period_disables(harness: Harness) -> None:
    first, second = given(harness, 2)
    settle(harness, [(first, RETRY, 503)], LENIENT)
    assert subscription(harness, first.subscription_id).status == SUB_ACTIVE
    with harness.db() as session, session.begin():
        session.execute(
            update(Subscription)
            .where(Subscription.id == first.subscription_id)
            .values(failing_since=utcnow() - timedelta(days=5, seconds=1))
        )
    settle(harness, [(second, RETRY, None)], LENIENT)
    assert subscription(harness, first.subscription_id).status == SUB_DISABLED
    assert len(disabled_events(harness)) == 1


def test_a_success_between_dead_deliveries_restarts_the_count(harness: Harness) -> None:
    deliveries = given(harness, 4)
    a, b, ok, c = deliveries
    settle(harness, [(a, EXHAUSTED, 500), (b, EXHAUSTED, 500), (ok, SUCCESS, 200),
                     (c, EXHAUSTED, 500)], LENIENT)  # fmt: skip
    row = subscription(harness, a.subscription_id)
    assert (row.status, row.consecutive_dead) == (SUB_ACTIVE, 1)
    assert disabled_events(harness) == []


def test_a_subscription_is_disabled_and_announced_once(harness: Harness) -> None:
    deliveries = given(harness, 6)
    settle(harness, [(d, EXHAUSTED, 500) for d in deliveries[:3]], LENIENT)
    settle(harness, [(d, EXHAUSTED, 500) for d in deliveries[3:]], LENIENT)
    assert len(disabled_events(harness)) == 1, "a second disable event: the event could loop"


def test_the_streak_sql_runs_on_both_databases(db: sessionmaker[Session]) -> None:
    with db() as session, session.begin():
        tenant = builders.tenant(session)
        sub, _ = builders.subscription(session, tenant.id, "http://a.test")
        builders.delivery(session, builders.event(tenant.id), sub.id)
    policy = health.Policy(failing_for=timedelta(days=5), dead_in_a_row=2)
    now = utcnow()
    batch = {sub.id: health.Streak(failed=True, dead=1)}
    with db() as session, session.begin():
        assert health.apply(session, batch, set(), policy, now) == []
        disabled = health.apply(session, batch, set(), policy, now)
    assert disabled == [health.Disabled(sub.id, tenant.id, "failing", ended=1)]
    with db() as session:
        row = session.get(Subscription, sub.id)
        assert row is not None and row.status == SUB_DISABLED
        statuses = {d.status for d in session.query(Delivery).all()}
    assert statuses == {DEAD} and PENDING not in statuses


def test_a_success_soon_after_a_clean_one_leaves_the_streak_row_alone(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Success-only batches write nothing to `subscriptions` while the settler knows the
    # subscription clean; a streak another dispatcher started ends once that knowledge ages.
    deliveries = given(harness, 3)
    consumer, messages, settler = consuming(harness, deliveries, LENIENT)

    def succeed(n: int) -> None:
        settler.settle([Attempted(messages[n], deliveries[n], SUCCESS, SendResult(200, 0.1),
                                  utcnow())])  # fmt: skip

    sub_id = deliveries[0].subscription_id
    succeed(0)
    with harness.db() as session, session.begin():
        session.execute(
            update(Subscription)
            .where(Subscription.id == sub_id)
            .values(failing_since=utcnow(), consecutive_dead=2)
        )
    succeed(1)
    assert subscription(harness, sub_id).consecutive_dead == 2
    monkeypatch.setattr(settle_module, "KNOWN_CLEAN_S", 0.0)
    succeed(2)
    row = subscription(harness, sub_id)
    assert (row.failing_since, row.consecutive_dead) == (None, 0)
    consumer.close()
