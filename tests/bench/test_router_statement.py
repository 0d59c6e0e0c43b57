"""bench.router_statement takes its shapes apart from the router's own statement, so a
change to that statement must keep the benchmark running (it once stopped at its first
batch for three sessions when the look-up was rewritten)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import router_statement
from router import persist


def test_every_shape_is_one_of_the_routers_statements() -> None:
    shapes = router_statement.shapes("events_today", "deliveries_today")
    carried, lookup = persist._PG_INSERT_CARRIED.text, persist._PG_INSERT_BATCH.text
    assert shapes["router"].text == carried
    assert shapes["gated"].text == shapes["foreign"].text == lookup
    assert persist._LOOKUP not in carried
    assert persist._LOOKUP in lookup
    assert "INSERT INTO events_today (" in shapes["partition"].text
    assert "INSERT INTO deliveries_today (" in shapes["partition"].text
    assert "INSERT INTO plain_events (" in shapes["plain"].text
    assert "INSERT INTO plain_deliveries (" in shapes["plain"].text


def test_a_short_run_writes_through_every_shape_on_postgresql(tmp_path: Path) -> None:
    args = argparse.Namespace(kept_days=1, batches=3, batch=2, runs=1)
    result = router_statement.one_run(args, 0, tmp_path)
    assert set(result["ms_per_batch"]) == {"router", "gated", "foreign", "partition", "plain"}
    assert all(ms > 0 for ms in result["ms_per_batch"].values())
    assert result["plain_to_plain"] == 1.0
