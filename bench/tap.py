"""A tap on the deliveries exchange: when each delivery message reached the broker.

`bench.latency --tap` splits the leg from the router's delivery row to the attempt at the
broker: a classic exclusive queue of the benchmark's own, bound to `hookline.deliveries`
with the routing key the router publishes with, gets a copy of every delivery message as
the broker routes it, and this process notes when each arrived (by message id, the
delivery id). The copy costs the broker one more enqueue per delivery and this process a
consumer thread; both trees of an A/B pay the same. The time is this process's receipt of
the copy, so a busy benchmark process moves a little of the leg before it to the leg
after it.
"""

from __future__ import annotations

import threading
import time

import pika

from common.transport import topology as tp

POLL_S = 0.2


class Tap:
    """Started on construction (once its queue is bound); `close` stops it."""

    def __init__(self, broker_url: str) -> None:
        self.seen: dict[str, float] = {}  # delivery id -> when its first copy arrived
        self._url = broker_url
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tap", daemon=True)
        self._thread.start()
        if not self._bound.wait(10):
            raise RuntimeError("the tap's queue was not bound within 10 s")

    def _run(self) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(self._url))
        try:
            channel = connection.channel()
            queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
            channel.queue_bind(queue, tp.DELIVERIES, tp.DELIVERY_ROUTING_KEY)
            channel.basic_consume(queue, self._arrived, auto_ack=True)
            self._bound.set()
            while not self._stop.is_set():
                connection.process_data_events(time_limit=POLL_S)
        finally:
            connection.close()

    def _arrived(self, _channel: object, _method: object, properties: object, _body: bytes) -> None:
        message_id = getattr(properties, "message_id", None)
        if message_id is not None:
            self.seen.setdefault(message_id, time.time())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
