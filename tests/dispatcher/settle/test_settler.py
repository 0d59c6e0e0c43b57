"""The settler and the dead-letter drain: one transaction a batch, onward publishes, then
acks, and guarded rows; on SQLite and PostgreSQL, whose SQL for these differs."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import TextClause, event, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from common.db.direct import DirectConnection
from common.db.models import Attempt, Delivery, Subscription
from common.db.statuses import DeliveryStatus
from common.errors import PublishError
from common.signing import new_secret
from common.transport import MemoryTransport, Outgoing
from common.transport import topology as tp
from common.wire import DeliveryMessage, encode
from dispatcher.deadletters import DeadLetterDrain
from dispatcher.http import SendResult, build_headers, header_shape
from dispatcher.outcome import Attempted
from dispatcher.policy.retry import SUCCESS, DeadReason, Decision, Verdict, dead
from dispatcher.settle import settler as settler_module
from tests import builders
from tests.dispatcher.conftest import Harness, make_settings, wait_until
from tests.dispatcher.settle.conftest import NOW, given, row, settler, taken


def test_a_batch_is_recorded_published_and_acked(db: sessionmaker[Session]) -> None:
    # A long tier: the retry copy must still be in it when the test looks, however slow.
    harness = Harness(make_settings(retry_schedule="1h"), MemoryTransport(), db)
    ok, failing, gone = given(harness, 3)
    consumer, messages = taken(harness, 3)
    retry = Decision(Verdict.RETRY, delay_s=3600.0)
    settler(harness, consumer).settle(
        [
            Attempted(messages[0], ok, SUCCESS, SendResult(200, 0.1), NOW),
            Attempted(messages[1], failing, retry, SendResult(500, 0.1, None, b"x"), NOW),
            Attempted(
                messages[2], gone, dead(DeadReason.MAX_ATTEMPTS), SendResult(None, 0.1, "boom"), NOW
            ),
        ]
    )
    assert row(harness.db, ok.delivery_id).status == DeliveryStatus.SUCCEEDED
    failed_row = row(harness.db, failing.delivery_id)
    assert (failed_row.status, failed_row.last_status_code) == (DeliveryStatus.RETRYING, 500)
    assert failed_row.next_attempt_at is not None and failed_row.finished_at is None
    dead_row = row(harness.db, gone.delivery_id)
    assert (dead_row.status, dead_row.dead_reason, dead_row.last_error) == (
        DeliveryStatus.DEAD, "max_attempts", "boom"
    )  # fmt: skip
    with harness.db() as session:
        assert session.scalar(select(func.count()).select_from(Attempt)) == 3
    assert harness.depth(tp.retry_queue(3600.0)) == 1
    assert harness.depth(tp.DEAD) == 1
    consumer.close()  # nothing to give back: every message was acked
    assert harness.depth(tp.DELIVERIES) == 0


def test_a_stale_duplicate_does_not_move_a_final_row_backwards(harness: Harness) -> None:
    [delivery] = given(harness, 1)
    with harness.db() as session, session.begin():
        session.execute(
            update(Delivery)
            .where(Delivery.id == delivery.delivery_id)
            .values(status=DeliveryStatus.SUCCEEDED, attempts=2)
        )
    consumer, [message] = taken(harness, 1)
    stale = Attempted(
        message, delivery, Decision(Verdict.RETRY, delay_s=0.1), SendResult(500, 0.1), NOW
    )
    settler(harness, consumer).settle([stale])
    found = row(harness.db, delivery.delivery_id)
    assert (found.status, found.attempts) == (DeliveryStatus.SUCCEEDED, 2)
    with harness.db() as session:  # the attempt itself is still on record
        assert session.scalar(select(func.count()).select_from(Attempt)) == 1


def test_the_retry_copy_of_a_replay_is_an_ordinary_retry(db: sessionmaker[Session]) -> None:
    harness = Harness(make_settings(retry_schedule="1h"), MemoryTransport(), db)
    [delivery] = given(harness, 1)
    consumer, [message] = taken(harness, 1)
    replayed = delivery.model_copy(update={"replay": True})
    retry = Decision(Verdict.RETRY, delay_s=3600.0)
    settler(harness, consumer).settle(
        [Attempted(message, replayed, retry, SendResult(500, 0.1), NOW)]
    )
    tier = harness.transport.consume(tp.retry_queue(3600.0), prefetch=1)
    copy = next(m for m in tier if m is not None)
    decoded = DeliveryMessage.model_validate_json(copy.body)
    assert (decoded.attempt, decoded.replay) == (2, False)
    assert decoded.event.id == delivery.event.id
    tier.close()


def test_an_earlier_attempt_does_not_overwrite_a_later_one(harness: Harness) -> None:
    [delivery] = given(harness, 1)
    with harness.db() as session, session.begin():
        session.execute(
            update(Delivery)
            .where(Delivery.id == delivery.delivery_id)
            .values(status=DeliveryStatus.RETRYING, attempts=3)
        )
    consumer, [message] = taken(harness, 1)
    early = delivery.model_copy(update={"attempt": 2})
    settle = settler(harness, consumer)
    settle.settle([Attempted(message, early, SUCCESS, SendResult(200, 0.1), NOW)])
    assert row(harness.db, delivery.delivery_id).attempts == 3


def test_two_outcomes_of_one_delivery_in_a_batch_end_as_the_later_attempt(
    harness: Harness,
) -> None:
    # A duplicate message settled in the same batch as its successor: the bulk update on
    # PostgreSQL takes one row per delivery, and must pick the later attempt.
    [delivery] = given(harness, 1)
    harness.publish(delivery)
    consumer, [first, duplicate] = taken(harness, 2)
    later = delivery.model_copy(update={"attempt": 2})
    settler(harness, consumer).settle(
        [
            Attempted(first, later, SUCCESS, SendResult(200, 0.1), NOW),
            Attempted(
                duplicate, delivery, Decision(Verdict.RETRY, delay_s=0.1), SendResult(500, 0.1), NOW
            ),
        ]
    )
    found = row(harness.db, delivery.delivery_id)
    assert (found.status, found.attempts, found.last_status_code) == (
        DeliveryStatus.SUCCEEDED,
        2,
        200,
    )
    with harness.db() as session:  # both attempts are on record
        assert session.scalar(select(func.count()).select_from(Attempt)) == 2
    consumer.close()
    assert harness.depth(tp.DELIVERIES) == 0


def test_nothing_is_acked_when_the_publish_fails(db: sessionmaker[Session]) -> None:
    harness = Harness(make_settings(), MemoryTransport(), db)
    [delivery] = given(harness, 1)
    consumer, [message] = taken(harness, 1)
    # A tier that has no queue: the strict broker refuses it as unroutable.
    unroutable = Decision(Verdict.RETRY, delay_s=42.0)
    with pytest.raises(PublishError, match="unroutable"):
        settler(harness, consumer).settle(
            [Attempted(message, delivery, unroutable, SendResult(500, 0.1), NOW)]
        )
    consumer.close()
    assert harness.depth(tp.DELIVERIES) == 1  # handed back, to be delivered again


@pytest.mark.parametrize(
    ("reason", "stored"),
    [
        ("unsafe_target", "unsafe_target"),
        # Not one of ours (a message published to hookline.dead by hand): cut and made
        # storable, never a write that fails and stops the drain for every dead letter.
        ("odd\x00" + "r" * 100, "odd\ufffd" + "r" * 60),
    ],
)
def test_the_drain_marks_a_dead_letter_dead_once(
    harness: Harness, reason: str, stored: str
) -> None:
    [delivery] = given(harness, 1)
    letter = Outgoing(tp.DEAD, "", encode(delivery), {tp.H_REASON: reason})
    harness.transport.publish([letter, letter])  # a duplicate is harmless
    drain = DeadLetterDrain(harness.transport, harness.db, publish_timeout_s=5)
    drain.start()
    try:
        wait_until(lambda: harness.depth(tp.DEAD) == 0)
        wait_until(lambda: row(harness.db, delivery.delivery_id).status == DeliveryStatus.DEAD)
    finally:
        drain.stop()
    assert drain.failure is None
    found = row(harness.db, delivery.delivery_id)
    assert found.dead_reason == stored and found.finished_at is not None


def _subscription_with_streak(harness: Harness, delivery: DeliveryMessage) -> None:
    """As if another dispatcher had settled failures for the delivery's subscription."""
    with harness.db() as session, session.begin():
        session.execute(
            update(Subscription)
            .where(Subscription.id == delivery.subscription_id)
            .values(failing_since=NOW, consecutive_dead=2)
        )


