"""What recording each attempt's headers (migration 0014) costs per attempt: bytes stored,
WAL written, and the sender's CPU for the header shape (issue 16).

    .venv/bin/python -m bench.attempt_bytes [--rows 200000] [--runs 3]

For each schema a fresh PostgreSQL database takes `--rows` attempt rows through the
settler's own insert (`insert_rows`, batches of 200, as `dispatcher/settle/settler.py`
writes them), with the values of a successful delivery: at revision 0013 (before), at
0014 with `header_set_id` null (nothing sent), and at 0014 with it set (the usual case).
Reported per attempt: the growth of the attempts partitions with their indexes
(`pg_total_relation_size` of each partition: the partitioned parent has no storage), the
mean row as stored (`pg_column_size`, tuple header included), and the growth of the WAL
(`pg_current_wal_lsn`, cluster-wide, so an upper bound on a shared server); and the
median time of `header_shape` for a request with two static headers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import timeit
from typing import Any

from sqlalchemy import Engine, MetaData, Table, text

from bench.stack import load_average
from common.db import migrate
from common.db.bulk import insert_rows
from common.db.session import make_engine, make_sessionmaker
from common.ids import day_of, delivery_id_for
from common.signing import new_secret
from common.wire import new_id, utcnow
from dispatcher.http import build_headers, header_shape
from tests.services import temporary_database

BATCH = 200
# name: (revision, the header_set_id written: a column value, or None for no such column)
SCHEMAS: dict[str, tuple[str, dict[str, int | None] | None]] = {
    "0013": ("0013", None),
    "0014 null": ("head", {"header_set_id": None}),
    "0014 set": ("head", {"header_set_id": 1}),
}


def _attempts_bytes(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.scalar(
                text(
                    "SELECT coalesce(sum(pg_total_relation_size(relid)), 0) "
                    "FROM pg_partition_tree('attempts') WHERE isleaf"
                )
            )
        )


def _row_bytes(engine: Engine) -> float:
    """The mean size of one attempt row as stored, tuple header included."""
    with engine.connect() as connection:
        return float(connection.scalar(text("SELECT avg(pg_column_size(a.*)) FROM attempts a")))


def _wal(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(text("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")))


def _rows(count: int, extra: dict[str, int | None] | None) -> list[dict[str, Any]]:
    today, now = utcnow().date(), utcnow()
    rows = []
    for n in range(count):
        delivery_id = delivery_id_for("ten_bench", new_id("evt"), f"sub_{n % 50}", today)
        row: dict[str, Any] = {
            "delivery_id": delivery_id, "attempt": 1, "outcome": "success",
            "status_code": 200, "duration_s": 0.0123, "error": None,
            "response_body": '{"ok": true}', "created_at": now,
            "day": day_of(delivery_id) or today,
            **(extra or {}),
        }  # fmt: skip
        rows.append(row)
    return rows


def measure(revision: str, extra: dict[str, int | None] | None, count: int) -> dict[str, float]:
    with temporary_database() as url:
        migrate.upgrade(url, revision)
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        # As the database has it: at 0013 without the column the model now describes.
        table = Table("attempts", MetaData(), autoload_with=engine)
        rows = _rows(count, extra)
        before, wal_before = _attempts_bytes(engine), _wal(engine)
        for start in range(0, count, BATCH):
            with sessions() as session, session.begin():
                insert_rows(session, table, rows[start : start + BATCH])
        stored, wal = _attempts_bytes(engine) - before, _wal(engine) - wal_before
        row = _row_bytes(engine)
        engine.dispose()
    return {"stored_bytes": stored / count, "row_bytes": row, "wal_bytes": wal / count}


def shape_us() -> float:
    headers = build_headers(
        {"Authorization": "x", "X-Tenant": "y"}, "evt_1", 1, b"{}", [new_secret()]
    )
    runs = timeit.repeat(lambda: header_shape(headers), number=20_000, repeat=7)
    return statistics.median(runs) / 20_000 * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in SCHEMAS}
    for run in range(args.runs):
        for name, (revision, extra) in SCHEMAS.items():
            figures = measure(revision, extra, args.rows)
            results[name].append(figures)
            print(json.dumps({"run": run, "schema": name, **figures, "load": load_average()}))
    medians = {
        name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for name, runs in results.items()
    }
    print(json.dumps({"median": medians, "header_shape_us": round(shape_us(), 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
