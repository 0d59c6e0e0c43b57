"""The router's run loop: consume events, route them in batches, publish, then ack.

The consuming thread pumps the connection and adds each event to a shared waiting list.
`WRITERS` writer threads (`routing.py`) take what is waiting (up to a batch) when free: each
decodes, matches and commits its batch in one statement (`batches.Writer`), hands the
delivery messages to the broker itself, and goes back for more; the broker's confirm acks
the batch's events from the publisher's thread. Events that arrive while every writer is
busy wait together and go as the next batch, so a burst shares transactions and confirm
windows while a lone event is written at once. An event crosses three threads (consumer,
writer, publisher), and never waits for another batch's commit fsync or confirm while a
writer is free: a writer does not wait for its own confirm (up to `IN_FLIGHT` batches
await theirs), and the consuming thread ends the session when the oldest is overdue.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from common.metrics import Metrics
from common.settings import Settings
from common.transport import Transport
from common.transport import topology as tp
from common.transport.spill import Spill
from router.batches import Writer
from router.loader import IndexLoader
from router.routing import IN_FLIGHT, Routing

if TYPE_CHECKING:
    from common.tracing import Tracing

BATCH_SIZE = 200
WRITERS = 2  # batches written at once (each its own connection, statement and commit)
PREFETCH_BATCHES = WRITERS + IN_FLIGHT + 1  # and one gathering
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
        self.settings = settings
        self.transport = transport
        self.metrics = metrics
        self.batch_size = batch_size
        self._loader = IndexLoader(sessionmaker, settings.subscription_refresh_s)
        self.writer = Writer(self._loader, sessionmaker, tracing)
        # SQLite (`hookline dev`) takes one writer at a time: a second would only wait.
        postgres = sessionmaker.kw["bind"].dialect.name == "postgresql"
        self.writer_count = WRITERS if postgres else 1
        self.spill = Spill(
            settings.delivery_shards, settings.delivery_share_per_s, self._loader.shares
        )

    def run(self, stop: threading.Event) -> None:
        """Route until `stop` is set; raises when the broker goes away, or the database
        stays away longer than `retry_database` waits."""
        self.transport.declare(tp.build(self.settings.retry_tiers_s, self.settings.delivery_shards))
        self._loader.current(force=True)
        consumer = self.transport.consume(tp.EVENTS, prefetch=self.batch_size * PREFETCH_BATCHES)
        # A new session: the last one's unacked messages all come back marked redelivered.
        routing = Routing(self, consumer)
        try:
            for message in consumer:
                routing.check()
                if message is not None:
                    routing.offer(message)
                if stop.is_set():
                    break
            routing.ending.set()  # a write waiting for the database gives up
            consumer.cancel()
            routing.close()
            # Keep pumping so the writers' acks reach the broker while they drain.
            ticks_after_exit = 0
            for _ in consumer:
                routing.check()
                if routing.finished():
                    ticks_after_exit += 1
                    if ticks_after_exit > 1:  # one more tick flushes the last acks
                        break
            routing.check()
        finally:
            routing.end(DRAIN_TIMEOUT_S)
            consumer.close()
