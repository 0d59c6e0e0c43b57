"""Partition maintenance, run by the services themselves (issue 17).

Every dispatcher replica runs a `PartitionKeeper`; at each tick only
the one that wins `pg_try_advisory_lock` works, the others skip until the next tick. A
run creates the partitions of the next `ahead_days` days, trims days past the retention
(keeping dead letters, see `partitions.trim`) and drops days past the dead retention.
Every step is idempotent, so a replica that dies mid-run leaves work for the next run.

More often (`analyse`, every `DEFAULT_ANALYSE_INTERVAL_S`, under a lock of its own so a
long trim does not hold it up) it ANALYZEs the young days' partitions whose statistics
are missing or stale: a day that fills with no statistics misleads the planner (the
statistics autovacuum keeps, for servers that run without it, and for a new day's first
minutes, which autovacuum leaves too).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, text

from common.background import BackgroundThread
from common.db import partitions
from common.wire import utcnow

log = logging.getLogger(__name__)

# One key for every Hookline process on the database: "hook" and 17.
LOCK_KEY = 0x686F6F6B_0017
ANALYSE_LOCK_KEY = 0x686F6F6B_0117
DEFAULT_INTERVAL_S = 600.0
# Often: the router's look-up of ids that carry no day probes every events partition, and
# a plan made while today's was small (or unanalysed) reads it whole on every batch (the
# statement grew from 3 to 11 ms per batch of 10 over a day's first 20,000 events). The
# check is one catalogue query when nothing is stale.
DEFAULT_ANALYSE_INTERVAL_S = 5.0


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


def analyse(engine: Engine, today: date | None = None) -> list[str] | None:
    """ANALYZE yesterday's, today's and tomorrow's partitions where `partitions.stale`
    says so, if no other process is doing it (None: another one is); returns those
    analysed. ANALYZE takes a lock that no reader or writer of the rows waits for, and
    samples a fixed number of rows (a fraction of a second for a day of millions)."""
    today = today or utcnow().date()
    days = [today + timedelta(days=n) for n in (-1, 0, 1)]
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as lock:
        key = {"k": ANALYSE_LOCK_KEY}
        if not lock.execute(text("SELECT pg_try_advisory_lock(:k)"), key).scalar():
            return None
        try:
            names = partitions.stale(lock, days)
            for relname in names:
                with engine.begin() as connection:  # a DETACH of it, say: try again later
                    lock_timeout = f"SET LOCAL lock_timeout = '{partitions.LOCK_TIMEOUT}'"
                    connection.execute(text(lock_timeout))
                    connection.execute(text(f"ANALYZE {relname}"))
        finally:
            lock.execute(text("SELECT pg_advisory_unlock(:k)"), key)
    if names:
        log.info("analysed %s", ", ".join(names))
    return names


def maintain(
    engine: Engine,
    policy: Policy,
    today: date | None = None,
    *,
    parallel_drops: bool = False,
    drop_pause_s: float = 0.0,
) -> Outcome:
    """One maintenance run, if no other process is running one. PostgreSQL only.
    `parallel_drops` drops a day's tables at once; `drop_pause_s` drops their indexes
    first, that far apart (`partitions.drop`; `bench.retention` compares)."""
    today = today or utcnow().date()
    outcome = Outcome()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as lock:
        if not lock.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar():
            return outcome
        try:
            outcome.ran = True
            drops = {"parallel": parallel_drops, "pause_s": drop_pause_s}
            _run(engine, lock, policy, today, outcome, drops)
        finally:
            lock.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
    return outcome


def _run(
    engine: Engine,
    autocommit: Connection,
    policy: Policy,
    today: date,
    out: Outcome,
    drops: dict[str, Any],
) -> None:
    partitions.drop_detached(engine, **drops)  # what a run that died after its trim left
    ahead = [today + timedelta(days=n) for n in range(policy.ahead_days + 1)]
    known = set(partitions.existing(autocommit, "deliveries"))
    partitions.ensure(autocommit, ahead)
    out.created = [day for day in ahead if day not in known]
    keep_until = today - timedelta(days=policy.retention.days)
    dead_until = today - timedelta(days=max(policy.dead_retention.days, policy.retention.days))
    days = sorted(partitions.existing(autocommit, "deliveries").items())
    for day, relname in days:
        if day < dead_until:
            partitions.drop(engine, day, **drops)
            out.dropped.append(day)
        elif day < keep_until and relname.startswith("deliveries_p"):
            with engine.begin() as connection:
                out.trimmed[day] = partitions.trim(connection, day)
            partitions.drop_detached(engine, **drops)
            log.info("kept %d dead deliveries of %s", out.trimmed[day], day)
            if out.trimmed[day] == 0:  # nothing to keep: the day goes at once
                partitions.drop(engine, day, **drops)
                out.dropped.append(day)


class PartitionKeeper(BackgroundThread):
    """Runs `maintain` every `interval_s` and `analyse` every `analyse_interval_s`; a
    failed run is logged and tried again at the next tick."""

    def __init__(
        self,
        engine: Engine,
        policy: Policy,
        interval_s: float = DEFAULT_INTERVAL_S,
        analyse_interval_s: float = DEFAULT_ANALYSE_INTERVAL_S,
    ):
        super().__init__("partition-keeper")
        self._engine = engine
        self._policy = policy
        self._interval_s = interval_s
        self._analyse_interval_s = analyse_interval_s
        self.runs = 0
        self.analysed = 0  # partitions analysed

    def run(self) -> None:
        if self._engine.dialect.name != "postgresql":
            return  # SQLite (`hookline dev`) keeps plain tables: `hookline gc` cleans them
        maintain_at = time.monotonic()
        while not self.stopping.is_set():
            if time.monotonic() >= maintain_at:
                try:
                    self.runs += maintain(self._engine, self._policy).ran
                except Exception:
                    log.warning("partition maintenance failed; trying again", exc_info=True)
                maintain_at = time.monotonic() + self._interval_s
            try:
                self.analysed += len(analyse(self._engine) or [])
            except Exception:
                log.warning("analysing young partitions failed; trying again", exc_info=True)
            wait = min(self._analyse_interval_s, maintain_at - time.monotonic())
            self.stopping.wait(max(0.0, wait))
