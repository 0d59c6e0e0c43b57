"""The RabbitMQ transport, on pika: the only module in Hookline that imports pika.

pika objects are not thread-safe, so every connection has exactly one owning thread:

- Publishing: one I/O thread owns a `SelectConnection` in confirm mode. Callers on any thread
  hand a batch over with `add_callback_threadsafe` and wait; the I/O thread keys each message
  by its delivery tag and settles batches as Ack/Nack/Return frames arrive, so concurrent
  callers share one connection and one confirm window instead of a round-trip per message.
- Consuming: each `RabbitConsumer` owns a `BlockingConnection`, pumped by the thread that
  iterates it; other threads settle messages through `add_callback_threadsafe`.
- `declare`, `queue_depth`, `purge`: a short-lived `BlockingConnection` each (rare calls; a
  cached idle one would miss heartbeats and be dropped anyway).

pika's exceptions stop here: callers only ever see `common.errors` types.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pika
from pika import exceptions as amqp
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from common.errors import ConnectionLostError, PublishError, TopologyError, TransportError
from common.transport.base import Consumer, Message, Outgoing, Transport
from common.transport.topology import Topology

log = logging.getLogger(__name__)
T = TypeVar("T")

HEARTBEAT_S = 30
CONNECT_BUDGET_S = 30.0  # total time spent retrying a connection before giving up
CONNECT_ATTEMPT_S = 10.0
IDLE_TICK_S = 0.1
STOP_WAIT_S = 5.0
NOT_FOUND, ACCESS_REFUSED, PRECONDITION_FAILED, NOT_ALLOWED = 404, 403, 406, 530
# Failures that retrying cannot fix: wrong credentials, unknown vhost, wrong protocol.
_REFUSED: tuple[type[Exception], ...] = (amqp.AuthenticationError, amqp.IncompatibleProtocolError)
_REFUSED += (amqp.ProbableAuthenticationError, amqp.ProbableAccessDeniedError)


def _parameters(url: str, role: str) -> Any:
    params = pika.URLParameters(url)
    if "heartbeat=" not in url:
        params.heartbeat = HEARTBEAT_S
    # Named connections let an operator tell publishers from consumers in the management UI.
    params.client_properties = {"connection_name": f"hookline {role}"}
    return params


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, amqp.ConnectionClosedByBroker):
        return exc.reply_code not in (ACCESS_REFUSED, NOT_ALLOWED)
    return isinstance(exc, amqp.AMQPConnectionError) and not isinstance(exc, _REFUSED)


def _connect(attempt: Callable[[], T], budget_s: float) -> T:
    """Run a connection attempt with backoff until it succeeds or `budget_s` is spent."""
    retrying = Retrying(
        stop=stop_after_delay(budget_s),
        wait=wait_exponential(multiplier=0.1, max=2.0),
        retry=retry_if_exception(_is_transient),
        reraise=True,
    )
    try:
        return retrying(attempt)
    except amqp.AMQPError as exc:
        if _is_transient(exc):
            raise ConnectionLostError(f"RabbitMQ unreachable for {budget_s:g} s: {exc!r}") from None
        raise TransportError(f"RabbitMQ refused the connection: {exc!r}") from None


def _channel_error(exc: Any) -> TransportError:
    error = TopologyError if exc.reply_code in (NOT_FOUND, PRECONDITION_FAILED) else TransportError
    return error(f"{exc.reply_code} {exc.reply_text}")


def _plain(value: Any) -> Any:
    """Strip pika's `long` int subclass out of decoded headers, nested tables included."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _close_quietly(connection: Any) -> None:
    with contextlib.suppress(amqp.AMQPError):
        if connection.is_open:
            connection.close()


class _Batch:
    """One `publish` call: settled message by message on the I/O thread, awaited by the caller."""

    __slots__ = ("done", "error", "messages", "outstanding", "sent")

    def __init__(self, messages: Sequence[Outgoing]) -> None:
        self.messages = messages
        self.outstanding = len(messages)
        self.sent = False  # set on the I/O thread once a frame may have reached the broker
        self.error: TransportError | None = None
        self.done = threading.Event()

    def settle(self, error: TransportError | None = None, *, final: bool = False) -> None:
        self.error = self.error or error
        self.outstanding -= 1
        if final or self.outstanding <= 0:
            self.done.set()


