"""Retention by partition: drop (or trim) a full day while the hot path runs beside it
(issue 17).

    .venv/bin/python -m bench.retention [--rows 1000000] [--phase-s 20] [--batch 100]
        [--probe-rate 20] [--trim [--dead-every 1000]] [--parallel-drops]
        [--drop-pause-s 0] [--baseline-dir /tmp]

A fresh PostgreSQL database (migrated) gets `--rows` finished deliveries, their attempts
and events in the partitions of a day 40 days back (each loaded as a plain table, then
attached, so that its indexes are built once; then a CHECKPOINT, so that the load's
write-back does not fall into the phases). Then two kinds of traffic run together, in
four phases of `--phase-s`:
- the drain: what the router and the settler do for each delivery (insert the event and
  delivery, `persist_batch`; settle: update the delivery and insert its attempt, the
  settler's statements), `--batch` deliveries a transaction, as fast as it goes;
- the probe, in a process of its own: one delivery at a time the same way, started
  `--probe-rate` times a second on a fixed schedule (open model: a stall delays every
  probe due during it, and its latency counts from when it was due), so its latency is
  what one delivery's writes wait.
Phase B runs partition maintenance (`keeper.maintain`) in its middle; phases A1 and A2
around it have none; phase U, last, removes the *unlink baseline* in its middle: two sets
of files mirroring the old day's files (`bench.unlink_baseline`; written and synced on
the data directory's filesystem before the phases), one removed file after file, as the
keeper drops the three tables one after another, then the other with a thread per table
(`--parallel-drops`: the keeper drops the tables at once; `--drop-pause-s`: each table's
indexes dropped first, one at a time, that far apart). `maintain_over_unlink` divides
maintenance by the baseline of the same kind: what PostgreSQL adds to the filesystem.
By default the retention and the dead retention are both 30 days, so the old day is past
both and dropped whole (DETACH CONCURRENTLY, DROP TABLE). With
`--trim` the policy is the default one (dead letters kept 90 days) and every
`--dead-every`th delivery of the old day is dead: the day is *trimmed* — its dead
deliveries, their events and attempts copied into kept partitions that replace it — what
a production installation does every day. Reported per phase: the drain's deliveries/s
and batch latency (p50, p99, max), the probe's latency (p50, p99, max); the same over the
*maintenance window* (maintenance's own span, at least 2 s; for A1 and A2 a window as
long in their middle; for U the unlinks' span); how long maintenance and the unlinks
took; for the maintenance and unlink windows, where their figures fall among those of
the quiet phases A1 and A2 cut into windows as long (`window_vs_quiet`: a two-second
window's p99 is its few slowest probes, and moves from window to window with no
maintenance at all; that spread is the resolution of the window's ratio); and whether
the data directory's filesystem discards freed blocks online
(`baseline.discard`, from its mount options), which is most of what a drop costs the
writers beside it (docs/operations.md, "Retention"). The drain is the database half of
`bench.drain` (no broker, no HTTP): what the drop could slow down.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from multiprocessing.connection import Connection
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from bench import unlink_baseline
from bench.phases import Phase, against_quiet, middle, quiet_windows, stats
from bench.stack import load_average
from common.db import keeper, migrate, partitions
from common.db.bulk import insert_rows
from common.db.models import Attempt
from common.db.session import make_engine, make_sessionmaker
from common.wire import Event, utcnow
from dispatcher.settle.rows import update_deliveries
from router.index import Target
from router.persist import persist_batch
from tests.services import temporary_database

FILL = """
INSERT INTO {table} ({columns})
SELECT {values} FROM generate_series(1, :rows) AS n
"""
_COLUMNS = {
    "events": ("tenant_id, id, type, timestamp, data, received_at, day",
               "'t', 'old_' || n, 'x', :at, '{}', :at, :day"),
    "deliveries": ("id, tenant_id, event_id, subscription_id, event_type, status, attempts, "
                   "replay_count, created_at, updated_at, finished_at, day",
                   "'dlv_old_' || n, 't', 'old_' || n, 's', 'x', CASE WHEN :dead > 0 AND "
                   "n % :dead = 0 THEN 'dead' ELSE 'succeeded' END, 1, 0, :at, :at, :at, :day"),
    "attempts": ("delivery_id, attempt, outcome, duration_s, created_at, day",
                 "'dlv_old_' || n, 1, 'success', 0.01, :at, :day"),
}  # fmt: skip
MIN_WINDOW_S = 2.0


def fill(
    engine: Engine, rows: int, dead_every: int = 0
) -> tuple[str, float, int, dict[str, list[int]]]:
    """The old day's partitions, `rows` each (every `dead_every`th delivery dead, 0: none);
    returns the day, seconds taken, bytes, and the sizes of their files by table."""
    day = utcnow().date() - timedelta(days=40)
    at = utcnow() - timedelta(days=40)
    began = time.monotonic()
    with engine.begin() as connection:
        for table, (columns, values) in _COLUMNS.items():
            part = partitions.name(table, day)
            connection.execute(text(f"CREATE TABLE {part} (LIKE {table} INCLUDING DEFAULTS)"))
            statement = text(FILL.format(table=part, columns=columns, values=values))
            connection.execute(statement, {"rows": rows, "at": at, "day": day, "dead": dead_every})
            after = day + timedelta(days=1)
            connection.execute(
                text(f"ALTER TABLE {table} ATTACH PARTITION {part} FOR VALUES FROM "
                     f"('{day.isoformat()}') TO ('{after.isoformat()}')")
            )  # fmt: skip  # builds the parent's indexes on it
    size = 0
    files = {}
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in partitions.TABLES:
            connection.execute(text(f"VACUUM ANALYZE {table}"))
            part = partitions.name(table, day)
            bytes_of = text("SELECT pg_total_relation_size(CAST(:part AS regclass))")
            size += int(connection.execute(bytes_of, {"part": part}).scalar_one())
            files[table] = unlink_baseline.file_sizes(connection, part)
        connection.execute(text("CHECKPOINT"))
    return day.isoformat(), round(time.monotonic() - began, 1), size, files


def deliver(sessions: sessionmaker[Session], count: int) -> None:
    """Route and settle `count` deliveries: two transactions, as the router and settler."""
    target = [Target("sub_1", "t", ("x",))]
    events = [Event(tenant="t", type="x") for _ in range(count)]
    with sessions.begin() as session:
        routed = persist_batch(session, [(e, target) for e in events])
    now = utcnow()
    updates = [
        {"id": r.delivery_id, "status": "succeeded", "attempts": 1, "last_status_code": 200,
         "last_error": None, "dead_reason": None, "next_attempt_at": None, "updated_at": now,
         "finished_at": now, "replay": False}
        for r in routed
    ]  # fmt: skip
    attempts = [
        {"delivery_id": r.delivery_id, "attempt": 1, "outcome": "success", "status_code": 200,
         "duration_s": 0.01, "error": None, "response_body": None, "created_at": now,
         "day": now.date()}
        for r in routed
    ]  # fmt: skip
    with sessions.begin() as session:
        insert_rows(session, Attempt.__table__, attempts)  # type: ignore[arg-type]
        update_deliveries(session, updates)


def run_phase(engine: Engine, seconds: float, batch: int) -> Phase:
    """The drain, on this thread, for `seconds`."""
    sessions = make_sessionmaker(engine)
    phase = Phase(time.monotonic())
    phase.ended = phase.began + seconds
    while time.monotonic() < phase.ended:
        start = time.perf_counter()
        deliver(sessions, batch)
        phase.batches.append((time.monotonic(), (time.perf_counter() - start) * 1000))
    return phase


def probe(url: str, rate: float, seconds: float, results: Connection) -> None:
    """The probe, in a process of its own (the drain's thread would hold the GIL it waits
    for): one delivery every `1 / rate` s on a fixed schedule, each latency counted from
    when it was due; sends "ready", then its (finished at, latency ms) samples. The
    monotonic clock is the machine's, so the samples line up with the phases."""
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    deliver(sessions, 1)  # connected and warm before the schedule starts
    results.send("ready")
    samples = []
    due = time.monotonic()
    ends = due + seconds
    while due < ends:
        time.sleep(max(0.0, due - time.monotonic()))
        deliver(sessions, 1)
        samples.append((time.monotonic(), (time.monotonic() - due) * 1000))
        due += 1 / rate
    results.send(samples)
    engine.dispose()


