"""Data builders for tests: rows inserted directly, with sensible defaults."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.db.models import Attempt, Delivery, EventRow, HeaderSet, Subscription, Tenant
from common.db.statuses import DeliveryStatus, SubscriptionStatus
from common.ids import event_day
from common.secretbox import DEV_SECRET_KEY, SecretBox
from common.signing import new_secret
from common.wire import DeliveryMessage, Event, delivery_id_for, new_id, utcnow
from dispatcher.http import build_headers, header_shape

DEV_BOX = SecretBox(DEV_SECRET_KEY)


def tenant(session: Session, *, name: str = "acme", id: str | None = None) -> Tenant:
    row = Tenant(id=id or new_id("ten"), name=name, created_at=utcnow())
    session.add(row)
    session.flush()
    return row


def subscription(
    session: Session,
    tenant_id: str,
    url: str,
    *,
    event_types: list[str] | None = None,
    operations: list[str] | None = None,
    secret: str | None = None,
    status: str = SubscriptionStatus.ACTIVE,
    headers: dict[str, str] | None = None,
    box: SecretBox = DEV_BOX,
    **extra: Any,
) -> tuple[Subscription, str]:
    """A subscription row and its plaintext secret."""
    secret = secret or new_secret()
    types = event_types or ["*"]
    ops = operations or []
    dedupe = hashlib.sha256(json.dumps([url, sorted(types), sorted(ops)]).encode()).hexdigest()
    now = utcnow()
    row = Subscription(
        id=new_id("sub"),
        tenant_id=tenant_id,
        url=url,
        event_types=types,
        operations=ops,
        secret_enc=box.seal(secret),
        headers=headers or {},
        meta={},
        status=status,
        dedupe_key=dedupe,
        created_at=now,
        updated_at=now,
        **extra,
    )
    session.add(row)
    session.flush()
    return row, secret


def event(tenant_id: str, *, type: str = "order.created", **fields: Any) -> Event:
    fields.setdefault("data", {"order": 42})
    return Event(tenant=tenant_id, type=type, **fields)


def delivery(session: Session, ev: Event, subscription_id: str) -> DeliveryMessage:
    """The event and delivery rows the router would write, and the message it would publish."""
    now = utcnow()
    if session.get(EventRow, (ev.tenant, ev.id)) is None:
        session.add(
            EventRow(
                tenant_id=ev.tenant,
                id=ev.id,
                type=ev.type,
                operation=ev.operation,
                timestamp=ev.timestamp,
                data=ev.data,
                received_at=now,
            )
        )
    delivery_id = delivery_id_for(ev.tenant, ev.id, subscription_id, event_day(ev.id, now.date()))
    session.add(
        Delivery(
            id=delivery_id,
            tenant_id=ev.tenant,
            event_id=ev.id,
            subscription_id=subscription_id,
            event_type=ev.type,
            status=DeliveryStatus.PENDING,
            attempts=0,
            replay_count=0,
            created_at=now,
            updated_at=now,
        )
    )
    session.flush()
    return DeliveryMessage(
        delivery_id=delivery_id,
        event_id=ev.id,
        tenant=ev.tenant,
        subscription_id=subscription_id,
        attempt=1,
        event=ev,
    )


def attempt(
    session: Session,
    delivery_id: str,
    number: int,
    *,
    static: dict[str, str] | None = None,
    sent: bool = True,
    status_code: int | None = 503,
    at: datetime | None = None,
) -> Attempt:
    """An attempt row as the settler writes it: with the `header_sets` row of the request
    that `build_headers` makes for the subscription's `static` headers (looked up by its
    digest, added when new); `sent=False`: nothing went out (no header set)."""
    at = at or utcnow().replace(microsecond=0) + timedelta(seconds=number)
    header_set_id = None
    if sent:
        shape = header_shape(build_headers(static or {}, "x", 0, b"{}", [new_secret()]))
        header_set_id = session.scalar(select(HeaderSet.id).where(HeaderSet.digest == shape.digest))
        if header_set_id is None:
            row = HeaderSet(digest=shape.digest, headers=[list(h) for h in shape.headers])
            session.add(row)
            session.flush()
            header_set_id = row.id
    made = Attempt(
        delivery_id=delivery_id, attempt=number, outcome="retry", status_code=status_code,
        duration_s=0.1, error=None if sent else "connection refused", created_at=at,
        header_set_id=header_set_id,
    )  # fmt: skip
    session.add(made)
    session.flush()
    return made
