"""`RabbitTransport`: the facade the services see. It opens connections lazily, hands
publishes to the publisher's I/O thread, and runs the rare admin calls (`declare`,
`queue_depth`, `purge`) on a short-lived `BlockingConnection` each (a cached idle one would
miss heartbeats and be dropped anyway)."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import pika
from pika import exceptions as amqp

from common.errors import (
    BrokerUnavailableError,
    ConnectionLostError,
    PublishError,
    TransportError,
)
from common.transport.base import Consumer, Outgoing, Transport
from common.transport.rabbitmq.connect import (
    CONNECT_BUDGET_S,
    PRECONDITION_FAILED,
    Nodes,
    channel_error,
    close_quietly,
    connect,
    is_broker_error,
    parameters,
)
from common.transport.rabbitmq.consumer import RabbitConsumer
from common.transport.rabbitmq.outage import Outage
from common.transport.rabbitmq.publisher import Batch, Publisher
from common.transport.topology import QUORUM_GROUP_SIZE, Queue, Topology, with_quorum_group_size

T = TypeVar("T")

log = logging.getLogger(__name__)

HELPER_THREADS = 4  # `submit`'s blocking publishes: only while (re)connecting
OPEN_GRACE_S = 1.0  # past an attempt's bound, for pika to report its own timeout first


class RabbitTransport(Transport):
    """The production transport. Connections open lazily; `close()` ends them all.

    `publish` raises `TopologyError` when a message targets an exchange that does not exist
    (RabbitMQ closes the channel with NOT_FOUND; the publisher reopens it for the next call).

    A caller waits at most `connect_budget_s` for a connection. When the broker stayed
    unreachable that long, it and every later caller get `BrokerUnavailableError` at once
    while a background thread reconnects (`Outage`); a process whose callers are waiting
    people (the API, the CLI) passes a budget of seconds, a service the default.
    """

    def __init__(
        self, url: str, *, connect_budget_s: float = CONNECT_BUDGET_S, quorum_group_size: int = 0
    ) -> None:
        self._nodes = Nodes(url)
        self._group_size = self._nodes.quorum_group_size(quorum_group_size)
        self._connect_budget_s = connect_budget_s
        self._outage = Outage(self._probe)
        self._closed = False
        self._publisher: Publisher | None = None
        self._lock = threading.Lock()
        self._connect_lock = threading.Lock()
        self._consumers: set[RabbitConsumer] = set()
        self._helper: ThreadPoolExecutor | None = None  # blocking publishes for `submit`

    def declare(self, topology: Topology) -> None:
        plan = with_quorum_group_size(topology, self._group_size)

        def run(channel: Any) -> None:
            for exchange in plan.exchanges:
                arguments = dict(exchange.arguments) or None
                channel.exchange_declare(
                    exchange.name, exchange.kind, durable=True, arguments=arguments
                )
            # Bindings before unbindings: a message may reach a queue twice meanwhile (a
            # duplicate, which delivery tolerates), never no queue at all.
            for exchange in plan.exchanges:
                for source, key in exchange.bindings:
                    channel.exchange_bind(exchange.name, source, routing_key=key)
            for queue in plan.queues:
                channel = _declare_queue(channel, queue)
                for exchange_name, key in queue.bindings:
                    match = dict(queue.match) or None
                    channel.queue_bind(queue.name, exchange_name, routing_key=key, arguments=match)
            for queue_name, exchange_name, key in topology.unbindings:
                channel.queue_unbind(queue_name, exchange_name, routing_key=key)

        self._admin(run)

    def queue_depth(self, queue: str) -> int:
        return self.queue_depths([queue])[queue]

    def queue_depths(self, queues: Sequence[str]) -> dict[str, int]:
        # One connection for all: the backlog gauges read twenty queues every few seconds,
        # and a connection's handshake costs the broker and this process far more than a
        # passive declare does.
        def read(channel: Any) -> dict[str, int]:
            return {
                q: int(channel.queue_declare(q, passive=True).method.message_count) for q in queues
            }

        return self._admin(read)

    def purge(self, queue: str) -> int:
        return self._admin(lambda channel: int(channel.queue_purge(queue).method.message_count))

    def publish(self, messages: Sequence[Outgoing], *, timeout_s: float = 30.0) -> None:
        if not messages:
            return
        deadline = time.monotonic() + timeout_s
        batch = self._publish_once(messages, deadline)
        # A drop is often noticed only when the next publish arrives; a batch that never
        # reached the socket cannot be a duplicate, so it gets one more go on a new connection.
        if isinstance(batch.error, ConnectionLostError) and not batch.sent:
            batch = self._publish_once(messages, deadline)
        if batch.error is not None:
            raise batch.error

    def _publish_once(self, messages: Sequence[Outgoing], deadline: float) -> Batch:
        batch = Batch(messages)
        self._live_publisher(deadline).hand_over([batch])
        if not batch.done.wait(max(0.0, deadline - time.monotonic())):
            raise PublishError(f"no confirm for {len(messages)} message(s) in time")
        return batch

    def submit(self, messages: Sequence[Outgoing], *, timeout_s: float = 30.0) -> Future[None]:
        return self.submit_many([messages], timeout_s=timeout_s)[0]

    def submit_many(
        self, batches: Sequence[Sequence[Outgoing]], *, timeout_s: float = 30.0
    ) -> list[Future[None]]:
        """Hand the batches to the publisher's I/O thread in one wake-up, without waiting:
        each future is settled from there once the broker confirmed its batch. Only when no
        connection is open yet (connecting blocks), or a batch was lost before it reached
        the socket, does a helper thread run the blocking `publish`. The caller bounds its
        own wait."""
        with self._lock:
            publisher = self._publisher
        futures: list[Future[None]] = []
        handed: list[Batch] = []
        for messages in batches:
            future: Future[None] = Future()
            future.set_running_or_notify_cancel()  # a waiter that gives up cannot cancel it
            futures.append(future)
            if not messages:
                future.set_result(None)
            elif publisher is None or publisher.dead:
                self._in_helper(messages, timeout_s, future)
            else:
                handed.append(Batch(messages, functools.partial(self._settled, future, timeout_s)))
        if publisher is not None and handed:
            publisher.hand_over(handed)
        return futures

    def _settled(self, future: Future[None], timeout_s: float, batch: Batch) -> None:
        if isinstance(batch.error, ConnectionLostError) and not batch.sent:
            self._in_helper(batch.messages, timeout_s, future)  # as `publish` retries it
        elif batch.error is not None:
            future.set_exception(batch.error)
        else:
            future.set_result(None)

    def _in_helper(
        self, messages: Sequence[Outgoing], timeout_s: float, into: Future[None]
    ) -> None:
        def run() -> None:
            try:
                self.publish(messages, timeout_s=timeout_s)
            except Exception as exc:  # whatever it is, the waiter must hear of it
                into.set_exception(exc)
            else:
                into.set_result(None)

        with self._lock:
            if self._closed:
                into.set_exception(TransportError("the transport is closed"))
                return
            if self._helper is None:
                self._helper = ThreadPoolExecutor(HELPER_THREADS, "hookline-publish")
            self._helper.submit(run)

    def _live_publisher(self, deadline: float) -> Publisher:
        # One caller connects while the others wait for it, rather than all hammering the
        # broker; `_lock` stays free so that `close()` never waits for a connect.
        if not self._connect_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise ConnectionLostError("timed out waiting for the publisher connection")
        try:
            with self._lock:
                if self._closed:
                    raise TransportError("the transport is closed")
                if self._publisher is not None and not self._publisher.dead:
                    return self._publisher

            def attempt(attempt_s: float) -> Publisher:
                def open_(url: str) -> Publisher:
                    publisher = Publisher(parameters(url, "publisher", attempt_s))
                    publisher.wait_open(attempt_s + OPEN_GRACE_S)
                    return publisher

                return self._nodes.attempt(open_)

            budget_s = min(self._connect_budget_s, max(0.0, deadline - time.monotonic()))
            fresh = self._connect(attempt, budget_s)
            with self._lock:
                if not self._closed:
                    self._publisher = fresh
                    return fresh
            fresh.stop()
            raise TransportError("the transport is closed")
        finally:
            self._connect_lock.release()

    def _connect(self, attempt: Callable[[float], T], budget_s: float) -> T:
        """`connect`, failing at once while an outage lasts, and starting one when the
        broker stayed unreachable for the whole budget."""
        self._outage.check()
        try:
            return connect(attempt, budget_s)
        except ConnectionLostError as exc:
            self._outage.begin(str(exc))
            raise BrokerUnavailableError(str(exc)) from None

    def _blocking(self, role: str) -> Any:
        def attempt(attempt_s: float) -> Any:
            return self._nodes.attempt(
                lambda url: pika.BlockingConnection(parameters(url, role, attempt_s))
            )

        return self._connect(attempt, self._connect_budget_s)

    def _probe(self) -> None:
        """One full attempt, on the outage's reconnect thread; pika's errors pass through."""
        close_quietly(
            self._nodes.attempt(lambda url: pika.BlockingConnection(parameters(url, "reconnect")))
        )

    def consume(self, queue: str, *, prefetch: int) -> Consumer:
        return self.consume_many([queue], prefetch=prefetch)

    def consume_many(self, queues: Sequence[str], *, prefetch: int) -> Consumer:
        queue = ",".join(queues)
        connection = self._blocking(f"consumer {queue}")
        try:
            consumer = RabbitConsumer(connection, queues, max(1, prefetch), self)
        except Exception as exc:
            if not is_broker_error(exc):
                raise
            close_quietly(connection)
            if isinstance(exc, amqp.ChannelClosedByBroker):
                raise channel_error(exc) from None
            raise ConnectionLostError(f"cannot consume from {queue!r}: {exc!r}") from None
        with self._lock:
            if self._closed:
                consumer.close()
                raise TransportError("the transport is closed")
            self._consumers.add(consumer)
        return consumer

    def forget(self, consumer: RabbitConsumer) -> None:
        with self._lock:
            self._consumers.discard(consumer)

    def _admin(self, operation: Callable[[Any], T]) -> T:
        if self._closed:
            raise TransportError("the transport is closed")
        connection = self._blocking("admin")
        try:
            return operation(connection.channel())
        except amqp.ChannelClosedByBroker as exc:
            raise channel_error(exc) from None
        except Exception as exc:
            if not is_broker_error(exc):
                raise
            raise ConnectionLostError(f"admin connection lost: {exc!r}") from None
        finally:
            close_quietly(connection)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            publisher, self._publisher = self._publisher, None
            consumers = list(self._consumers)
            helper, self._helper = self._helper, None
        self._outage.close()
        if publisher is not None:
            publisher.stop()
        if helper is not None:
            helper.shutdown(wait=False)
        for consumer in consumers:
            consumer.close()


def _declare_queue(channel: Any, queue: Queue) -> Any:
    """Declare `queue`; the channel to go on with. A quorum queue that exists with another
    group size is kept as it is: the size applies only when a queue is created (an
    operator grows an existing one with `rabbitmq-queues grow`), and refusing to start
    over it would take a deployment down for a replica count."""
    try:
        channel.queue_declare(queue.name, durable=True, arguments=dict(queue.arguments))
        return channel
    except amqp.ChannelClosedByBroker as exc:
        if exc.reply_code != PRECONDITION_FAILED or QUORUM_GROUP_SIZE not in exc.reply_text:
            raise
    log.info("queue exists with another quorum group size; kept as it is",
             extra={"queue": queue.name})  # fmt: skip
    channel = channel.connection.channel()
    channel.queue_declare(queue.name, passive=True)
    return channel
