"""Against Celery: the same backlog drained to the same receiver by Hookline and by Celery.

    .venv/bin/python -m bench.vs_celery [--deliveries 20000] [--dispatchers 2]
        [--concurrency 16] [--pools prefork:2,prefork:4,prefork:8,threads:8,threads:16,threads:32]
        [--runs 3] [--baseline 5000]

Each run, one after the other on the same machine:
- **Hookline**, `bench.drain`'s way: a fresh vhost and database, the router turns
  `--deliveries` events into queued deliveries and stops, then `--dispatchers` dispatchers
  drain them, every attempt and delivery state persisted. Around it, for the capacity model
  (docs/operations.md): PostgreSQL's WAL position (`pg_current_wal_lsn()`; cluster-wide, so
  other databases' writes count too) before the publish, after the routing and after the
  drain, and the on-disk size of `events`, `deliveries` and `attempts` with their indexes
  (`pg_total_relation_size`) after the drain, per delivery.
- **Celery**, once per pool in `--pools`: a fresh vhost on 127.0.0.1:5672 (quorum queue,
  `acks_late=True`), `--deliveries` tasks queued first (not timed), then one
  `celery worker` drains them; each task signs the same JSON body with HMAC-SHA256 and
  POSTs it with `requests` (a keep-alive session per thread) to a fresh receiver of the same
  kind (`hookline.receiver`). Celery persists nothing but the broker's queue.
Rates run from the first receipt to the last (as `bench.drain`); the ratio printed is
Hookline's rate over the best Celery pool's of the same run. Only 127.0.0.1 is targeted.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests
from celery import Celery
from sqlalchemy import text

from bench import runs
from bench.pipeline import publish_backlog
from bench.stack import (
    baseline,
    by_webhook_id,
    cpu_per_delivery_us,
    load_average,
    stack,
    tree_cpu_s,
    wait_http,
)
from common.settings import Settings
from producer import Producer
from tests.processes import free_port
from tests.services import temporary_vhost

SIGNING_KEY = b"bench-vs-celery-signing-key"
QUEUE = "bench.webhooks"

app = Celery("bench_vs_celery", broker=os.environ.get("BENCH_CELERY_BROKER", "memory://"))
app.conf.update(
    task_acks_late=True,
    task_default_queue=QUEUE,
    task_default_queue_type="quorum",
    worker_detect_quorum_queues=True,
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
_local = threading.local()


@app.task(name="bench.post_webhook", acks_late=True)  # type: ignore[untyped-decorator]
def post_webhook(url: str, webhook_id: str, body: str) -> int:
    """What a Celery user writes: sign the body, POST it, fail (to be retried) on non-2xx."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    timestamp = str(int(time.time()))
    signed = f"{webhook_id}.{timestamp}.{body}".encode()
    signature = base64.b64encode(hmac.new(SIGNING_KEY, signed, hashlib.sha256).digest())
    response = session.post(
        url, data=body, timeout=10,
        headers={"content-type": "application/json", "webhook-id": webhook_id,
                 "webhook-timestamp": timestamp,
                 "webhook-signature": f"v1,{signature.decode()}"},
    )  # fmt: skip
    response.raise_for_status()
    return response.status_code


# --- Hookline, bench.drain's way, with the WAL and the bytes stored ------------------------

TABLES = ("events", "deliveries", "attempts")


def _wal_lsn(running: Any) -> int:
    with running.sessions() as session:
        return int(session.scalar(text("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")))


def _table_bytes(running: Any) -> dict[str, int]:
    """Each table's size with its indexes, summed over its partitions (a partitioned
    table's parent holds nothing itself; a plain table has no partition tree)."""
    query = (
        "SELECT coalesce((SELECT sum(pg_total_relation_size(relid))"
        " FROM pg_partition_tree('{0}')), 0) + pg_total_relation_size('{0}')"
    )
    with running.sessions() as session:
        return {t: int(session.scalar(text(query.format(t)))) for t in TABLES}


