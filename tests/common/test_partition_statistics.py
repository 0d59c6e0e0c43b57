"""The keeper's statistics of young partitions (issue 17), and the settler's batched UPDATE
on a day with and without them, on a PostgreSQL database of its own (the CI's server
runs with autovacuum off, as this test assumes nothing of it: it checks what the
keeper did)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from datetime import time as clock
from typing import Any

from sqlalchemy import Engine, event, text

from common.db import keeper, partitions
from common.db.bulk import insert_rows
from common.db.models import Delivery
from common.db.session import make_sessionmaker
from common.ids import new_id
from dispatcher.settle.rows import update_deliveries
from tests.plans import generic_plan, nodes

TOMORROW = datetime.now(UTC).date() + timedelta(days=1)
ROWS = 20_000


def _fresh_day_with_rows(engine: Engine) -> list[str]:
    """Tomorrow's partitions made anew, as the keeper makes a day ahead (never analysed),
    and `ROWS` deliveries in them, as the first minutes of a day write; returns their ids."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in partitions.TABLES:
            connection.execute(text(f"DROP TABLE {partitions.name(table, TOMORROW)}"))
        partitions.ensure(connection, [TOMORROW])
    at = datetime.combine(TOMORROW, clock(0, 1), UTC)
    ids = [new_id("dlv", at) for _ in range(ROWS)]
    rows = [
        {"id": i, "tenant_id": "t", "event_id": i, "subscription_id": "s", "event_type": "x",
         "status": "pending", "attempts": 0, "replay_count": 0, "created_at": at,
         "updated_at": at, "day": TOMORROW}
        for i in ids
    ]  # fmt: skip
    with make_sessionmaker(engine).begin() as session:
        insert_rows(session, Delivery.__table__, rows)  # type: ignore[arg-type]
        session.execute(text("SELECT pg_stat_force_next_flush()"))  # counted at commit
    return ids


def _analysed(engine: Engine, relname: str) -> bool:
    query = text("SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = :r")
    with engine.connect() as connection:
        return bool(connection.execute(query, {"r": relname}).scalar_one())


def _settle(engine: Engine, ids: list[str]) -> tuple[str, dict[str, Any]]:
    """The settler's update of 100 of the day's deliveries; returns the statement and the
    parameters it ran with (rolled back, so it can run again)."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def capture(_c: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.startswith("UPDATE deliveries"):
            seen.append((statement, parameters))

    now = datetime.now(UTC)
    updates = [
        {"id": i, "status": "succeeded", "attempts": 1, "last_status_code": 200,
         "last_error": None, "dead_reason": None, "next_attempt_at": None, "updated_at": now,
         "finished_at": now, "replay": False}
        for i in ids[5000:5100]
    ]  # fmt: skip
    event.listen(engine, "before_cursor_execute", capture)
    try:
        with make_sessionmaker(engine)() as session:
            update_deliveries(session, updates)
            session.rollback()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    (found,) = seen
    return found


def _scans(plan: dict[str, Any], relname: str) -> list[str]:
    return [n["Node Type"] for n in nodes(plan["Plan"]) if n.get("Relation Name") == relname]


def test_the_keeper_analyses_a_filling_day_and_the_settler_updates_by_key(engine: Engine) -> None:
    ids = _fresh_day_with_rows(engine)
    relname = partitions.name("deliveries", TOMORROW)
    assert not _analysed(engine, relname)
    with engine.connect() as connection:
        assert relname in partitions.stale(connection, [TOMORROW])

    # Without statistics, the prepared statement's generic plan still goes by the key.
    before = generic_plan(engine, *_settle(engine, ids))
    assert _scans(before, relname) == ["Index Scan"], before

    thread = keeper.PartitionKeeper(engine, keeper.Policy(), analyse_interval_s=0.05)
    thread.start()
    deadline = time.monotonic() + 30
    while not thread.analysed and time.monotonic() < deadline:
        time.sleep(0.05)
    thread.stop()
    assert thread.failure is None
    assert thread.runs == 1  # maintenance ran once, at the start; analysis on its own tick
    assert _analysed(engine, relname)
    with engine.connect() as connection:
        assert partitions.stale(connection, [TOMORROW]) == []  # fresh now: nothing to redo
        histogram = text("SELECT n_distinct FROM pg_stats WHERE tablename = :r AND attname = 'id'")
        assert connection.execute(histogram, {"r": relname}).scalar_one() == -1  # all distinct
        # The events and attempts partitions got no rows: not worth analysing.
        assert not _analysed(engine, partitions.name("attempts", TOMORROW))

    after = generic_plan(engine, *_settle(engine, ids))
    assert _scans(after, relname) == ["Index Scan"], after
    assert after["Plan"]["Plans"][0]["Actual Rows"] == 100  # every row of the batch found


def test_one_process_analyses_at_a_time(engine: Engine) -> None:
    _fresh_day_with_rows(engine)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as holder:
        holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": keeper.ANALYSE_LOCK_KEY})
        assert keeper.analyse(engine) is None
        # Maintenance has a lock of its own: a long trim does not hold analysis up.
        assert keeper.maintain(engine, keeper.Policy()).ran
        holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": keeper.ANALYSE_LOCK_KEY})
    assert keeper.analyse(engine) == [partitions.name("deliveries", TOMORROW)]
    assert keeper.analyse(engine) == []
