"""The publisher: one connection in confirm mode, owned by one I/O thread for its whole life.

Callers on any thread put batches in its inbox (one `add_callback_threadsafe` wake-up for all
that arrive before it runs) and wait on them; the I/O thread writes the frames itself, keys
each message by its delivery tag and settles batches as Ack/Nack/Return frames arrive, so
concurrent callers share one connection and one confirm window instead of a round-trip per
message.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pika
from pika import exceptions as amqp

from common.background import BackgroundThread
from common.errors import ConnectionLostError, PublishError, TopologyError, TransportError
from common.transport.base import Outgoing
from common.transport.rabbitmq.connect import NOT_FOUND
from common.transport.rabbitmq.frames import Frames

log = logging.getLogger(__name__)

STOP_WAIT_S = 5.0


class Batch:
    """One `publish` call: settled message by message on the I/O thread, awaited by the caller
    (or, for `submit`, reported through `on_settled`, called once on the settling thread)."""

    __slots__ = ("done", "error", "messages", "on_settled", "outstanding", "sent")

    def __init__(
        self, messages: Sequence[Outgoing], on_settled: Callable[[Batch], None] | None = None
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


class Publisher(BackgroundThread):
    """One connection in confirm mode and the I/O thread that owns it for its whole life.

    Callers hand batches over into an inbox; the I/O thread is woken once for all that
    arrived meanwhile and writes their frames in one chunk. When the connection drops it
    fails every outstanding batch and dies; the transport builds a new one on the next publish.
    """

    def __init__(self, params: Any) -> None:
        super().__init__("hookline-publisher")
        self._lock = threading.Lock()
        self._inbox: list[Batch] = []  # handed over, not yet taken by the I/O thread; _lock
        self.dead = False
        self._opened = threading.Event()
        self._open_error: BaseException | None = None
        # Everything below is touched only by the I/O thread.
        self._channel: Any = None
        self._frames: Frames | None = None
        self._waiting: list[Batch] = []  # arrived while the channel was (re)opening
        self._pending: dict[int, Batch] = {}  # delivery tag -> batch
        self._next_tag = self._lowest = 1
        self._conn = pika.SelectConnection(
            params,
            on_open_callback=lambda conn: conn.channel(on_open_callback=self._on_channel_open),
            on_open_error_callback=self._on_open_error,
            on_close_callback=lambda _, reason: self._die(f"connection closed: {reason!r}"),
        )
        self.start()

    def wait_open(self, timeout_s: float) -> None:
        """Raise pika's own error for a failed attempt, so the retry policy can judge it."""
        if not self._opened.wait(timeout_s):
            self.stop()
            raise amqp.AMQPConnectionError("timed out opening the publisher connection")
        if self._open_error is not None:
            raise self._open_error

    def hand_over(self, batches: Sequence[Batch]) -> None:
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

    def stop(self, timeout_s: float | None = STOP_WAIT_S) -> None:
        # The I/O loop does not poll `stopping`: closing the connection is what ends it.
        with self._lock:
            if not self.dead:
                self._conn.ioloop.add_callback_threadsafe(self._close)
        super().stop(timeout_s)

    # I/O thread from here on.

    def run(self) -> None:
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
        self._frames = Frames(channel.channel_number, self._conn._body_max_length)
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

    def _send(self, batches: list[Batch]) -> None:
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
