"""One dead letter in full: the delivery, its event, every attempt, the headers it was sent with.

The headers are rebuilt the way the sender builds them. Nothing secret is shown: the
signature is a placeholder (it is derived from the secret and changes every attempt), and
every static header's value is masked: any of them may carry a credential the receiver
issued, whatever its name (`X-Shared-Pass`), and none is shown again once saved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from sqlalchemy.orm import Session

from common.db import lookup
from common.db.models import Attempt, Delivery, EventRow, Subscription
from dispatcher.http import RESERVED_HEADERS, USER_AGENT

MASK = "***"


def headers_sent(static: dict[str, str], event_id: str) -> dict[str, str]:
    """The headers of an attempt, with the signature and every static value replaced."""
    headers = {k: MASK for k in static if k.lower() not in RESERVED_HEADERS}
    headers.update(
        {
            "webhook-id": event_id,
            "webhook-timestamp": "<unix seconds of the attempt>",
            "webhook-signature": "<omitted: v1,HMAC-SHA256 of id.timestamp.body>",
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
    )
    return headers


@dataclass(frozen=True)
class DeadDetail:
    delivery: Delivery
    event: EventRow | None
    attempts: list[Attempt]
    headers: dict[str, str]


def detail(session: Session, delivery_id: str, *, tenant: str | None) -> DeadDetail | None:
    """The delivery (dead or not: a replayed one is still worth looking at), or None."""
    scope = () if tenant is None else (Delivery.tenant_id == tenant,)
    delivery = lookup.delivery(session, delivery_id, *scope)
    if delivery is None:
        return None
    event = lookup.event(session, delivery.tenant_id, delivery.event_id, delivery.day)
    attempts = lookup.attempts(session, delivery.id)
    subscription = session.get(Subscription, delivery.subscription_id)
    static = cast(dict[str, str], subscription.headers if subscription else {}) or {}
    return DeadDetail(delivery, event, attempts, headers_sent(static, delivery.event_id))
