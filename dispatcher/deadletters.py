"""The dead-letter drain: makes sure every message in `hookline.dead` is a dead delivery row.

The settler already wrote the row before it published the dead letter; this drain is what
makes the database the complete record even when that write raced a crash or a replay.
A message is acked only after its row is committed, so a database outage leaves the dead
letters waiting in their queue.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from typing import cast

from sqlalchemy import Table, and_, bindparam, func, or_, update
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import DEAD, PENDING, RETRYING, Delivery
from common.db.types import UtcDateTime
from common.errors import DecodeError, TransportError
from common.transport import Message, Transport
from common.transport import topology as tp
from common.wire import DeliveryMessage, decode, utcnow
from dispatcher.settle import poison_message

log = logging.getLogger(__name__)

BATCH_SIZE = 100

_deliveries = cast(Table, Delivery.__table__)
# Idempotent: a row already dead with a reason, or finished otherwise, is left alone.
_MARK_DEAD = (
    update(_deliveries)
    .where(_deliveries.c.id == bindparam("b_id"))
    .where(_deliveries.c.attempts <= bindparam("b_attempt"))
    .where(
        or_(
            _deliveries.c.status == PENDING,  # not `in_`: it cannot run as one executemany
            _deliveries.c.status == RETRYING,
            and_(_deliveries.c.status == DEAD, _deliveries.c.dead_reason.is_(None)),
        )
    )
    .values(
        status=DEAD,
        dead_reason=bindparam("b_reason"),
        updated_at=bindparam("b_now", type_=UtcDateTime()),
        finished_at=func.coalesce(
            _deliveries.c.finished_at, bindparam("b_now", type_=UtcDateTime())
        ),
    )
)


class DeadLetterDrain:
    """A thread with its own consumer on `hookline.dead`, for one connection session."""

    def __init__(
        self,
        transport: Transport,
        sessionmaker: sessionmaker[Session],
        *,
        publish_timeout_s: float,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self._transport = transport
        self._sessionmaker = sessionmaker
        self._publish_timeout_s = publish_timeout_s
        self._batch_size = batch_size
        self._stopping = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="hookline-dead", daemon=True)

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        try:
            consumer = self._transport.consume(tp.DEAD, prefetch=self._batch_size * 2)
        except Exception as exc:
            self._failure = exc
            return
        pending: list[Message] = []
        try:
            for message in consumer:
                if message is not None:
                    pending.append(message)
                if pending and (message is None or len(pending) >= self._batch_size):
                    self._record(pending)
                    consumer.ack_many(pending)
                    pending = []
                if self._stopping.is_set() and not pending:
                    return
        except Exception as exc:
            log.warning("dead-letter drain stopped; messages stay queued", exc_info=True)
            self._failure = exc
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
                poisoned.append(poison_message(message, "undecodable", str(exc)))
                continue
            reason = str(message.headers.get(tp.H_REASON) or "unknown")
            rows.append(
                {"b_id": delivery.delivery_id, "b_attempt": delivery.attempt,
                 "b_reason": reason, "b_now": now}
            )  # fmt: skip
        if rows:
            with self._sessionmaker() as session, session.begin():
                session.execute(_MARK_DEAD, rows)
        if poisoned:
            self._transport.publish(poisoned, timeout_s=self._publish_timeout_s)
