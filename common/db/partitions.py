"""Daily partitions of `events`, `deliveries` and `attempts` on PostgreSQL (migration 0011).

A partition holds one UTC day of the `day` column: `deliveries_p20261204` is
`FOR VALUES FROM ('2026-12-04') TO ('2026-12-05')`. Retention drops whole partitions
instead of deleting rows. Dead letters may outlive the others (`HOOKLINE_DEAD_RETENTION`):
a day past `HOOKLINE_RETENTION` is *trimmed* first, its unfinished and dead deliveries
(with their events and attempts, which share the day) copied to a small table that takes
the partition's place under the name `..._k<day>`, so dead-letter listing, replay and
lookups by id find them as before; past the dead retention the kept partition is dropped.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from typing import TypeVar

from sqlalchemy import Connection, Engine, text

from common.db.statuses import DeliveryStatus

TABLES = ("events", "deliveries", "attempts")
DEFAULT_AHEAD_DAYS = 3
_STORAGE = {"deliveries": " WITH (fillfactor = 80)"}  # as the plain table had (0005)
_NAME = re.compile(r"^(events|deliveries|attempts)_([pk])(\d{8})$")
# The parent's ACCESS EXCLUSIVE lock a swap takes is short, but a queue behind a long
# reader waiting for it would stall traffic: give up and try again at the next run.
LOCK_TIMEOUT = "1s"
# When a day's partition is worth analysing again (`stale`).
STALE_MIN_ROWS = 1000
STALE_FRACTION = 0.2
T = TypeVar("T")
_GONE = f"('{DeliveryStatus.SUCCEEDED}', '{DeliveryStatus.CANCELLED}')"


def is_partition(relname: str) -> bool:
    return _NAME.match(relname) is not None


def name(table: str, day: date, *, kept: bool = False) -> str:
    return f"{table}_{'k' if kept else 'p'}{day:%Y%m%d}"


def day_of(relname: str) -> date:
    """The day of a partition, from its name."""
    match = _NAME.match(relname)
    if match is None:
        raise ValueError(f"{relname!r} is not a partition")
    digits = match[3]
    return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))


def _bounds(day: date) -> str:
    return f"FROM ('{day.isoformat()}') TO ('{(day + timedelta(days=1)).isoformat()}')"


def create(connection: Connection, table: str, day: date) -> None:
    """The partition of `table` for `day`, if it has none."""
    if day in existing(connection, table):
        return
    connection.execute(
        text(
            f"CREATE TABLE IF NOT EXISTS {name(table, day)} PARTITION OF {table} "
            f"FOR VALUES {_bounds(day)}{_STORAGE.get(table, '')}"
        )
    )


def existing(connection: Connection, table: str) -> dict[date, str]:
    """The partitions of `table` by day (kept ones included)."""
    rows = connection.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:table AS regclass)"
        ),
        {"table": table},
    ).scalars()
    return {day_of(relname): relname for relname in rows if is_partition(relname)}


def ensure(connection: Connection, days: Iterable[date]) -> None:
    for day in days:
        for table in TABLES:
            create(connection, table, day)


def drop(engine: Engine, day: date, *, parallel: bool = False, pause_s: float = 0.0) -> list[str]:
    """Drop the day's partitions of every table; returns their names. Each is detached
    CONCURRENTLY (no lock that stops readers or writers of the parent; the parent waits
    only for that), then dropped on a connection of its own, the tables one after another
    (`parallel`: at once). The drop is the filesystem freeing the files: at once it was no
    faster on a disk with online discard (2.20 s against 2.34 s for 3.45 GiB, the plain
    unlink of the same files 2.0-2.3 s either way) and it stalled every writer's commit
    for the whole drop (docs/benchmarks.md, "Retention at 5 M deliveries")."""
    with engine.connect() as connection:
        found = [(table, existing(connection, table).get(day)) for table in TABLES]
    jobs = [(table, relname) for table, relname in found if relname is not None]
    _each_on_own_connection(engine, jobs, functools.partial(_detach_and_drop, pause_s), parallel)
    return [relname for _, relname in jobs]


def _detach_and_drop(pause_s: float, connection: Connection, job: tuple[str, str]) -> None:
    table, relname = job
    pending = connection.execute(
        text("SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = CAST(:r AS regclass)"),
        {"r": relname},
    ).scalar()
    mode = "FINALIZE" if pending else "CONCURRENTLY"  # FINALIZE: a detach that died midway
    connection.execute(text(f"ALTER TABLE {table} DETACH PARTITION {relname} {mode}"))
    _drop_table(pause_s, connection, relname)


def _each_on_own_connection(
    engine: Engine, jobs: Sequence[T], work: Callable[[Connection, T], None], parallel: bool
) -> None:
    """`work(connection, job)` for every job, each on an autocommit connection of its own,
    all at once when `parallel`; the first failure is raised once all have finished."""

    def one(job: T) -> None:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            work(connection, job)

    if not parallel or len(jobs) < 2:
        for job in jobs:
            one(job)
        return
    with ThreadPoolExecutor(len(jobs), thread_name_prefix="partition-drop") as pool:
        for future in [pool.submit(one, job) for job in jobs]:
            future.result()


def stale(connection: Connection, days: Iterable[date]) -> list[str]:
    """The partitions of `days` whose statistics are missing or stale: ANALYZE has never
    seen them since they got rows, or the rows changed since (inserted, updated, deleted)
    number more than `STALE_FRACTION` of what it counted; and at least `STALE_MIN_ROWS`
    changed (an empty or near-empty day is not worth it). Autovacuum's rule, for servers
    that run without it."""
    names = [name(table, day) for day in days for table in TABLES]
    rows = connection.execute(
        text(
            "SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
            "WHERE s.relname = ANY(:names) AND s.schemaname = current_schema() "
            "AND s.n_mod_since_analyze >= :least AND (c.reltuples < 0 "
            "OR COALESCE(s.last_analyze, s.last_autoanalyze) IS NULL "
            "OR s.n_mod_since_analyze > :fraction * c.reltuples) ORDER BY s.relname"
        ),
        {"names": names, "least": STALE_MIN_ROWS, "fraction": STALE_FRACTION},
    ).scalars()
    return list(rows)


def detached(connection: Connection) -> list[str]:
    """Tables named as a day's partition that no table holds: what a trim swapped out and
    `drop_detached` has not removed yet (a process may have died in between)."""
    rows = connection.execute(
        text(
            "SELECT c.relname FROM pg_class c WHERE c.relkind = 'r' "
            "AND c.relnamespace = CAST(current_schema() AS regnamespace) "
            "AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)"
        )
    ).scalars()
    return sorted(name for name in rows if (m := _NAME.match(name)) and m[2] == "p")


def drop_detached(engine: Engine, *, parallel: bool = False, pause_s: float = 0.0) -> list[str]:
    """Drop what `detached` lists, each on a connection of its own (see `drop`): none is
    part of a table any more, so no query waits for it, however long freeing its files
    takes."""
    with engine.connect() as connection:
        names = detached(connection)
    _each_on_own_connection(engine, names, functools.partial(_drop_table, pause_s), parallel)
    return names


def _drop_table(pause_s: float, connection: Connection, relname: str) -> None:
    """DROP TABLE; with `pause_s`, its indexes first, one at a time, `pause_s` apart: each
    frees its files at its commit, and on a disk that discards freed blocks at once every
    writer's fsync waits behind those discards (a drop of 3.4 GiB stalled commits for 2 s
    here). Paced, the stall came in pieces but no shorter in all, and the largest piece (a
    heap) still stalled writers for 200 ms: not the keeper's default, kept so that another
    disk can be measured (`bench.retention --drop-pause-s`)."""
    if pause_s > 0:
        indexes = connection.execute(
            text(
                "SELECT CAST(i.indexrelid AS regclass), c.conname FROM pg_index i "
                "LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid "
                "AND c.conrelid = i.indrelid WHERE i.indrelid = CAST(:r AS regclass)"
            ),
            {"r": relname},
        ).all()
        for index, constraint in indexes:
            if constraint is None:
                connection.execute(text(f"DROP INDEX IF EXISTS {index}"))
            else:
                connection.execute(text(f"ALTER TABLE {relname} DROP CONSTRAINT {constraint}"))
            time.sleep(pause_s)
    connection.execute(text(f"DROP TABLE IF EXISTS {relname}"))


def trim(connection: Connection, day: date) -> int:
    """Swap the day's partitions for copies of their unfinished and dead deliveries (and
    the events and attempts of those); returns the deliveries kept. `connection` must be
    in a transaction, which the caller commits: the swap is all or nothing. The partitions
    swapped out stay as detached tables for `drop_detached`: dropped inside the swap, they
    would free their files (seconds for a large day) while the swap's exclusive locks on
    the partitioned tables still stop every writer."""
    parts = {table: existing(connection, table).get(day) for table in TABLES}
    if parts["deliveries"] is None or parts["deliveries"].startswith("deliveries_k"):
        return 0
    connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    # Writers of these (old) rows, such as a replay claiming a dead letter, wait for the
    # swap instead of changing a row after it was copied.
    for relname in parts.values():
        if relname is not None:
            connection.execute(text(f"LOCK TABLE {relname} IN SHARE MODE"))
    kept = _copy(connection, parts, day)
    for table, relname in parts.items():
        if relname is None:
            continue
        connection.execute(text(f"ALTER TABLE {table} DETACH PARTITION {relname}"))
        connection.execute(
            text(f"ALTER TABLE {table} ATTACH PARTITION {name(table, day, kept=True)} "
                 f"FOR VALUES {_bounds(day)}")
        )  # fmt: skip
    return kept


def _copy(connection: Connection, parts: dict[str, str | None], day: date) -> int:
    keep = {
        "deliveries": f"WHERE status NOT IN {_GONE}",
        "events": f"x WHERE EXISTS (SELECT 1 FROM {name('deliveries', day, kept=True)} d "
        "WHERE d.tenant_id = x.tenant_id AND d.event_id = x.id)",
        "attempts": f"x WHERE EXISTS (SELECT 1 FROM {name('deliveries', day, kept=True)} d "
        "WHERE d.id = x.delivery_id)",
    }
    kept = 0
    for table in ("deliveries", "events", "attempts"):
        relname = parts[table]
        if relname is None:
            continue
        target = name(table, day, kept=True)
        # With the table's indexes built now, small, so that ATTACH finds them and builds
        # none while it holds the exclusive lock that stops every writer.
        connection.execute(
            text(
                f"CREATE TABLE {target} (LIKE {table} INCLUDING DEFAULTS INCLUDING INDEXES)"
                f"{_STORAGE.get(table, '')}"
            )
        )
        # The range as a constraint, so ATTACH need not scan the table to prove it.
        after = day + timedelta(days=1)
        connection.execute(
            text(f"ALTER TABLE {target} ADD CONSTRAINT {target}_range CHECK "
                 f"(day >= '{day.isoformat()}' AND day < '{after.isoformat()}')")
        )  # fmt: skip
        copied = connection.execute(
            text(f"INSERT INTO {target} SELECT * FROM {relname} {keep[table]}")
        ).rowcount
        if table == "deliveries":
            kept = copied
            # Its size known, the copies of events and attempts look up the few kept
            # deliveries' rows by index instead of scanning the day's millions.
            connection.execute(text(f"ANALYZE {target}"))
    return kept
