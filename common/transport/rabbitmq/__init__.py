"""The RabbitMQ transport, on pika: the only module in Hookline that imports pika.

pika objects are not thread-safe, so every connection has exactly one owning thread:

- Publishing: one I/O thread owns a `SelectConnection` in confirm mode. Callers on any thread
  put batches in its inbox (one `add_callback_threadsafe` wake-up for all that arrive before
  it runs) and wait (`publish`) or get a future (`submit`, for event loops); the I/O thread
  writes the frames itself, keys each message by its delivery tag and settles batches as
  Ack/Nack/Return frames arrive, so concurrent callers share one connection and one confirm
  window instead of a round-trip per message.
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
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import pika
from pika import exceptions as amqp
from pika import spec
from pika.data import encode_table
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
HELPER_THREADS = 4  # `submit`'s blocking publishes: only while (re)connecting
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
    """One `publish` call: settled message by message on the I/O thread, awaited by the caller
    (or, for `submit`, reported through `on_settled`, called once on the settling thread)."""

    __slots__ = ("done", "error", "messages", "on_settled", "outstanding", "sent")

    def __init__(
        self, messages: Sequence[Outgoing], on_settled: Callable[[_Batch], None] | None = None
    ) -> None:
        self.messages = messages
        self.outstanding = len(messages)
        self.sent = False  # set on the I/O thread once a frame may have reached the broker
        self.error: TransportError | None = None
        self.done = threading.Event()
        self.on_settled = on_settled

    def settle(self, error: TransportError | None = None, *, final: bool = False) -> None:
        if self.done.is_set():
            return
        self.error = self.error or error
        self.outstanding -= 1
        if final or self.outstanding <= 0:
            self.done.set()
            if self.on_settled is not None:
                self.on_settled(self)


# AMQP 0-9-1 framing (section 4.2.3), written here rather than by pika's `basic_publish`,
# which builds and marshals three frame objects per message: that was about 60 % of a
# batch's CPU. `test_rabbitmq.py` checks these bytes against pika's own marshalling.
_FRAME_METHOD, _FRAME_HEADER, _FRAME_BODY = spec.FRAME_METHOD, spec.FRAME_HEADER, spec.FRAME_BODY
_FRAME_END = bytes((spec.FRAME_END,))
_PUBLISH = struct.pack(">IH", spec.Basic.Publish.INDEX, 0)  # method id, ticket 0
_CONTENT_TYPE = b"\x10application/json"
_HAS_CONTENT_TYPE, _HAS_HEADERS, _HAS_DELIVERY_MODE = 1 << 15, 1 << 13, 1 << 12
_HAS_CORRELATION_ID, _HAS_MESSAGE_ID = 1 << 10, 1 << 7
_PERSISTENT = bytes((pika.DeliveryMode.Persistent.value,))
_METHOD_CACHE_SIZE = 4096  # distinct (exchange, routing key) pairs kept pre-marshalled


def _short(value: str) -> bytes:
    encoded = value.encode()
    if len(encoded) > 255:
        raise ValueError(f"short string longer than 255 bytes: {value[:40]!r}...")
    return bytes((len(encoded),)) + encoded


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + _FRAME_END


class _Frames:
    """Marshals one publish (Basic.Publish, content header, body frames) as pika would, with
    the method frame of each exchange and routing key built once."""

    def __init__(self, channel: int, body_max: int) -> None:
        self._channel = channel
        self._body_max = body_max
        self._methods: dict[tuple[str, str], bytes] = {}

    def publish(self, message: Outgoing, correlation_id: str) -> bytes:
        """The frames of one persistent, mandatory message; raises if it cannot be (a short
        string over 255 bytes, a header value AMQP cannot carry)."""
        key = (message.exchange, message.routing_key)
        method = self._methods.get(key)
        if method is None:
            payload = _PUBLISH + _short(key[0]) + _short(key[1]) + b"\x01"  # mandatory
            method = _frame(_FRAME_METHOD, self._channel, payload)
            if len(self._methods) >= _METHOD_CACHE_SIZE:
                self._methods.clear()
            self._methods[key] = method
        flags = _HAS_CONTENT_TYPE | _HAS_DELIVERY_MODE | _HAS_CORRELATION_ID
        parts = [b"", _CONTENT_TYPE]
        if message.headers:
            flags |= _HAS_HEADERS
            encode_table(parts, dict(message.headers))
        parts += (_PERSISTENT, _short(correlation_id))
        if message.message_id is not None:
            flags |= _HAS_MESSAGE_ID
            parts.append(_short(message.message_id))
        body = message.body
        parts[0] = struct.pack(">HxxQH", spec.BasicProperties.INDEX, len(body), flags)
        frames = [method, _frame(_FRAME_HEADER, self._channel, b"".join(parts))]
        for start in range(0, len(body), self._body_max):
            frames.append(_frame(_FRAME_BODY, self._channel, body[start : start + self._body_max]))
        return b"".join(frames)


class _Publisher:
    """One connection in confirm mode and the I/O thread that owns it for its whole life.

    Callers hand batches over into an inbox; the I/O thread is woken once for all that
    arrived meanwhile and writes their frames in one chunk. When the connection drops it
    fails every outstanding batch and dies; the transport builds a new one on the next publish.
    """

    def __init__(self, params: Any) -> None:
        self._lock = threading.Lock()
        self._inbox: list[_Batch] = []  # handed over, not yet taken by the I/O thread; _lock
        self.dead = False
        self._opened = threading.Event()
        self._open_error: BaseException | None = None
        # Everything below is touched only by the I/O thread.
        self._channel: Any = None
        self._frames: _Frames | None = None
        self._waiting: list[_Batch] = []  # arrived while the channel was (re)opening
        self._pending: dict[int, _Batch] = {}  # delivery tag -> batch
        self._next_tag = self._lowest = 1
        self._conn = pika.SelectConnection(
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

    def hand_over(self, batches: Sequence[_Batch]) -> None:
        """Queue `batches` for the I/O thread; they are settled there (or at once if dead)."""
        with self._lock:
            if not self.dead:
                woken = bool(self._inbox)  # later arrivals ride on the same wake-up
                self._inbox.extend(batches)
                if not woken:
                    self._conn.ioloop.add_callback_threadsafe(self._take_inbox)
                return
        for batch in batches:
            batch.settle(ConnectionLostError("the publisher connection is closed"), final=True)

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
            inbox, self._inbox = self._inbox, []
        batches = {*inbox, *self._waiting, *self._pending.values()}
        self._pending.clear()
        self._waiting.clear()
        for batch in batches:
            batch.settle(ConnectionLostError(reason), final=True)
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
        self._frames = _Frames(channel.channel_number, self._conn._body_max_length)
        self._next_tag = self._lowest = 1  # delivery tags restart on every channel
        self._opened.set()
        waiting, self._waiting = self._waiting, []
        self._send(waiting)

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

    def _take_inbox(self) -> None:
        with self._lock:
            batches, self._inbox = self._inbox, []
        if self._channel is None or not self._channel.is_open:
            self._waiting.extend(batches)
        else:
            self._send(batches)

    def _send(self, batches: list[_Batch]) -> None:
        """Every message of `batches` as one write (pika would make three per message)."""
        frames = self._frames
        if not batches or frames is None:
            return
        chunk: list[bytes] = []
        for batch in batches:
            batch.sent = True
            for message in batch.messages:
                try:
                    # Basic.Return carries no delivery tag; this is how it finds its batch.
                    chunk.append(frames.publish(message, str(self._next_tag)))
                except Exception as exc:  # marshalled before writing: nothing was sent
                    batch.settle(PublishError(f"cannot publish to {message.exchange!r}: {exc}"))
                    continue
                self._pending[self._next_tag] = batch
                self._next_tag += 1
        if chunk:
            self._conn._output_marshaled_frames([b"".join(chunk)])

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
            # Every tag below the lowest one still unsettled is settled, and the frames
            # that settle the others were queued before these (under this lock): so one
            # `multiple` ack up to there covers exactly this batch's tags below it.
            floor = min(self._unsettled, default=None)
            below = [n for n in numbers if floor is None or n < floor]
            ack = functools.partial(self._ack_all, max(below, default=0), numbers)
            owner = threading.current_thread() is self._owner
            with contextlib.suppress(amqp.AMQPError):
                if not owner:
                    self._conn.add_callback_threadsafe(ack)
        if owner:
            with contextlib.suppress(amqp.AMQPError):
                ack()

    def _ack_all(self, upto: int, numbers: list[int]) -> None:
        """One ack with `multiple` for the tags up to `upto`, one each for the rest."""
        if upto and self._channel.is_open:
            self._channel.basic_ack(upto, multiple=True)
        for number in numbers:
            if number > upto:
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
        self._helper: ThreadPoolExecutor | None = None  # blocking publishes for `submit`

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
        batch = self._publish_once(messages, deadline)
        # A drop is often noticed only when the next publish arrives; a batch that never
        # reached the socket cannot be a duplicate, so it gets one more go on a new connection.
        if isinstance(batch.error, ConnectionLostError) and not batch.sent:
            batch = self._publish_once(messages, deadline)
        if batch.error is not None:
            raise batch.error

    def _publish_once(self, messages: Sequence[Outgoing], deadline: float) -> _Batch:
        batch = _Batch(messages)
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
        handed: list[_Batch] = []
        for messages in batches:
            future: Future[None] = Future()
            future.set_running_or_notify_cancel()  # a waiter that gives up cannot cancel it
            futures.append(future)
            if not messages:
                future.set_result(None)
            elif publisher is None or publisher.dead:
                self._in_helper(messages, timeout_s, future)
            else:
                handed.append(_Batch(messages, functools.partial(self._settled, future, timeout_s)))
        if publisher is not None and handed:
            publisher.hand_over(handed)
        return futures

    def _settled(self, future: Future[None], timeout_s: float, batch: _Batch) -> None:
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
            helper, self._helper = self._helper, None
        if publisher is not None:
            publisher.stop()
        if helper is not None:
            helper.shutdown(wait=False)
        for consumer in consumers:
            consumer.close()
