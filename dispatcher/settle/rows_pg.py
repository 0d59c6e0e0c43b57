"""The fast path of `rows.py` on PostgreSQL: the same guarded update for a whole batch in one
statement (see common/db/bulk.py). It must move rows exactly as the plain UPDATE there does.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, text
from sqlalchemy.orm import Session

from common.db.bulk import recordset, rows_document
from common.db.days import days_of
from common.db.models import Delivery
from common.db.statuses import FINAL_STATUSES
from common.ids import day_of

_deliveries = cast(Table, Delivery.__table__)
_SET_COLUMNS = (
    "status", "attempts", "last_status_code", "last_error", "dead_reason", "next_attempt_at",
    "updated_at", "finished_at",
)  # fmt: skip
_FINAL_SQL = ", ".join(f"'{status}'" for status in sorted(FINAL_STATUSES))
# With the batch's days (every id carries one, `common.db.days`) the update reads those
# days' partitions only, usually one, and joins each row on the whole primary key (id,
# day): then a plan cannot read a partition whole. Joined on the id alone, the generic
# plan that a prepared statement gets after five runs read a day with no statistics by a
# sequential scan and hash join (300,000 rows: 149 ms a batch of 100, against 5 ms by the
# key). Without days (ids from before 0011), every partition's primary key is probed.
_ON_THEIR_DAYS = " AND d.day = r.day AND d.day = ANY(CAST(:days AS date[]))"
_UPDATE_DELIVERIES_PG = {
    on_days: text(
        "UPDATE deliveries AS d SET "
        + ", ".join(f"{column} = r.{column}" for column in _SET_COLUMNS)
        + f" FROM {recordset(_deliveries, (*keys, *_SET_COLUMNS), {'replay': 'boolean'})}"
        + f" WHERE d.id = r.id AND (r.replay OR (d.status NOT IN ({_FINAL_SQL})"
        " AND d.attempts <= r.attempts))" + (_ON_THEIR_DAYS if on_days else "")
    )
    for on_days, keys in ((True, ("id", "day")), (False, ("id",)))
}


def update_deliveries(session: Session, rows: list[dict[str, Any]]) -> None:
    """`rows.update_deliveries` in one statement."""
    # One row per delivery: of two outcomes for one delivery in a batch (a duplicate
    # message), the later attempt wins, as it would in statement order.
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        seen = latest.get(row["id"])
        if seen is None or row["attempts"] >= seen["attempts"]:
            latest[row["id"]] = row
    days = days_of(latest)
    if days is None:
        document = rows_document(session, _deliveries, list(latest.values()))
        session.execute(_UPDATE_DELIVERIES_PG[False], {"rows": document})
        return
    keyed = [{**row, "day": day_of(row["id"])} for row in latest.values()]
    document = rows_document(session, _deliveries, keyed)
    session.execute(_UPDATE_DELIVERIES_PG[True], {"rows": document, "days": days})
