"""Poison messages: drained from `hookline.poison` into the database, looked at, re-submitted
after a fix, or purged.

A poison message is one no handler could decode (or one that crashed its consumer until the
queue's delivery limit moved it). Its raw body is kept byte for byte — as text when it is
UTF-8, else base64 — with the reason, the error and the queue it came from, so an operator
can see what arrived and send it back to where it was going once the cause is fixed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import PoisonMessage
from common.db.session import insert_ignoring_conflicts
from common.errors import TransportError
from common.payload import is_storable_text, storable_text
from common.transport import Message, Outgoing, Transport
from common.transport import topology as tp
from common.wire import utcnow

MAX_HEADER_TEXT = 500
DRAIN_LIMIT = 10_000
DRAIN_BATCH = 200


def _text(value: Any) -> Any:
    """Headers as JSON: bytes become text, long values are cut, what the database refuses
    in text (a NUL) is replaced."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return storable_text(value[:MAX_HEADER_TEXT])
    if isinstance(value, dict):
        return {storable_text(str(k)): _text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_text(v) for v in value]
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return storable_text(str(value)[:MAX_HEADER_TEXT])


def _field(body: bytes, name: str) -> str | None:
    """A top-level string field of a JSON body, if the body is that much readable."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):  # any bytes at all: nested past the parser too
        return None
    value = parsed.get(name) if isinstance(parsed, dict) else None
    return value if isinstance(value, str) else None


def _tenant_of(body: bytes) -> str | None:
    tenant = _field(body, "tenant")
    # No tenant's id holds what the database refuses in text: such a body has no tenant.
    return tenant[:64] if tenant and is_storable_text(tenant) else None


def row_for(message: Message, now: datetime) -> dict[str, Any]:
    """The database row of one poison message; its id is a digest, so a redelivery is one row."""
    source = str(message.headers.get(tp.H_SOURCE_QUEUE) or _death_queue(message) or "unknown")
    try:
        body, encoding = message.body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        body, encoding = "", "base64"
    if encoding == "base64" or "\x00" in body:  # not text, or text the database refuses
        body, encoding = base64.b64encode(message.body).decode(), "base64"
    digest = hashlib.sha256(source.encode() + b"\0" + message.body).hexdigest()[:40]
    return {
        "id": f"psn_{digest}",
        "tenant_id": _tenant_of(message.body),
        "source_queue": storable_text(source[:200]),
        "routing_key": storable_text(message.routing_key[:255]),
        "reason": storable_text(str(message.headers.get(tp.H_REASON) or "delivery_limit")[:64]),
        "error": _text(message.headers.get(tp.H_ERROR)),
        "body": body,
        "encoding": encoding,
        "headers": _text(message.headers),
        "received_at": now,
    }


def _death_queue(message: Message) -> str | None:
    """The queue RabbitMQ dead-lettered a message from (x-death), when it did so itself."""
    deaths = message.headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        queue = deaths[0].get("queue")
        return queue.decode() if isinstance(queue, bytes) else queue
    return None


def drain(
    transport: Transport,
    sessionmaker: sessionmaker[Session],
    *,
    limit: int = DRAIN_LIMIT,
    batch_size: int = DRAIN_BATCH,
) -> int:
    """Move what waits in `hookline.poison` into `poison_messages`: each batch committed
    before it is acked, so a crash leaves the rest queued (a repeat is one row: the id is a
    digest). Runs when an operator lists or purges poison, so no service holds the queue
    and the messages stay where RabbitMQ put them until someone looks. Returns how many."""
    consumer = transport.consume(tp.POISON, prefetch=batch_size)
    moved = 0
    try:
        pending: list[Message] = []
        for message in consumer:
            if message is not None:
                pending.append(message)
            full = len(pending) >= batch_size or moved + len(pending) >= limit
            if pending and (message is None or full):
                _record(sessionmaker, pending)
                consumer.ack_many(pending)
                moved += len(pending)
                pending = []
            if message is None or moved >= limit:
                break
    finally:
        with contextlib.suppress(TransportError):
            consumer.close()
    return moved


def _record(sessionmaker: sessionmaker[Session], messages: Sequence[Message]) -> None:
    now = utcnow()
    rows = list({row["id"]: row for row in (row_for(m, now) for m in messages)}.values())
    with sessionmaker() as session, session.begin():
        session.execute(insert_ignoring_conflicts(session.get_bind(), PoisonMessage), rows)


@dataclass(frozen=True)
class PoisonFilter:
    tenant: str | None = None
    source_queue: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    ids: tuple[str, ...] = ()

    @property
    def narrows(self) -> bool:
        """Whether anything but the tenant narrows the selection."""
        return any((self.source_queue, self.since, self.until, self.ids))

    def conditions(self) -> list[Any]:
        c: list[Any] = []
        if self.tenant is not None:
            c.append(PoisonMessage.tenant_id == self.tenant)
        if self.source_queue is not None:
            c.append(PoisonMessage.source_queue == self.source_queue)
        if self.since is not None:
            c.append(PoisonMessage.received_at >= self.since)
        if self.until is not None:
            c.append(PoisonMessage.received_at < self.until)
        if self.ids:
            c.append(PoisonMessage.id.in_(self.ids))
        return c


def page(
    session: Session, poison: PoisonFilter, *, limit: int, after: tuple[datetime, str] | None
) -> list[PoisonMessage]:
    query = select(PoisonMessage).where(*poison.conditions())
    if after is not None:
        at, row_id = after
        query = query.where(
            or_(
                PoisonMessage.received_at < at,
                and_(PoisonMessage.received_at == at, PoisonMessage.id < row_id),
            )
        )
    order = (PoisonMessage.received_at.desc(), PoisonMessage.id.desc())
    return list(session.scalars(query.order_by(*order).limit(limit)))


def raw_body(row: PoisonMessage) -> bytes:
    return base64.b64decode(row.body) if row.encoding == "base64" else row.body.encode()


class ResubmitError(ValueError):
    """A poison message that cannot be sent back (unknown source, a replacement body bad)."""


def resubmit(
    session: Session,
    transport: Transport,
    row: PoisonMessage,
    *,
    body: bytes | None = None,
    publish_timeout_s: float = 30.0,
    shards: int = tp.DEFAULT_SHARDS,
) -> None:
    """Publish the message (or a corrected `body`) back to where it came from, confirmed,
    then mark the row re-submitted. The caller commits. `shards`: the deployment's
    `HOOKLINE_DELIVERY_SHARDS`, for a delivery message."""
    payload = body if body is not None else raw_body(row)
    headers: dict[str, Any] = {"x-hookline-resubmitted": row.id}
    # Back where it was going, by the queue it was poisoned from: a delivery from any
    # delivery queue (a shard, overflow, unsharded) to its tenant's shard.
    if tp.is_delivery_queue(row.source_queue):
        exchange, routing_key = tp.DELIVERIES, tp.DELIVERY_ROUTING_KEY
        tenant = _field(payload, "tenant")
        if tenant:  # without one it finds no shard and waits in the unsharded queue
            headers.update(tp.shard_headers(tenant, shards))
    elif row.source_queue == tp.EVENTS:  # bound to `#`; the type reads well in logs
        event_type = _field(payload, "type")
        exchange, routing_key = tp.EVENTS, event_type[:255] if event_type else "resubmitted"
    elif row.source_queue == tp.DEAD:
        exchange, routing_key = tp.DEAD, ""
    else:
        raise ResubmitError(f"cannot re-submit a message from {row.source_queue!r}")
    transport.publish(
        [Outgoing(exchange, routing_key, payload, headers, None)], timeout_s=publish_timeout_s
    )
    session.execute(
        update(PoisonMessage).where(PoisonMessage.id == row.id).values(resubmitted_at=utcnow())
    )


def purge(session: Session, poison: PoisonFilter) -> int:
    """Delete matching poison rows; the caller commits."""
    deleted = session.execute(
        delete(PoisonMessage)
        .where(*poison.conditions())
        .execution_options(synchronize_session=False)
    )
    return int(getattr(deleted, "rowcount", 0) or 0)


def decode_replacement(text: str) -> bytes:
    """A corrected body given as text, or as `base64:<...>` for binary."""
    if text.startswith("base64:"):
        try:
            return base64.b64decode(text[7:], validate=True)
        except binascii.Error as exc:
            raise ResubmitError(f"replacement body is not base64: {exc}") from None
    return text.encode()
