"""Replay at scale: 100,000 dead deliveries re-sent with `--rate unlimited`, dispatchers
delivering them while the job runs.

    .venv/bin/python -m bench.replay [--deliveries 100000] [--dispatchers 2]
        [--concurrency 16] [--runs 3] [--baseline 5000]

Each run: a fresh RabbitMQ vhost and PostgreSQL database (`bench.stack`), one subscription
to a receiver process, `--deliveries` events and dead deliveries written straight into the
database (as the settler leaves them after the last attempt), `--dispatchers` dispatcher
processes running. Then `hookline replay start --all --yes --rate unlimited` runs as its
own process, as an operator would run it. Reported:
- `job_s`: the replay command's wall time (fixing the set, claiming, publishing confirmed,
  marking), while the dispatchers already deliver what it published; `job_cpu_s` its CPU
  time (the command's own process; the database's share is in `cpu_us_per_delivery`);
- `delivered_s`: from the command's start until every delivery succeeded again;
- baselines of the same run: `publish_s`, confirmed publishes of as many messages of the
  same size into a scratch queue (the broker's share of a replay), and the direct-POST
  rate of the dispatcher's own HTTP client (the ceiling of the delivering side);
- duplicates (webhook-ids received more than once) and the load average around the run.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench.stack import Stack, baseline, by_webhook_id, cpu_per_delivery_us, load_average, stack
from common.transport import Outgoing, open_transport
from common.transport.topology import Exchange, Queue, Topology
from tests.processes import HOOKLINE

SEED_EVENTS = """
INSERT INTO events (tenant_id, id, type, operation, timestamp, data, received_at, day)
SELECT :tenant, 'r-' || n, 'order.created', NULL, now(), json_build_object('n', n), now(),
    (now() AT TIME ZONE 'UTC')::date
FROM generate_series(1, :count) AS n
"""
SEED_DEAD = """
INSERT INTO deliveries (id, tenant_id, event_id, subscription_id, event_type, status,
    attempts, last_status_code, dead_reason, replay_count, created_at, updated_at,
    finished_at, day)
SELECT 'dlv_r' || n, :tenant, 'r-' || n, :subscription, 'order.created', 'dead', 8, 503,
    'max_attempts', 0, now(), now(), now() - (n || ' milliseconds')::interval,
    (now() AT TIME ZONE 'UTC')::date
FROM generate_series(1, :count) AS n
"""
SCRATCH = "bench.replay.scratch"
BATCH = 500


def seed(running: Stack, subscription_id: str, count: int) -> float:
    began = time.monotonic()
    params = {"tenant": running.tenant_id, "subscription": subscription_id, "count": count}
    with running.sessions.begin() as session:
        session.execute(text(SEED_EVENTS), params)
        session.execute(text(SEED_DEAD), params)
        session.execute(text("ANALYZE deliveries"))
    return time.monotonic() - began


def publish_baseline(broker_url: str, count: int, size: int) -> float:
    """Seconds to publish `count` messages of `size` bytes, confirmed, in replay batches."""
    with open_transport(broker_url) as transport:
        transport.declare(
            Topology(
                (Exchange(SCRATCH, "fanout"),),
                (Queue(SCRATCH, {"x-queue-type": "quorum"}, ((SCRATCH, ""),)),),
            )
        )
        body = b"x" * size
        began = time.monotonic()
        for start in range(0, count, BATCH):
            batch = [
                Outgoing(SCRATCH, "", body, {}, f"m{n}")
                for n in range(start, min(start + BATCH, count))
            ]
            transport.publish(batch)
        elapsed = time.monotonic() - began
        transport.purge(SCRATCH)
    return elapsed


def _children_cpu_s() -> float:
    """CPU seconds of this process's children that have exited (the replay command)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_run(args: argparse.Namespace, number: int, workdir: Path) -> dict[str, Any]:
    load_before = load_average()
    count = args.deliveries
    with stack(workdir) as running:
        url = running.receiver("receiver") + "/hooks"
        subscription_id, secret = running.subscribe(url, ["*"])
        seed_s = seed(running, subscription_id, count)
        direct = baseline(url, secret, args.baseline, args.concurrency * max(args.dispatchers, 1))
        publish_s = publish_baseline(running.broker_url, count, 520)
        names = [f"dispatcher-{n}" for n in range(args.dispatchers)]
        for name in names:
            running.start(name, "dispatcher", "--concurrency", str(args.concurrency))
        cpu_before = running.cpu()
        job_cpu_before = _children_cpu_s()
        began = time.monotonic()
        job = subprocess.run(
            [
                *HOOKLINE,
                "replay",
                "start",
                "--tenant",
                running.tenant_id,
                "--all",
                "--yes",
                "--rate",
                "unlimited",
                "-o",
                "json",
            ],
            env=running.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        job_s = time.monotonic() - began
        job_cpu_s = _children_cpu_s() - job_cpu_before
        if job.returncode != 0:
            raise RuntimeError(f"replay failed:\n{job.stdout[-3000:]}\n{job.stderr[-3000:]}")
        # `--dispatchers 0`: the job alone, nothing delivering (nor competing for the CPU).
        done = running.wait_for(running.succeeded, count, 1800, tick_s=1.0) if names else 0
        delivered_s = time.monotonic() - began if names else float("nan")
        cpu_after = running.cpu()
        replayed = by_webhook_id(running.tenant_id, (f"r-{n}" for n in range(1, count + 1)))
        arrivals = [event_id for event_id, _ in running.arrival_times("receiver", replayed)]
    summary = json.loads(job.stdout[job.stdout.index("{") :])
    return {
        "run": number,
        "deliveries": count,
        "job_state": summary["state"],
        "job_done": summary["done"],
        "succeeded": done,
        "received": len(arrivals),
        "duplicates": len(arrivals) - len(set(arrivals)),
        "seed_s": round(seed_s, 1),
        "job_s": round(job_s, 1),
        "job_per_s": round(count / job_s),
        "job_cpu_s": round(job_cpu_s, 1),
        "delivered_s": round(delivered_s, 1),
        "delivered_per_s": round(count / delivered_s) if names else None,
        "publish_baseline_s": round(publish_s, 1),
        "direct_post_per_s": round(direct),
        "job_vs_publish": round(publish_s / job_s, 3),
        "delivered_vs_direct": round(count / delivered_s / direct, 3) if names else None,
        "cpu_us_per_delivery": cpu_per_delivery_us(cpu_before, cpu_after, count),
        "load": [load_before, load_average()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument("--dispatchers", type=int, default=2, help="0: the job alone")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", type=int, default=5000)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for number in range(args.runs):
            result = one_run(args, number, Path(workdir))
            print(json.dumps(result), flush=True)
            results.append(result)
    keys = (
        "job_s",
        "job_cpu_s",
        "delivered_s",
        "publish_baseline_s",
        "direct_post_per_s",
        "job_vs_publish",
        "delivered_vs_direct",
        "duplicates",
    )
    medians = {
        k: statistics.median(r[k] for r in results) if results[0][k] is not None else None
        for k in keys
    }
    print(json.dumps({"median": medians, "runs": len(results)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
