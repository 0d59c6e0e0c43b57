"""The router's run loop: consume events, route them in batches, publish, then ack.

The consuming thread only pumps the connection and hands messages to one routing thread.
That thread owns the session's state; it hands batches to `WRITERS` writer threads
(`batches.Writer`: decode, match, one statement, commit), publishes each written batch, and
acks its events once the broker confirmed them. Events that arrive while every writer is
busy wait together and go as the next batch, so a burst shares transactions and confirm
windows while a lone event is written at once; the confirm comes back through the routing
thread's inbox, beside the events, and up to `IN_FLIGHT` batches may await theirs. So an
event never waits for another batch's commit fsync or confirm while a writer is free.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from common.metrics import Metrics
from common.settings import Settings
from common.transport import Consumer, Message, Outgoing, Transport, poison_copy
from common.transport import topology as tp
from common.transport.spill import Spill
from router.batches import Sending, Writer, Writing, Written, describe, refused
from router.loader import IndexLoader
from router.persist import Key

if TYPE_CHECKING:
    from common.tracing import Tracing

log = logging.getLogger(__name__)

BATCH_SIZE = 200
WRITERS = 2  # batches written at once (each its own connection, statement and commit)
IN_FLIGHT = 2  # batches committed and handed to the broker, awaiting their confirm
PREFETCH_BATCHES = WRITERS + IN_FLIGHT + 1  # and one gathering
DRAIN_TIMEOUT_S = 30.0

Inbox = queue.Queue[Message | Writing | Sending | None]


class Router:
    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        sessionmaker: sessionmaker[Session],
        metrics: Metrics,
        *,
        batch_size: int = BATCH_SIZE,
        tracing: Tracing | None = None,
    ) -> None:
        self._settings = settings
        self._transport = transport
        self._metrics = metrics
        self._batch_size = batch_size
        self._loader = IndexLoader(sessionmaker, settings.subscription_refresh_s)
        self._writer = Writer(self._loader, sessionmaker, tracing)
        # SQLite (`hookline dev`) takes one writer at a time: a second would only wait.
        postgres = sessionmaker.kw["bind"].dialect.name == "postgresql"
        self._writer_count = WRITERS if postgres else 1
        self._spill = Spill(
            settings.delivery_shards, settings.delivery_share_per_s, self._loader.shares
        )
        self._stop = threading.Event()  # the running session's stop flag, once `run` starts
        # Routing thread only, like everything below. Events whose rows this process
        # committed but whose delivery messages failed to go out: routed again, they are
        # published although their id is known. (Not those merely in flight: a repeat
        # arriving meanwhile must publish nothing.)
        self._unpublished: set[Key] = set()
        self._writing: dict[concurrent.futures.Future[Written], Writing] = {}
        self._in_flight: deque[Sending] = deque()  # oldest first
        self._inbox: Inbox = queue.Queue()
        self._writers: ThreadPoolExecutor | None = None

    def run(self, stop: threading.Event) -> None:
        """Route until `stop` is set; raises when the broker goes away, or the database
        stays away longer than `retry_database` waits."""
        self._stop = stop
        # A new session: the last one's unacked messages all come back marked redelivered.
        self._unpublished.clear()
        self._writing.clear()
        self._in_flight.clear()
        self._transport.declare(
            tp.build(self._settings.retry_tiers_s, self._settings.delivery_shards)
        )
        self._loader.current(force=True)
        consumer = self._transport.consume(tp.EVENTS, prefetch=self._batch_size * PREFETCH_BATCHES)
        # Events from the consuming thread, written batches from the writers, confirmed
        # ones from the publisher's thread.
        inbox: Inbox = queue.Queue()
        self._inbox = inbox
        self._writers = ThreadPoolExecutor(self._writer_count, thread_name_prefix="router-write")
        failure: list[BaseException] = []
        worker = threading.Thread(
            target=self._route_loop, args=(consumer, inbox, failure), name="router", daemon=True
        )
        worker.start()
        try:
            for message in consumer:
                if failure:
                    raise failure[0]
                if message is not None:
                    inbox.put(message)
                if stop.is_set():
                    break
            consumer.cancel()
            inbox.put(None)
            # Keep pumping so the routing thread's acks reach the broker while it drains.
            ticks_after_exit = 0
            for _ in consumer:
                if not worker.is_alive():
                    ticks_after_exit += 1
                    if ticks_after_exit > 1:  # one more tick flushes the last acks
                        break
            if failure:
                raise failure[0]
        finally:
            inbox.put(None)
            worker.join(DRAIN_TIMEOUT_S)
            self._writers.shutdown(wait=False)
            consumer.close()

    def _route_loop(self, consumer: Consumer, inbox: Inbox, failure: list[BaseException]) -> None:
        try:
            waiting: list[Message] = []
            stopping = False
            while waiting or self._writing or not stopping:
                if waiting and len(self._writing) < self._writer_count:
                    self._write(waiting[: self._batch_size])
                    del waiting[: self._batch_size]
                    continue
                try:
                    item = inbox.get(timeout=self._confirm_wait_s())
                except queue.Empty:  # the oldest batch's confirm is overdue: fail it
                    self._settle(self._in_flight[0], consumer)
                    continue
                while True:  # everything ready, in order
                    if item is None:
                        stopping = True
                    elif isinstance(item, Writing):
                        self._written(item, consumer)
                    elif isinstance(item, Sending):
                        self._settle(item, consumer)
                    else:
                        waiting.append(item)
                    try:
                        item = inbox.get_nowait()
                    except queue.Empty:
                        break
            self._settle_all(consumer)
        except BaseException as exc:  # handed to the consuming thread, which reconnects
            failure.append(exc)

    def _confirm_wait_s(self) -> float | None:
        """How long the routing thread may wait for work: until the oldest batch's confirm
        is due, or for ever with none in flight."""
        if not self._in_flight:
            return None
        return max(0.0, self._in_flight[0].due - time.monotonic())

    def _write(self, batch: Sequence[Message]) -> None:
        """Hand `batch` to a free writer thread; it comes back through the inbox."""
        assert self._writers is not None
        unpublished = frozenset(self._unpublished)
        future = self._writers.submit(self._writer.write, batch, unpublished, self._stop)
        writing = self._writing[future] = Writing(batch, future)
        inbox = self._inbox
        future.add_done_callback(lambda _: inbox.put(writing))

    def _written(self, writing: Writing, consumer: Consumer) -> None:
        """Publish a batch its writer committed; a batch refused for what it holds (or
        whose publishing failed) is split until the culprits stand alone: those go to
        poison, the rest is routed."""
        if self._writing.pop(writing.future, None) is None:
            return  # taken already, by `_quiesce`
        try:
            sending = self._publish(writing.future.result())
        except BaseException as exc:
            if not refused(exc):
                raise  # the database or the broker is away: the session's concern
            self._quiesce(consumer)
            self._bisect(writing.batch, consumer)
            return
        self._in_flight.append(sending)
        inbox = self._inbox
        sending.confirmed.add_done_callback(lambda _: inbox.put(sending))
        while len(self._in_flight) > IN_FLIGHT:
            self._settle(self._in_flight[0], consumer)

    def _quiesce(self, consumer: Consumer) -> None:
        """Wait for every write and confirm in flight and settle them (before a batch is
        split, which runs one part at a time on this thread)."""
        while self._writing:
            writing = next(iter(self._writing.values()))
            concurrent.futures.wait([writing.future])
            self._written(writing, consumer)
        self._settle_all(consumer)

    def _settle_all(self, consumer: Consumer) -> None:
        while self._in_flight:
            self._settle(self._in_flight[0], consumer)

    def _settle(self, sending: Sending, consumer: Consumer) -> None:
        """Wait for a batch in flight to be confirmed, then ack it (once: a batch already
        settled, whose confirm reaches the inbox later, is passed over)."""
        if sending not in self._in_flight:
            return
        self._in_flight.remove(sending)
        try:
            sending.wait()
        except BaseException as exc:
            if not refused(exc):
                raise  # the session ends; the unacked batch comes back marked redelivered
            log.warning(
                "publishing a routed batch failed; routing it again in parts",
                extra={"error": describe(exc)},
            )
            self._unpublished.update(sending.carried)
            self._quiesce(consumer)
            self._bisect(sending.batch, consumer)
            return
        self._done(sending, consumer)

    def _bisect(self, batch: Sequence[Message], consumer: Consumer) -> None:
        """Route `batch` in halves, recursively, each confirmed before the next, on this
        thread: one bad row among 200 costs about 16 transactions, not 200, and a bad event
        poisons only its own message, never the session (and so never another tenant's
        routing)."""
        try:
            sending = self._publish(self._writer.write(batch, self._unpublished, self._stop))
        except BaseException as exc:
            if not refused(exc):
                raise
            failed = exc
        else:
            try:
                sending.wait()
            except BaseException as exc:
                if not refused(exc):
                    raise
                self._unpublished.update(sending.carried)  # published when routed again
                failed = exc
            else:
                self._done(sending, consumer)
                return
        if len(batch) > 1:
            half = len(batch) // 2
            self._bisect(batch[:half], consumer)
            self._bisect(batch[half:], consumer)
            return
        self._poison(batch[0], failed, consumer)

    def _poison(self, message: Message, exc: BaseException, consumer: Consumer) -> None:
        # Ids and the error's class only: a driver's message quotes the statement's
        # parameters and the refused value, which are tenants' event data.
        error = describe(exc)
        log.warning(
            "event could not be routed; moved to poison",
            extra={"message_id": message.message_id, "error": error},
        )
        self._transport.publish([poison_copy(message, "handler_error", error)])
        self._metrics.dead_letters.labels(reason="poison").inc()
        consumer.ack(message)

    def _publish(self, written: Written) -> Sending:
        """Hand a committed batch's messages to the broker, each to its tenant's shard."""
        try:
            out = written.out
            outgoing = [
                Outgoing(
                    tp.DELIVERIES,
                    tp.DELIVERY_ROUTING_KEY,
                    r.body,
                    self._spill.headers(r.event.tenant, recheck=r.recheck),
                    r.delivery_id,
                )
                for r in out
            ]
            if written.spans is not None:
                outgoing = written.spans.carried(outgoing, [r.event for r in out])
            timeout_s = self._settings.publish_timeout_s
            confirmed = self._transport.submit(outgoing + written.poisoned, timeout_s=timeout_s)
        except BaseException as exc:
            self._unpublished.update(written.unclear)  # committed, never handed to the broker
            written.end_spans(exc)
            raise
        carried = {(r.event.tenant, r.event.id) for r in out}
        due = time.monotonic() + timeout_s
        return Sending(written, confirmed, due, carried, len(outgoing))

    def _done(self, sending: Sending, consumer: Consumer) -> None:
        written = sending.written
        self._unpublished.difference_update(written.keys)
        consumer.ack_many(written.batch)
        self._metrics.events_routed.inc(written.events)
        self._metrics.deliveries_enqueued.labels(origin="new").inc(sending.deliveries)
        if written.poisoned:
            self._metrics.dead_letters.labels(reason="poison").inc(len(written.poisoned))
