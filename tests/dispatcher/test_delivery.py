"""Deliveries end to end: the in-memory broker, SQLite, and a real receiver on 127.0.0.1."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from common import logs
from common.db.models import Attempt, Delivery, Subscription
from common.db.statuses import DeliveryStatus, SubscriptionStatus
from common.signing import verify
from common.transport import MemoryTransport
from common.transport import topology as tp
from common.transport.topology import Queue, Topology
from common.wire import DeliveryMessage, Event, decode, webhook_id_for
from dispatcher.http import Sender, SendResult
from dispatcher.subscriptions import Endpoint
from dispatcher.worker import Dispatcher
from hookline.receiver import Receiver, Reply
from tests import builders
from tests.builders import DEV_BOX
from tests.dispatcher.conftest import Harness, make_settings, wait_until

DEAD_TAP = "test.dead.tap"


def given_delivery(harness: Harness, url: str, **subscription: Any) -> tuple[DeliveryMessage, str]:
    """A tenant, a subscription to `url`, and one event routed to it: the message and secret."""
    with harness.db() as session, session.begin():
        tenant = builders.tenant(session)
        sub, secret = builders.subscription(session, tenant.id, url, **subscription)
        message = builders.delivery(session, builders.event(tenant.id), sub.id)
    return message, secret


def delivery_row(harness: Harness, delivery_id: str) -> Delivery:
    with harness.db() as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None
        return row


def attempts(harness: Harness, delivery_id: str) -> list[Attempt]:
    with harness.db() as session:
        query = select(Attempt).where(Attempt.delivery_id == delivery_id).order_by(Attempt.id)
        return list(session.scalars(query).all())


def finished(harness: Harness, delivery_id: str, status: str) -> bool:
    return delivery_row(harness, delivery_id).status == status


def tap_dead_letters(harness: Harness) -> None:
    """A second queue on the dead fanout, so the test sees what the drain consumes."""
    harness.transport.declare(Topology((), (Queue(DEAD_TAP, bindings=((tp.DEAD, ""),)),)))


def test_delivery_arrives_signed_with_its_webhook_id_and_the_exact_body(harness: Harness) -> None:
    static = {"Authorization": "Bearer t0k", "Webhook-Id": "forged", "X-Site": "b"}
    with Receiver() as receiver:
        message, secret = given_delivery(harness, f"{receiver.url}/hooks?v=1", headers=static)
        with harness.running():
            harness.publish(message)
            assert receiver.wait_for(1, 10)
            wait_until(lambda: finished(harness, message.delivery_id, DeliveryStatus.SUCCEEDED))

    request = receiver.received[0]
    assert (request.method, request.path) == ("POST", "/hooks?v=1")
    Webhook(secret).verify(request.body, request.headers)
    verify(secret, request.headers, request.body)
    assert request.headers["webhook-id"] == webhook_id_for(message.tenant, message.event_id)
    expected = json.dumps(message.event.webhook_body(), separators=(",", ":")).encode()
    assert request.body == expected
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("Hookline/")
    assert request.headers["authorization"] == "Bearer t0k"
    assert request.headers["x-site"] == "b"
    assert request.headers["host"] == f"127.0.0.1:{receiver.port}"
    row = delivery_row(harness, message.delivery_id)
    assert (row.attempts, row.last_status_code, row.dead_reason) == (1, 200, None)
    assert row.finished_at is not None and row.next_attempt_at is None
    assert [(a.attempt, a.outcome, a.status_code) for a in attempts(harness, row.id)] == [
        (1, "success", 200)
    ]
    assert harness.metrics.e2e._sum.get() > 0


def test_two_tenants_events_of_one_id_reach_a_shared_receiver_under_two_webhook_ids(
    harness: Harness,
) -> None:
    # Event ids are unique per tenant only. A receiver subscribed through two tenants
    # de-duplicates on `webhook-id` (Standard Webhooks: unique across all messages), so
    # the second tenant's `order-1001` must not look like a repeat of the first's.
    with Receiver() as receiver:
        sent: list[tuple[DeliveryMessage, str]] = []
        with harness.db() as session, session.begin():
            for _ in range(2):
                tenant = builders.tenant(session)
                sub, secret = builders.subscription(session, tenant.id, receiver.url)
                ev = builders.event(tenant.id, id="order-1001")
                sent.append((builders.delivery(session, ev, sub.id), secret))
        with harness.running():
            for message, _ in sent:
                harness.publish(message)
            assert receiver.wait_for(2, 10)
    webhook_ids = {}
    for request in receiver.received:
        # Each verifies with exactly one tenant's secret: that tells whose it is.
        owners = [m for m, secret in sent if _verifies(secret, request)]
        assert len(owners) == 1
        webhook_ids[owners[0].tenant] = request.headers["webhook-id"]
    assert sorted(webhook_ids) == sorted(m.tenant for m, _ in sent)
    first, second = webhook_ids.values()
    assert first != second
    assert webhook_ids == {m.tenant: webhook_id_for(m.tenant, "order-1001") for m, _ in sent}


def _verifies(secret: str, request: Any) -> bool:
    try:
        Webhook(secret).verify(request.body, request.headers)
    except WebhookVerificationError:
        return False
    return True


def test_dispatcher_dead_letters_after_the_last_attempt(harness: Harness) -> None:
    tap_dead_letters(harness)
    with Receiver(respond=lambda _: Reply(500, b"down")) as receiver:
        message, _ = given_delivery(harness, receiver.url)
        with harness.running():
            harness.publish(message)
            wait_until(lambda: finished(harness, message.delivery_id, DeliveryStatus.DEAD))
            wait_until(lambda: harness.depth(DEAD_TAP) == 1)
        assert receiver.count == 3
    assert {r.headers["webhook-id"] for r in receiver.received} == {
        webhook_id_for(message.tenant, message.event_id)
    }
    rows = attempts(harness, message.delivery_id)
    assert [(a.attempt, a.outcome, a.status_code) for a in rows] == [
        (1, "retry", 500), (2, "retry", 500), (3, "dead", 500)
    ]  # fmt: skip
    assert rows[0].response_body == "down"
    row = delivery_row(harness, message.delivery_id)
    assert (row.attempts, row.dead_reason, row.last_status_code) == (3, "max_attempts", 500)
    [(body, headers)] = harness.take(DEAD_TAP)
    dead = decode(DeliveryMessage, body)
    assert (dead.delivery_id, dead.attempt) == (message.delivery_id, 3)
    assert dead.first_attempt_at is not None
    assert headers[tp.H_REASON] == "max_attempts"
    assert headers["x-hookline-status-code"] == 500
    metrics = harness.metrics
    assert metrics.dead_letters.labels(reason="max_attempts")._value.get() == 1
    assert metrics.attempts.labels(outcome="retry", status_class="5xx")._value.get() == 2
    assert metrics.deliveries_enqueued.labels(origin="retry")._value.get() == 2
    assert metrics.finished.labels(result="dead")._value.get() == 1


def test_gone_endpoint_disables_its_subscription_and_ends_its_pending_deliveries(
    harness: Harness,
) -> None:
    with Receiver(respond=lambda _: Reply(410)) as receiver:
        message, _ = given_delivery(harness, receiver.url)
        with harness.db() as session, session.begin():
            second = builders.delivery(
                session, builders.event(message.tenant), message.subscription_id
            )
        dead = harness.metrics.dead_letters.labels(reason="endpoint_disabled")._value
        with harness.running():
            harness.publish(message)
            wait_until(lambda: finished(harness, message.delivery_id, DeliveryStatus.DEAD))
            # Still queued, never sent: it ended with the disable, not when it comes up,
            # and it is counted then: the 410'd delivery and this one (counted just after
            # the commit that the row's status shows, so waited for).
            assert delivery_row(harness, second.delivery_id).status == DeliveryStatus.DEAD
            assert wait_until(
                lambda: (
                    dead.get() == 2
                    and harness.metrics.finished.labels(result="dead")._value.get() == 2
                )
            )
            harness.publish(second)
            wait_until(lambda: attempts(harness, second.delivery_id))  # refused, not sent
        assert receiver.count == 1, "a disabled subscription was sent to"
        # The refusal is recorded, but the delivery is not counted dead a second time.
        assert dead.get() == 2 and harness.metrics.finished.labels(result="dead")._value.get() == 2
    assert delivery_row(harness, message.delivery_id).dead_reason == "endpoint_disabled"
    assert delivery_row(harness, second.delivery_id).dead_reason == "endpoint_disabled"
    with harness.db() as session:
        subscription = session.get(Subscription, message.subscription_id)
        assert subscription is not None and subscription.status == SubscriptionStatus.DISABLED
        assert subscription.disabled_reason == "endpoint_gone"
    [(body, _headers)] = harness.take(tp.EVENTS)
    event = decode(Event, body)
    assert (event.tenant, event.type) == (message.tenant, "hookline.subscription.disabled")
    assert event.data["subscription_id"] == message.subscription_id
    assert event.data["reason"] == "endpoint_gone"


def test_retry_after_on_429_picks_the_smallest_tier_that_waits_long_enough(
    db: Any,
) -> None:
    harness = Harness(make_settings(retry_schedule="100ms,5s,10s"), MemoryTransport(), db)
    reply = Reply(429, headers={"retry-after": "3"})
    with Receiver(respond=lambda _: reply) as receiver:
        message, _ = given_delivery(harness, receiver.url)
        with harness.running():
            harness.publish(message)
            wait_until(lambda: harness.depth(tp.retry_queue(5.0)) == 1)
            assert harness.depth(tp.retry_queue(0.1)) == 0
    retry = decode(DeliveryMessage, harness.take(tp.retry_queue(5.0))[0][0])
    assert retry.attempt == 2
    row = delivery_row(harness, message.delivery_id)
    assert (row.status, row.last_status_code) == ("retrying", 429)


@pytest.mark.parametrize(
    "retry_after",
    ["Mon, 01 Jan 99999999999999999999 00:00:00 GMT", "01 Jan 2026 00:00:00 +99999999999999999999"],
)
def test_a_429_whose_retry_after_cannot_be_used_keeps_the_schedule_and_its_status(
    db: Any, retry_after: str
) -> None:
    """Parsing these overflowed: the attempt was recorded as an internal error, without the
    receiver's 429. Unusable, the header counts as absent."""
    harness = Harness(make_settings(retry_schedule="5s,10s"), MemoryTransport(), db)
    reply = Reply(429, headers={"retry-after": retry_after})
    with Receiver(respond=lambda _: reply) as receiver:
        message, _ = given_delivery(harness, receiver.url)
        with harness.running():
            harness.publish(message)
            wait_until(lambda: finished(harness, message.delivery_id, DeliveryStatus.RETRYING))
    (attempt,) = attempts(harness, message.delivery_id)
    assert (attempt.status_code, attempt.error) == (429, None)
    row = delivery_row(harness, message.delivery_id)
    assert (row.status, row.last_status_code, row.last_error) == ("retrying", 429, None)


