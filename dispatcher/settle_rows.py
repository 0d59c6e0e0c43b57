"""What a settled batch writes and publishes: the delivery rows' update (one statement for
the batch on PostgreSQL) and the onward message of each outcome (retry copy, dead letter,
poison copy, deferral), published before the original is acked.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Boolean, Table, and_, bindparam, or_, text, update
from sqlalchemy.orm import Session

from common.db.bulk import recordset, rows_document
from common.db.models import FINAL_STATUSES, Delivery
from common.db.types import UtcDateTime
from common.transport import Outgoing, poison_copy
from common.transport import topology as tp
from common.wire import encode
from dispatcher.outcome import Attempted, Deferred, Outcome, Poisoned

H_STATUS_CODE = "x-hookline-status-code"

_deliveries = cast(Table, Delivery.__table__)
# A stale duplicate must not move a final row backwards, nor an earlier attempt a later one.
# Replays are meant to reopen a final delivery, so they pass.
_UPDATE_DELIVERY = (
    update(_deliveries)
    .where(_deliveries.c.id == bindparam("b_id"))
    .where(
        or_(
            bindparam("b_replay", type_=Boolean),
            and_(
                # Not `not_in`: an expanding IN cannot run as one executemany.
                *(_deliveries.c.status != status for status in FINAL_STATUSES),
                _deliveries.c.attempts <= bindparam("b_attempts"),
            ),
        )
    )
    .values(
        status=bindparam("b_status"),
        attempts=bindparam("b_attempts"),
        last_status_code=bindparam("b_last_status_code"),
        last_error=bindparam("b_last_error"),
        dead_reason=bindparam("b_dead_reason"),
        next_attempt_at=bindparam("b_next_attempt_at", type_=UtcDateTime()),
        updated_at=bindparam("b_updated_at", type_=UtcDateTime()),
        finished_at=bindparam("b_finished_at", type_=UtcDateTime()),
    )
)
# The same update for a whole batch in one statement on PostgreSQL (see common/db/bulk.py).
_SET_COLUMNS = (
    "status", "attempts", "last_status_code", "last_error", "dead_reason", "next_attempt_at",
    "updated_at", "finished_at",
)  # fmt: skip
_FINAL_SQL = ", ".join(f"'{status}'" for status in sorted(FINAL_STATUSES))
_UPDATE_DELIVERIES_PG = text(
    "UPDATE deliveries AS d SET "
    + ", ".join(f"{column} = r.{column}" for column in _SET_COLUMNS)
    + f" FROM {recordset(_deliveries, ('id', *_SET_COLUMNS), {'replay': 'boolean'})}"
    + f" WHERE d.id = r.id AND (r.replay OR (d.status NOT IN ({_FINAL_SQL})"
    " AND d.attempts <= r.attempts))"
)


def onward_message(outcome: Outcome) -> Outgoing | None:
    """The message an outcome publishes before its original is acked, if any."""
    if isinstance(outcome, Poisoned):
        return poison_copy(outcome.message, "undecodable", outcome.error)
    if isinstance(outcome, Deferred):
        body = outcome.message.body  # the delivery as it came: nothing to re-encode
        return Outgoing(
            tp.RETRY, tp.tier_name(outcome.delay_s), body, {}, outcome.delivery.delivery_id
        )
    if not isinstance(outcome, Attempted):
        return None
    delivery, decision, result = outcome.delivery, outcome.decision, outcome.result
    if decision.outcome == "retry":
        assert decision.delay_s is not None
        retry = delivery.model_copy(
            update={
                "attempt": delivery.attempt + 1,
                "first_attempt_at": delivery.first_attempt_at or outcome.started_at,
                # Only a replay's first attempt may reopen a final row; its retries are
                # ordinary ones, so a stale duplicate of them cannot move a row backwards.
                "replay": False,
            }
        )
        routing_key = tp.tier_name(decision.delay_s)
        return Outgoing(tp.RETRY, routing_key, encode(retry), {}, delivery.delivery_id)
    if decision.outcome == "dead":
        headers: dict[str, Any] = {tp.H_REASON: decision.reason or "unknown"}
        if result.status_code is not None:
            headers[H_STATUS_CODE] = result.status_code
        if result.error:
            headers[tp.H_ERROR] = result.error[:500]
        return Outgoing(tp.DEAD, "", encode(delivery), headers, delivery.delivery_id)
    return None


def update_deliveries(session: Session, rows: list[dict[str, Any]]) -> None:
    """Move each delivery row on, unless a later attempt or a final state got there first."""
    if session.get_bind().dialect.name != "postgresql":
        session.execute(_UPDATE_DELIVERY, [{f"b_{k}": v for k, v in row.items()} for row in rows])
        return
    # One row per delivery: of two outcomes for one delivery in a batch (a duplicate
    # message), the later attempt wins, as it would in statement order.
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        seen = latest.get(row["id"])
        if seen is None or row["attempts"] >= seen["attempts"]:
            latest[row["id"]] = row
    document = rows_document(session, _deliveries, list(latest.values()))
    session.execute(_UPDATE_DELIVERIES_PG, {"rows": document})
