"""The dispatcher's wiring and run loop: take delivery messages, POST them on a thread pool,
settle.

Threads of one connection session:
- the calling thread owns the consumer (`intake.py`): it decodes, batches the idempotency
  re-checks of redelivered messages, submits work through the endpoint lanes, and keeps
  iterating so the connection stays pumped;
- `concurrency` sending threads (`threads.py`) each run one attempt (`attempt.py`):
  resolve the subscription, admit and POST, decide;
- one settler thread records, publishes onward and acks in batches (`settle/`);
- one dead-letter drain thread with its own consumer (`deadletters`);
- one thread that writes the breaker's open circuits and the heartbeat for the portal
  (`policy/admission/circuits.py`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from common.db.keeper import PartitionKeeper
from common.errors import TransportError
from common.metrics import Metrics
from common.secretbox import DEV_SECRET_KEY, SecretBox
from common.service import run_until_stopped
from common.settings import Settings
from common.transport import Message, Transport
from common.transport import topology as tp
from common.wire import DeliveryMessage
from dispatcher import attempt
from dispatcher.deadletters import DeadLetterDrain
from dispatcher.http import Sender
from dispatcher.intake import Intake
from dispatcher.outcome import Deferred, Outcome
from dispatcher.policy import autodisable, retry
from dispatcher.policy.admission import (
    CircuitLog,
    CircuitWriter,
    EndpointGate,
    RateLimiter,
    in_flight_cap,
)
from dispatcher.settle import Settler
from dispatcher.subscriptions import SubscriptionCache
from dispatcher.threads import SendingThreads

if TYPE_CHECKING:
    from common.tracing import Tracing

log = logging.getLogger(__name__)

MAX_PREFETCH = 1000
PREFETCH_PER_THREAD = 8
# On top of the longest a request can take, for the settler's last batch and its acks.
DRAIN_GRACE_S = 5.0


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        sessionmaker: sessionmaker[Session],
        metrics: Metrics,
        *,
        secret_box: SecretBox,
        sender: Sender | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._settings = settings
        self._tracing = tracing
        self._transport = transport
        self._sessionmaker = sessionmaker
        self._metrics = metrics
        self.circuits = CircuitLog()
        self.gate = EndpointGate(
            settings, metrics, RateLimiter(sessionmaker), on_transition=self.circuits.note
        )
        self._cache = SubscriptionCache(
            sessionmaker, secret_box, refresh_s=settings.subscription_refresh_s
        )
        self._parts = attempt.Parts(
            subscriptions=self._cache,
            gate=self.gate,
            sender=sender or Sender(settings, gate=self.gate),
            schedule=retry.Schedule(settings),
            sessionmaker=sessionmaker,
            metrics=metrics,
            tracing=tracing,
        )
        self._stop = threading.Event()  # the running session's stop flag, once `run` starts

    def run(self, stop: threading.Event) -> None:
        """One connection session: deliver until `stop` is set, drain, return.

        Raises when the broker fails, or the database stays away longer than
        `retry_database` waits (after closing the consumer, so the unsettled messages go
        back to the queue); `run_until_stopped` reconnects.
        """
        settings = self._settings
        self._stop = stop
        topology = tp.build(settings.retry_tiers_s, settings.delivery_shards)
        self._transport.declare(topology)
        prefetch = settings.dispatcher_prefetch or min(
            settings.dispatcher_concurrency * PREFETCH_PER_THREAD, MAX_PREFETCH
        )
        # Every shard (overflow and the unsharded queue too) with a window of its own, the
        # whole prefetch, served round-robin (architecture §3): a busy shard alone keeps
        # the settler's batches as large as one queue did, and a tenant's backlog cannot
        # take the others' turns. Memory stays bounded: at most `queues * prefetch` held.
        queues = topology.delivery_queues
        window = prefetch
        consumer = self._transport.consume_many(queues, prefetch=window)
        settler = Settler(
            consumer, self._transport, self._sessionmaker, self._metrics,
            publish_timeout_s=settings.publish_timeout_s, on_disabled=self._cache.mark_disabled,
            policy=autodisable.Policy(timedelta(seconds=settings.auto_disable_after_s),
                                      settings.auto_disable_dead_deliveries),
            shards=settings.delivery_shards,
            tracing=self._tracing,
        )  # fmt: skip
        drain = DeadLetterDrain(
            self._transport, self._sessionmaker, publish_timeout_s=settings.publish_timeout_s
        )
        pool = SendingThreads(settings.dispatcher_concurrency, "hookline-send")
        intake = Intake(self, consumer, settler, drain, pool, prefetch)
        keeper = PartitionKeeper(self._sessionmaker.kw["bind"], settings.partition_policy)
        # Its failure is not raised below: the portal's view of circuits stops, not delivery.
        circuits = CircuitWriter(self.circuits, self.gate.breaker, self._sessionmaker)
        settler.start()
        drain.start()
        keeper.start()
        circuits.start()
        try:
            intake.consume(stop)
        finally:
            with contextlib.suppress(TransportError):
                consumer.cancel()
            pool.shutdown()
            settler.stop()
            drain.stop()
            keeper.stop()
            circuits.stop()
            with contextlib.suppress(TransportError):
                consumer.close()
            self._parts.sender.close()
        failure = settler.failure or drain.failure
        if failure is not None:  # raised after a clean stop too: never swallowed
            raise failure

    def close(self) -> None:
        self._parts.sender.close()

    @property
    def drain_bound_s(self) -> float:
        """The longest a stop waits for in-flight work: one whole request, and some."""
        return self._settings.connect_timeout_s + self._settings.request_timeout_s + DRAIN_GRACE_S

    # The `Deliverer` the intake works with (intake.py): one hop to `attempt.py` or admission.

    def recheck(self, delivery_ids: set[str]) -> dict[str, str]:
        """The status of each delivery row that exists, in one query; waits out an outage."""
        return attempt.statuses(self._sessionmaker, delivery_ids, self._stop)

    def deliver(self, message: Message, delivery: DeliveryMessage) -> Outcome:
        """One attempt of one delivery (`attempt.attempt`). Runs on a sending thread."""
        return attempt.attempt(message, delivery, self._parts, self._stop)

    def failed(self, message: Message, delivery: DeliveryMessage, exc: Exception) -> Outcome:
        return attempt.crashed(message, delivery, exc, self._parts)

    def in_flight_cap(self, subscription_id: str) -> int:
        return in_flight_cap(self._cache.peek(subscription_id), self._settings)

    def held_back(self, message: Message, delivery: DeliveryMessage) -> Deferred:
        return attempt.held_back(message, delivery, self._parts)

    def circuit_deferral(self, message: Message, delivery: DeliveryMessage) -> Deferred | None:
        return attempt.circuit_deferral(message, delivery, self._parts)


def serve(
    settings: Settings,
    transport: Transport,
    sessionmaker: sessionmaker[Session],
    metrics: Metrics,
    stop: threading.Event,
    *,
    secret_box: SecretBox | None = None,
    tracing: Tracing | None = None,
) -> None:
    """Run a dispatcher until `stop`, reconnecting when the broker or database drops."""
    box = secret_box or SecretBox(settings.secret_key or DEV_SECRET_KEY)
    dispatcher = Dispatcher(
        settings, transport, sessionmaker, metrics, secret_box=box, tracing=tracing
    )
    try:
        run_until_stopped(dispatcher.run, stop)
    finally:
        dispatcher.close()