def test_redirects_are_not_followed(harness: Harness) -> None:
    with Receiver() as receiver:
        receiver.respond = lambda r: (
            Reply(302, headers={"location": f"{receiver.url}/elsewhere"})
            if r.path == "/hooks"
            else Reply(200)
        )
        message, _ = given_delivery(harness, f"{receiver.url}/hooks")
        with harness.running():
            harness.publish(message)
            wait_until(lambda: finished(harness, message.delivery_id, DeliveryStatus.DEAD))
        paths = {r.path for r in receiver.received}
    assert paths == {"/hooks"}
    assert [a.status_code for a in attempts(harness, message.delivery_id)] == [302, 302, 302]


def test_a_receiver_slower_than_the_deadline_times_out(db: Any) -> None:
    harness = Harness(
        make_settings(request_timeout_s=0.5, retry_schedule="10s"), MemoryTransport(), db
    )
    with Receiver(respond=lambda _: Reply(200, delay_s=5)) as receiver:
        message, _ = given_delivery(harness, receiver.url)
        with harness.running():
            harness.publish(message)
            wait_until(lambda: attempts(harness, message.delivery_id))
    [attempt] = attempts(harness, message.delivery_id)
    assert attempt.outcome == "retry" and attempt.status_code is None
    assert attempt.error is not None and attempt.error.startswith("timeout")


