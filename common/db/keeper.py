"""Partition maintenance, run by the services themselves (issue 17).

Every replica of the router and the dispatcher runs a `PartitionKeeper`; at each tick only
the one that wins `pg_try_advisory_lock` works, the others skip until the next tick. A
run creates the partitions of the next `ahead_days` days, trims days past the retention
(keeping dead letters, see `partitions.trim`) and drops days past the dead retention.
Every step is idempotent, so a replica that dies mid-run leaves work for the next run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, timedelta

from sqlalchemy import Connection, Engine, text

from common.background import BackgroundThread
from common.db import partitions
from common.wire import utcnow

log = logging.getLogger(__name__)

# One key for every Hookline process on the database: "hook" and 17.
LOCK_KEY = 0x686F6F6B_0017
DEFAULT_INTERVAL_S = 600.0


@dataclass(frozen=True)
class Policy:
    retention: timedelta = timedelta(days=30)
    dead_retention: timedelta = timedelta(days=90)
    ahead_days: int = 3


@dataclass
class Outcome:
    """What one run did; `ran` false: another process held the lock."""

    ran: bool = False
    created: list[date] = field(default_factory=list)
    trimmed: dict[date, int] = field(default_factory=dict)
    dropped: list[date] = field(default_factory=list)


def maintain(
    engine: Engine, policy: Policy, today: date | None = None, *, parallel_drops: bool = True
) -> Outcome:
    """One maintenance run, if no other process is running one. PostgreSQL only.
    `parallel_drops` false drops a day's tables one after another (`bench.retention`
    compares the two)."""
    today = today or utcnow().date()
    outcome = Outcome()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as lock:
        if not lock.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar():
            return outcome
        try:
            outcome.ran = True
            _run(engine, lock, policy, today, outcome, parallel_drops)
        finally:
            lock.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
    return outcome


def _run(
    engine: Engine,
    autocommit: Connection,
    policy: Policy,
    today: date,
    out: Outcome,
    parallel: bool,
) -> None:
    partitions.drop_detached(engine, parallel=parallel)  # what a run that died after its trim left
    ahead = [today + timedelta(days=n) for n in range(policy.ahead_days + 1)]
    known = set(partitions.existing(autocommit, "deliveries"))
    partitions.ensure(autocommit, ahead)
    out.created = [day for day in ahead if day not in known]
    keep_until = today - timedelta(days=policy.retention.days)
    dead_until = today - timedelta(days=max(policy.dead_retention.days, policy.retention.days))
    days = sorted(partitions.existing(autocommit, "deliveries").items())
    for day, relname in days:
        if day < dead_until:
            partitions.drop(engine, day, parallel=parallel)
            out.dropped.append(day)
        elif day < keep_until and relname.startswith("deliveries_p"):
            with engine.begin() as connection:
                out.trimmed[day] = partitions.trim(connection, day)
            partitions.drop_detached(engine, parallel=parallel)
            log.info("kept %d dead deliveries of %s", out.trimmed[day], day)
            if out.trimmed[day] == 0:  # nothing to keep: the day goes at once
                partitions.drop(engine, day, parallel=parallel)
                out.dropped.append(day)


class PartitionKeeper(BackgroundThread):
    """Runs `maintain` every `interval_s`; a failed run is logged and tried again."""

    def __init__(self, engine: Engine, policy: Policy, interval_s: float = DEFAULT_INTERVAL_S):
        super().__init__("partition-keeper")
        self._engine = engine
        self._policy = policy
        self._interval_s = interval_s
        self.runs = 0

    def run(self) -> None:
        if self._engine.dialect.name != "postgresql":
            return  # SQLite (`hookline dev`) keeps plain tables: `hookline gc` cleans them
        while not self.stopping.is_set():
            try:
                outcome = maintain(self._engine, self._policy)
                self.runs += outcome.ran
            except Exception:
                log.warning("partition maintenance failed; trying again", exc_info=True)
            self.stopping.wait(self._interval_s)
