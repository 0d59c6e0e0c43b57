"""The router's one statement alone, on partitioned and on plain tables: ms per batch.

    .venv/bin/python -m bench.router_statement [--kept-days 30] [--batches 1500]
        [--batch 10] [--runs 3]

Each run: a fresh database (migrated, so partitioned), partitions for the `--kept-days`
days before today and 3 ahead (30: what retention keeps; 0: a fresh installation, as the
other benchmarks run on), one subscription; then `--batches` rounds, each writing one
batch of `--batch` new events with one delivery each, in autocommit as the router runs it,
through each shape of the statement in turn, so that a busier or calmer moment touches
all of them:

- `router`: the statement `router/persist.py` sends for ids that carry their day (as the
  SDK and the API make them): `persist._PG_INSERT_CARRIED`, no look-up;
- `gated`: the statement with the look-up (`persist._PG_INSERT_BATCH`), the same ids: it
  is skipped row by row (`carried` is true), so this says what merely having it in the
  statement costs (the router sent this for every batch before session 16);
- `foreign`: the statement with the look-up and a producer's own ids, which carry no day
  (`bench.latency` and `bench.router_write` send such ids): each is looked for in every
  events partition first;
- `partition`: as `router`, into today's partitions by name (no tuple routing);
- `plain`: as `router`, into unpartitioned copies of the tables (the tables before
  migration 0012): the baseline.

ANALYZE runs every 500 rounds (what the keeper does every 5 s). Printed per run: the
median ms per batch of each shape and each one's ratio to `plain`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, TextClause, text

from bench import runs
from bench.stack import load_average
from common.db import migrate, partitions
from common.db.session import make_engine, make_sessionmaker
from common.ids import new_id
from common.wire import utcnow
from router import persist
from tests import builders
from tests.services import temporary_database

ANALYSE_EVERY = 500
KEPT_DAYS = 30
AHEAD_DAYS = 3


def _into(statement: str, events: str, deliveries: str) -> str:
    return statement.replace("INSERT INTO events (", f"INSERT INTO {events} (").replace(
        "INSERT INTO deliveries (", f"INSERT INTO {deliveries} ("
    )


def shapes(today_events: str, today_deliveries: str) -> dict[str, TextClause]:
    carried, lookup = persist._PG_INSERT_CARRIED, persist._PG_INSERT_BATCH
    assert lookup.text == carried.text.replace("ON CONFLICT", persist._LOOKUP + "ON CONFLICT", 1), (
        "router/persist.py's statements changed: update the shapes"
    )
    texts = {
        "router": carried.text,
        "gated": lookup.text,
        "foreign": lookup.text,
        "partition": _into(carried.text, today_events, today_deliveries),
        "plain": _into(carried.text, "plain_events", "plain_deliveries"),
    }
    binds = list(carried._bindparams.values())
    return {name: text(sql).bindparams(*binds) for name, sql in texts.items()}


def _batch(
    tenant: str, subscription: str, day: str, size: int, carried: bool
) -> tuple[list[Any], list[Any]]:
    rows, deliveries = [], []
    stamp = utcnow().isoformat()
    for _ in range(size):
        event_id = new_id("evt") if carried else f"order-{uuid.uuid4().hex}"
        rows.append({"tenant_id": tenant, "id": event_id, "type": "order.created",
                     "operation": None, "timestamp": stamp, "data": {"n": 1}, "day": day,
                     "carried": carried})  # fmt: skip
        deliveries.append({"id": new_id("dlv"), "tenant_id": tenant, "event_id": event_id,
                           "subscription_id": subscription, "event_type": "order.created",
                           "day": day})  # fmt: skip
    return rows, deliveries


def _prepare(connection: Connection, kept_days: int) -> None:
    today = utcnow().date()
    days = [today + timedelta(days=n) for n in range(-kept_days, AHEAD_DAYS + 1)]
    partitions.ensure(connection, days)
    for table in ("events", "deliveries"):
        connection.execute(
            text(f"CREATE TABLE plain_{table} (LIKE {table} INCLUDING DEFAULTS INCLUDING INDEXES)")
        )


def _write(
    conn: Connection,
    statement: TextClause,
    tenant: str,
    subscription: str,
    size: int,
    carried: bool,
) -> float:
    """One batch through one shape: seconds it took."""
    day = utcnow().date().isoformat()
    rows, deliveries = _batch(tenant, subscription, day, size, carried)
    parameters = {"rows": json.dumps(rows), "deliveries": json.dumps(deliveries), "now": utcnow()}
    started = time.perf_counter()
    created = conn.execute(statement, parameters).all()
    took = time.perf_counter() - started
    assert len(created) == size, (statement, len(created))
    return took


def one_run(args: argparse.Namespace, number: int, _workdir: Path) -> dict[str, Any]:
    load_before = load_average()
    with temporary_database() as url:
        migrate.upgrade(url)
        engine = make_engine(url)
        try:
            with engine.begin() as connection:
                _prepare(connection, args.kept_days)
            with make_sessionmaker(engine).begin() as session:
                tenant = builders.tenant(session, name="statement").id
                subscription, _ = builders.subscription(session, tenant, "http://127.0.0.1:1/")
                subscription_id = subscription.id
            today = utcnow().date()
            statements = shapes(
                partitions.name("events", today), partitions.name("deliveries", today)
            )
            took: dict[str, list[float]] = {name: [] for name in statements}
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                for n in range(args.batches):
                    for name, statement in statements.items():
                        carried = name != "foreign"
                        took[name].append(
                            _write(conn, statement, tenant, subscription_id, args.batch, carried)
                        )
                    if (n + 1) % ANALYSE_EVERY == 0:
                        conn.execute(text("ANALYZE"))
        finally:
            engine.dispose()
    ms = {name: round(1000 * statistics.median(values), 3) for name, values in took.items()}
    return {
        "run": number,
        "kept_days": args.kept_days,
        "batches": args.batches,
        "batch": args.batch,
        "ms_per_batch": ms,
        **{f"{name}_to_plain": round(ms[name] / ms["plain"], 3) for name in ms},
        "load": [load_before, load_average()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kept-days", type=int, default=KEPT_DAYS)
    parser.add_argument("--batches", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs.repeat(
        one_run,
        args,
        lambda first: [k for k in first if k.endswith("_to_plain") and k != "plain_to_plain"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
