"""The deliveries list on PostgreSQL with many rows: every filter pages through an index,
newest first, without reading or sorting the tenant's whole history.

The plans checked here are the ones shown in docs/architecture.md section 7.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from common.db import migrate, partitions
from common.db.models import Delivery
from common.db.session import make_engine
from common.wire import utcnow
from hookline.api.cursor import encode_position
from hookline.api.routes.deliveries import delivery_page
from tests.plans import explain, nodes
from tests.services import temporary_database

pytestmark = pytest.mark.postgres
_SECONDARY = re.compile(r"^(ix_deliveries_|deliveries_p\d{8}_\w+_idx$)")
ROWS = 300_000  # two tenants; a tenant with a long history is the case that matters
TENANT = "ten_big"


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with many_deliveries() as loaded:
        yield loaded


@contextmanager
def many_deliveries() -> Iterator[Engine]:
    """A temporary PostgreSQL database holding `ROWS` deliveries, analysed."""
    with temporary_database() as url:
        migrate.upgrade(url)
        engine = make_engine(url)
        indexes = list(Delivery.__table__.indexes)  # type: ignore[attr-defined]
        with engine.begin() as connection:
            # Building the indexes after the load is several times faster than keeping them.
            for index in indexes:
                index.drop(connection)
            today = datetime.now(UTC).date()  # the days the rows span (migration 0011)
            days = [today - timedelta(days=n) for n in range(ROWS // 86_400 + 2)]
            partitions.ensure(connection, days)
            connection.execute(
                text(
                    """
                    INSERT INTO deliveries (id, tenant_id, event_id, subscription_id,
                        event_type, status, attempts, replay_count, created_at, updated_at,
                        day)
                    SELECT 'dlv_' || n, CASE WHEN n % 10 = 0 THEN 'ten_small' ELSE :tenant END,
                        'evt_' || n, 'sub_' || (n % 50), 'order.t' || (n % 20),
                        (ARRAY['pending','succeeded','retrying','dead'])[1 + n % 4], 1, 0,
                        now() - make_interval(secs => n), now(),
                        ((now() - make_interval(secs => n)) AT TIME ZONE 'UTC')::date
                    FROM generate_series(1, :rows) AS n
                    """
                ),
                {"tenant": TENANT, "rows": ROWS},
            )
            for index in indexes:
                index.create(connection)
            connection.execute(text("ANALYZE deliveries"))
        yield engine
        engine.dispose()


def plan(engine: Engine, **filters: Any) -> dict[str, Any]:
    return explain(engine, delivery_page(TENANT, limit=100, **filters))


CASES = {
    "no filter": {},
    "status": {"status": "dead"},
    "subscription": {"subscription_id": "sub_7"},
    "event type": {"event_type": "order.t3"},
    "time range": {"since": utcnow() - timedelta(hours=30), "until": utcnow() - timedelta(hours=2)},
    "status and time": {"status": "retrying", "since": utcnow() - timedelta(hours=10)},
}


@pytest.mark.parametrize("filters", CASES.values(), ids=CASES.keys())
def test_each_filter_reads_one_page_through_an_index(engine, filters):
    explained = plan(engine, **filters)
    steps = list(nodes(explained["Plan"]))
    kinds = [step["Node Type"] for step in steps]
    where = json.dumps(explained["Plan"])[:2000]

    assert "Seq Scan" not in kinds, where
    assert "Sort" not in kinds, where  # "Incremental Sort" on a pre-sorted index is fine
    scans = [s for s in steps if s["Node Type"] in ("Index Scan", "Index Only Scan")]
    # Partitioned (0011): a day's copy of an `ix_deliveries_*` index is named after its
    # partition and columns (`deliveries_p20261204_tenant_id_created_at_id_idx`).
    assert scans and all(_SECONDARY.match(s["Index Name"]) for s in scans), where
    # A page reads about a page of rows, not the tenant's 270,000.
    assert max(s.get("Actual Rows", 0) for s in scans) < 5_000, where


def test_a_cursor_deep_in_the_history_costs_the_same_as_the_first_page(engine):
    deep = utcnow() - timedelta(seconds=ROWS - 1000)
    explained = plan(engine, cursor=encode_position(deep, "dlv_zzz"))
    steps = list(nodes(explained["Plan"]))

    assert "Seq Scan" not in [s["Node Type"] for s in steps]
    assert max(s.get("Actual Rows", 0) for s in steps) <= 101
