"""The PostgreSQL statements of a replay batch: the pick and the claim, then the mark.

The pick takes the job's next todo items (locked, skipping any a second runner holds);
data-modifying CTEs then run in one statement and one snapshot each: the claim wins the
picked deliveries still dead with the count the job saw, sets every picked item claimed
and returns the columns of the copies (the few not won are skipped and counted on the job
by `skip`); the mark reopens the deliveries that still carry their claim stamp, settles
the items and counts and heartbeats the job. Ids, stamps and the days the ids carry go as
array parameters, so each statement is planned once whatever the batch size, and reads
the partitions of the batch's days only. The steps and why they are safe are in `batch.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Row, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from common.db.days import days_of
from common.db.types import UtcDateTime

# Two jobs on overlapping sets, or a mark beside a dispatcher's settle, may lock the same
# deliveries in opposite orders; PostgreSQL then aborts one statement. Each statement here
# is atomic and conditional, so running it again is safe.
_RETRYABLE_SQLSTATES = ("40P01", "40001")  # deadlock detected, serialization failure
_TRIES = 5
T = TypeVar("T")

# The pick comes first, on its own: the ids it picked name the days their deliveries (and
# events) live on (`common.db.days`), and the claim passes those days as a parameter, so
# PostgreSQL reads only their partitions, usually one, instead of probing every day's.
_PG_PICK = text(
    """
SELECT delivery_id, seq, base_replay_count FROM replay_items
WHERE job_id = :job AND state = 'todo'
ORDER BY seq LIMIT :size
FOR UPDATE SKIP LOCKED
"""
)


def _on_days(alias: str, on_days: bool) -> str:
    return f" AND {alias}.day = ANY(CAST(:days AS date[]))" if on_days else ""


# No CTE is joined to another CTE here: a CTE has no index, and a nested loop over two of
# them (which a stale row estimate of a job's fresh items invites) is quadratic in the batch.
# So every picked item is set `claimed`, the won deliveries come back as rows of their own,
# and the few that were not won are set `skipped` by a second statement (`skip`). An event
# lives on its deliveries' day; without days (ids from before 0011) it is looked for in
# every partition.
_PG_CLAIM = {
    on_days: text(
        f"""
WITH won AS (
    UPDATE deliveries AS d SET replay_count = d.replay_count + 1, updated_at = :now
    FROM unnest(CAST(:ids AS text[]), CAST(:bases AS integer[])) AS p(delivery_id, base)
    WHERE d.id = p.delivery_id AND d.status = 'dead' AND d.replay_count = p.base
        {_on_days("d", on_days)}
    RETURNING d.id, d.tenant_id, d.event_id, d.subscription_id, d.day
), items AS (
    UPDATE replay_items SET state = 'claimed', claimed_at = :now
    WHERE job_id = :job AND delivery_id = ANY(CAST(:ids AS text[]))
)
SELECT w.id AS delivery_id, w.subscription_id, e.tenant_id, e.id AS event_id, e.type,
    e.operation, e.timestamp, CAST(e.data AS text) AS data, e.traceparent
FROM won AS w
LEFT JOIN events AS e ON e.tenant_id = w.tenant_id AND e.id = w.event_id
    {" AND e.day = w.day" if on_days else ""}{_on_days("e", on_days)}
"""
    ).columns(timestamp=UtcDateTime())
    for on_days in (True, False)
}

_PG_SKIP = text(
    """
WITH items AS (
    UPDATE replay_items SET state = 'skipped', error = :error
    WHERE job_id = :job AND delivery_id = ANY(CAST(:ids AS text[]))
)
UPDATE replay_jobs SET skipped = skipped + :n WHERE id = :job
"""
)

_PG_MARK = {
    on_days: text(
        f"""
WITH reopened AS (
    UPDATE deliveries AS d
    SET status = 'pending', attempts = 0, dead_reason = NULL, finished_at = NULL,
        next_attempt_at = :now, updated_at = :now
    FROM unnest(CAST(:sent AS text[]), CAST(:stamps AS timestamptz[])) AS s(id, stamp)
    WHERE d.id = s.id AND d.status = 'dead' AND d.updated_at = s.stamp{_on_days("d", on_days)}
    RETURNING d.id
), items AS (
    UPDATE replay_items
    SET state = CASE WHEN delivery_id = ANY(CAST(:missing AS text[])) THEN 'failed'
                ELSE 'sent' END,
        error = CASE WHEN delivery_id = ANY(CAST(:missing AS text[]))
                THEN CAST(:missing_error AS text) END
    WHERE job_id = :job AND delivery_id = ANY(CAST(:ids AS text[]))
    RETURNING delivery_id
)
UPDATE replay_jobs
SET done = done + :done, failed = failed + :failed, heartbeat_at = :now, updated_at = :now
WHERE id = :job
RETURNING id, state, total, done, failed, skipped
"""
    )
    for on_days in (True, False)
}


def retrying(call: Callable[[], T]) -> T:
    """Run one of these statements (its own transaction), again after a deadlock."""
    for attempt in range(1, _TRIES + 1):
        try:
            return call()
        except DBAPIError as exc:
            code = getattr(exc.orig, "sqlstate", None)
            if code not in _RETRYABLE_SQLSTATES or attempt == _TRIES:
                raise
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


def pick(session: Session, job_id: str, size: int) -> Sequence[Row[Any]]:
    """The job's next `size` todo items (`delivery_id, seq, base_replay_count`), locked
    until the transaction ends, skipping any a second runner holds."""
    return session.execute(_PG_PICK, {"job": job_id, "size": size}).all()


def claim(
    session: Session, job_id: str, picked: Sequence[Row[Any]], now: datetime
) -> Sequence[Row[Any]]:
    """Set every picked item `claimed`; returns each delivery won, with its copy's columns
    (`event_id` None when the event is gone). A picked item without a won row must be
    `skip`ped in this transaction."""
    ids = [p.delivery_id for p in picked]
    params: dict[str, Any] = {
        "job": job_id, "now": now, "ids": ids, "bases": [p.base_replay_count for p in picked],
    }  # fmt: skip
    days = days_of(ids)
    if days is not None:
        params["days"] = days
    return session.execute(_PG_CLAIM[days is not None], params).all()


def skip(session: Session, job_id: str, ids: list[str], error: str) -> None:
    """Claimed items whose delivery was not won: `skipped`, and counted on the job."""
    session.execute(_PG_SKIP, {"job": job_id, "ids": ids, "error": error, "n": len(ids)})


def mark(
    session: Session,
    job_id: str,
    now: datetime,
    sent: list[str],
    stamps: list[datetime],
    missing: list[str],
    missing_error: str,
) -> Row[Any]:
    """The job's `id, state, total, done, failed, skipped` after the mark."""
    params = {
        "job": job_id,
        "now": now,
        "sent": sent,
        "stamps": stamps,
        "missing": missing,
        "missing_error": missing_error,
        "ids": sent + missing,
        "done": len(sent),
        "failed": len(missing),
    }
    days = days_of(sent)
    if days is not None:
        params["days"] = days
    return session.execute(_PG_MARK[days is not None], params).one()
