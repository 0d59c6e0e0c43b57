"""The router's run loop: consume events, route them in batches, publish, then ack.

The consuming thread only pumps the connection and hands messages to one routing thread,
which takes whatever is ready (up to a batch) so that a burst shares one transaction and one
confirm window while a lone event is routed at once. Each batch commits, then publishes, then
is acked once its confirm is in; the routing thread never sits waiting for a confirm while
events wait: the confirm arrives in its inbox, beside the events, and up to `IN_FLIGHT`
batches may be awaiting theirs (the next one waits for the oldest).
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from common.db.session import single_statement
from common.errors import DecodeError, PublishError, TransportError
from common.filters import matches
from common.metrics import Metrics
from common.service import retry_database
from common.settings import Settings
from common.transport import Consumer, Message, Outgoing, Transport, poison_copy
from common.transport import topology as tp
from common.transport.spill import Spill
from common.wire import Event, decode
from router.index import Target
from router.loader import IndexLoader
from router.persist import Key, Routed, persist_batch
from router.traces import RouteSpans

if TYPE_CHECKING:
    from common.tracing import Tracing

log = logging.getLogger(__name__)

BATCH_SIZE = 200
IN_FLIGHT = 2  # batches committed and handed to the broker, awaiting their confirm
PREFETCH_BATCHES = IN_FLIGHT + 2  # and one being written, one waiting
DRAIN_TIMEOUT_S = 30.0


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
        self._tracing = tracing  # None: tracing is off, and costs nothing
        self._transport = transport
        self._sessionmaker = sessionmaker
        self._metrics = metrics
        self._batch_size = batch_size
        self._loader = IndexLoader(sessionmaker, settings.subscription_refresh_s)
        self._spill = Spill(
            settings.delivery_shards, settings.delivery_share_per_s, self._loader.shares
        )
        self._stop = threading.Event()  # the running session's stop flag, once `run` starts
        # Events whose rows this process committed but whose delivery messages failed to go
        # out: routed again one by one, they are published although their id is known.
        # (Not those merely in flight: a repeat arriving meanwhile must publish nothing.)
        self._unpublished: set[Key] = set()
        # Routing thread only, as `_unpublished`: oldest first.
        self._in_flight: deque[_Sending] = deque()
        self._inbox: queue.Queue[Message | _Sending | None] = queue.Queue()

    def run(self, stop: threading.Event) -> None:
        """Route until `stop` is set; raises when the broker goes away, or the database
        stays away longer than `retry_database` waits."""
        self._stop = stop
        # A new session: the last one's unacked messages all come back marked redelivered.
        self._unpublished.clear()
        self._in_flight.clear()
        self._transport.declare(
            tp.build(self._settings.retry_tiers_s, self._settings.delivery_shards)
        )
        self._loader.current(force=True)
        consumer = self._transport.consume(tp.EVENTS, prefetch=self._batch_size * PREFETCH_BATCHES)
        # Events from the consuming thread, confirmed batches from the publisher's thread.
        inbox: queue.Queue[Message | _Sending | None] = queue.Queue()
        self._inbox = inbox
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
            consumer.close()

    def _route_loop(
        self,
        consumer: Consumer,
        inbox: queue.Queue[Message | _Sending | None],
        failure: list[BaseException],
    ) -> None:
        try:
            stopping = False
            while not stopping:
                try:
                    first = inbox.get(timeout=self._confirm_wait_s())
                except queue.Empty:  # the oldest batch's confirm is overdue: fail it
                    self._settle(self._in_flight[0], consumer)
                    continue
                if first is None:
                    break
                if isinstance(first, _Sending):
                    self._settle(first, consumer)
                    continue
                batch = [first]
                while len(batch) < self._batch_size:
                    try:
                        item = inbox.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stopping = True
                        break
                    if isinstance(item, _Sending):
                        self._settle(item, consumer)
                    else:
                        batch.append(item)
                self.route(batch, consumer)
            self._settle_all(consumer)
        except BaseException as exc:  # handed to the consuming thread, which reconnects
            failure.append(exc)

    def _confirm_wait_s(self) -> float | None:
        """How long the routing thread may wait for work: until the oldest batch's confirm
        is due, or for ever with none in flight."""
        if not self._in_flight:
            return None
        return max(0.0, self._in_flight[0].due - time.monotonic())

    def route(self, batch: Sequence[Message], consumer: Consumer) -> None:
        """Write a batch and send its delivery messages; it is acked once confirmed (its
        confirm comes to the routing thread's inbox). A batch the database refuses (or that
        fails otherwise) is split until the culprits stand alone: those go to poison, the
        rest is routed."""
        try:
            sending = self._send(batch)
        except (OperationalError, DBAPIError, TransportError) as exc:
            if not _is_data_error(exc):
                raise  # the database or the broker is away: the session's concern
            self._isolate(batch, consumer)
            return
        except Exception:
            self._isolate(batch, consumer)
            return
        self._in_flight.append(sending)
        inbox = self._inbox
        sending.confirmed.add_done_callback(lambda _: inbox.put(sending))
        while len(self._in_flight) > IN_FLIGHT:
            self._settle(self._in_flight[0], consumer)

    def _settle_all(self, consumer: Consumer) -> None:
        while self._in_flight:
            self._settle(self._in_flight[0], consumer)

    def _settle(self, sending: _Sending, consumer: Consumer) -> None:
        """Wait for a batch in flight to be confirmed, then ack it (once: a batch already
        settled, whose confirm reaches the inbox later, is passed over)."""
        if sending not in self._in_flight:
            return
        self._in_flight.remove(sending)
        try:
            self._confirmed(sending)
        except TransportError:
            raise  # the session ends; the unacked batch comes back marked redelivered
        except Exception as exc:
            log.warning(
                "publishing a routed batch failed; routing it again in parts",
                extra={"error": describe(exc)},
            )
            self._unpublished.update(sending.carried)
            self._bisect(sending.batch, consumer)
            return
        self._done(sending, consumer)

    def _isolate(self, batch: Sequence[Message], consumer: Consumer) -> None:
        self._settle_all(consumer)
        self._bisect(batch, consumer)

    def _bisect(self, batch: Sequence[Message], consumer: Consumer) -> None:
        """Route `batch` in halves, recursively, each confirmed before the next: one bad
        row among 200 costs about 16 transactions, not 200, and a bad event poisons only
        its own message, never the session (and so never another tenant's routing)."""
        try:
            sending = self._send(batch)
        except (OperationalError, TransportError):
            raise
        except DBAPIError as exc:
            if not _is_data_error(exc):
                raise
            refused: BaseException = exc
        except Exception as exc:
            refused = exc
        else:
            try:
                self._confirmed(sending)
            except TransportError:
                raise
            except Exception as exc:  # committed, not published: published when routed again
                self._unpublished.update(sending.carried)
                refused = exc
            else:
                self._done(sending, consumer)
                return
        if len(batch) > 1:
            half = len(batch) // 2
            self._bisect(batch[:half], consumer)
            self._bisect(batch[half:], consumer)
            return
        self._poison(batch[0], refused, consumer)

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

    def _send(self, batch: Sequence[Message]) -> _Sending:
        """Match and persist `batch` (committed), then hand its messages to the broker."""
        events: list[Event] = []
        redelivered: set[Key] = set()
        poisoned: list[Outgoing] = []
        decoded: list[tuple[Message, Event]] = []
        for message in batch:
            try:
                event = decode(Event, message.body)
            except DecodeError as exc:
                poisoned.append(poison_copy(message, "undecodable", str(exc)))
                continue
            events.append(event)
            decoded.append((message, event))
            if message.redelivered or message.delivery_count:
                redelivered.add((event.tenant, event.id))
        spans = RouteSpans(self._tracing, decoded) if self._tracing is not None else None
        try:
            return self._persist_and_publish(batch, events, redelivered, poisoned, spans)
        except BaseException as exc:
            if spans is not None:
                spans.end(exc)
            raise

    def _persist_and_publish(
        self,
        batch: Sequence[Message],
        events: list[Event],
        redelivered: set[Key],
        poisoned: list[Outgoing],
        spans: RouteSpans | None,
    ) -> _Sending:
        keys = {(e.tenant, e.id) for e in events}
        # Written by a try whose statement failed (it may have landed), or by the last try.
        unclear: set[Key] = set()

        def match_and_persist() -> tuple[int, list[Routed]]:
            index = self._loader.current()
            routed = [
                (e, [t for t in index.match(e.tenant, e.type, e.operation) if wants(t, e)])
                for e in events
            ]
            recover = redelivered | unclear | (keys & self._unpublished)
            try:
                with self._sessionmaker() as session, session.begin():
                    single_statement(session)  # the batch's writes are one statement
                    traced = spans.traceparents() if spans is not None else None
                    out = persist_batch(session, routed, recover, traced)
                    unclear.update((r.event.tenant, r.event.id) for r in out)
            except DBAPIError as exc:
                if not _is_data_error(exc):  # e.g. the connection lost: it may have landed
                    unclear.update(keys)
                raise
            return len(routed), out

        # In place, on this thread: the consuming thread keeps the batch unacked and the
        # connection pumped, so a database outage costs no redelivery (see retry_database).
        count, out = retry_database(match_and_persist, abandon=self._stop)
        try:
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
            if spans is not None:
                outgoing = spans.carried(outgoing, [r.event for r in out])
            timeout_s = self._settings.publish_timeout_s
            confirmed = self._transport.submit(outgoing + poisoned, timeout_s=timeout_s)
        except BaseException:
            self._unpublished.update(unclear)  # committed, never handed to the broker
            raise
        carried = {(r.event.tenant, r.event.id) for r in out}
        due = time.monotonic() + timeout_s
        return _Sending(
            batch, confirmed, due, keys, carried, count, len(outgoing), len(poisoned), spans
        )

    def _confirmed(self, sending: _Sending) -> None:
        """Wait for the batch's confirm; its route spans end here, failed or not."""
        try:
            sending.confirmed.result(timeout=max(0.0, sending.due - time.monotonic()))
        except concurrent.futures.TimeoutError:
            late = PublishError(f"no confirm for a batch of {len(sending.batch)} in time")
            sending.end_spans(late)
            raise late from None
        except BaseException as exc:
            sending.end_spans(exc)
            raise
        sending.end_spans()

    def _done(self, sending: _Sending, consumer: Consumer) -> None:
        self._unpublished.difference_update(sending.keys)
        consumer.ack_many(sending.batch)
        self._metrics.events_routed.inc(sending.events)
        self._metrics.deliveries_enqueued.labels(origin="new").inc(sending.deliveries)
        if sending.poisoned:
            self._metrics.dead_letters.labels(reason="poison").inc(sending.poisoned)


@dataclass(frozen=True, eq=False)
class _Sending:
    """A batch whose rows are committed and whose messages are on their way to the broker."""

    batch: Sequence[Message]
    confirmed: Future[None]
    due: float  # monotonic time by which the confirm must be in
    keys: set[Key]  # every event of the batch
    carried: set[Key]  # the events whose delivery messages it carries
    events: int
    deliveries: int
    poisoned: int
    spans: RouteSpans | None  # when the router traces: from the batch's start to its confirm

    def end_spans(self, error: BaseException | None = None) -> None:
        if self.spans is not None:
            self.spans.end(error)


def _is_data_error(exc: BaseException) -> bool:
    """A database error caused by one row's data rather than by the database being away."""
    return (
        isinstance(exc, DBAPIError)
        and not exc.connection_invalidated
        and not isinstance(exc, OperationalError)
    )


def describe(exc: BaseException) -> str:
    """An error as its class (and SQLSTATE), never its message: what the database says
    about a refused row quotes the row."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    sqlstate = getattr(cause, "sqlstate", None)
    return f"{type(cause).__name__} (SQLSTATE {sqlstate})" if sqlstate else type(cause).__name__


def wants(target: Target, event: Event) -> bool:
    """The subscription's payload filter (validated when it was saved) passes the event."""
    return matches(target.payload_filter, event.data)
