"""The isolation machinery inside a running dispatcher: jittered retry tiers, the circuit
breaker's deferrals, and the per-endpoint cap; the in-memory broker, SQLite, real receivers."""

from __future__ import annotations

import threading
import time
from typing import Any

from common.transport import MemoryTransport
from common.transport import topology as tp
from common.wire import DeliveryMessage, decode
from hookline.receiver import Received, Receiver, Reply
from tests import builders
from tests.dispatcher.conftest import Harness, make_settings, wait_until
from tests.dispatcher.test_delivery import attempts, delivery_row, given_delivery


def test_a_retry_copy_goes_to_one_of_the_jittered_tiers_of_its_delay(db: Any) -> None:
    harness = Harness(make_settings(retry_schedule="10s", retry_jitter=0.2), MemoryTransport(), db)
    tiers = [tp.retry_queue(s) for s in (8.0, 10.0, 12.0)]
    with Receiver(respond=lambda _: Reply(500)) as receiver:
        message, _ = given_delivery(harness, receiver.url)
        with harness.running():
            harness.publish(message)
            wait_until(lambda: sum(harness.depth(q) for q in tiers) == 1)
    [tier] = [q for q in tiers if harness.depth(q) == 1]
    retry = decode(DeliveryMessage, harness.take(tier)[0][0])
    assert retry.attempt == 2 and delivery_row(harness, message.delivery_id).attempts == 1


def test_an_open_circuit_defers_without_counting_an_attempt(db: Any) -> None:
    settings = make_settings(
        retry_schedule="100ms,100ms,100ms,100ms", retry_jitter=0.0,
        circuit_failure_threshold=2, circuit_open_s=60.0, dispatcher_concurrency=2,
    )  # fmt: skip
    harness = Harness(settings, MemoryTransport(), db)
    with Receiver(respond=lambda _: Reply(503)) as receiver:
        message, _ = given_delivery(harness, receiver.url)
        with harness.running():
            harness.publish(message)
            wait_until(lambda: harness.metrics.circuit_open._value.get() == 1)
            deferred = harness.metrics.attempts.labels(outcome="deferred", status_class="none")
            wait_until(lambda: deferred._value.get() >= 3)  # cycling through the tier, unsent
            assert receiver.count == 2
    assert len(attempts(harness, message.delivery_id)) == 2
    row = delivery_row(harness, message.delivery_id)
    assert (row.status, row.attempts) == ("retrying", 2), "a deferral counted as an attempt"


def test_a_hanging_endpoint_holds_at_most_its_cap_while_another_is_served(db: Any) -> None:
    settings = make_settings(dispatcher_concurrency=4, endpoint_max_in_flight=1)
    harness = Harness(settings, MemoryTransport(), db)
    release = threading.Event()
    in_flight, most = [0], [0]
    lock = threading.Lock()

    def hang(_request: Received) -> Reply:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        release.wait(5)
        with lock:
            in_flight[0] -= 1
        return Reply(200)

    with Receiver(respond=hang) as slow, Receiver() as fast:
        hung = [given_delivery(harness, slow.url)[0]]
        with harness.db() as session, session.begin():
            more = [builders.delivery(session, builders.event(hung[0].tenant),
                                      hung[0].subscription_id) for _ in range(3)]  # fmt: skip
        healthy = [given_delivery(harness, fast.url)[0] for _ in range(5)]
        with harness.running():
            for message in hung + more:
                harness.publish(message)
            assert slow.wait_for(1, 5)
            for message in healthy:
                harness.publish(message)
            assert fast.wait_for(5, 5), "a hanging endpoint held up another one"
            time.sleep(1.2)  # the slow endpoint's oldest request is now past the slow mark
            release.set()
            wait_until(lambda: all(
                delivery_row(harness, m.delivery_id).status in ("succeeded", "pending")
                for m in hung + more))  # fmt: skip
        assert most[0] == 1, "more than the cap in flight to one endpoint"
    deferred = harness.metrics.attempts.labels(outcome="deferred", status_class="none")
    assert deferred._value.get() >= 1, "nothing was deferred behind the slow endpoint"
