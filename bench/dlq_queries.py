"""Dead-letter queries at scale: `dlq list` and `--summary` with 1,000,000 delivery rows.

    .venv/bin/python -m bench.dlq_queries [--rows 1000000] [--dead-share 0.1] [--repeat 15]
        [--explain]

A fresh PostgreSQL database (migrated, so the partial indexes of migration 0004 exist) gets
`--rows` deliveries in 20 tenants x 10 subscriptions, a `--dead-share` of them dead with
one of four reasons, four event types and a mix of last status codes; then every query the
dead-letter API and CLI run is timed through the same code (`dispatcher.deadletters`), as
the median of `--repeat` runs, warm. `--explain` prints `EXPLAIN (ANALYZE, BUFFERS)` for
each. The baseline of the same run is the one plain primary-key lookup.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from bench.stack import load_average
from common.db import migrate, partitions
from common.db.models import Delivery
from common.db.session import make_engine, make_sessionmaker
from common.wire import utcnow
from dispatcher.deadletters import DeadFilter, list_dead, summarize_dead
from tests.services import temporary_database

SEED = """
INSERT INTO deliveries (id, tenant_id, event_id, subscription_id, event_type, status,
    attempts, last_status_code, dead_reason, replay_count, created_at, updated_at,
    finished_at{day_column})
SELECT 'dlv_' || md5(n::text), 'ten_' || (n % 20), 'evt_' || n,
    'sub_' || (n % 20) || '_' || (n / 20 % 10),
    (ARRAY['order.created','order.paid','page.updated','user.deleted'])[n / 3 % 4 + 1],
    CASE WHEN (n::bigint * 7919) % 1000 < :dead_per_mille THEN 'dead' ELSE 'succeeded' END,
    CASE WHEN (n::bigint * 7919) % 1000 < :dead_per_mille THEN 8 ELSE 1 END,
    (ARRAY[200, 500, 503, 410, 404, NULL])[n / 11 % 6 + 1],
    CASE WHEN (n::bigint * 7919) % 1000 < :dead_per_mille
        THEN (ARRAY['max_attempts', 'max_attempts', 'endpoint_disabled',
                    'unsafe_target'])[n / 7 % 4 + 1]
    END,
    0, now() - (n || ' seconds')::interval, now(), now() - (n || ' seconds')::interval
    {day_value}
FROM generate_series(1, :rows) AS n
"""
# Each row's creation day: its partition under migration 0011.
_DAY = ", ((now() - (n || ' seconds')::interval) AT TIME ZONE 'UTC')::date"


def timed(call: Callable[[], Any], repeat: int) -> float:
    call()  # warm
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        samples.append((time.perf_counter() - began) * 1000)
    return round(statistics.median(samples), 2)


def queries(session: Session) -> dict[str, Callable[[], Any]]:
    now = utcnow()
    t, s = "ten_7", "sub_7_3"
    first = list_dead(session, DeadFilter(tenant=t), limit=50)
    after = (first[-1].finished_at, first[-1].id) if first and first[-1].finished_at else None
    cases: dict[str, DeadFilter] = {
        "list tenant": DeadFilter(tenant=t),
        "list subscription": DeadFilter(tenant=t, subscription=s),
        "list event type": DeadFilter(tenant=t, event_type="order.paid"),
        "list reason": DeadFilter(tenant=t, reason="endpoint_disabled"),
        "list status class 5xx": DeadFilter(tenant=t, status_class="5xx"),
        "list last 6 h": DeadFilter(tenant=t, since=now - timedelta(hours=6)),
        "list all tenants (admin)": DeadFilter(),
    }
    out: dict[str, Callable[[], Any]] = {
        name: functools.partial(list_dead, session, f, limit=50) for name, f in cases.items()
    }
    out["list tenant, page 2 (cursor)"] = lambda: list_dead(
        session, DeadFilter(tenant=t), limit=50, after=after
    )
    out["summary tenant"] = lambda: summarize_dead(session, DeadFilter(tenant=t))
    out["summary subscription"] = lambda: summarize_dead(
        session, DeadFilter(tenant=t, subscription=s)
    )
    out["summary all tenants (admin)"] = lambda: summarize_dead(session, DeadFilter())
    out["baseline: one row by id"] = lambda: session.get(Delivery, "dlv_" + "0" * 32)
    return out


def explain(session: Session, dead: DeadFilter, *, summary: bool) -> str:
    from sqlalchemy import func, select

    query: Any
    if summary:
        query = (
            select(Delivery.dead_reason, Delivery.subscription_id, func.count())
            .where(*dead.conditions())
            .group_by(Delivery.dead_reason, Delivery.subscription_id)
        )
    else:
        query = (
            select(Delivery)
            .where(*dead.conditions())
            .order_by(Delivery.finished_at.desc(), Delivery.id.desc())
            .limit(50)
        )
    compiled = query.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
    rows = session.execute(text(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {compiled}"))
    return "\n".join(r[0] for r in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dead-share", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--explain", action="store_true")
    parser.add_argument(
        "--schema", choices=("partitioned", "plain", "both"), default="both",
        help="plain: the schema of migration 0010; both: one after the other, same run",
    )  # fmt: skip
    args = parser.parse_args()
    schemas = ("plain", "partitioned") if args.schema == "both" else (args.schema,)
    for schema in schemas:
        run(args, schema)
    return 0


def run(args: argparse.Namespace, schema: str) -> None:
    partitioned = schema == "partitioned"
    with temporary_database() as url:
        migrate.upgrade(url, "head" if partitioned else "0010")
        engine = make_engine(url)
        began = time.monotonic()
        with engine.begin() as connection:
            if not partitioned:  # the plain table of 0010, with the column the model reads
                connection.execute(text("ALTER TABLE deliveries ADD COLUMN day date"))
            else:
                today = utcnow().date()
                days = args.rows // 86_400 + 2
                partitions.ensure(connection, [today - timedelta(days=n) for n in range(days)])
            params = {"rows": args.rows, "dead_per_mille": round(args.dead_share * 1000)}
            seed = SEED.format(day_column=", day", day_value=_DAY)
            connection.execute(text(seed), params)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE deliveries"))
        seeded_s = round(time.monotonic() - began, 1)
        with make_sessionmaker(engine)() as session:
            dead = session.execute(
                text("SELECT count(*) FROM deliveries WHERE status = 'dead'")
            ).scalar()
            results = {name: timed(call, args.repeat) for name, call in queries(session).items()}
            print(
                json.dumps(
                    {
                        "schema": schema,
                        "rows": args.rows,
                        "dead": dead,
                        "seed_s": seeded_s,
                        "load": load_average(),
                        "median_ms": results,
                    },
                    indent=1,
                )
            )
            if args.explain:
                for title, dead_filter, summary in (
                    ("list tenant", DeadFilter(tenant="ten_7"), False),
                    ("list event type", DeadFilter(tenant="ten_7", event_type="order.paid"), False),
                    ("list status class", DeadFilter(tenant="ten_7", status_class="5xx"), False),
                    ("summary tenant", DeadFilter(tenant="ten_7"), True),
                    ("summary all", DeadFilter(), True),
                ):
                    print(f"\n-- {title}\n{explain(session, dead_filter, summary=summary)}")
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
