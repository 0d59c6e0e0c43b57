"""The consumer: each `RabbitConsumer` owns a `BlockingConnection`, pumped by the thread that
iterates it; other threads settle messages through `add_callback_threadsafe`."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pika import exceptions as amqp

from common.errors import ConnectionLostError, TopologyError, TransportError
from common.transport.base import Consumer, Message
from common.transport.rabbitmq.connect import close_quietly

if TYPE_CHECKING:
    from common.transport.rabbitmq.transport import RabbitTransport

IDLE_TICK_S = 0.1


def _plain(value: Any) -> Any:
    """Strip pika's `long` int subclass out of decoded headers, nested tables included."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else value


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
            except (amqp.AMQPError, OSError) as exc:
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
            close_quietly(self._conn)
        self._transport.forget(self)
