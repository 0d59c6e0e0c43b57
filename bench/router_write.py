"""The router's one statement as a day's events table fills: ms per batch, by events stored.

    .venv/bin/python -m bench.router_write [--events 20000] [--batch 10] [--runs 2]

Each run: a fresh database (`bench/stack.py`, migrated, partitioned), one subscription,
then `--events` events written `--batch` at a time through `router.persist.persist_batch`,
each batch one statement in autocommit as the router runs it, with ids that carry no day
(as a producer's own ids do: the statement then looks for the id in every partition).
Twice in each run, on a database of its own: with the young partition ANALYZEd every
2,000 events (what the keeper does, every 5 s, common/db/keeper.py) — the baseline — and
with no statistics at all (autovacuum off and no keeper). Printed: the median ms per batch
in each fifth of the run, and the last fifth's ratio of the two.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench import runs
from bench.stack import load_average, stack
from common.db.session import single_statement
from common.wire import Event
from router.index import Target
from router.persist import persist_batch
from tests import builders

ANALYSE_EVERY = 2000
FIFTHS = 5


def fill(args: argparse.Namespace, workdir: Path, analyse: bool) -> list[float]:
    """Median ms per batch in each fifth of the run."""
    with stack(workdir) as running:
        with running.sessions.begin() as session:
            sub, _ = builders.subscription(session, running.tenant_id, "http://127.0.0.1:1/a")
            target = Target(sub.id, running.tenant_id, ("order.*",))
        engine = running.sessions.kw["bind"]
        took: list[float] = []
        for n in range(0, args.events, args.batch):
            events = [
                Event(tenant=running.tenant_id, type="order.created", id=f"w-{n + k}", data={})
                for k in range(args.batch)
            ]
            started = time.perf_counter()
            with running.sessions() as session, session.begin():
                single_statement(session)
                persist_batch(session, [(event, [target]) for event in events])
            took.append(time.perf_counter() - started)
            if analyse and (n + args.batch) % ANALYSE_EVERY == 0:
                with engine.connect() as connection:
                    connection.execute(text("ANALYZE events"))
                    connection.commit()
        size = len(took) // FIFTHS
        return [
            round(1000 * statistics.median(took[i * size : (i + 1) * size]), 2)
            for i in range(FIFTHS)
        ]


def one_run(args: argparse.Namespace, number: int, workdir: Path) -> dict[str, Any]:
    load_before = load_average()
    analysed = fill(args, workdir, analyse=True)
    unanalysed = fill(args, workdir, analyse=False)
    return {
        "run": number,
        "events": args.events,
        "batch": args.batch,
        "ms_per_batch_by_fifth_analysed": analysed,
        "ms_per_batch_by_fifth_no_statistics": unanalysed,
        "last_fifth_ratio": round(unanalysed[-1] / analysed[-1], 2),
        "load": [load_before, load_average()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    runs.repeat(one_run, args, ("last_fifth_ratio",))
    return 0


if __name__ == "__main__":
    sys.exit(main())
