"""The consumer: each `RabbitConsumer` owns a `BlockingConnection`, pumped by the thread that
iterates it; other threads settle messages through `add_callback_threadsafe`."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pika import exceptions as amqp

from common.errors import ConnectionLostError, TopologyError, TransportError
from common.transport.base import Consumer, Message
from common.transport.rabbitmq.connect import close_quietly

if TYPE_CHECKING:
    from common.transport.rabbitmq.transport import RabbitTransport

IDLE_TICK_S = 0.1
PUMP_EVERY = 32  # messages handed out between two pumps while some are in hand


def _plain(value: Any) -> Any:
    """Strip pika's `long` int subclass out of decoded headers, nested tables included."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else value


@dataclass(eq=False)
class _Lane:
    """One queue of a consumer: its own channel, hence its own prefetch window and tags."""

    queue: str
    channel: Any
    unsettled: set[int] = field(default_factory=set)  # handed out, not yet settled
    ready: deque[tuple[Any, Any, bytes]] = field(default_factory=deque)  # arrived, not yet
    consumer_tag: str = ""


@dataclass(frozen=True, eq=False)
class _Delivery:
    """A message's tag: the consumer (hence connection), the lane (channel), and its number."""

    consumer: RabbitConsumer
    lane: _Lane
    number: int


