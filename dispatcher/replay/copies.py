"""The replay copy of a dead delivery, and the id lists a replay batch is selected by."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, String, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY

from common.tracing import TRACEPARENT
from common.transport import Outgoing
from common.transport import topology as tp
from common.transport.spill import Spill

H_REPLAY_JOB = "x-hookline-replay-job"
_COMPACT = (",", ":")


def among(column: Any, ids: Sequence[str], *, postgres: bool) -> ColumnElement[bool]:
    """`column IN ids`; on PostgreSQL as `= ANY(array)`: one parameter whatever the batch
    size, so the statement is planned once instead of once per distinct size."""
    if postgres:
        return column == any_(bindparam("ids", list(ids), type_=ARRAY(String)))  # type: ignore[no-any-return]
    return column.in_(ids)  # type: ignore[no-any-return]


def body(
    delivery_id: str,
    subscription_id: str,
    tenant: str,
    event_id: str,
    type_: str,
    operation: str | None,
    timestamp: datetime,
    data_json: str,
) -> bytes:
    """An encoded `DeliveryMessage` with `replay=True`, attempt 1, the same delivery and
    event (so the same `webhook-id`).

    Built as text rather than through the pydantic models: the event's `data` is spliced in
    as the database holds it (JSON already), so a batch of thousands of copies is neither
    parsed nor re-serialised. `tests/dispatcher/replay/test_jobs.py` checks that it decodes to
    the message `wire.encode` would have built.
    """
    envelope = {
        "delivery_id": delivery_id,
        "event_id": event_id,
        "tenant": tenant,
        "subscription_id": subscription_id,
        "attempt": 1,
        "first_attempt_at": None,
        "replay": True,
    }
    event = {
        "id": event_id,
        "tenant": tenant,
        "type": type_,
        "operation": operation,
        "timestamp": timestamp.isoformat(),
    }
    # Both objects are closed by hand: `data` goes last into the event, the event last.
    head = json.dumps(envelope, separators=_COMPACT)[:-1]
    inner = json.dumps(event, separators=_COMPACT)[:-1]
    return f'{head},"event":{inner},"data":{data_json}}}}}'.encode()


def copy(
    job_id: str,
    spill: Spill,
    delivery_id: str,
    subscription_id: str,
    tenant: str,
    event_id: str,
    type_: str,
    operation: str | None,
    timestamp: datetime,
    data_json: str,
    traceparent: str | None = None,
) -> Outgoing:
    """The message a replay publishes for one delivery, tagged with its job, to its tenant's
    shard — or the overflow shard past the tenant's share of this second, so that a large
    replay waits behind the tenants hashed beside it, not they behind it — and in the trace
    its event was routed in, when the router traced it (its row keeps the context)."""
    encoded = body(
        delivery_id, subscription_id, tenant, event_id, type_, operation, timestamp, data_json
    )
    headers: dict[str, object] = {H_REPLAY_JOB: job_id, **spill.headers(tenant)}
    if traceparent is not None:
        headers[TRACEPARENT] = traceparent
    return Outgoing(tp.DELIVERIES, tp.DELIVERY_ROUTING_KEY, encoded, headers, delivery_id)
