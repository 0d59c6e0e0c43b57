"""The router's run loop: consume events, route them in batches, publish, then ack.

The consuming thread only pumps the connection and hands messages to one routing thread,
which takes whatever is ready (up to a batch) so that a burst shares one transaction and one
confirm window while a lone event is routed at once.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from common.errors import DecodeError, TransportError
from common.filters import matches
from common.metrics import Metrics
from common.service import retry_database
from common.settings import Settings
from common.transport import Consumer, Message, Outgoing, Transport, poison_copy
from common.transport import topology as tp
from common.wire import Event, decode, encode
from router.index import Target
from router.loader import IndexLoader
from router.persist import Key, Routed, persist_batch

log = logging.getLogger(__name__)

BATCH_SIZE = 200
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
    ) -> None:
        self._settings = settings
        self._transport = transport
        self._sessionmaker = sessionmaker
        self._metrics = metrics
        self._batch_size = batch_size
        self._loader = IndexLoader(sessionmaker, settings.subscription_refresh_s)
        self._stop = threading.Event()  # the running session's stop flag, once `run` starts
        # Events whose rows this process may have committed but whose delivery messages are
        # not confirmed yet: routed again (a retry after an unclear commit, one by one after
        # a failed batch), they are published although their id is known. Routing thread only.
        self._unpublished: set[Key] = set()

    def run(self, stop: threading.Event) -> None:
        """Route until `stop` is set; raises when the broker goes away, or the database
        stays away longer than `retry_database` waits."""
        self._stop = stop
        # A new session: the last one's unacked messages all come back marked redelivered.
        self._unpublished.clear()
        self._transport.declare(tp.build(self._settings.retry_delays_s))
        self._loader.current(force=True)
        consumer = self._transport.consume(tp.EVENTS, prefetch=self._batch_size * 2)
        inbox: queue.Queue[Message | None] = queue.Queue()
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
        self, consumer: Consumer, inbox: queue.Queue[Message | None], failure: list[BaseException]
    ) -> None:
        try:
            while True:
                first = inbox.get()
                if first is None:
                    return
                batch = [first]
                while len(batch) < self._batch_size:
                    try:
                        message = inbox.get_nowait()
                    except queue.Empty:
                        break
                    if message is None:
                        self.route(batch, consumer)
                        return
                    batch.append(message)
                self.route(batch, consumer)
        except BaseException as exc:  # handed to the consuming thread, which reconnects
            failure.append(exc)

    def route(self, batch: Sequence[Message], consumer: Consumer) -> None:
        """Route a batch; on an unexpected error, route one by one to isolate the culprit."""
        try:
            self._route(batch, consumer)
        except (OperationalError, DBAPIError, TransportError) as exc:
            if not _is_data_error(exc) or len(batch) == 1:
                raise
            for message in batch:
                self._route_one_guarded(message, consumer)
        except Exception:
            if len(batch) == 1:
                self._route_one_guarded(batch[0], consumer)
                return
            for message in batch:
                self._route_one_guarded(message, consumer)

    def _route_one_guarded(self, message: Message, consumer: Consumer) -> None:
        try:
            self._route([message], consumer)
        except (OperationalError, TransportError):
            raise
        except Exception as exc:
            log.exception("event could not be routed; moved to poison")
            self._transport.publish([poison_copy(message, "handler_error", repr(exc))])
            self._metrics.dead_letters.labels(reason="poison").inc()
            consumer.ack(message)

    def _route(self, batch: Sequence[Message], consumer: Consumer) -> None:
        events: list[Event] = []
        redelivered: set[Key] = set()
        poisoned: list[Outgoing] = []
        for message in batch:
            try:
                event = decode(Event, message.body)
            except DecodeError as exc:
                poisoned.append(poison_copy(message, "undecodable", str(exc)))
                continue
            events.append(event)
            if message.redelivered or message.delivery_count:
                redelivered.add((event.tenant, event.id))
        keys = {(e.tenant, e.id) for e in events}

        def match_and_persist() -> tuple[list[tuple[Event, list[Target]]], list[Routed]]:
            index = self._loader.current()
            routed = [
                (e, [t for t in index.match(e.tenant, e.type, e.operation) if wants(t, e)])
                for e in events
            ]
            # Read on every try: a try whose commit failed may have committed after all.
            recover = redelivered | (keys & self._unpublished)
            with self._sessionmaker() as session, session.begin():
                out = persist_batch(session, routed, recover)
                # Owed from the commit on (this block's exit) until the publish below.
                self._unpublished.update((r.message.tenant, r.message.event_id) for r in out)
            return routed, out

        # In place, on this thread: the consuming thread keeps the batch unacked and the
        # connection pumped, so a database outage costs no redelivery (see retry_database).
        routed, out = retry_database(match_and_persist, abandon=self._stop)
        outgoing = [
            Outgoing(
                tp.DELIVERIES,
                tp.DELIVERY_ROUTING_KEY,
                encode(r.message),
                {tp.H_RECHECK: 1} if r.recheck else {},
                r.message.delivery_id,
            )
            for r in out
        ]
        self._transport.publish(outgoing + poisoned, timeout_s=self._settings.publish_timeout_s)
        self._unpublished.difference_update(keys)
        consumer.ack_many(batch)
        self._metrics.events_routed.inc(len(routed))
        self._metrics.deliveries_enqueued.labels(origin="new").inc(len(outgoing))
        if poisoned:
            self._metrics.dead_letters.labels(reason="poison").inc(len(poisoned))


def _is_data_error(exc: BaseException) -> bool:
    """A database error caused by one row's data rather than by the database being away."""
    return (
        isinstance(exc, DBAPIError)
        and not exc.connection_invalidated
        and not isinstance(exc, OperationalError)
    )


def wants(target: Target, event: Event) -> bool:
    """The subscription's payload filter (validated when it was saved) passes the event."""
    return matches(target.payload_filter, event.data)