class _CorkedConnection(pika.SelectConnection):  # type: ignore[misc]
    """Writes a batch's frames as one chunk: pika 1.4.4 (pinned) calls `send()` once per
    frame, three per message; corking cuts the publisher thread's CPU by about a quarter.
    `_adapter_emit_data` is pika's single write path for frames."""

    corked: list[bytes] | None = None

    def _adapter_emit_data(self, data: bytes) -> None:
        if self.corked is None:
            super()._adapter_emit_data(data)
        else:
            self.corked.append(data)

    def uncork(self) -> None:
        corked, self.corked = self.corked, None
        if corked:
            super()._adapter_emit_data(b"".join(corked))


class _Publisher:
    """One connection in confirm mode and the I/O thread that owns it for its whole life.

    When the connection drops it fails every outstanding batch and dies; the transport builds
    a new one on the next publish.
    """

    def __init__(self, params: Any) -> None:
        self._lock = threading.Lock()
        self._batches: set[_Batch] = set()  # handed over and still awaited; under _lock
        self.dead = False
        self._opened = threading.Event()
        self._open_error: BaseException | None = None
        # Everything below is touched only by the I/O thread.
        self._channel: Any = None
        self._waiting: list[_Batch] = []  # arrived while the channel was (re)opening
        self._pending: dict[int, _Batch] = {}  # delivery tag -> batch
        self._next_tag = self._lowest = 1
        self._conn = _CorkedConnection(
            params,
            on_open_callback=lambda conn: conn.channel(on_open_callback=self._on_channel_open),
            on_open_error_callback=self._on_open_error,
            on_close_callback=lambda _, reason: self._die(f"connection closed: {reason!r}"),
        )
        self._thread = threading.Thread(target=self._run, name="hookline-publisher", daemon=True)
        self._thread.start()

    def wait_open(self, timeout_s: float) -> None:
        """Raise pika's own error for a failed attempt, so the retry policy can judge it."""
        if not self._opened.wait(timeout_s):
            self.stop()
            raise amqp.AMQPConnectionError("timed out opening the publisher connection")
        if self._open_error is not None:
            raise self._open_error

    def publish(self, batch: _Batch, timeout_s: float) -> None:
        """Hand `batch` to the I/O thread and wait until it is settled or `timeout_s` passes."""
        with self._lock:
            if self.dead:
                batch.settle(ConnectionLostError("the publisher connection is closed"), final=True)
                return
            self._batches.add(batch)
            self._conn.ioloop.add_callback_threadsafe(functools.partial(self._send, batch))
        try:
            if not batch.done.wait(timeout_s):
                raise PublishError(f"no confirm for {len(batch.messages)} message(s) in time")
        finally:
            with self._lock:
                self._batches.discard(batch)

    def stop(self) -> None:
        with self._lock:
            if not self.dead:
                self._conn.ioloop.add_callback_threadsafe(self._close)
        self._thread.join(STOP_WAIT_S)

    # I/O thread from here on.

    def _run(self) -> None:
        try:
            self._conn.ioloop.start()
        except Exception:
            log.exception("publisher I/O loop crashed; closing its connection")
            if self._conn.is_open:  # run the loop once more for the close handshake
                with contextlib.suppress(Exception):
                    self._conn.close()
                    self._conn.ioloop.start()
        finally:
            self._die("publisher I/O loop ended")
            if not self._opened.is_set():
                self._open_error = amqp.AMQPConnectionError("connection closed while opening")
                self._opened.set()
            self._conn.ioloop.close()

    def _die(self, reason: str) -> None:
        with self._lock:
            self.dead = True
            batches, self._batches = self._batches, set()
        for batch in batches:
            batch.settle(ConnectionLostError(reason), final=True)
        self._pending.clear()
        self._waiting.clear()
        self._conn.ioloop.stop()

    def _close(self) -> None:
        if not (self._conn.is_closing or self._conn.is_closed):
            self._conn.close()

    def _on_open_error(self, conn: Any, error: BaseException) -> None:
        self._open_error = error
        self._opened.set()
        conn.ioloop.stop()

    def _on_channel_open(self, channel: Any) -> None:
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(self._on_confirm, callback=lambda _: self._on_confirming(channel))

    def _on_confirming(self, channel: Any) -> None:
        self._channel = channel
        self._next_tag = self._lowest = 1  # delivery tags restart on every channel
        self._opened.set()
        waiting, self._waiting = self._waiting, []
        for batch in waiting:
            self._send(batch)

    def _on_channel_closed(self, _channel: Any, reason: BaseException) -> None:
        """A publish to a missing exchange closes the channel: fail what it held, reopen."""
        self._channel = None
        if not self._conn.is_open:
            return  # the whole connection is going: `_die` fails the batches as lost
        missing = getattr(reason, "reply_code", None) == NOT_FOUND
        text = getattr(reason, "reply_text", repr(reason))
        for batch in set(self._pending.values()):
            if missing and any(f"'{m.exchange}'" in text for m in batch.messages):
                batch.settle(TopologyError(f"publish failed: {text}"), final=True)
            else:
                batch.settle(PublishError(f"channel closed before confirm: {text}"), final=True)
        self._pending.clear()
        if self._conn.is_open:
            self._conn.channel(on_open_callback=self._on_channel_open)

    def _send(self, batch: _Batch) -> None:
        if self._channel is None:
            self._waiting.append(batch)
            return
        batch.sent = True
        self._conn.corked = []
        try:
            for message in batch.messages:
                properties = pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=pika.DeliveryMode.Persistent,
                    headers=dict(message.headers) or None,
                    message_id=message.message_id,
                    # Basic.Return carries no delivery tag; this is how it finds its batch.
                    correlation_id=str(self._next_tag),
                )
                try:
                    self._channel.basic_publish(
                        message.exchange, message.routing_key, message.body, properties, True
                    )
                except Exception as exc:  # pika marshals before writing: nothing was sent
                    batch.settle(PublishError(f"cannot publish to {message.exchange!r}: {exc!r}"))
                    continue
                self._pending[self._next_tag] = batch
                self._next_tag += 1
        finally:
            self._conn.uncork()

    def _on_return(self, _channel: Any, method: Any, properties: Any, _body: bytes) -> None:
        """Arrives before the ack for the same message, which then settles it as failed."""
        batch = self._pending.get(int(properties.correlation_id or 0))
        if batch is not None:
            where = f"exchange {method.exchange!r} key {method.routing_key!r}"
            batch.error = batch.error or PublishError(f"unroutable: {where}")

    def _on_confirm(self, frame: Any) -> None:
        tag, multiple = frame.method.delivery_tag, frame.method.multiple
        nacked = isinstance(frame.method, pika.spec.Basic.Nack)
        error = PublishError("the broker refused the message (nack)") if nacked else None
        for settled in range(self._lowest, tag + 1) if multiple else (tag,):
            batch = self._pending.pop(settled, None)
            if batch is not None:
                batch.settle(error)
        while self._lowest < self._next_tag and self._lowest not in self._pending:
            self._lowest += 1


