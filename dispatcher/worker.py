"""The dispatcher's run loop: take delivery messages, POST them on a thread pool, settle.

Threads of one connection session:
- the calling thread owns the consumer: it decodes, batches the idempotency re-checks of
  redelivered messages, submits work, and keeps iterating so the connection stays pumped;
- `concurrency` sending threads each resolve the subscription, POST, and classify;
- one settler thread records, publishes onward and acks in batches (`settle/`);
- one dead-letter drain thread with its own consumer (`deadletters.py`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import threading
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import FINAL_STATUSES, SUB_ACTIVE, SUB_DISABLED, Delivery
from common.errors import TransportError
from common.metrics import Metrics
from common.secretbox import DEV_SECRET_KEY, SecretBox
from common.service import retry_database, run_until_stopped
from common.settings import Settings
from common.transport import Message, Transport
from common.transport import topology as tp
from common.wire import DeliveryMessage, utcnow
from dispatcher.deadletters import DeadLetterDrain
from dispatcher.http import Sender, SendResult
from dispatcher.intake import Intake
from dispatcher.outcome import Attempted, Deferred, Outcome
from dispatcher.policy import autodisable, retry
from dispatcher.policy.admission import EndpointGate, RateLimiter, in_flight_cap
from dispatcher.settle import Settler
from dispatcher.subscriptions import Endpoint, SubscriptionCache
from dispatcher.threads import SendingThreads

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
    ) -> None:
        self._settings = settings
        self._transport = transport
        self._sessionmaker = sessionmaker
        self._metrics = metrics
        self._delays = settings.retry_delays_s
        self._jitter = retry.jitterer(settings.retry_jitter)
        self._tiers = settings.retry_tiers_s
        self._draw = random.Random().random
        self.gate = EndpointGate(settings, metrics, RateLimiter(sessionmaker))
        self._sender = sender or Sender(settings, gate=self.gate)
        self._cache = SubscriptionCache(
            sessionmaker, secret_box, refresh_s=settings.subscription_refresh_s
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
        self._transport.declare(tp.build(self._tiers))
        prefetch = settings.dispatcher_prefetch or min(
            settings.dispatcher_concurrency * PREFETCH_PER_THREAD, MAX_PREFETCH
        )
        consumer = self._transport.consume(tp.DELIVERIES, prefetch=prefetch)
        settler = Settler(
            consumer, self._transport, self._sessionmaker, self._metrics,
            publish_timeout_s=settings.publish_timeout_s, on_disabled=self._cache.mark_disabled,
            policy=autodisable.Policy(timedelta(seconds=settings.auto_disable_after_s),
                                      settings.auto_disable_dead_deliveries),
        )  # fmt: skip
        drain = DeadLetterDrain(
            self._transport, self._sessionmaker, publish_timeout_s=settings.publish_timeout_s
        )
        pool = SendingThreads(settings.dispatcher_concurrency, "hookline-send")
        intake = Intake(self, consumer, settler, drain, pool, prefetch)
        settler.start()
        drain.start()
        try:
            intake.consume(stop)
        finally:
            with contextlib.suppress(TransportError):
                consumer.cancel()
            pool.shutdown()
            settler.stop()
            drain.stop()
            with contextlib.suppress(TransportError):
                consumer.close()
            self._sender.close()
        failure = settler.failure or drain.failure
        if failure is not None:  # raised after a clean stop too: never swallowed
            raise failure

    def close(self) -> None:
        self._sender.close()

    @property
    def drain_bound_s(self) -> float:
        """The longest a stop waits for in-flight work: one whole request, and some."""
        return self._settings.connect_timeout_s + self._settings.request_timeout_s + DRAIN_GRACE_S

    def recheck(self, delivery_ids: set[str]) -> dict[str, str]:
        """The status of each delivery row that exists, in one query; waits out an outage."""

        def query() -> dict[str, str]:
            with self._sessionmaker() as session:
                rows = session.execute(
                    select(Delivery.id, Delivery.status).where(Delivery.id.in_(delivery_ids))
                )
                return dict(rows.tuples().all())

        return retry_database(query, abandon=self._stop)

    def _ended(self, delivery_id: str) -> bool:
        return self.recheck({delivery_id}).get(delivery_id) in FINAL_STATUSES

    def deliver(self, message: Message, delivery: DeliveryMessage) -> Outcome:
        """One attempt of one delivery, as an outcome for the settler. Runs on a pool thread.

        Raises `SQLAlchemyError` when the subscription cannot be read even after waiting out
        an outage: that is not an attempt.
        """
        started_at = utcnow()
        try:
            endpoint = retry_database(
                lambda: self._cache.get(delivery.subscription_id), abandon=self._stop
            )
        except SQLAlchemyError:
            raise
        except Exception as exc:  # e.g. a secret sealed with another HOOKLINE_SECRET_KEY
            result = SendResult(None, 0.0, f"cannot load subscription: {exc}"[:500])
            decision = retry.decide(None, delivery.attempt, self._delays, jitter=self._jitter)
            return Attempted(message, delivery, decision, result, started_at)
        if endpoint is None or endpoint.tenant_id != delivery.tenant:
            return _refused(message, delivery, started_at, retry.SUBSCRIPTION_MISSING)
        if endpoint.status == SUB_DISABLED:
            # Disabled by Hookline itself (410, auto-disable): the endpoint's doing.
            reason = retry.ENDPOINT_DISABLED if endpoint.disabled_reason else None
            refused = _refused(message, delivery, started_at, reason or retry.SUBSCRIPTION_DISABLED)
            if not delivery.replay and self._ended(delivery.delivery_id):
                # Ended, and counted, with the disable: the refusal is recorded, not counted.
                return dataclasses.replace(refused, counted=False)
            return refused
        if endpoint.status != SUB_ACTIVE:  # paused, or not verified yet: hold, do not count
            return Deferred(message, delivery, retry.deferral_delay(self._delays))
        result = self._send(endpoint, delivery)
        if result.deferred:
            delay_s = retry.spread_tier(self.gate.deferral_s(), self._tiers, self._draw())
            return Deferred(message, delivery, delay_s)
        if result.unsafe:
            decision = retry.dead(retry.UNSAFE_TARGET)
        else:
            decision = retry.decide(
                result.status_code if result.complete else None,
                delivery.attempt,
                self._delays,
                retry_after=result.retry_after,
                jitter=self._jitter,
            )
        return Attempted(message, delivery, decision, result, started_at)

    def failed(self, message: Message, delivery: DeliveryMessage, exc: Exception) -> Outcome:
        """The outcome of an attempt that crashed: recorded and retried like a failure."""
        result = SendResult(None, 0.0, f"internal error: {exc!r}"[:500])
        decision = retry.decide(None, delivery.attempt, self._delays, jitter=self._jitter)
        return Attempted(message, delivery, decision, result, utcnow())

    def in_flight_cap(self, subscription_id: str) -> int:
        return in_flight_cap(self._cache.peek(subscription_id), self._settings)

    def held_back(self, message: Message, delivery: DeliveryMessage) -> Deferred:
        """A delivery its endpoint's lane cannot take now: to the soonest tier, no attempt."""
        return Deferred(message, delivery, retry.tier_after(0.0, self._delays))

    def circuit_deferral(self, message: Message, delivery: DeliveryMessage) -> Deferred | None:
        """A delivery whose endpoint's circuit is open: deferred past the open time on the
        consuming thread, without taking a sending thread or looking the endpoint up."""
        wait_s = self.gate.breaker.closed_for(delivery.subscription_id)
        if wait_s <= 0:
            return None
        return Deferred(message, delivery, retry.spread_tier(wait_s, self._tiers, self._draw()))

    def _send(self, endpoint: Endpoint, delivery: DeliveryMessage) -> SendResult:
        self._metrics.inflight.inc()
        try:
            return self._sender.send(endpoint, delivery)
        finally:
            self._metrics.inflight.dec()


def _refused(
    message: Message, delivery: DeliveryMessage, started_at: datetime, reason: str
) -> Attempted:
    result = SendResult(None, 0.0, f"not sent: {reason.replace('_', ' ')}")
    return Attempted(message, delivery, retry.dead(reason), result, started_at)


def serve(
    settings: Settings,
    transport: Transport,
    sessionmaker: sessionmaker[Session],
    metrics: Metrics,
    stop: threading.Event,
    *,
    secret_box: SecretBox | None = None,
) -> None:
    """Run a dispatcher until `stop`, reconnecting when the broker or database drops."""
    box = secret_box or SecretBox(settings.secret_key or DEV_SECRET_KEY)
    dispatcher = Dispatcher(settings, transport, sessionmaker, metrics, secret_box=box)
    try:
        run_until_stopped(dispatcher.run, stop)
    finally:
        dispatcher.close()
