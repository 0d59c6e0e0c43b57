"""The transport interface: what router, dispatcher and producer know of a message broker.

Two implementations stand behind it: `RabbitTransport` (pika, production) and
`MemoryTransport` (the strict in-memory twin for the dev server and unit tests). One
contract test suite runs against both, so they cannot drift.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from common.transport import topology as tp
from common.transport.topology import Topology


@dataclass(frozen=True)
class Outgoing:
    """A message to publish: persistent, confirmed, and `mandatory` (unroutable is an error)."""

    exchange: str
    routing_key: str
    body: bytes
    headers: Mapping[str, Any] = field(default_factory=dict)
    message_id: str | None = None


@dataclass
class Message:
    """A message handed to a consumer. `tag` is opaque: settle it through its `Consumer`."""

    queue: str
    body: bytes
    routing_key: str
    headers: dict[str, Any]
    redelivered: bool
    tag: Any
    message_id: str | None = None

    @property
    def delivery_count(self) -> int:
        """How many times the broker handed this message out before (quorum queues)."""
        return delivery_count_of(self.headers)


def delivery_count_of(headers: Mapping[str, Any]) -> int:
    """The `x-delivery-count` header as a count. RabbitMQ sets it on a redelivery but
    passes on a publisher's own on the first delivery, so it may be anything: a value that
    is not a count reads as 1, handed out before (a redelivery is only checked more)."""
    value = headers.get("x-delivery-count")
    if value is None:
        return 0
    try:
        return max(0, int(value))
    except (TypeError, ValueError, OverflowError):
        return 1


class Consumer(abc.ABC):
    """Iterate it in the thread that created it; `ack`/`reject` may be called from any thread.

    Iteration yields `None` whenever nothing arrived for a short while, so a run loop can
    check its stop flag without extra threads. It raises `ConnectionLostError` when the
    connection drops; unsettled messages are then redelivered by the broker.
    """

    @abc.abstractmethod
    def __iter__(self) -> Iterator[Message | None]: ...

    @abc.abstractmethod
    def ack(self, message: Message) -> None:
        """Settle a message as done. Thread-safe; a stale tag (after a reconnect) is ignored."""

    def ack_many(self, messages: Sequence[Message]) -> None:
        """Settle several messages as done; implementations may send them as one batch."""
        for message in messages:
            self.ack(message)

    @abc.abstractmethod
    def reject(self, message: Message, *, requeue: bool) -> None:
        """Give a message back (`requeue=True`) or drop it to the queue's dead-letter target."""

    @abc.abstractmethod
    def cancel(self) -> None:
        """Stop taking new messages; settling those already handed out still works."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the consumer; unsettled messages go back to the queue."""


class Transport(abc.ABC):
    """A connection to a broker that can declare topology, publish, and create consumers."""

    @abc.abstractmethod
    def declare(self, topology: Topology) -> None:
        """Declare every exchange, queue and binding in `topology` (idempotent)."""

    @abc.abstractmethod
    def publish(self, messages: Sequence[Outgoing], *, timeout_s: float = 30.0) -> None:
        """Publish all `messages` and return once the broker confirmed every one.

        Confirms are awaited as a window, not one round-trip per message, and concurrent
        callers share the connection. Raises `PublishError` when any message was nacked or
        returned as unroutable, `ConnectionLostError` when the connection dropped first.
        """

    def submit(self, messages: Sequence[Outgoing], *, timeout_s: float = 30.0) -> Future[None]:
        """`publish` for callers that must not block (an event loop): the future ends as
        `publish` would, with None or its error. This default publishes at once on the
        calling thread, which suits a broker in the same process."""
        future: Future[None] = Future()
        try:
            self.publish(messages, timeout_s=timeout_s)
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(None)
        return future

    def submit_many(
        self, batches: Sequence[Sequence[Outgoing]], *, timeout_s: float = 30.0
    ) -> list[Future[None]]:
        """One `submit` per batch, each settled on its own; implementations may hand them
        all over to their I/O in one go."""
        return [self.submit(messages, timeout_s=timeout_s) for messages in batches]

    @abc.abstractmethod
    def consume(self, queue: str, *, prefetch: int) -> Consumer:
        """A consumer on `queue` that holds at most `prefetch` unsettled messages."""

    @abc.abstractmethod
    def consume_many(self, queues: Sequence[str], *, prefetch: int) -> Consumer:
        """One consumer on several queues, each with its own window of `prefetch` unsettled
        messages; it hands out messages round-robin over the queues that have some, so a
        long queue cannot hold back a short one (fair delivery, architecture §3)."""

    @abc.abstractmethod
    def queue_depth(self, queue: str) -> int:
        """Messages ready in `queue` (not counting those handed out and unsettled)."""

    def queue_depths(self, queues: Sequence[str]) -> dict[str, int]:
        """`queue_depth` of each of `queues`; implementations may read them all at once."""
        return {queue: self.queue_depth(queue) for queue in queues}

    @abc.abstractmethod
    def purge(self, queue: str) -> int:
        """Remove every ready message from `queue`; returns how many."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close every connection this transport opened."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def poison_copy(message: Message, reason: str, error: str) -> Outgoing:
    """The raw message, unchanged, on its way to the poison queue with why and from where."""
    headers = dict(message.headers)
    headers.update({tp.H_REASON: reason, tp.H_ERROR: error[:500], tp.H_SOURCE_QUEUE: message.queue})
    return Outgoing(tp.POISON, "", message.body, headers, message.message_id)
