"""The dead-letter drain: makes sure every message in `hookline.dead` is a dead delivery row.

The settler already wrote the row before it published the dead letter; this drain is what
makes the database the complete record even when that write raced a crash or a replay.
A message is acked only after its row is committed. During a database outage the drain
keeps the dead letters unacked in hand rather than handing them back (a return counts
toward the queue's delivery limit), until the database is back or the outage lasts too long.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from typing import cast

from sqlalchemy import Boolean, Date, Table, and_, bindparam, func, or_, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from common.background import BackgroundThread
from common.db.models import Delivery
from common.db.statuses import DeliveryStatus
from common.db.types import UtcDateTime
from common.errors import DecodeError, TransportError
from common.ids import day_of
from common.payload import storable_text
from common.service import (
    DATABASE_OUTAGE_BOUND_S,
    DATABASE_RETRY_MAX_WAIT_S,
    database_away,
    reconnect_delay_s,
)
from common.transport import Message, Transport, poison_copy
from common.transport import topology as tp
from common.wire import DeliveryMessage, decode, utcnow

log = logging.getLogger(__name__)

BATCH_SIZE = 100

_deliveries = cast(Table, Delivery.__table__)
# Idempotent: a row already dead with a reason, or finished otherwise, is left alone.
_MARK_ANY_DAY = (
    update(_deliveries)
    .where(_deliveries.c.id == bindparam("b_id"))
    .where(_deliveries.c.attempts <= bindparam("b_attempt"))
    # A late dead letter of a first cycle must not kill a row a replay reopened since.
    .where(or_(bindparam("b_replay", type_=Boolean), _deliveries.c.replay_count == 0))
    .where(
        or_(
            _deliveries.c.status
            == DeliveryStatus.PENDING,  # not `in_`: it cannot run as one executemany
            _deliveries.c.status == DeliveryStatus.RETRYING,
            and_(_deliveries.c.status == DeliveryStatus.DEAD, _deliveries.c.dead_reason.is_(None)),
        )
    )
    .values(
        status=DeliveryStatus.DEAD,
        dead_reason=bindparam("b_reason"),
        updated_at=bindparam("b_now", type_=UtcDateTime()),
        finished_at=func.coalesce(
            _deliveries.c.finished_at, bindparam("b_now", type_=UtcDateTime())
        ),
    )
)
# The same on the day the delivery id carries (`common.db.days`): one partition.
_MARK_ON_ITS_DAY = _MARK_ANY_DAY.where(_deliveries.c.day == bindparam("b_day", type_=Date))


class _Outage:
    """A database outage as the drain sees it: when to try again, and when to give up."""

    def __init__(self) -> None:
        self._since: float | None = None
        self._failures = 0
        self._retry_at = 0.0
        self.error: SQLAlchemyError | None = None

    def may_try(self) -> bool:
        return time.monotonic() >= self._retry_at

    def failed(self, exc: SQLAlchemyError) -> None:
        """Re-raises unless the database is merely away and has not been for too long."""
        now = time.monotonic()
        self._since = now if self._since is None else self._since
        if not database_away(exc) or now - self._since >= DATABASE_OUTAGE_BOUND_S:
            raise exc
        self.error = exc
        self._failures += 1
        self._retry_at = now + reconnect_delay_s(self._failures, DATABASE_RETRY_MAX_WAIT_S)
        log.warning("database unavailable; dead letters wait in their queue",
                    extra={"error": type(exc).__name__, "attempt": self._failures})  # fmt: skip

    def over(self) -> None:
        self._since, self._failures, self._retry_at, self.error = None, 0, 0.0, None


class DeadLetterDrain(BackgroundThread):
    """A thread with its own consumer on `hookline.dead`, for one connection session."""

    def __init__(
        self,
        transport: Transport,
        sessionmaker: sessionmaker[Session],
        *,
        publish_timeout_s: float,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        super().__init__("hookline-dead")
        self._transport = transport
        self._sessionmaker = sessionmaker
        self._publish_timeout_s = publish_timeout_s
        self._batch_size = batch_size

    def run(self) -> None:
        try:
            consumer = self._transport.consume(tp.DEAD, prefetch=self._batch_size * 2)
        except Exception as exc:
            self.fail(exc)
            return
        pending: list[Message] = []
        outage = _Outage()
        try:
            for message in consumer:
                if message is not None:
                    pending.append(message)
                due = message is None or len(pending) >= self._batch_size
                if pending and due and outage.may_try():
                    # Not retried in a loop here: this thread must keep iterating the
                    # consumer (heartbeats), so an outage is waited out between ticks.
                    try:
                        self._record(pending)
                    except SQLAlchemyError as exc:
                        outage.failed(exc)
                    else:
                        outage.over()
                        consumer.ack_many(pending)
                        pending = []
                if self.stopping.is_set() and not pending:
                    return
                if self.stopping.is_set() and outage.error is not None:
                    # Not waited out past a stop; reported, as the settler's would be.
                    self.fail(outage.error)
                    return
        except Exception as exc:
            log.warning("dead-letter drain stopped; messages stay queued", exc_info=True)
            self.fail(exc)
        finally:
            with contextlib.suppress(TransportError):
                consumer.close()

    def _record(self, messages: Sequence[Message]) -> None:
        now = utcnow()
        rows, poisoned = [], []
        for message in messages:
            try:
                delivery = decode(DeliveryMessage, message.body)
            except DecodeError as exc:
                poisoned.append(poison_copy(message, "undecodable", str(exc)))
                continue
            # Ours is a DeadReason; one published by hand is cut and made storable, so it
            # cannot fail the batch's write and stop the drain (`dead_reason` is 64 long).
            reason = storable_text(str(message.headers.get(tp.H_REASON) or "unknown")[:64])
            rows.append(
                {"b_id": delivery.delivery_id, "b_attempt": delivery.attempt,
                 "b_replay": delivery.replay, "b_reason": reason, "b_now": now,
                 "b_day": day_of(delivery.delivery_id)}
            )  # fmt: skip
        dated = [row for row in rows if row["b_day"] is not None]
        undated = [row for row in rows if row["b_day"] is None]  # ids from before 0011
        if rows:
            with self._sessionmaker() as session, session.begin():
                for statement, some in ((_MARK_ON_ITS_DAY, dated), (_MARK_ANY_DAY, undated)):
                    if some:
                        session.execute(statement, some)
        if poisoned:
            self._transport.publish(poisoned, timeout_s=self._publish_timeout_s)
