"""The intake of one dispatcher session: it owns the consumer's iteration, decodes each
message, batches the idempotency re-checks of redelivered ones, and hands work to the
endpoint lanes and the sending threads; outcomes go to the settler.

What it needs of the dispatcher is the narrow `Deliverer` below (`worker.Dispatcher` is
the one), so this module never imports the worker that wires it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError

from common import logs
from common.db.statuses import FINAL_STATUSES, DeliveryStatus
from common.errors import DecodeError
from common.transport import Consumer, Message
from common.transport import topology as tp
from common.wire import DeliveryMessage, decode
from dispatcher.outcome import Deferred, Outcome, Poisoned, Skipped
from dispatcher.policy.admission import Lanes
from dispatcher.settle import Settler
from dispatcher.threads import SendingThreads

log = logging.getLogger(__name__)

RECHECK_BATCH = 200
RECHECK_LINGER_S = 0.01
LANE_EXPIRY_EVERY_S = 0.1


class Deliverer(Protocol):
    """What the intake asks of the dispatcher, one delivery at a time."""

    @property
    def drain_bound_s(self) -> float:
        """The longest a stop waits for in-flight work."""

    def recheck(self, delivery_ids: set[str]) -> dict[str, str]:
        """The status of each delivery row that exists (waits out a database outage)."""

    def circuit_deferral(self, message: Message, delivery: DeliveryMessage) -> Deferred | None:
        """The deferral of a delivery whose endpoint's circuit is open, else None."""

    def in_flight_cap(self, subscription_id: str) -> int: ...

    def held_back(self, message: Message, delivery: DeliveryMessage) -> Deferred:
        """The deferral of a delivery its endpoint's lane cannot take now."""

    def deliver(self, message: Message, delivery: DeliveryMessage) -> Outcome:
        """One attempt, on a sending thread; raises `SQLAlchemyError` if the database is gone."""

    def failed(self, message: Message, delivery: DeliveryMessage, exc: Exception) -> Outcome:
        """The outcome of an attempt that raised."""


class Failing(Protocol):
    """A helper thread of the session whose failure ends it (the dead-letter drain)."""

    @property
    def failure(self) -> BaseException | None: ...


def _already_handled(message: Message, delivery: DeliveryMessage, status: str | None) -> bool:
    """Whether a redelivered or re-published copy must not be sent.

    A copy the router re-published (H_RECHECK) is only needed while nothing was attempted
    yet: once the row moved on, the original message or its retry copy carries it.
    """
    if delivery.replay or status is None:
        return False
    if tp.H_RECHECK in message.headers:
        return status != DeliveryStatus.PENDING
    return status in FINAL_STATUSES


class Intake:
    """The consuming side of one `run`: owns the consumer's iteration, hands work out."""

    def __init__(
        self,
        deliverer: Deliverer,
        consumer: Consumer,
        settler: Settler,
        drain: Failing,
        pool: SendingThreads,
        prefetch: int,
    ) -> None:
        self._deliverer = deliverer
        self._consumer = consumer
        self._settler = settler
        self._drain = drain
        self._pool = pool
        self._rechecks: list[tuple[Message, DeliveryMessage]] = []
        self._recheck_since = 0.0
        # A slow endpoint may park up to half the prefetch window, the rest stays for
        # others; a fast one what it clears in `lanes.PARK_BUDGET_S`.
        self._lanes = Lanes(pool.submit, deliverer.in_flight_cap, park_floor=prefetch // 2)
        self._expired_at = time.monotonic()

    def consume(self, stop: threading.Event) -> None:
        messages = iter(self._consumer)
        for message in messages:
            self._raise_failure()
            if message is not None:
                self._accept(message)
            if self._rechecks and (
                message is None
                or len(self._rechecks) >= RECHECK_BATCH
                or time.monotonic() - self._recheck_since >= RECHECK_LINGER_S
            ):
                self._flush_rechecks()
            if time.monotonic() - self._expired_at >= LANE_EXPIRY_EVERY_S:
                self._expired_at = time.monotonic()
                self._lanes.expire()
            if stop.is_set():
                break
        self._finish(messages)

    def _finish(self, messages: Iterator[Message | None]) -> None:
        """Stop taking messages, and keep pumping the connection (acks flow through it)
        until everything in hand is settled, or the drain bound passes."""
        self._consumer.cancel()
        self._flush_rechecks()
        deadline = time.monotonic() + self._deliverer.drain_bound_s
        for message in messages:
            self._raise_failure()
            if message is not None:  # handed out before the cancel took effect
                self._accept(message)
                self._flush_rechecks()
            if self._settler.held == 0:
                return
            if time.monotonic() >= deadline:
                log.warning("drain bound reached; unsettled messages will be redelivered",
                            extra={"held": self._settler.held})  # fmt: skip
                return

    def _raise_failure(self) -> None:
        failure = self._settler.failure or self._drain.failure
        if failure is not None:
            raise failure

    def _accept(self, message: Message) -> None:
        self._settler.hold()
        try:
            delivery = decode(DeliveryMessage, message.body)
        except DecodeError as exc:
            self._settler.put(Poisoned(message, str(exc)))
            return
        if message.redelivered or tp.H_RECHECK in message.headers:
            if not self._rechecks:
                self._recheck_since = time.monotonic()
            self._rechecks.append((message, delivery))
            return
        self._submit(message, delivery)

    def _submit(self, message: Message, delivery: DeliveryMessage) -> None:
        """Into the delivery's endpoint lane: sent, parked, or deferred without a thread."""
        deferred = self._deliverer.circuit_deferral(message, delivery)
        if deferred is not None:
            self._settler.put(deferred)
            return
        self._lanes.submit(
            delivery.subscription_id,
            lambda: self._work(message, delivery),
            lambda: self._settler.put(self._deliverer.held_back(message, delivery)),
            message.queue,  # the pool serves it in its shard's turn: fair delivery
        )

    def _flush_rechecks(self) -> None:
        if not self._rechecks:
            return
        batch, self._rechecks = self._rechecks, []
        # On a pool thread: the query may wait out a database outage, and this thread must
        # keep iterating the consumer meanwhile (heartbeats, acks).
        self._pool.submit(lambda: self._recheck(batch))

    def _recheck(self, batch: list[tuple[Message, DeliveryMessage]]) -> None:
        """Skip redelivered copies of deliveries that are already final: one query a batch."""
        try:
            statuses = self._deliverer.recheck({delivery.delivery_id for _, delivery in batch})
        except SQLAlchemyError as exc:
            self._settler.fail(exc)
            return
        for message, delivery in batch:
            status = statuses.get(delivery.delivery_id)
            if _already_handled(message, delivery, status):
                self._settler.put(Skipped(message))
                continue
            try:
                self._submit(message, delivery)
            except RuntimeError:  # the pool shut down: the message is redelivered on close
                return

    def _work(self, message: Message, delivery: DeliveryMessage) -> None:
        # Every line logged for this attempt (sender, gate, cache) names its delivery.
        with logs.bound(
            delivery_id=delivery.delivery_id, event_id=delivery.event_id,
            subscription_id=delivery.subscription_id, tenant_id=delivery.tenant,
            attempt=delivery.attempt,
        ):  # fmt: skip
            try:
                outcome = self._deliverer.deliver(message, delivery)
            except SQLAlchemyError as exc:
                # The database is gone, so settling would fail too: end the session unsettled.
                self._settler.fail(exc)
                return
            except Exception as exc:
                log.exception("delivery crashed")
                outcome = self._deliverer.failed(message, delivery, exc)
        self._settler.put(outcome)