def midway(
    seconds: float, action: Callable[[], dict[str, Any]]
) -> tuple[threading.Thread, dict[str, Any]]:
    """A thread that runs `action` `seconds` from now; the dict gets its span and result."""
    span: dict[str, Any] = {}

    def run() -> None:
        time.sleep(seconds)
        span["began"] = time.monotonic()
        span.update(action())
        span["ended"] = time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, span


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--phase-s", type=float, default=20.0)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--probe-rate", type=float, default=20.0)
    parser.add_argument("--trim", action="store_true", help="keep dead letters 90 days")
    parser.add_argument("--dead-every", type=int, default=1000, help="with --trim")
    parser.add_argument("--parallel-drops", action="store_true",
                        help="drop the day's tables at once, on a connection each")  # fmt: skip
    parser.add_argument("--drop-pause-s", type=float, default=0.0,
                        help="drop each table's indexes first, this far apart")  # fmt: skip
    parser.add_argument("--baseline-dir", default=tempfile.gettempdir(),
                        help="where the unlink baseline's files go (the data directory's "
                        "filesystem)")  # fmt: skip
    args = parser.parse_args()
    if args.phase_s < 2 * MIN_WINDOW_S:
        # Phase U starts its two unlinks 2 s apart around its middle: both must fall inside.
        parser.error(f"--phase-s must be at least {2 * MIN_WINDOW_S:g}")
    dead_retention = timedelta(days=90 if args.trim else 30)
    policy = keeper.Policy(timedelta(days=30), dead_retention)
    parallel = args.parallel_drops
    with temporary_database() as url:
        migrate.upgrade(url)
        engine = make_engine(url, pool_size=10)
        day, fill_s, size, files = fill(engine, args.rows, args.dead_every if args.trim else 0)
        with engine.connect() as connection:
            data_directory = connection.execute(text("SHOW data_directory")).scalar_one()
        began = time.monotonic()
        baselines = {
            mode: unlink_baseline.FileSet(args.baseline_dir, files)
            for mode in ("sequential", "parallel")
        }
        result: dict[str, Any] = {
            "rows": args.rows, "day": day, "fill_s": fill_s,
            "old_day_gib": round(size / 2**30, 2), "drops": "parallel" if parallel else
            "sequential", "drop_pause_s": args.drop_pause_s, "load": [load_average()],
            "baseline": {"files": sum(len(sizes) for sizes in files.values()),
                         "gib": round(baselines["sequential"].bytes / 2**30, 2),
                         "same_filesystem": unlink_baseline.same_filesystem(
                             args.baseline_dir, data_directory),
                         "write_s": round(time.monotonic() - began, 1),
                         "discard": "discard" in unlink_baseline.mount_options(
                             data_directory)},
        }  # fmt: skip
        receiving, sending = multiprocessing.Pipe(duplex=False)
        span_s = 4 * args.phase_s + 5
        prober = multiprocessing.get_context("spawn").Process(
            target=probe, args=(url, args.probe_rate, span_s, sending)
        )
        prober.start()
        assert receiving.recv() == "ready"
        a1 = run_phase(engine, args.phase_s, args.batch)

        def maintain() -> dict[str, Any]:
            outcome = keeper.maintain(
                engine, policy, parallel_drops=parallel, drop_pause_s=args.drop_pause_s
            )
            trimmed = {d.isoformat(): kept for d, kept in outcome.trimmed.items()}
            return {"dropped": [d.isoformat() for d in outcome.dropped], "trimmed": trimmed}

        worker, drop = midway(args.phase_s / 2, maintain)
        b = run_phase(engine, args.phase_s, args.batch)
        worker.join()
        a2 = run_phase(engine, args.phase_s, args.batch)

        def unlink() -> dict[str, Any]:
            sequential = baselines["sequential"].remove(parallel=False)
            time.sleep(2)
            return {
                "sequential": sequential,
                "parallel": baselines["parallel"].remove(parallel=True),
            }

        worker, unlinked = midway(args.phase_s / 2 - 2, unlink)
        u = run_phase(engine, args.phase_s, args.batch)
        worker.join()
        samples = receiving.recv()
        prober.join()
        for phase in (a1, b, a2, u):
            phase.probes = [(at, ms) for at, ms in samples if phase.began <= at <= phase.ended]
        result["load"].append(load_average())
        maintain_s = drop["ended"] - drop["began"]
        window_s = max(maintain_s, MIN_WINDOW_S)
        windows = {
            "A1": (a1, middle(a1, window_s)),
            "B (maintenance)": (b, (drop["began"], drop["began"] + window_s)),
            "A2": (a2, middle(a2, window_s)),
            "U (unlink baselines)": (u, (unlinked["began"], max(unlinked["ended"],
                                     unlinked["began"] + MIN_WINDOW_S))),
        }  # fmt: skip
        for name, (phase, window) in windows.items():
            result[name] = {**stats(phase, args.batch), "window": stats(phase, args.batch, window)}
        # Each window against the quiet phases cut into windows as long as it is.
        for name in ("B (maintenance)", "U (unlink baselines)"):
            start, end = windows[name][1]
            quiet = quiet_windows([a1, a2], end - start, args.batch)
            placed = against_quiet(result[name]["window"], quiet)
            result[name]["window_vs_quiet"] = {"quiet_windows": len(quiet), **placed}
        same_mode = unlinked["parallel" if parallel else "sequential"]
        result.update(
            maintain_s=round(maintain_s, 3), dropped=drop["dropped"], trimmed=drop["trimmed"],
            unlink_sequential_s=round(unlinked["sequential"], 3),
            unlink_parallel_s=round(unlinked["parallel"], 3),
            maintain_over_unlink=round(maintain_s / same_mode, 2),
        )  # fmt: skip
        with engine.connect() as connection:
            days = {
                d.isoformat(): name
                for d, name in partitions.existing(connection, "deliveries").items()
            }
            result["old day now"] = days.get(day)  # None: gone; deliveries_k...: trimmed
        print(json.dumps(result, indent=1))
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