@dataclass(frozen=True, eq=False)
class _Delivery:
    """A message's tag: the consumer (hence connection) that delivered it, and its number."""

    consumer: RabbitConsumer
    number: int


class RabbitConsumer(Consumer):
    """A consumer owning one `BlockingConnection`, iterated by the thread that created it.

    To shut down, `cancel()` and keep iterating: the iterator goes on yielding `None` while it
    pumps the connection, which flushes acks from worker threads and answers heartbeats; then
    `close()`. The owner must come back to the iterator at least every `HEARTBEAT_S` seconds.
    `close()` from another thread only asks the owner to close at its next tick.
    """

    def __init__(
        self, connection: Any, queue: str, prefetch: int, transport: RabbitTransport
    ) -> None:
        self._conn, self._queue, self._transport = connection, queue, transport
        self._owner = threading.current_thread()
        self._lock = threading.Lock()
        self._unsettled: set[int] = set()
        self._dead = self._cancel_requested = self._close_requested = False
        self._channel = connection.channel()
        # Fail now on a missing queue, as the in-memory twin does, not at the first next().
        self._channel.queue_declare(queue, passive=True)
        self._channel.basic_qos(prefetch_count=prefetch)
        self._stream: Iterator[Any] | None = self._channel.consume(
            queue, inactivity_timeout=IDLE_TICK_S
        )

    def __iter__(self) -> Iterator[Message | None]:
        while True:
            delivery = None
            try:
                if self._close_requested:
                    self._close_now()
                if self._dead:
                    raise ConnectionLostError(f"consumer on {self._queue!r} is closed")
                if self._cancel_requested and self._stream is not None:
                    self._cancel_now()
                if self._stream is None:
                    self._conn.process_data_events(time_limit=IDLE_TICK_S)
                elif (delivery := next(self._stream, None)) is None:
                    self._close_now()  # the broker cancelled us: queue deleted or moved
                    raise ConnectionLostError(f"the broker cancelled the {self._queue!r} consumer")
            except amqp.AMQPError as exc:
                self._close_now(flush=False)
                raise ConnectionLostError(f"consumer on {self._queue!r} lost: {exc!r}") from None
            yield None if delivery is None or delivery[0] is None else self._message(*delivery)

    def _message(self, method: Any, properties: Any, body: bytes) -> Message:
        with self._lock:
            self._unsettled.add(method.delivery_tag)
        return Message(
            queue=self._queue,
            body=body,
            routing_key=method.routing_key,
            headers=_plain(properties.headers or {}),
            redelivered=bool(method.redelivered),
            tag=_Delivery(self, method.delivery_tag),
            message_id=properties.message_id,
        )

    def ack(self, message: Message) -> None:
        self._owner_of(message)._settle(message.tag.number, None)

    def ack_many(self, messages: Sequence[Message]) -> None:
        """One hand-over to the connection's thread for the whole batch, not one per ack."""
        numbers = []
        for message in messages:
            if self._owner_of(message) is not self:
                self._owner_of(message).ack(message)
            else:
                numbers.append(message.tag.number)
        with self._lock:
            if self._dead:
                return
            for number in numbers:
                if number not in self._unsettled:
                    raise TopologyError(
                        f"message {number} was already settled (PRECONDITION_FAILED)"
                    )
            self._unsettled.difference_update(numbers)
            owner = threading.current_thread() is self._owner
            with contextlib.suppress(amqp.AMQPError):
                if not owner:
                    self._conn.add_callback_threadsafe(functools.partial(self._ack_all, numbers))
        if owner:
            with contextlib.suppress(amqp.AMQPError):
                self._ack_all(numbers)

    def _ack_all(self, numbers: list[int]) -> None:
        for number in numbers:
            self._apply(number, None)

    def reject(self, message: Message, *, requeue: bool) -> None:
        self._owner_of(message)._settle(message.tag.number, requeue)

    @staticmethod
    def _owner_of(message: Message) -> RabbitConsumer:
        if not isinstance(message.tag, _Delivery):
            raise TransportError("this message was not delivered by RabbitMQ")
        return message.tag.consumer

    def _settle(self, number: int, requeue: bool | None) -> None:
        with self._lock:
            if self._dead:
                return  # its connection is gone, so the broker redelivers the message anyway
            if number not in self._unsettled:
                raise TopologyError(f"message {number} was already settled (PRECONDITION_FAILED)")
            self._unsettled.discard(number)
            owner = threading.current_thread() is self._owner
            # Failing means the connection is going: the broker redelivers, the iterator reports.
            with contextlib.suppress(amqp.AMQPError):
                if not owner:
                    self._conn.add_callback_threadsafe(
                        functools.partial(self._apply, number, requeue)
                    )
        if owner:
            with contextlib.suppress(amqp.AMQPError):
                self._apply(number, requeue)  # at once, not at the owner's next tick

    def _apply(self, number: int, requeue: bool | None) -> None:
        if not self._channel.is_open:
            return
        if requeue is None:
            self._channel.basic_ack(number)
        else:
            self._channel.basic_reject(number, requeue=requeue)

    def cancel(self) -> None:
        self._cancel_requested = True
        if threading.current_thread() is self._owner:
            try:
                self._cancel_now()
            except amqp.AMQPError:
                self._close_now(flush=False)  # the iterator reports it on its next tick

    def _cancel_now(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None and self._channel.is_open:
            # Requeues what pika prefetched but never yielded, one by one, then cancels.
            self._channel.cancel()

    def close(self) -> None:
        if threading.current_thread() is self._owner or not self._owner.is_alive():
            self._close_now()
        else:
            self._close_requested = True

    def _close_now(self, *, flush: bool = True) -> None:
        with self._lock:
            self._dead = True
        with contextlib.suppress(amqp.AMQPError):
            if flush and self._conn.is_open:
                self._conn.process_data_events(0)  # send acks already handed over, then close
            _close_quietly(self._conn)
        self._transport.forget(self)


class RabbitTransport(Transport):
    """The production transport. Connections open lazily; `close()` ends them all.

    `publish` raises `TopologyError` when a message targets an exchange that does not exist
    (RabbitMQ closes the channel with NOT_FOUND; the publisher reopens it for the next call).
    """

    def __init__(self, url: str, *, connect_budget_s: float = CONNECT_BUDGET_S) -> None:
        self._url = url
        self._connect_budget_s = connect_budget_s
        self._closed = False
        self._publisher: _Publisher | None = None
        self._lock = threading.Lock()
        self._connect_lock = threading.Lock()
        self._consumers: set[RabbitConsumer] = set()

    def declare(self, topology: Topology) -> None:
        def run(channel: Any) -> None:
            for exchange in topology.exchanges:
                channel.exchange_declare(exchange.name, exchange.kind, durable=True)
            for queue in topology.queues:
                channel.queue_declare(queue.name, durable=True, arguments=dict(queue.arguments))
                for exchange_name, key in queue.bindings:
                    channel.queue_bind(queue.name, exchange_name, routing_key=key)

        self._admin(run)

    def queue_depth(self, queue: str) -> int:
        return self._admin(lambda c: int(c.queue_declare(queue, passive=True).method.message_count))

    def purge(self, queue: str) -> int:
        return self._admin(lambda channel: int(channel.queue_purge(queue).method.message_count))

    def publish(self, messages: Sequence[Outgoing], *, timeout_s: float = 30.0) -> None:
        if not messages:
            return
        deadline = time.monotonic() + timeout_s
        batch = _Batch(messages)
        self._live_publisher(deadline).publish(batch, deadline - time.monotonic())
        # A drop is often noticed only when the next publish arrives; a batch that never
        # reached the socket cannot be a duplicate, so it gets one more go on a new connection.
        if isinstance(batch.error, ConnectionLostError) and not batch.sent:
            batch = _Batch(messages)
            self._live_publisher(deadline).publish(batch, deadline - time.monotonic())
        if batch.error is not None:
            raise batch.error

    def _live_publisher(self, deadline: float) -> _Publisher:
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

            def attempt() -> _Publisher:
                publisher = _Publisher(_parameters(self._url, "publisher"))
                publisher.wait_open(max(0.1, min(CONNECT_ATTEMPT_S, deadline - time.monotonic())))
                return publisher

            budget_s = min(self._connect_budget_s, max(0.0, deadline - time.monotonic()))
            fresh = _connect(attempt, budget_s)
            with self._lock:
                if not self._closed:
                    self._publisher = fresh
                    return fresh
            fresh.stop()
            raise TransportError("the transport is closed")
        finally:
            self._connect_lock.release()

    def consume(self, queue: str, *, prefetch: int) -> Consumer:
        params = _parameters(self._url, f"consumer {queue}")
        connection = _connect(lambda: pika.BlockingConnection(params), self._connect_budget_s)
        try:
            consumer = RabbitConsumer(connection, queue, max(1, prefetch), self)
        except amqp.AMQPError as exc:
            _close_quietly(connection)
            if isinstance(exc, amqp.ChannelClosedByBroker):
                raise _channel_error(exc) from None
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
        params = _parameters(self._url, "admin")
        connection = _connect(lambda: pika.BlockingConnection(params), self._connect_budget_s)
        try:
            return operation(connection.channel())
        except amqp.ChannelClosedByBroker as exc:
            raise _channel_error(exc) from None
        except amqp.AMQPError as exc:
            raise ConnectionLostError(f"admin connection lost: {exc!r}") from None
        finally:
            _close_quietly(connection)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            publisher, self._publisher = self._publisher, None
            consumers = list(self._consumers)
        if publisher is not None:
            publisher.stop()
        for consumer in consumers:
            consumer.close()