class RabbitConsumer(Consumer):
    """A consumer owning one `BlockingConnection`, iterated by the thread that created it.

    It consumes one or more queues, each on its own channel (so each has its own prefetch
    window), and hands messages out round-robin over the queues that have some arrived.

    To shut down, `cancel()` and keep iterating: the iterator goes on yielding `None` while it
    pumps the connection, which flushes acks from worker threads and answers heartbeats; then
    `close()`. The owner must come back to the iterator at least every `HEARTBEAT_S` seconds.
    `close()` from another thread only asks the owner to close at its next tick.
    """

    def __init__(
        self, connection: Any, queues: Sequence[str], prefetch: int, transport: RabbitTransport
    ) -> None:
        self._conn, self._queue, self._transport = connection, ",".join(queues), transport
        self._owner = threading.current_thread()
        self._lock = threading.Lock()
        self._dead = self._cancel_requested = self._close_requested = False
        self._cancelled = self._broker_cancelled = False
        self._arrived = self._since_pump = self._next = 0
        self._lanes: list[_Lane] = []
        for queue in queues:
            lane = _Lane(queue, connection.channel())
            self._lanes.append(lane)
            # Fail now on a missing queue, as the in-memory twin does, not at the first next().
            lane.channel.queue_declare(queue, passive=True)
            lane.channel.basic_qos(prefetch_count=prefetch)
            lane.channel.add_on_cancel_callback(self._on_broker_cancel)
            lane.consumer_tag = lane.channel.basic_consume(
                queue, functools.partial(self._on_message, lane)
            )

    def _on_message(
        self, lane: _Lane, _channel: Any, method: Any, properties: Any, body: bytes
    ) -> None:
        lane.ready.append((method, properties, body))  # on the owner, inside process_data_events
        self._arrived += 1

    def _on_broker_cancel(self, _frame: Any) -> None:
        self._broker_cancelled = True  # the queue was deleted or moved

    def __iter__(self) -> Iterator[Message | None]:
        while True:
            message = None
            try:
                if self._close_requested:
                    self._close_now()
                if self._dead:
                    raise ConnectionLostError(f"consumer on {self._queue!r} is closed")
                if self._cancel_requested and not self._cancelled:
                    self._cancel_now()
                if self._broker_cancelled:
                    self._close_now()
                    raise ConnectionLostError(f"the broker cancelled the {self._queue!r} consumer")
                if self._cancelled:
                    self._conn.process_data_events(time_limit=IDLE_TICK_S)
                else:
                    # Pump when nothing is in hand, and every so often while there is (acks
                    # from worker threads and new arrivals on the other queues flow then).
                    if not self._arrived or self._since_pump >= PUMP_EVERY:
                        self._since_pump = 0
                        idle_s = 0 if self._arrived else IDLE_TICK_S
                        self._conn.process_data_events(time_limit=idle_s)
                    message = self._take()
            except (amqp.AMQPError, OSError) as exc:
                self._close_now(flush=False)
                raise ConnectionLostError(f"consumer on {self._queue!r} lost: {exc!r}") from None
            yield message

    def _take(self) -> Message | None:
        """The next arrived message, round-robin over the lanes that have one."""
        count = len(self._lanes)
        for step in range(count):
            lane = self._lanes[(self._next + step) % count]
            if lane.ready:
                self._next = (self._next + step + 1) % count
                self._arrived -= 1
                self._since_pump += 1
                return self._message(lane, *lane.ready.popleft())
        return None

    def _message(self, lane: _Lane, method: Any, properties: Any, body: bytes) -> Message:
        with self._lock:
            lane.unsettled.add(method.delivery_tag)
        return Message(
            queue=lane.queue,
            body=body,
            routing_key=method.routing_key,
            headers=_plain(properties.headers or {}),
            redelivered=bool(method.redelivered),
            tag=_Delivery(self, lane, method.delivery_tag),
            message_id=properties.message_id,
        )

    def ack(self, message: Message) -> None:
        self._owner_of(message)._settle(message.tag.lane, message.tag.number, None)

    def ack_many(self, messages: Sequence[Message]) -> None:
        """One hand-over to the connection's thread per lane, not one per ack."""
        by_lane: dict[_Lane, list[int]] = {}
        for message in messages:
            if self._owner_of(message) is not self:
                self._owner_of(message).ack(message)
            else:
                by_lane.setdefault(message.tag.lane, []).append(message.tag.number)
        for lane, numbers in by_lane.items():
            self._ack_lane(lane, numbers)

    def _ack_lane(self, lane: _Lane, numbers: list[int]) -> None:
        with self._lock:
            if self._dead:
                return
            for number in numbers:
                if number not in lane.unsettled:
                    raise TopologyError(
                        f"message {number} was already settled (PRECONDITION_FAILED)"
                    )
            lane.unsettled.difference_update(numbers)
            # Every tag below the lowest one still unsettled is settled, and the frames
            # that settle the others were queued before these (under this lock): so one
            # `multiple` ack up to there covers exactly this batch's tags below it. (Tags
            # still in `ready` are all above those handed out: a lane is a FIFO.)
            floor = min(lane.unsettled, default=None)
            below = [n for n in numbers if floor is None or n < floor]
            ack = functools.partial(self._ack_all, lane, max(below, default=0), numbers)
            owner = threading.current_thread() is self._owner
            with contextlib.suppress(amqp.AMQPError):
                if not owner:
                    self._conn.add_callback_threadsafe(ack)
        if owner:
            with contextlib.suppress(amqp.AMQPError):
                ack()

    def _ack_all(self, lane: _Lane, upto: int, numbers: list[int]) -> None:
        """One ack with `multiple` for the tags up to `upto`, one each for the rest."""
        if upto and lane.channel.is_open:
            lane.channel.basic_ack(upto, multiple=True)
        for number in numbers:
            if number > upto:
                self._apply(lane, number, None)

    def reject(self, message: Message, *, requeue: bool) -> None:
        self._owner_of(message)._settle(message.tag.lane, message.tag.number, requeue)

    @staticmethod
    def _owner_of(message: Message) -> RabbitConsumer:
        if not isinstance(message.tag, _Delivery):
            raise TransportError("this message was not delivered by RabbitMQ")
        return message.tag.consumer

    def _settle(self, lane: _Lane, number: int, requeue: bool | None) -> None:
        with self._lock:
            if self._dead:
                return  # its connection is gone, so the broker redelivers the message anyway
            if number not in lane.unsettled:
                raise TopologyError(f"message {number} was already settled (PRECONDITION_FAILED)")
            lane.unsettled.discard(number)
            owner = threading.current_thread() is self._owner
            # Failing means the connection is going: the broker redelivers, the iterator reports.
            with contextlib.suppress(amqp.AMQPError):
                if not owner:
                    self._conn.add_callback_threadsafe(
                        functools.partial(self._apply, lane, number, requeue)
                    )
        if owner:
            with contextlib.suppress(amqp.AMQPError):
                self._apply(lane, number, requeue)  # at once, not at the owner's next tick

    @staticmethod
    def _apply(lane: _Lane, number: int, requeue: bool | None) -> None:
        if not lane.channel.is_open:
            return
        if requeue is None:
            lane.channel.basic_ack(number)
        else:
            lane.channel.basic_reject(number, requeue=requeue)

    def cancel(self) -> None:
        self._cancel_requested = True
        if threading.current_thread() is self._owner:
            try:
                self._cancel_now()
            except amqp.AMQPError:
                self._close_now(flush=False)  # the iterator reports it on its next tick

    def _cancel_now(self) -> None:
        self._cancelled = True
        for lane in self._lanes:
            if not lane.channel.is_open:
                continue
            # pika requeues what arrived but never reached our callback; what did but was
            # never handed out goes back here.
            lane.channel.basic_cancel(lane.consumer_tag)
            while lane.ready:
                method, _, _ = lane.ready.popleft()
                lane.channel.basic_reject(method.delivery_tag, requeue=True)
        self._arrived = 0

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