def _streak(harness: Harness, subscription_id: str) -> tuple[datetime | None, int]:
    with harness.db() as session:
        found = session.get(Subscription, subscription_id)
        assert found is not None
        return found.failing_since, found.consecutive_dead


def test_a_batch_of_successes_is_one_statement_that_also_ends_a_streak(
    db: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The common batch (no failure, no new header shape) is written as one statement on
    # PostgreSQL: attempts inserted, deliveries moved, the streak another dispatcher began
    # ended. The second batch reuses the shape the first one stored.
    monkeypatch.setattr(settler_module, "KNOWN_CLEAN_S", 0.0)  # no memory of clean ones
    harness = Harness(make_settings(), MemoryTransport(), db)
    first, second = given(harness, 2)
    consumer, messages = taken(harness, 2)
    shape = header_shape(build_headers({}, "evt_1", 0, b"{}", [new_secret()]))
    sent = SendResult(200, 0.1, shape=shape)
    settling = settler(harness, consumer)
    settling.settle([Attempted(messages[0], first, SUCCESS, sent, NOW)])
    _subscription_with_streak(harness, second)
    through_engine: list[str] = []  # statements through SQLAlchemy's engine
    engine = db.kw["bind"]

    def seen(*args: object) -> None:
        through_engine.append(str(args[2]))

    direct: list[str] = []  # statements on the settler's own connection (passed on)
    run = DirectConnection.run

    def spied(self: DirectConnection, statement: TextClause, parameters: Any) -> Any:
        direct.append(statement.text)
        return run(self, statement, parameters)

    monkeypatch.setattr(DirectConnection, "run", spied)
    event.listen(engine, "before_cursor_execute", seen)
    try:
        settling.settle([Attempted(messages[1], second, SUCCESS, sent, NOW)])
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    if engine.dialect.name == "postgresql":
        assert through_engine == [] and len(direct) == 1
        assert direct[0].startswith("WITH attempted AS")
    else:
        assert direct == [] and through_engine  # SQLite: a transaction through the session
    found = row(db, second.delivery_id)
    assert (found.status, found.attempts, found.last_status_code) == (
        DeliveryStatus.SUCCEEDED, 1, 200
    )  # fmt: skip
    with db() as session:
        attempts = session.scalars(select(Attempt).order_by(Attempt.id)).all()
    assert [a.delivery_id for a in attempts] == [first.delivery_id, second.delivery_id]
    assert attempts[1].header_set_id == attempts[0].header_set_id is not None
    assert _streak(harness, second.subscription_id) == (None, 0)
    consumer.close()
    assert harness.depth(tp.DELIVERIES) == 0


def test_a_failure_beside_a_success_still_starts_its_streak(db: sessionmaker[Session]) -> None:
    # A batch with a failure takes the transaction (the streak may disable); the success in
    # it still ends the other subscription's streak.
    harness = Harness(make_settings(retry_schedule="1h"), MemoryTransport(), db)
    with harness.db() as session, session.begin():
        tenant = builders.tenant(session)
        subs = [builders.subscription(session, tenant.id, f"http://{n}.test")[0] for n in "ab"]
        ok, failing = (
            builders.delivery(session, builders.event(tenant.id), sub.id) for sub in subs
        )
    for delivery in (ok, failing):
        harness.publish(delivery)
    _subscription_with_streak(harness, ok)
    consumer, messages = taken(harness, 2)
    retry = Decision(Verdict.RETRY, delay_s=3600.0)
    settler(harness, consumer).settle(
        [
            Attempted(messages[0], ok, SUCCESS, SendResult(200, 0.1), NOW),
            Attempted(messages[1], failing, retry, SendResult(500, 0.1), NOW),
        ]
    )
    assert _streak(harness, ok.subscription_id) == (None, 0)
    failing_since, dead_in_a_row = _streak(harness, failing.subscription_id)
    assert failing_since is not None and dead_in_a_row == 0
    assert row(db, failing.delivery_id).status == DeliveryStatus.RETRYING
    consumer.close()


def test_a_stream_shares_a_batch_while_it_lasts_and_a_lone_outcome_waits_one_linger(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While every `LINGER_S` brings another outcome, they gather into one batch, up to
    `LINGER_MAX_S` from its first: a drain's batches hold what arrives in that bound, however
    quick the statement, and a lone outcome is settled one `LINGER_S` after it came (here
    in units of 50 ms, so that a busy machine's scheduling cannot split a batch)."""
    monkeypatch.setattr(settler_module, "LINGER_S", 0.2)
    monkeypatch.setattr(settler_module, "LINGER_MAX_S", 1.0)
    consumer = harness.transport.consume(tp.DELIVERIES, prefetch=100)
    settling = settler(harness, consumer)
    batches: list[tuple[float, int]] = []
    settling.settle = lambda batch: batches.append((time.monotonic(), len(batch)))  # type: ignore[method-assign]
    settling.start()
    try:
        for _ in range(10):  # 0.5 s, every gap well under the linger: one batch
            settling.put(object())  # type: ignore[arg-type]
            time.sleep(0.05)
        wait_until(lambda: sum(size for _, size in batches) == 10)
        assert [size for _, size in batches] == [10]
        batches.clear()
        lone = time.monotonic()
        settling.put(object())  # type: ignore[arg-type]
        wait_until(lambda: len(batches) == 1)
        assert batches[0][1] == 1 and batches[0][0] - lone >= 0.2
        batches.clear()
        began = time.monotonic()
        for _ in range(30):  # 1.5 s: the bound closes a batch after 1 s
            settling.put(object())  # type: ignore[arg-type]
            time.sleep(0.05)
        wait_until(lambda: sum(size for _, size in batches) == 30)
        assert len(batches) >= 2
        assert batches[0][0] - began < 1.2
    finally:
        settling.stop()
        consumer.close()


def test_a_response_body_the_database_cannot_store_is_stored_with_its_nul_replaced(
    db: sessionmaker[Session],
) -> None:
    """A receiver's body is whatever it sent: a NUL, which PostgreSQL's text refuses, must
    not make the batch fail (its messages would come back, time and again, to poison)."""
    harness = Harness(make_settings(retry_schedule="1h"), MemoryTransport(), db)
    ok, failing = given(harness, 2)
    consumer, messages = taken(harness, 2)
    retry = Decision(Verdict.RETRY, delay_s=3600.0)
    for batch in (  # the one statement (on PostgreSQL), then the transaction
        [Attempted(messages[0], ok, SUCCESS, SendResult(200, 0.1, None, b"ok\x00!"), NOW)],
        [Attempted(messages[1], failing, retry, SendResult(500, 0.1, None, b"\x00no"), NOW)],
    ):
        settler(harness, consumer).settle(batch)
    with db() as session:
        bodies = session.scalars(select(Attempt.response_body).order_by(Attempt.id)).all()
    assert bodies == ["ok\ufffd!", "\ufffdno"]
    assert row(db, failing.delivery_id).status == DeliveryStatus.RETRYING
    consumer.close()
    assert harness.depth(tp.DELIVERIES) == 0
