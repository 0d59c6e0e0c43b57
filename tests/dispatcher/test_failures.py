"""What the dispatcher does with bad input, duplicates, outages and a stop."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from common.db.models import Base, Delivery
from common.db.statuses import DeliveryStatus, SubscriptionStatus
from common.transport import MemoryTransport, Outgoing
from common.transport import topology as tp
from common.wire import DeliveryMessage, encode, webhook_id_for
from hookline.receiver import Receiver, Reply
from tests import builders
from tests.dispatcher.conftest import Harness, make_settings, wait_until
from tests.dispatcher.test_delivery import (
    attempts,
    delivery_row,
    finished,
    given_delivery,
)


def redeliver(harness: Harness) -> None:
    """Take the message in DELIVERIES and give it back unacked, as a lost consumer would."""
    consumer = harness.transport.consume(tp.DELIVERIES, prefetch=1)
    message = next(m for m in consumer if m is not None)
    consumer.reject(message, requeue=True)
    consumer.close()


def test_an_undecodable_message_goes_to_poison_with_its_raw_body(harness: Harness) -> None:
    raw = b'{"delivery_id": 42, "not": "a delivery"'
    with harness.running():
        harness.publish_raw(raw, {"x-trace": "t1"})
        wait_until(lambda: harness.depth(tp.POISON) == 1)
    assert harness.depth(tp.DELIVERIES) == 0
    [(body, headers)] = harness.take(tp.POISON)
    assert body == raw
    assert headers[tp.H_REASON] == "undecodable"
    assert headers[tp.H_SOURCE_QUEUE] == tp.DELIVERIES
    assert headers[tp.H_ERROR].startswith("DeliveryMessage")
    assert headers["x-trace"] == "t1"
    assert harness.metrics.dead_letters.labels(reason="poison")._value.get() == 1


@pytest.mark.parametrize("how", ["redelivered", "recheck header"])
def test_a_second_copy_of_a_succeeded_delivery_is_acked_without_a_post(
    harness: Harness, how: str
) -> None:
    with Receiver() as receiver:
        message, _ = given_delivery(harness, receiver.url)
        with harness.db() as session, session.begin():
            session.execute(
                update(Delivery)
                .where(Delivery.id == message.delivery_id)
                .values(status=DeliveryStatus.SUCCEEDED)
            )
        if how == "redelivered":
            harness.publish(message)
            redeliver(harness)
        else:
            harness.publish(message, {tp.H_RECHECK: 1})
        with harness.running():
            pass  # a stop drains: whatever was taken is settled before run() returns
        assert harness.depth(tp.DELIVERIES) == 0
        assert receiver.count == 0
    assert attempts(harness, message.delivery_id) == []


def test_a_router_republished_copy_of_a_delivery_already_in_its_retry_cycle_is_not_sent(
    harness: Harness,
) -> None:
    with Receiver() as receiver:
        message, _ = given_delivery(harness, receiver.url)
        with harness.db() as session, session.begin():
            session.execute(
                update(Delivery)
                .where(Delivery.id == message.delivery_id)
                .values(status="retrying", attempts=1)
            )
        harness.publish(message, {tp.H_RECHECK: 1})
        with harness.running():
            pass
        assert receiver.count == 0
    assert harness.depth(tp.DELIVERIES) == 0


def test_a_broker_redelivered_copy_of_a_retrying_delivery_is_sent(harness: Harness) -> None:
    with Receiver() as receiver:
        message, _ = given_delivery(harness, receiver.url)
        with harness.db() as session, session.begin():
            session.execute(
                update(Delivery)
                .where(Delivery.id == message.delivery_id)
                .values(status="retrying", attempts=1)
            )
        harness.publish(message)
        redeliver(harness)
        with harness.running():
            assert receiver.wait_for(1, 10)
            wait_until(lambda: attempts(harness, message.delivery_id))


def test_a_replay_of_a_succeeded_delivery_is_sent_again(harness: Harness) -> None:
    with Receiver() as receiver:
        message, _ = given_delivery(harness, receiver.url)
        with harness.db() as session, session.begin():
            session.execute(
                update(Delivery)
                .where(Delivery.id == message.delivery_id)
                .values(status=DeliveryStatus.SUCCEEDED)
            )
        harness.publish(message.model_copy(update={"replay": True}), {tp.H_RECHECK: 1})
        with harness.running():
            assert receiver.wait_for(1, 10)
            wait_until(lambda: attempts(harness, message.delivery_id))
    assert delivery_row(harness, message.delivery_id).status == DeliveryStatus.SUCCEEDED
    # Delivered, but not timed end to end: the operator chose when to send it again.
    finished = harness.metrics.finished.labels(result="succeeded")._value.get()
    assert finished == 1 and harness.metrics.e2e._sum.get() == 0


def test_a_failed_settle_leaves_the_message_unacked_for_redelivery(
    harness: Harness, engine: Any
) -> None:
    with Receiver() as receiver:
        message, _ = given_delivery(harness, receiver.url)
        Base.metadata.tables["attempts"].drop(engine)
        harness.publish(message)
        with pytest.raises(OperationalError), harness.running():
            assert receiver.wait_for(1, 10)
        # The session ended with the error; the message went back, marked redelivered.
        assert harness.depth(tp.DELIVERIES) == 1
        assert delivery_row(harness, message.delivery_id).status == "pending"

        Base.metadata.tables["attempts"].create(engine)
        with harness.running():
            assert receiver.wait_for(2, 10)
            wait_until(lambda: finished(harness, message.delivery_id, DeliveryStatus.SUCCEEDED))
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert ids == [webhook_id_for(message.tenant, message.event_id)] * 2
    assert [a.outcome for a in attempts(harness, message.delivery_id)] == ["success"]


def test_a_stop_lets_requests_in_flight_finish_and_settle(harness: Harness) -> None:
    with Receiver(respond=lambda _: Reply(200, delay_s=1.0)) as receiver:
        messages = []
        for _ in range(3):
            message, _ = given_delivery(harness, receiver.url)
            messages.append(message)
        with harness.running():
            for message in messages:
                harness.publish(message)
            assert receiver.wait_for(3, 10)  # all three are now waiting for their answers
        # run() returned only after the answers came and were settled.
        for message in messages:
            assert delivery_row(harness, message.delivery_id).status == DeliveryStatus.SUCCEEDED
        assert harness.depth(tp.DELIVERIES) == 0
    assert receiver.count == 3


def test_a_delivery_to_a_missing_subscription_is_dead(harness: Harness) -> None:
    with harness.db() as session, session.begin():
        tenant = builders.tenant(session)
        message = builders.delivery(session, builders.event(tenant.id), "sub_gone")
    with harness.running():
        harness.publish(message)
        wait_until(lambda: finished(harness, message.delivery_id, DeliveryStatus.DEAD))
    assert delivery_row(harness, message.delivery_id).dead_reason == "subscription_missing"


def test_a_private_target_is_refused_when_private_targets_are_not_allowed(db: Any) -> None:
    harness = Harness(make_settings(allow_private_targets=False), MemoryTransport(), db)
    with Receiver() as receiver:
        message, _ = given_delivery(harness, receiver.url)
        with harness.running():
            harness.publish(message)
            wait_until(lambda: finished(harness, message.delivery_id, DeliveryStatus.DEAD))
        assert receiver.count == 0
    row = delivery_row(harness, message.delivery_id)
    assert row.dead_reason == "unsafe_target"
    [attempt] = attempts(harness, message.delivery_id)
    assert attempt.error is not None and attempt.error.startswith("unsafe target")


def test_a_paused_subscription_defers_without_an_attempt(harness: Harness) -> None:
    with Receiver() as receiver:
        message, _ = given_delivery(harness, receiver.url, status=SubscriptionStatus.PAUSED)
        deferrals = harness.metrics.attempts.labels(outcome="deferred", status_class="none")
        with harness.running():
            harness.publish(message)
            # Not the queue depths: the published message itself sits in a delivery queue
            # until the dispatcher (a channel per delivery queue to open) takes it.
            assert wait_until(lambda: deferrals._value.get() >= 1)
        assert receiver.count == 0
    assert attempts(harness, message.delivery_id) == []
    assert delivery_row(harness, message.delivery_id).status == "pending"


def test_the_drain_marks_dead_letters_dead_in_the_database(harness: Harness) -> None:
    message, _ = given_delivery(harness, "http://127.0.0.1:9/never")
    with harness.running():
        harness.transport.publish([_dead_letter(message, "max_attempts")])
        wait_until(lambda: finished(harness, message.delivery_id, DeliveryStatus.DEAD))
    assert harness.depth(tp.DEAD) == 0
    assert delivery_row(harness, message.delivery_id).dead_reason == "max_attempts"


def test_dead_letters_wait_in_their_queue_while_the_database_is_down(
    harness: Harness, engine: Any
) -> None:
    message, _ = given_delivery(harness, "http://127.0.0.1:9/never")
    harness.transport.publish([_dead_letter(message, "max_attempts")])
    Base.metadata.tables["deliveries"].drop(engine)
    with pytest.raises(OperationalError), harness.running():
        wait_until(lambda: harness.depth(tp.DEAD) == 0)  # taken by the drain
    assert harness.depth(tp.DEAD) == 1


def _dead_letter(message: DeliveryMessage, reason: str) -> Outgoing:
    return Outgoing(tp.DEAD, "", encode(message), {tp.H_REASON: reason})
