"""Retention by partition: drop a full day while the hot path runs beside it (issue 17).

    .venv/bin/python -m bench.retention [--rows 1000000] [--phase-s 20] [--batch 100]

A fresh PostgreSQL database (migrated) gets `--rows` finished deliveries, their attempts
and events in the partition of a day 40 days back. Then a database drain runs, in three
phases of `--phase-s`: what the router and the settler do for each delivery (insert the
event and delivery, `persist_batch`; settle: update the delivery and insert its attempt,
the settler's statements), `--batch` deliveries a transaction. Phase B runs partition
maintenance (retention 30 days, so the old day is trimmed of nothing and dropped) in its
middle; phases A1 and A2 around it have no drop. Reported: deliveries/s and the batch
latency (p50, p99, max) of each phase, and how long maintenance took. The drain is the
database half of `bench.drain` (no broker, no HTTP): what the drop could slow down.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, text

from bench.stack import load_average
from common.db import keeper, migrate, partitions
from common.db.bulk import insert_rows
from common.db.models import Attempt
from common.db.session import make_engine, make_sessionmaker
from common.wire import Event, utcnow
from dispatcher.settle.rows import update_deliveries
from router.index import Target
from router.persist import persist_batch
from tests.services import temporary_database

FILL = """
INSERT INTO {table} ({columns})
SELECT {values} FROM generate_series(1, :rows) AS n
"""
_COLUMNS = {
    "events": ("tenant_id, id, type, timestamp, data, received_at, day",
               "'t', 'old_' || n, 'x', :at, '{}', :at, :day"),
    "deliveries": ("id, tenant_id, event_id, subscription_id, event_type, status, attempts, "
                   "replay_count, created_at, updated_at, finished_at, day",
                   "'dlv_old_' || n, 't', 'old_' || n, 's', 'x', 'succeeded', 1, 0, :at, :at, "
                   ":at, :day"),
    "attempts": ("delivery_id, attempt, outcome, duration_s, created_at, day",
                 "'dlv_old_' || n, 1, 'success', 0.01, :at, :day"),
}  # fmt: skip


def fill(engine: Engine, rows: int) -> tuple[str, float]:
    day = utcnow().date() - timedelta(days=40)
    at = utcnow() - timedelta(days=40)
    began = time.monotonic()
    with engine.begin() as connection:
        partitions.ensure(connection, [day])
        for table, (columns, values) in _COLUMNS.items():
            statement = text(FILL.format(table=table, columns=columns, values=values))
            connection.execute(statement, {"rows": rows, "at": at, "day": day})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in partitions.TABLES:
            connection.execute(text(f"VACUUM ANALYZE {table}"))
    return day.isoformat(), round(time.monotonic() - began, 1)


def drain(
    engine: Engine, seconds: float, batch: int, during: threading.Event | None
) -> dict[str, Any]:
    """Route and settle `batch` deliveries a transaction for `seconds`."""
    sessions = make_sessionmaker(engine)
    target = [Target("sub_1", "t", ("x",))]
    latencies: list[float] = []
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        if during is not None and not during.is_set() and time.monotonic() - began > seconds / 2:
            during.set()
        start = time.perf_counter()
        events = [Event(tenant="t", type="x") for _ in range(batch)]
        with sessions.begin() as session:
            routed = persist_batch(session, [(e, target) for e in events])
        now = utcnow()
        updates = [
            {"id": r.delivery_id, "status": "succeeded", "attempts": 1, "last_status_code": 200,
             "last_error": None, "dead_reason": None, "next_attempt_at": None, "updated_at": now,
             "finished_at": now, "replay": False}
            for r in routed
        ]  # fmt: skip
        attempts = [
            {"delivery_id": r.delivery_id, "attempt": 1, "outcome": "success",
             "status_code": 200, "duration_s": 0.01, "error": None, "response_body": None,
             "created_at": now, "day": now.date()}
            for r in routed
        ]  # fmt: skip
        with sessions.begin() as session:
            insert_rows(session, Attempt.__table__, attempts)  # type: ignore[arg-type]
            update_deliveries(session, updates)
        latencies.append((time.perf_counter() - start) * 1000)
    elapsed = time.monotonic() - began
    ordered = sorted(latencies)
    return {
        "deliveries_per_s": round(len(latencies) * batch / elapsed),
        "batch_ms_p50": round(statistics.median(ordered), 1),
        "batch_ms_p99": round(ordered[int(len(ordered) * 0.99) - 1], 1),
        "batch_ms_max": round(ordered[-1], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--phase-s", type=float, default=20.0)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    with temporary_database() as url:
        migrate.upgrade(url)
        engine = make_engine(url)
        day, fill_s = fill(engine, args.rows)
        result: dict[str, Any] = {"rows": args.rows, "day": day, "fill_s": fill_s}
        result["A1"] = drain(engine, args.phase_s, args.batch, None)
        go, timing = threading.Event(), dict[str, Any]()

        def maintain() -> None:
            go.wait()
            began = time.perf_counter()
            outcome = keeper.maintain(engine, keeper.Policy(timedelta(days=30), timedelta(days=30)))
            timing["maintain_s"] = round(time.perf_counter() - began, 3)
            timing["dropped"] = [d.isoformat() for d in outcome.dropped]

        worker = threading.Thread(target=maintain)
        worker.start()
        result["B (drop)"] = drain(engine, args.phase_s, args.batch, go)
        worker.join()
        result["A2"] = drain(engine, args.phase_s, args.batch, None)
        result.update(timing, load=load_average())
        with engine.connect() as connection:
            result["old day left"] = day in {
                d.isoformat() for d in partitions.existing(connection, "deliveries")
            }
        print(json.dumps(result, indent=1))
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
