"""Reading what landed in a queue, for tests."""

from __future__ import annotations

import time

from common.transport import Message, Transport, topology
from common.wire import Event, decode

DRAIN_TIMEOUT_S = 5.0


def messages_waiting(transport: Transport, queue: str) -> list[Message]:
    """Consume (and ack) every message waiting in `queue`, raw."""
    consumer = transport.consume(queue, prefetch=1000)
    found: list[Message] = []
    try:
        for message in consumer:
            if message is None:
                break
            found.append(message)
        consumer.ack_many(found)
    finally:
        consumer.close()
    return found


def events_waiting(transport: Transport) -> list[tuple[Message, Event]]:
    """Consume (and ack) every event waiting in `hookline.events`, decoded."""
    consumer = transport.consume(topology.EVENTS, prefetch=1000)
    found: list[tuple[Message, Event]] = []
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    try:
        for message in consumer:
            if message is None or time.monotonic() > deadline:
                break
            found.append((message, decode(Event, message.body)))
            consumer.ack(message)
    finally:
        consumer.close()
    return found


# Where the router's delivery messages land: every shard, the overflow shard, and the
# unsharded queue (architecture §3); the default shard count.
DELIVERY_QUEUES = topology.build(()).delivery_queues


def delivery_depth(transport: Transport) -> int:
    """Delivery messages ready over every delivery queue."""
    return sum(transport.queue_depth(queue) for queue in DELIVERY_QUEUES)
