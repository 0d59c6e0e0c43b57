"""`GET /v1/events` and `GET /v1/replays` on PostgreSQL with many rows: every filter reads
about one page through an index, newest first, without sorting a tenant's history; the
deliveries summary of a page reads only that page's deliveries.

The plans checked here are the ones shown in docs/architecture.md section 7.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from common.db import migrate, partitions
from common.db.models import Delivery, EventRow, ReplayJob
from common.db.session import make_engine
from common.wire import utcnow
from hookline.services import event_history, replay_jobs
from tests.plans import explain, nodes
from tests.services import temporary_database

pytestmark = pytest.mark.postgres
ROWS = 300_000  # events (and one delivery each) of two tenants; replay jobs: a third
TENANT = "ten_big"
LOAD = """
INSERT INTO events (tenant_id, id, type, timestamp, data, received_at, day)
SELECT CASE WHEN n % 10 = 0 THEN 'ten_small' ELSE :tenant END, 'evt_' || n,
       'order.t' || (n % 20), now(), '{}'::json, now() - make_interval(secs => n),
       ((now() - make_interval(secs => n)) AT TIME ZONE 'UTC')::date
FROM generate_series(1, :rows) AS n;
INSERT INTO deliveries (id, tenant_id, event_id, subscription_id, event_type, status, attempts,
                        replay_count, created_at, updated_at, day)
SELECT 'dlv_' || n, CASE WHEN n % 10 = 0 THEN 'ten_small' ELSE :tenant END, 'evt_' || n,
       'sub_' || (n % 50), 'order.t' || (n % 20),
       (ARRAY['pending','succeeded','retrying','dead'])[1 + n % 4], 1, 0, now(), now(),
       (now() AT TIME ZONE 'UTC')::date
FROM generate_series(1, :rows) AS n;
INSERT INTO replay_jobs (id, tenant_id, actor, filters, state, total, done, failed, skipped,
                         created_at, updated_at)
SELECT 'rpl_' || n, CASE WHEN n % 10 = 0 THEN 'ten_small' ELSE :tenant END, 'admin', '{}',
       'completed', 1, 1, 0, 0, now() - make_interval(secs => n), now()
FROM generate_series(1, :rows / 3) AS n;
"""


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with temporary_database() as url:
        migrate.upgrade(url)
        engine = make_engine(url)
        with engine.begin() as connection:
            today = utcnow().date()  # the days the rows span (partitions, migration 0011)
            partitions.ensure(connection, [today - timedelta(days=n) for n in range(6)])
            for statement in LOAD.split(";"):
                if statement.strip():
                    connection.execute(text(statement), {"tenant": TENANT, "rows": ROWS})
            connection.execute(text("ANALYZE events; ANALYZE deliveries; ANALYZE replay_jobs"))
        yield engine
        engine.dispose()


def assert_one_page_through(
    explained: dict[str, Any], prefix: str | tuple[str, ...], max_rows: int
) -> None:
    steps = list(nodes(explained["Plan"]))
    where = json.dumps(explained["Plan"])[:2000]
    # Partitioned (0011): the empty days ahead are scanned whole, and read nothing.
    full = [s for s in steps if s["Node Type"] == "Seq Scan"]
    assert not [s for s in full if s["Actual Rows"] or s.get("Rows Removed by Filter")], where
    scans = [s for s in steps if "Index" in s["Node Type"] and "Index Name" in s]
    assert scans and all(s["Index Name"].startswith(prefix) for s in scans), where
    assert max(s.get("Actual Rows", 0) for s in scans) <= max_rows, where


EVENT_CASES = {
    "no filter": {},
    "event type": {"event_type": "order.t3"},
    "time range": {"since": utcnow() - timedelta(hours=30), "until": utcnow() - timedelta(hours=2)},
    "id prefix": {"id_prefix": "evt_12345"},
    "deep cursor": {"after": (utcnow() - timedelta(seconds=ROWS - 1000), "evt_")},
}


@pytest.mark.parametrize("filters", EVENT_CASES.values(), ids=EVENT_CASES.keys())
def test_each_events_filter_reads_one_page_through_an_index(engine, filters):
    explained = explain(engine, event_history.page_query(TENANT, limit=100, **filters))

    # "ix_events_" or the primary key "pk_events"; never the table, never the whole tenant.
    assert_one_page_through(explained, "", 5_000)
    assert "Sort" not in [s["Node Type"] for s in nodes(explained["Plan"])] or filters.get(
        "id_prefix"
    )  # a prefix's few rows are sorted; every other page comes sorted from its index


def test_the_deliveries_summary_reads_only_the_pages_deliveries(engine):
    ids = [f"evt_{n}" for n in range(1, 101)]
    query = (
        select(Delivery.event_id, Delivery.status, func.count())
        .where(Delivery.tenant_id == TENANT, Delivery.event_id.in_(ids))
        .group_by(Delivery.event_id, Delivery.status)
    )

    # Partitioned (0011): or a day's copy of it, `deliveries_p<day>_tenant_id_..._key`.
    assert_one_page_through(explain(engine, query), ("uq_deliveries_", "deliveries_p"), 200)


REPLAY_CASES = {"a tenant's": TENANT, "every tenant's (admin)": None}


@pytest.mark.parametrize("tenant", REPLAY_CASES.values(), ids=REPLAY_CASES.keys())
def test_replay_jobs_read_one_page_through_an_index(engine, tenant):
    explained = explain(engine, replay_jobs.page_query(tenant, limit=100))

    assert_one_page_through(explained, "ix_replay_jobs_", 5_000)


def test_the_event_table_is_as_large_as_the_test_says(engine):
    with engine.connect() as connection:
        count = connection.execute(select(func.count()).select_from(EventRow)).scalar_one()
        jobs = connection.execute(select(func.count()).select_from(ReplayJob)).scalar_one()
    assert (count, jobs) == (ROWS, ROWS // 3)
