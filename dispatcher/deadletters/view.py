"""One dead letter in full: the delivery, its event, every attempt.

The request headers each attempt sent are not rebuilt here from the subscription as it is
now: each attempt names its `header_sets` row (migration 0014), which the shell shows
through one function (`hookline.services.deliveries.attempt_headers`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from common.db import lookup
from common.db.models import Attempt, Delivery, EventRow


@dataclass(frozen=True)
class DeadDetail:
    delivery: Delivery
    event: EventRow | None
    attempts: list[Attempt]


def detail(session: Session, delivery_id: str, *, tenant: str | None) -> DeadDetail | None:
    """The delivery (dead or not: a replayed one is still worth looking at), or None."""
    scope = () if tenant is None else (Delivery.tenant_id == tenant,)
    delivery = lookup.delivery(session, delivery_id, *scope)
    if delivery is None:
        return None
    event = lookup.event(session, delivery.tenant_id, delivery.event_id, delivery.day)
    return DeadDetail(delivery, event, lookup.attempts(session, delivery.id))
