"""The settler's batched UPDATE on a day's partition without statistics and with them,
the statement of before (joined on the id, the days a parameter) against today's
(joined on the whole key, the days written in) (issue 17).

    .venv/bin/python -m bench.settle_stats [--rows 20000,60000,300000] [--batches 30]
        [--batch 100]

For each of `--rows`, a fresh database gets today's partitions made anew (as the keeper
makes a day ahead: never analysed) and that many deliveries in them. On one connection,
each statement settles `--batch` deliveries a transaction, first 12 times unmeasured
(psycopg prepares a statement at its fifth run, and PostgreSQL may then switch to the
generic plan after five more), then `--batches` times measured: median and p90 ms of
the UPDATE (its commit is not counted). Then `keeper.analyse` analyses the day and the
same is measured again. `plan_cache_mode` is the server's own (`auto`) and then
`force_generic_plan`, the plan a long-lived settler connection can end up with.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from bench.stack import load_average
from common.db import keeper, migrate, partitions
from common.db.bulk import insert_rows, rows_document
from common.db.models import Delivery
from common.db.session import make_engine, make_sessionmaker
from common.ids import new_id
from dispatcher.settle import rows_pg
from tests.services import temporary_database

WARM = 12
_ATTEMPTS = itertools.count(2)
# The statement before this change: joined on the id alone, the days a parameter.
BEFORE = text(rows_pg._UPDATE_ANY_DAY.text + " AND d.day = ANY(CAST(:days AS date[]))")


def fill(engine: Engine, rows: int) -> list[str]:
    today = datetime.now(UTC).date()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in partitions.TABLES:
            connection.execute(text(f"DROP TABLE {partitions.name(table, today)}"))
        partitions.ensure(connection, [today])
    now = datetime.now(UTC)
    ids = [new_id("dlv") for _ in range(rows)]
    sessions = make_sessionmaker(engine)
    for start in range(0, rows, 20_000):
        chunk = [
            {"id": i, "tenant_id": "t", "event_id": i, "subscription_id": "s",
             "event_type": "x", "status": "retrying", "attempts": 1, "replay_count": 0,
             "created_at": now, "updated_at": now, "day": today}
            for i in ids[start : start + 20_000]
        ]  # fmt: skip
        with sessions.begin() as session:
            insert_rows(session, Delivery.__table__, chunk)  # type: ignore[arg-type]
    return ids


def _before(session: Session, updates: list[dict[str, Any]]) -> None:
    document = rows_document(Delivery.__table__, updates)  # type: ignore[arg-type]
    today = datetime.now(UTC).date()
    session.execute(BEFORE, {"rows": document, "days": [today]})


def measure(
    engine: Engine,
    ids: list[str],
    settle: Callable[[Session, list[dict[str, Any]]], None],
    mode: str,
    batches: int,
    batch: int,
) -> dict[str, Any]:
    """Settle distinct deliveries on one connection; the measured UPDATEs' ms."""
    now = datetime.now(UTC)
    took = []
    with make_sessionmaker(engine)() as session:
        session.execute(text(f"SET plan_cache_mode = {mode}"))
        session.commit()
        for n in range(WARM + batches):
            # Random deliveries, moved on as a retry with a later attempt each time, so
            # that every row passes the guard and is written, however often it is drawn.
            attempt = next(_ATTEMPTS)
            updates = [
                {"id": i, "status": "retrying", "attempts": attempt, "last_status_code": 500,
                 "last_error": None, "dead_reason": None, "next_attempt_at": now,
                 "updated_at": now, "finished_at": None, "replay": False}
                for i in random.sample(ids, batch)
            ]  # fmt: skip
            began = time.perf_counter()
            settle(session, updates)
            if n >= WARM:
                took.append((time.perf_counter() - began) * 1000)
            session.commit()
        session.execute(text("RESET plan_cache_mode"))
        session.commit()
    took.sort()
    return {"median_ms": round(statistics.median(took), 2),
            "p90_ms": round(took[int(len(took) * 0.9) - 1], 2)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="20000,60000,300000")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    for rows in [int(n) for n in args.rows.split(",")]:
        with temporary_database() as url:
            migrate.upgrade(url)
            engine = make_engine(url)
            ids = fill(engine, rows)
            result: dict[str, Any] = {"rows": rows, "batch": args.batch, "load": [load_average()]}
            statements = {"before": _before, "now": rows_pg.update_deliveries}
            for stage in ("no statistics", "analysed"):
                if stage == "analysed":
                    result["analysed"] = keeper.analyse(engine)
                for mode in ("auto", "force_generic_plan"):
                    for name, settle in statements.items():
                        figures = measure(engine, ids, settle, mode, args.batches, args.batch)
                        result[f"{stage} / {mode} / {name}"] = figures
            result["load"].append(load_average())
            print(json.dumps(result))
            engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
