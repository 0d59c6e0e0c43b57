"""One attempt of one delivery, read top to bottom in `attempt`:

    resolve the subscription (`subscriptions.py`) → refuse what must not be sent →
    admit and POST (`http/`, around which the gate of `policy/admission/` decides) →
    decide (`policy/retry.py`) → an outcome, that `settle/` records, publishes onward, acks.

Every outcome the engine hands the settler is built here, the deferrals that take no
sending thread (an open circuit, a full lane) and the crash of an attempt included.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from common.db.days import on_their_days
from common.db.models import Delivery
from common.db.statuses import FINAL_STATUSES, SubscriptionStatus
from common.metrics import Metrics
from common.service import retry_database
from common.transport import Message
from common.wire import DeliveryMessage, utcnow
from dispatcher.http import Sender, SendResult
from dispatcher.outcome import Attempted, Deferred, Outcome
from dispatcher.policy import retry
from dispatcher.policy.admission import EndpointGate
from dispatcher.subscriptions import Endpoint, SubscriptionCache
from dispatcher.traces import sending, traced

if TYPE_CHECKING:
    from common.tracing import Span, Tracing


@dataclass(frozen=True)
class Parts:
    """What an attempt works with, built once per dispatcher (`worker.py`)."""

    subscriptions: SubscriptionCache
    gate: EndpointGate
    sender: Sender  # asks `gate` around every POST
    schedule: retry.Schedule
    sessionmaker: sessionmaker[Session]
    metrics: Metrics
    tracing: Tracing | None = None  # None: tracing is off, and costs one test per attempt


def attempt(
    message: Message, delivery: DeliveryMessage, parts: Parts, stop: threading.Event
) -> Outcome:
    """One attempt of one delivery, as an outcome for the settler. Runs on a sending thread.

    Raises `SQLAlchemyError` when the subscription cannot be read even after waiting out
    an outage (until `stop`): that is not an attempt.
    """
    if parts.tracing is None:
        return _attempt(message, delivery, parts, stop, None)

    def run(span: Span) -> Outcome:
        return _attempt(message, delivery, parts, stop, span)

    return traced(parts.tracing, message, delivery, run)


def _attempt(
    message: Message,
    delivery: DeliveryMessage,
    parts: Parts,
    stop: threading.Event,
    span: Span | None,
) -> Outcome:
    started_at = utcnow()
    # Resolve: the subscription as this dispatcher holds it (loaded once, kept fresh).
    try:
        endpoint = retry_database(
            lambda: parts.subscriptions.get(delivery.subscription_id), abandon=stop
        )
    except SQLAlchemyError:
        raise
    except Exception as exc:  # e.g. a secret sealed with another HOOKLINE_SECRET_KEY
        return _unsent(message, delivery, f"cannot load subscription: {exc}", parts, started_at)
    # Refuse: what must not be sent ends dead, or waits if its endpoint is only paused.
    if endpoint is None or endpoint.tenant_id != delivery.tenant:
        return _refused(message, delivery, started_at, retry.DeadReason.SUBSCRIPTION_MISSING)
    if endpoint.status == SubscriptionStatus.DISABLED:
        return _refused_disabled(message, delivery, endpoint, parts, stop, started_at)
    if (
        endpoint.status != SubscriptionStatus.ACTIVE
    ):  # paused, or not verified yet: hold, do not count
        return Deferred(message, delivery, parts.schedule.paused())
    # Admit and POST: the gate may hold it back (no attempt, a tier past the wait it asks).
    result = _post(endpoint, delivery, parts, span)
    if result.deferred:
        return Deferred(message, delivery, parts.schedule.held_back(parts.gate.deferral_s()))
    # Decide: success, a retry on some tier, or dead.
    if result.unsafe:
        decision = retry.dead(retry.DeadReason.UNSAFE_TARGET)
    else:
        decision = parts.schedule.decide(
            result.status_code if result.complete else None,
            delivery.attempt,
            retry_after=result.retry_after,
        )
    # Hand to settle: recorded, published onward and acked there, in batches.
    return Attempted(message, delivery, decision, result, started_at)


def crashed(message: Message, delivery: DeliveryMessage, exc: Exception, parts: Parts) -> Attempted:
    """The outcome of an attempt that raised: recorded and retried like a failure."""
    return _unsent(message, delivery, f"internal error: {exc!r}", parts, utcnow())


def circuit_deferral(message: Message, delivery: DeliveryMessage, parts: Parts) -> Deferred | None:
    """A delivery whose endpoint's circuit is open: deferred past the open time on the
    consuming thread, without taking a sending thread or looking the endpoint up."""
    wait_s = parts.gate.breaker.closed_for(delivery.subscription_id)
    if wait_s <= 0:
        return None
    return Deferred(message, delivery, parts.schedule.held_back(wait_s))


def held_back(message: Message, delivery: DeliveryMessage, parts: Parts) -> Deferred:
    """A delivery its endpoint's lane cannot take now: to the soonest tier, no attempt."""
    return Deferred(message, delivery, parts.schedule.soonest())


def statuses(
    sessionmaker: sessionmaker[Session], delivery_ids: set[str], stop: threading.Event
) -> dict[str, str]:
    """The status of each delivery row that exists, in one query; waits out an outage."""

    def query() -> dict[str, str]:
        with sessionmaker() as session:
            rows = session.execute(
                select(Delivery.id, Delivery.status).where(
                    Delivery.id.in_(delivery_ids), *on_their_days(Delivery.day, delivery_ids)
                )
            )
            return dict(rows.tuples().all())

    return retry_database(query, abandon=stop)


def _post(
    endpoint: Endpoint, delivery: DeliveryMessage, parts: Parts, span: Span | None
) -> SendResult:
    trace = None
    if span is not None:
        sending(span, endpoint)
        # The attempt's own context, to the receivers that asked for it (not signed).
        trace = span.context if endpoint.propagate_trace else None
    parts.metrics.inflight.inc()
    try:
        return parts.sender.send(endpoint, delivery, trace)
    finally:
        parts.metrics.inflight.dec()


def _refused_disabled(
    message: Message,
    delivery: DeliveryMessage,
    endpoint: Endpoint,
    parts: Parts,
    stop: threading.Event,
    started_at: datetime,
) -> Attempted:
    # Disabled by Hookline itself (410, auto-disable): the endpoint's doing.
    reason = retry.DeadReason.ENDPOINT_DISABLED if endpoint.disabled_reason else None
    refused = _refused(
        message, delivery, started_at, reason or retry.DeadReason.SUBSCRIPTION_DISABLED
    )
    if not delivery.replay:
        status = statuses(parts.sessionmaker, {delivery.delivery_id}, stop)
        if status.get(delivery.delivery_id) in FINAL_STATUSES:
            # Ended, and counted, with the disable: the refusal is recorded, not counted.
            return dataclasses.replace(refused, counted=False)
    return refused


def _refused(
    message: Message, delivery: DeliveryMessage, started_at: datetime, reason: retry.DeadReason
) -> Attempted:
    result = SendResult(None, 0.0, f"not sent: {reason.replace('_', ' ')}")
    return Attempted(message, delivery, retry.dead(reason), result, started_at)


def _unsent(
    message: Message, delivery: DeliveryMessage, error: str, parts: Parts, started_at: datetime
) -> Attempted:
    """An attempt that failed before any answer: retried (or dead) like a failed POST."""
    result = SendResult(None, 0.0, error[:500])
    decision = parts.schedule.decide(None, delivery.attempt)
    return Attempted(message, delivery, decision, result, started_at)