def hookline(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    count = args.deliveries
    with stack(workdir) as running:
        url = running.receiver("receiver") + "/hooks"
        _, secret = running.subscribe(url, ["order.*"])
        direct = baseline(url, secret, args.baseline, args.concurrency * args.dispatchers)
        empty = _table_bytes(running)
        wal_start = _wal_lsn(running)
        running.start("router", "router")
        settings = Settings(database_url=running.database_url, broker_url=running.broker_url)
        with Producer(settings) as producer:
            publish_backlog(producer, running.tenant_id, [f"d-{n}" for n in range(count)])
        queued = running.wait_for(running.deliveries_queued, count, count / 50 + 60, tick_s=1.0)
        running.stop("router")
        assert queued == count, f"only {queued} of {count} deliveries queued"
        wal_routed = _wal_lsn(running)
        cpu_before = running.cpu()
        names = [f"dispatcher-{n}" for n in range(args.dispatchers)]
        for name in names:
            running.start(name, "dispatcher", "--concurrency", str(args.concurrency))
        done = running.wait_for(running.succeeded, count, count / 100 + 120)
        cpu_after = running.cpu()
        wal_drained = _wal_lsn(running)
        stored = _table_bytes(running)
        sent = by_webhook_id(running.tenant_id, (f"d-{n}" for n in range(count)))
        received = running.arrival_times("receiver", sent)
    times = sorted(at for _, at in received)
    rate = count / (times[-1] - times[0])
    return {
        "deliveries_per_s": round(rate, 1),
        "succeeded": done,
        "baseline_per_s": round(direct, 1),
        "ratio_to_direct": round(rate / direct, 3),
        "cpu_us_per_delivery": cpu_per_delivery_us(cpu_before, cpu_after, count),
        "wal_bytes_per_delivery": {
            "publish_and_route": round((wal_routed - wal_start) / count),
            "drain": round((wal_drained - wal_routed) / count),
        },
        "stored_bytes_per_delivery": {t: round((stored[t] - empty[t]) / count) for t in TABLES},
    }


# --- Celery ----------------------------------------------------------------------------------


class Receiver:
    """`hookline.receiver` in its own process, its running count read from its output."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.port = free_port()
        self.log = workdir / f"{name}.tsv"
        self.count = 0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hookline.receiver", "--port", str(self.port),
             "--log", str(self.log), "--every-s", "0.25"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()
        wait_http(f"http://127.0.0.1:{self.port}/")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("received ") and "total" not in line:
                self.count = int(line.split()[1])

    def arrivals(self) -> list[tuple[str, float]]:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        lines = self.log.read_text().splitlines()
        return [(a, float(b)) for a, b in (line.split("\t") for line in lines)]


def _queue_depth(broker_url: str) -> int:
    vhost = broker_url.rsplit("/", 1)[1]
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "messages",
         "--formatter", "json"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return sum(int(q["messages"]) for q in json.loads(out) if q["name"] == QUEUE)


def _rabbitmq_cpu_s() -> float:
    from bench.stack import _cpu_s, _pids_where

    return sum(map(_cpu_s, _pids_where(lambda c: "beam.smp" in c)))


def celery_pool(
    pool: str, concurrency: int, count: int, workdir: Path, timeout_s: float
) -> dict[str, Any]:
    with temporary_vhost("hookline_celery") as broker_url:
        receiver = Receiver(workdir, f"celery-{pool}-{concurrency}")
        url = f"http://127.0.0.1:{receiver.port}/hooks"
        with app.connection_for_write(broker_url) as connection:
            producer = connection.Producer()
            for n in range(count):
                body = json.dumps({"type": "order.created", "id": f"c-{n}",
                                   "data": {"order": n, "total": 12.5}})  # fmt: skip
                post_webhook.apply_async((url, f"c-{n}", body), producer=producer)
        # Quorum queues report their length a little late: wait for it (not timed).
        deadline = time.monotonic() + 60
        while (queued := _queue_depth(broker_url)) < count and time.monotonic() < deadline:
            time.sleep(1)
        assert queued == count, f"only {queued} of {count} tasks queued"
        env = {**os.environ, "BENCH_CELERY_BROKER": broker_url}
        with open(workdir / f"celery-{pool}-{concurrency}.log", "wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "bench.vs_celery:app", "worker",
                 "-P", pool, "-c", str(concurrency), "--without-gossip", "--without-mingle",
                 "--without-heartbeat", "-l", "WARNING", "-Q", QUEUE],
                env=env, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        try:
            cpu_before = {"worker": tree_cpu_s(worker.pid), "rabbitmq": _rabbitmq_cpu_s()}
            deadline = time.monotonic() + timeout_s
            # + 1: the readiness probe's GET counts as a receipt too.
            while receiver.count < count + 1 and time.monotonic() < deadline:
                time.sleep(0.25)
            cpu_after = {"worker": tree_cpu_s(worker.pid), "rabbitmq": _rabbitmq_cpu_s()}
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)
        received = receiver.arrivals()
    unique: dict[str, float] = {}
    for webhook_id, at in received:
        if webhook_id.startswith("c-"):
            unique.setdefault(webhook_id, at)
    times = sorted(unique.values())
    rate = len(times) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    result = {
        "pool": f"{pool}:{concurrency}",
        "received": len(unique),
        "duplicates": sum(1 for w, _ in received if w.startswith("c-")) - len(unique),
        "deliveries_per_s": round(rate, 1),
        "cpu_us_per_delivery": cpu_per_delivery_us(cpu_before, cpu_after, count),
    }
    print(json.dumps({"celery": result}), file=sys.stderr, flush=True)
    return result


def one_run(args: argparse.Namespace, number: int, workdir: Path) -> dict[str, Any]:
    load_before = load_average()
    ours = hookline(args, workdir)
    print(json.dumps({"hookline": ours}), file=sys.stderr, flush=True)
    theirs = []
    for spec in args.pools.split(","):
        pool, concurrency = spec.split(":")
        theirs.append(celery_pool(pool, int(concurrency), args.deliveries, workdir, args.timeout_s))
    complete = [t for t in theirs if t["received"] == args.deliveries]
    best = max(complete or theirs, key=lambda t: t["deliveries_per_s"])
    return {
        "run": number,
        "hookline_per_s": ours["deliveries_per_s"],
        "celery_best_per_s": best["deliveries_per_s"],
        "celery_best_pool": best["pool"],
        "ratio": round(ours["deliveries_per_s"] / best["deliveries_per_s"], 3),
        "hookline": ours,
        "celery": theirs,
        "load": [load_before, load_average()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument("--dispatchers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--pools", default="prefork:2,prefork:4,prefork:8,threads:8,threads:16,threads:32"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", type=int, default=5_000)
    parser.add_argument("--timeout-s", type=float, default=300)
    args = parser.parse_args()
    runs.repeat(one_run, args, ("hookline_per_s", "celery_best_per_s", "ratio"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
