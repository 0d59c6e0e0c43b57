"""The in-memory broker: a strict twin of the RabbitMQ topology for the dev server and tests.

Strict means it refuses what RabbitMQ would refuse: publishing to an undeclared exchange,
an unroutable message, redeclaring a queue with other arguments, settling a message twice.
It models prefetch, TTL queues that dead-letter on expiry (head-first, like RabbitMQ),
quorum `x-delivery-limit`, and rejection to a dead-letter exchange.
"""

from __future__ import annotations

import collections
import datetime
import decimal
import itertools
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from common.errors import ConnectionLostError, PublishError, TopologyError
from common.transport.base import Consumer, Message, Outgoing, Transport, delivery_count_of
from common.transport.memory_routes import Routes
from common.transport.topology import Queue, Topology

IDLE_TICK_S = 0.05
# What an AMQP field table can carry (pika encodes nothing else: no floats, no tuples).
_AMQP_SCALARS = (str, bytes, bool, int, decimal.Decimal, datetime.datetime, type(None))


@dataclass
class _Envelope:
    body: bytes
    routing_key: str
    headers: dict[str, Any]
    message_id: str | None
    expires_at: float | None = None
    redelivered: bool = False


@dataclass
class _QueueState:
    spec: Queue
    ready: deque[_Envelope] = field(default_factory=deque)


