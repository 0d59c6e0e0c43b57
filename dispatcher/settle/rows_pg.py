"""The fast path of `rows.py` on PostgreSQL: the same guarded update for a whole batch in one
statement (see common/db/bulk.py). It must move rows exactly as the plain UPDATE there does.

`record_statement` goes further for the settler's common batch (no failure streak, no new
header shape, nothing to disable): the attempts' insert, the deliveries' update and the
reset of the streaks its successes end, as one statement that the settler runs in
autocommit on its own connection (`common.db.direct`), i.e. one round trip where the
transaction took five (BEGIN, three statements, COMMIT). A lone delivery pays the whole of
that per batch (`bench.trickle`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import date
from typing import Any, cast

from sqlalchemy import Table, TextClause, text
from sqlalchemy.orm import Session

from common.db.bulk import recordset, recordset_insert, rows_document
from common.db.days import days_of
from common.db.models import Attempt, Delivery
from common.db.statuses import FINAL_STATUSES
from common.ids import day_of

_deliveries = cast(Table, Delivery.__table__)
_attempts = cast(Table, Attempt.__table__)
_SET_COLUMNS = (
    "status", "attempts", "last_status_code", "last_error", "dead_reason", "next_attempt_at",
    "updated_at", "finished_at",
)  # fmt: skip
_FINAL_SQL = ", ".join(f"'{status}'" for status in sorted(FINAL_STATUSES))
_UPDATE = (
    "UPDATE deliveries AS d SET "
    + ", ".join(f"{column} = r.{column}" for column in _SET_COLUMNS)
    + " FROM {recordset} WHERE d.id = r.id AND (r.replay OR (d.status NOT IN "
    f"({_FINAL_SQL}) AND d.attempts <= r.attempts))"
)
# Ids from before 0011 carry no day: every partition's primary key is probed.
_UPDATE_ANY_DAY = text(
    _UPDATE.format(recordset=recordset(_deliveries, ("id", *_SET_COLUMNS), {"replay": "boolean"}))
)
_RECORDSET_WITH_DAY = recordset(_deliveries, ("id", "day", *_SET_COLUMNS), {"replay": "boolean"})


@functools.lru_cache(maxsize=64)
def _update_on_days(days: tuple[date, ...]) -> TextClause:
    """The update of a batch whose ids carry `days` (usually one): each row joined on the
    whole primary key (id, day), the days written into the statement. Then even the
    generic plan that a prepared statement gets after five runs reads those days'
    partitions only (pruned when planned) and each row by the key. With the days as a
    parameter and the join on the id alone, that plan read a day without statistics
    whole: hash join over a sequential scan, 149 ms a batch of 100 at 300,000 rows
    against 5 ms by the key (`keeper.analyse` keeps statistics too)."""
    listed = ", ".join(f"'{day.isoformat()}'" for day in days)
    return text(
        _UPDATE.format(recordset=_RECORDSET_WITH_DAY)
        + f" AND d.day = r.day AND d.day IN ({listed})"
    )


def update_deliveries(session: Session, rows: list[dict[str, Any]]) -> None:
    """`rows.update_deliveries` in one statement."""
    statement, document = _update(rows)
    session.execute(statement, {"rows": document})


def _update(rows: list[dict[str, Any]]) -> tuple[TextClause, str]:
    """The update of `rows` and its JSON document (the `rows` parameter)."""
    # One row per delivery: of two outcomes for one delivery in a batch (a duplicate
    # message), the later attempt wins, as it would in statement order.
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        seen = latest.get(row["id"])
        if seen is None or row["attempts"] >= seen["attempts"]:
            latest[row["id"]] = row
    days = days_of(latest)
    if days is None:
        return _UPDATE_ANY_DAY, rows_document(_deliveries, list(latest.values()))
    keyed = [{**row, "day": day_of(row["id"])} for row in latest.values()]
    return _update_on_days(tuple(days)), rows_document(_deliveries, keyed)


# The streak reset of `autodisable.apply` for the subscriptions a batch's successes leave
# without a failure, here as the statement's last part (its ids a JSON array).
_CLEAR_STREAKS = (
    "UPDATE subscriptions SET failing_since = NULL, consecutive_dead = 0 "
    "WHERE id IN (SELECT json_array_elements_text(CAST(:healthy AS json))) "
    "AND (failing_since IS NOT NULL OR consecutive_dead <> 0)"
)


# For a retry of a statement whose answer was lost (it may have landed): an attempt already
# stored (the same delivery, attempt and signing time) is not stored twice.
_NOT_STORED = (
    " WHERE NOT EXISTS (SELECT 1 FROM attempts AS x WHERE x.delivery_id = a.delivery_id"
    " AND x.day = a.day AND x.attempt = a.attempt AND x.created_at = a.created_at)"
)


@functools.lru_cache(maxsize=64)
def _record(update: TextClause, names: tuple[str, ...], unclear: bool) -> TextClause:
    insert = recordset_insert(_attempts, names, param="attempts", alias="a")
    if unclear:
        insert += _NOT_STORED
    return text(f"WITH attempted AS ({insert}), moved AS ({update.text}) {_CLEAR_STREAKS}")


def record_statement(
    attempts: Sequence[dict[str, Any]],
    updates: list[dict[str, Any]],
    healthy: Sequence[str],
    *,
    unclear: bool = False,
) -> tuple[TextClause, dict[str, str]]:
    """The one statement that inserts `attempts`, moves the deliveries on
    (`update_deliveries`) and ends the streaks of the `healthy` subscriptions, with its
    parameters: atomic alone, so the caller may run it in autocommit. `unclear`: a try of
    it failed and may have landed, so the attempts it stored are not stored again (the
    rest is safe to run twice: the update is guarded, the reset idempotent)."""
    update, document = _update(updates)
    parameters = {
        "attempts": rows_document(_attempts, attempts),
        "rows": document,
        # Sorted: two settlers resetting the same subscriptions lock them in one order.
        "healthy": json.dumps(sorted(healthy)),
    }
    return _record(update, tuple(attempts[0]), unclear), parameters