def test_a_receiver_dripping_a_byte_a_second_times_out_at_the_total_deadline(db: Any) -> None:
    # Each byte comes well within the read timeout; only the total deadline can end this.
    harness = Harness(
        make_settings(request_timeout_s=1.5, retry_schedule="10s"), MemoryTransport(), db
    )
    with Receiver(respond=lambda _: Reply(200, b"ok", drip_s=1.0)) as receiver:
        message, _ = given_delivery(harness, receiver.url)
        with harness.running():
            harness.publish(message)
            wait_until(lambda: attempts(harness, message.delivery_id), timeout_s=10)
    [attempt] = attempts(harness, message.delivery_id)
    assert attempt.outcome == "retry"
    assert attempt.error is not None and attempt.error.startswith("timeout")


def test_a_huge_response_body_is_truncated(db: Any) -> None:
    harness = Harness(make_settings(max_response_bytes=1000), MemoryTransport(), db)
    with Receiver(respond=lambda _: Reply(200, b"a" * 20_000_000)) as receiver:
        message, _ = given_delivery(harness, receiver.url)
        with harness.running():
            harness.publish(message)
            wait_until(lambda: finished(harness, message.delivery_id, DeliveryStatus.SUCCEEDED))
    [attempt] = attempts(harness, message.delivery_id)
    assert attempt.response_body == "a" * 1000


class _CrashingSender(Sender):
    def send(self, endpoint: Endpoint, delivery: DeliveryMessage, trace: Any = None) -> SendResult:
        raise RuntimeError("a bug in the sender")


def test_lines_logged_during_a_delivery_name_it(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.configure("json")
        message, _ = given_delivery(harness, "http://127.0.0.1:9/never")
        dispatcher = Dispatcher(
            harness.settings, harness.transport, harness.db, harness.metrics,
            secret_box=DEV_BOX, sender=_CrashingSender(harness.settings),
        )  # fmt: skip
        with harness.running(dispatcher):
            harness.publish(message)
            wait_until(lambda: delivery_row(harness, message.delivery_id).attempts == 1)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    [crash] = [line for line in lines if line["msg"] == "delivery crashed"]
    assert (crash["delivery_id"], crash["event_id"], crash["subscription_id"]) == (
        message.delivery_id, message.event_id, message.subscription_id,
    )  # fmt: skip
    assert (crash["tenant_id"], crash["attempt"]) == (message.tenant, 1)