def _amqp_encodable(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(key, str) and _amqp_encodable(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_amqp_encodable(item) for item in value)
    return isinstance(value, _AMQP_SCALARS)


class MemoryBroker:
    """The shared state: exchanges, queues and bindings, guarded by one condition."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.routes = Routes()
        self.queues: dict[str, _QueueState] = {}

    def declare(self, topology: Topology) -> None:
        with self.cond:
            for queue in topology.queues:
                state = self.queues.get(queue.name)
                if state is not None and dict(state.spec.arguments) != dict(queue.arguments):
                    raise TopologyError(f"queue {queue.name} exists with other arguments")
            for queue in topology.queues:
                self.queues.setdefault(queue.name, _QueueState(queue))
            self.routes.declare(topology, self.queues)

    def _enqueue(self, queue_name: str, envelope: _Envelope) -> None:
        state = self.queues[queue_name]
        ttl_ms = state.spec.ttl_ms
        envelope.expires_at = time.monotonic() + ttl_ms / 1000 if ttl_ms is not None else None
        state.ready.append(envelope)

    def publish(self, message: Outgoing) -> None:
        if not _amqp_encodable(dict(message.headers)):
            raise PublishError(f"headers hold a value AMQP cannot carry: {message.headers!r}")
        with self.cond:
            targets = self.routes.route(message.exchange, message.routing_key, message.headers)
            if not targets:
                raise PublishError(
                    f"unroutable: exchange {message.exchange!r} key {message.routing_key!r}"
                )
            for queue_name in targets:
                envelope = _Envelope(
                    message.body, message.routing_key, dict(message.headers), message.message_id
                )
                self._enqueue(queue_name, envelope)
            self.cond.notify_all()

    def dead_letter(self, queue_name: str, envelope: _Envelope, reason: str) -> None:
        """Move a message to its queue's dead-letter exchange, as RabbitMQ does (or drop it)."""
        spec = self.queues[queue_name].spec
        exchange = spec.arguments.get("x-dead-letter-exchange")
        if exchange is None:
            return
        key = spec.arguments.get("x-dead-letter-routing-key", envelope.routing_key)
        headers = dict(envelope.headers)
        headers.pop("x-delivery-count", None)
        deaths = list(headers.get("x-death", []))
        deaths.insert(0, {"queue": queue_name, "reason": reason, "count": 1})
        headers["x-death"] = deaths
        moved = _Envelope(envelope.body, key, headers, envelope.message_id)
        for target in self.routes.route(exchange, key, headers):
            self._enqueue(target, moved)
        self.cond.notify_all()

    def expire(self) -> None:
        """Dead-letter expired messages at the head of every TTL queue (head-first)."""
        now = time.monotonic()
        for name, state in self.queues.items():
            while state.ready and (state.ready[0].expires_at or now + 1) <= now:
                self.dead_letter(name, state.ready.popleft(), "expired")

    def requeue(self, queue_name: str, envelope: _Envelope) -> None:
        """Return a message after a reject or a lost consumer, counting the delivery."""
        state = self.queues[queue_name]
        count = delivery_count_of(envelope.headers) + 1
        limit = state.spec.arguments.get("x-delivery-limit")
        if limit is not None and count > int(limit):
            self.dead_letter(queue_name, envelope, "delivery_limit")
            return
        envelope.headers["x-delivery-count"] = count
        envelope.redelivered = True
        envelope.expires_at = None
        state.ready.appendleft(envelope)
        self.cond.notify_all()


class MemoryConsumer(Consumer):
    """A consumer on one or more queues: each has its own prefetch window, and messages are
    handed out round-robin over the queues that have some ready (`Transport.consume_many`)."""

    def __init__(self, broker: MemoryBroker, queues: Sequence[str], prefetch: int) -> None:
        for queue in queues:
            if queue not in broker.queues:
                raise TopologyError(f"queue {queue!r} was never declared")
        self._broker = broker
        self._queues = list(queues)
        self._next = 0  # where the round-robin looks first
        self._prefetch = max(1, prefetch)
        self._tags = itertools.count(1)
        self._unsettled: dict[int, tuple[str, _Envelope]] = {}
        self._cancelled = False
        self._closed = False

    def _take(self) -> Message | None:
        """The next message, round-robin over the queues with one ready and room in their
        window; the caller holds the broker's lock."""
        held = collections.Counter(queue for queue, _ in self._unsettled.values())
        count = len(self._queues)
        for step in range(count):
            queue = self._queues[(self._next + step) % count]
            ready = self._broker.queues[queue].ready
            if not ready or held[queue] >= self._prefetch:
                continue
            self._next = (self._next + step + 1) % count
            envelope = ready.popleft()
            tag = next(self._tags)
            self._unsettled[tag] = (queue, envelope)
            return Message(
                queue=queue,
                body=envelope.body,
                routing_key=envelope.routing_key,
                headers=dict(envelope.headers),
                redelivered=envelope.redelivered,
                tag=tag,
                message_id=envelope.message_id,
            )
        return None

    def __iter__(self) -> Iterator[Message | None]:
        broker = self._broker
        while True:
            with broker.cond:
                if self._closed:
                    raise ConnectionLostError("consumer closed")
                broker.expire()
                message = None if self._cancelled else self._take()
                if message is None:
                    broker.cond.wait(IDLE_TICK_S)
            yield message

    def _settle(self, message: Message) -> _Envelope | None:
        entry = self._unsettled.pop(message.tag, None)
        if entry is None and not self._closed:
            raise TopologyError(f"message {message.tag} was already settled (PRECONDITION_FAILED)")
        return None if entry is None else entry[1]

    def ack(self, message: Message) -> None:
        with self._broker.cond:
            self._settle(message)
            self._broker.cond.notify_all()

    def reject(self, message: Message, *, requeue: bool) -> None:
        with self._broker.cond:
            envelope = self._settle(message)
            if envelope is None:
                return
            if requeue:
                self._broker.requeue(message.queue, envelope)
            else:
                self._broker.dead_letter(message.queue, envelope, "rejected")

    def cancel(self) -> None:
        with self._broker.cond:
            self._cancelled = True

    def close(self) -> None:
        with self._broker.cond:
            if self._closed:
                return
            self._closed = True
            for tag in sorted(self._unsettled, reverse=True):
                self._broker.requeue(*self._unsettled.pop(tag))


class MemoryTransport(Transport):
    """A `Transport` on a `MemoryBroker`; several transports may share one broker."""

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self.broker = broker or MemoryBroker()
        self._consumers: list[MemoryConsumer] = []

    def declare(self, topology: Topology) -> None:
        self.broker.declare(topology)

    def publish(self, messages: Sequence[Outgoing], *, timeout_s: float = 30.0) -> None:
        for message in messages:
            self.broker.publish(message)

    def consume(self, queue: str, *, prefetch: int) -> Consumer:
        return self.consume_many([queue], prefetch=prefetch)

    def consume_many(self, queues: Sequence[str], *, prefetch: int) -> Consumer:
        consumer = MemoryConsumer(self.broker, queues, prefetch)
        self._consumers.append(consumer)
        return consumer

    def queue_depth(self, queue: str) -> int:
        with self.broker.cond:
            self.broker.expire()
            if queue not in self.broker.queues:
                raise TopologyError(f"queue {queue!r} was never declared")
            return len(self.broker.queues[queue].ready)

    def purge(self, queue: str) -> int:
        with self.broker.cond:
            if queue not in self.broker.queues:
                raise TopologyError(f"queue {queue!r} was never declared")
            state = self.broker.queues[queue]
            count = len(state.ready)
            state.ready.clear()
            return count

    def close(self) -> None:
        for consumer in self._consumers:
            consumer.close()
        self._consumers.clear()
