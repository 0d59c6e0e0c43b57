"""One contract, two transports: every test here runs against memory and RabbitMQ."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from common.errors import ConnectionLostError, PublishError, TopologyError
from common.transport import Outgoing, Transport
from common.transport.topology import (
    DEAD,
    DELIVERIES,
    DELIVERY_LIMIT,
    DELIVERY_ROUTING_KEY,
    EVENTS,
    POISON,
    RETRY,
    Topology,
    retry_queue,
    tier_name,
)

from . import ORDERS, RETRY_DELAY_S, TOPOLOGY, idle, take, wait_until


def delivery(n: int = 0, **headers: object) -> Outgoing:
    return Outgoing(DELIVERIES, DELIVERY_ROUTING_KEY, b'{"n": %d}' % n, headers, f"m{n}")


def event(key: str) -> Outgoing:
    return Outgoing(EVENTS, key, b"{}", {}, key)


def test_declare_is_idempotent_and_keeps_messages(transport: Transport) -> None:
    transport.publish([delivery()])

    transport.declare(TOPOLOGY)
    transport.declare(TOPOLOGY)

    assert transport.queue_depth(DELIVERIES) == 1


def test_queue_depths_reads_each_queue_and_a_missing_one_fails_the_read(
    transport: Transport,
) -> None:
    transport.publish([delivery(0), delivery(1), event("order.created")])

    assert transport.queue_depths([DELIVERIES, EVENTS, DEAD]) == {DELIVERIES: 2, EVENTS: 1, DEAD: 0}
    with pytest.raises(TopologyError):
        transport.queue_depths([DELIVERIES, "hookline.no-such-queue"])
    assert transport.queue_depths([DELIVERIES]) == {DELIVERIES: 2}  # still usable


def test_redeclaring_a_queue_with_other_arguments_raises_topology_error(
    transport: Transport,
) -> None:
    changed = tuple(
        replace(q, arguments={**q.arguments, "x-delivery-limit": 99}) if q.name == DELIVERIES else q
        for q in TOPOLOGY.queues
    )

    with pytest.raises(TopologyError):
        transport.declare(Topology(TOPOLOGY.exchanges, changed))

    transport.declare(TOPOLOGY)  # the transport is still usable afterwards
    assert transport.queue_depth(DELIVERIES) == 0


def test_roundtrip_preserves_body_headers_routing_key_and_message_id(transport: Transport) -> None:
    headers = {"x-hookline-reason": "test", "attempt": 3, "nested": {"ok": True}, "empty": None}
    transport.publish([Outgoing(EVENTS, "order.created", b'{"id": "e1"}', headers, "e1")])
    consumer = transport.consume(EVENTS, prefetch=1)

    (message,) = take(iter(consumer), 1)

    assert message.queue == EVENTS
    assert message.body == b'{"id": "e1"}'
    assert message.routing_key == "order.created"
    assert message.message_id == "e1"
    assert message.headers == headers
    assert message.redelivered is False
    assert message.delivery_count == 0
    consumer.ack(message)


def test_topic_routing_matches_star_and_hash(transport: Transport) -> None:
    keys = ["order.created", "order.created.v2", "user.deleted"]
    transport.publish([event(key) for key in keys])
    everything, orders = (
        transport.consume(EVENTS, prefetch=10),
        transport.consume(ORDERS, prefetch=10),
    )

    received_all = take(iter(everything), 3)
    received_orders = take(iter(orders), 1) + idle(iter(orders), 0.3)

    assert sorted(m.routing_key for m in received_all) == sorted(keys)
    assert [m.routing_key for m in received_orders] == ["order.created"]


def test_unroutable_publish_raises_publish_error(transport: Transport) -> None:
    with pytest.raises(PublishError, match="unroutable"):
        transport.publish([Outgoing(DELIVERIES, "no-such-key", b"{}")], timeout_s=5)

    transport.publish([delivery()], timeout_s=5)
    assert transport.queue_depth(DELIVERIES) == 1


def test_publish_to_undeclared_exchange_raises_topology_error_then_recovers(
    transport: Transport,
) -> None:
    with pytest.raises(TopologyError):
        transport.publish([Outgoing("hookline.nowhere", "x", b"{}")], timeout_s=5)

    transport.publish([delivery(1), delivery(2)], timeout_s=5)
    assert transport.queue_depth(DELIVERIES) == 2


def test_header_values_amqp_cannot_carry_are_refused(transport: Transport) -> None:
    with pytest.raises(PublishError):
        transport.publish([delivery(ratio=0.5)], timeout_s=5)


def test_prefetch_bounds_the_unsettled_messages(transport: Transport) -> None:
    transport.publish([delivery(n) for n in range(5)])
    consumer = transport.consume(DELIVERIES, prefetch=2)
    stream = iter(consumer)

    first = take(stream, 2)
    assert idle(stream) == []

    consumer.ack(first[0])
    third = take(stream, 1)
    assert idle(stream) == []
    assert [m.message_id for m in first + third] == ["m0", "m1", "m2"]


def test_reject_with_requeue_redelivers_with_a_delivery_count(transport: Transport) -> None:
    transport.publish([delivery()])
    consumer = transport.consume(DELIVERIES, prefetch=1)
    stream = iter(consumer)

    (first,) = take(stream, 1)
    consumer.reject(first, requeue=True)
    (again,) = take(stream, 1)

    assert again.message_id == first.message_id
    assert again.redelivered is True
    assert again.delivery_count == 1
    consumer.ack(again)


def test_message_rejected_beyond_the_delivery_limit_lands_in_poison(transport: Transport) -> None:
    transport.publish([delivery()])
    consumer = transport.consume(DELIVERIES, prefetch=1)
    stream = iter(consumer)

    counts = []
    for _ in range(DELIVERY_LIMIT + 1):
        (message,) = take(stream, 1)
        counts.append(message.delivery_count)
        consumer.reject(message, requeue=True)

    assert counts == list(range(DELIVERY_LIMIT + 1))
    assert idle(stream) == []
    wait_until(lambda: transport.queue_depth(POISON) == 1)
    (poisoned,) = take(iter(transport.consume(POISON, prefetch=1)), 1)
    assert poisoned.message_id == "m0"
    assert poisoned.headers["x-death"][0]["reason"] == "delivery_limit"
    assert poisoned.headers["x-death"][0]["queue"] == DELIVERIES


def test_reject_without_requeue_dead_letters_to_poison(transport: Transport) -> None:
    transport.publish([delivery()])
    consumer = transport.consume(DELIVERIES, prefetch=1)
    (message,) = take(iter(consumer), 1)

    consumer.reject(message, requeue=False)

    (poisoned,) = take(iter(transport.consume(POISON, prefetch=1)), 1)
    assert poisoned.body == message.body
    assert poisoned.headers["x-death"][0]["reason"] == "rejected"
    assert transport.queue_depth(DELIVERIES) == 0


def test_retry_tier_dead_letters_back_to_deliveries_after_its_ttl(transport: Transport) -> None:
    started = time.monotonic()
    transport.publish([Outgoing(RETRY, tier_name(RETRY_DELAY_S), b"{}", {"attempt": 2}, "r1")])
    consumer = transport.consume(DELIVERIES, prefetch=1)

    (message,) = take(iter(consumer), 1)

    assert time.monotonic() - started >= RETRY_DELAY_S
    assert message.message_id == "r1"
    assert message.routing_key == DELIVERY_ROUTING_KEY
    assert message.headers["attempt"] == 2
    death = message.headers["x-death"][0]
    assert (death["queue"], death["reason"]) == (retry_queue(RETRY_DELAY_S), "expired")
    consumer.ack(message)


def test_ack_from_another_thread_settles_the_message(transport: Transport) -> None:
    transport.publish([delivery(0), delivery(1)])
    consumer = transport.consume(DELIVERIES, prefetch=1)
    stream = iter(consumer)
    (first,) = take(stream, 1)

    worker = threading.Thread(target=consumer.ack, args=(first,))
    worker.start()
    worker.join(5)

    (second,) = take(stream, 1)  # only arrives once the ack reached the broker
    consumer.ack(second)
    consumer.close()
    assert second.message_id == "m1"
    assert transport.queue_depth(DELIVERIES) == 0


def test_ack_many_from_another_thread_settles_the_whole_batch(transport: Transport) -> None:
    transport.publish([delivery(n) for n in range(5)])
    consumer = transport.consume(DELIVERIES, prefetch=3)
    stream = iter(consumer)
    batch = take(stream, 3)
    assert idle(stream, 0.3) == []  # prefetch is full until the batch is acked

    worker = threading.Thread(target=consumer.ack_many, args=(batch,))
    worker.start()
    worker.join(5)

    rest = take(stream, 2)
    consumer.ack_many(rest)
    with pytest.raises(TopologyError):
        consumer.ack_many(rest)
    consumer.close()
    assert sorted(str(m.message_id) for m in batch + rest) == [f"m{n}" for n in range(5)]
    assert transport.queue_depth(DELIVERIES) == 0


def test_out_of_order_batches_and_rejects_settle_exactly_their_own_messages(
    transport: Transport,
) -> None:
    # RabbitMQ coalesces a batch's acks into one `multiple` ack where it can: it must never
    # cover a message that is still held, nor one rejected back to the queue.
    transport.publish([delivery(n) for n in range(10)])
    consumer = transport.consume(DELIVERIES, prefetch=10)
    stream = iter(consumer)
    held = take(stream, 10)
    consumer.reject(held[1], requeue=True)
    consumer.ack_many([held[5], held[0], held[2], held[6]])  # 3 and 4 still held
    worker = threading.Thread(target=consumer.ack_many, args=([held[9], held[4]],))
    worker.start()
    worker.join(5)
    came_back = idle(stream, 0.3)  # pumps the acks out; the requeued m1 may return here
    consumer.ack_many(came_back)
    consumer.close()  # 3, 7 and 8 were never settled: back to the queue
    again = transport.consume(DELIVERIES, prefetch=10)
    again_stream = iter(again)
    redelivered = idle(again_stream, 0.5)
    again.ack_many(redelivered)
    assert sorted(str(m.message_id) for m in came_back + redelivered) == ["m1", "m3", "m7", "m8"]
    again.close()
    assert transport.queue_depth(DELIVERIES) == 0


def test_settling_a_message_twice_raises(transport: Transport) -> None:
    transport.publish([delivery()])
    consumer = transport.consume(DELIVERIES, prefetch=1)
    (message,) = take(iter(consumer), 1)
    consumer.ack(message)

    with pytest.raises(TopologyError):
        consumer.ack(message)


def test_cancel_stops_deliveries_while_pending_acks_still_flush(transport: Transport) -> None:
    transport.publish([delivery(n) for n in range(5)])
    consumer = transport.consume(DELIVERIES, prefetch=3)
    stream = iter(consumer)
    held = take(stream, 2)

    consumer.cancel()
    workers = [threading.Thread(target=consumer.ack, args=(m,)) for m in held]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(5)

    assert idle(stream, 0.5) == []
    consumer.close()
    wait_until(lambda: transport.queue_depth(DELIVERIES) == 3)


def test_closing_a_consumer_returns_its_unsettled_messages(transport: Transport) -> None:
    transport.publish([delivery(n) for n in range(3)])
    consumer = transport.consume(DELIVERIES, prefetch=5)
    held = take(iter(consumer), 2)

    consumer.close()

    wait_until(lambda: transport.queue_depth(DELIVERIES) == 3)
    again = take(iter(transport.consume(DELIVERIES, prefetch=5)), 3)
    assert {m.message_id for m in again} == {"m0", "m1", "m2"}
    returned = [m for m in again if m.message_id in {h.message_id for h in held}]
    # A consumer that goes away counts as a delivery towards the poison limit.
    assert all(m.redelivered and m.delivery_count == 1 for m in returned)


def test_close_from_another_thread_ends_the_owners_iteration(transport: Transport) -> None:
    transport.publish([delivery(0)])
    consumer = transport.consume(DELIVERIES, prefetch=1)
    stream = iter(consumer)
    take(stream, 1)

    closer = threading.Thread(target=consumer.close)
    closer.start()
    closer.join(5)

    with pytest.raises(ConnectionLostError):
        idle(stream, 2.0)
    wait_until(lambda: transport.queue_depth(DELIVERIES) == 1)


def test_consuming_an_undeclared_queue_raises_topology_error(transport: Transport) -> None:
    with pytest.raises(TopologyError):
        transport.consume("hookline.nowhere", prefetch=1)


def test_concurrent_publishers_all_get_confirms(transport: Transport) -> None:
    errors: list[BaseException] = []

    def publish_batches(worker: int) -> None:
        try:
            for batch in range(5):
                base = worker * 1000 + batch * 100
                transport.publish([delivery(base + n) for n in range(20)], timeout_s=10)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=publish_batches, args=(w,)) for w in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)

    assert errors == []
    assert transport.queue_depth(DELIVERIES) == 8 * 5 * 20


def test_queue_depth_and_purge(transport: Transport) -> None:
    transport.publish([delivery(n) for n in range(3)])
    transport.publish([Outgoing(DEAD, "", b"{}")])

    assert transport.queue_depth(DELIVERIES) == 3
    assert transport.purge(DELIVERIES) == 3
    assert transport.queue_depth(DELIVERIES) == 0
    assert transport.queue_depth(DEAD) == 1
    with pytest.raises(TopologyError):
        transport.queue_depth("hookline.nowhere")
    with pytest.raises(TopologyError):
        transport.purge("hookline.nowhere")


def test_submit_settles_its_future_once_the_messages_are_confirmed(transport: Transport) -> None:
    futures = [transport.submit([delivery(n), delivery(n + 100)], timeout_s=5) for n in range(10)]

    for future in futures:
        assert future.result(timeout=10) is None
    assert transport.queue_depth(DELIVERIES) == 20


def test_submit_reports_a_failed_publish_through_its_future(transport: Transport) -> None:
    future = transport.submit([Outgoing(DELIVERIES, "no-such-key", b"{}")], timeout_s=5)

    with pytest.raises(PublishError, match="unroutable"):
        future.result(timeout=10)
    assert transport.submit([], timeout_s=5).result(timeout=1) is None
