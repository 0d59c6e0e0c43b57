"""Throughput and latency through the real stack, one subscription per event.

    .venv/bin/python -m bench.pipeline [--events 20000] [--runs 3] [--concurrency 8]
        [--dispatchers 2] [--rate 300] [--latency-s 20] [--baseline 10000]

Each run (see `bench/stack.py`): a fresh vhost and database, a receiver process, one
`hookline router` and `--dispatchers` `hookline dispatcher` processes, and
- baseline: the dispatcher's own `Sender` posting signed bodies straight to the receiver
  on `--concurrency` x `--dispatchers` threads — no broker, no database;
- throughput: `--events` events published as fast as the producer SDK goes (batches of
  500), timed from the first publish to the last receipt; every event, delivery and
  attempt is persisted in PostgreSQL; CPU per delivery of each component over that phase;
- latency: an open model — events scheduled at `--rate`/s for `--latency-s`, each measured
  from its scheduled send time to its receipt, published from 16 threads (a publisher
  stalled behind all of them counts).
Prints one JSON line per run, then the medians.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import runs
from bench.stack import (
    Stack,
    baseline,
    by_webhook_id,
    cpu_per_delivery_us,
    load_average,
    percentile,
    stack,
)
from common.settings import Settings
from producer import Producer

PUBLISHERS = 16


def start_services(running: Stack, args: argparse.Namespace) -> None:
    running.start("router", "router")
    for n in range(args.dispatchers):
        running.start(f"dispatcher-{n}", "dispatcher", "--concurrency", str(args.concurrency))
    time.sleep(1.0)  # consumers attach after the metrics port opens


def publish_backlog(producer: Producer, tenant_id: str, ids: list[str]) -> None:
    for offset in range(0, len(ids), 500):
        batch = [
            {"tenant": tenant_id, "type": "order.created", "id": event_id,
             "data": {"order": offset, "total": 12.5}}
            for event_id in ids[offset : offset + 500]
        ]  # fmt: skip
        producer.publish_batch(batch)


def open_model(producer: Producer, tenant_id: str, ids: list[str], rate: float) -> dict[str, float]:
    """Publish `ids` at a fixed arrival rate; returns each one's scheduled send time.

    Each publish runs on one of `PUBLISHERS` threads, as many producers would: one
    producer waiting for its confirm does not hold back the next arrival. Should every
    thread be busy, arrivals queue, and that wait counts in their latency."""
    sent_at: dict[str, float] = {}
    begin = time.time() + 0.5
    with ThreadPoolExecutor(PUBLISHERS) as publishers:
        for n, event_id in enumerate(ids):
            scheduled = begin + n / rate
            pause = scheduled - time.time()
            if pause > 0:
                time.sleep(pause)
            sent_at[event_id] = scheduled
            publishers.submit(
                producer.publish, "order.created", {"n": n}, tenant=tenant_id, id=event_id
            )
    return sent_at


def one_run(args: argparse.Namespace, number: int, workdir: Path) -> dict[str, Any]:
    load_before = load_average()
    with stack(workdir) as running:
        url = running.receiver("receiver") + "/hooks"
        _, secret = running.subscribe(url, ["order.*"])
        direct = baseline(url, secret, args.baseline, args.concurrency * args.dispatchers)
        start_services(running, args)
        producer = Producer(Settings(database_url=running.database_url,
                                     broker_url=running.broker_url))  # fmt: skip
        ids = [f"tp-{number}-{n}" for n in range(args.events)]
        cpu_before = running.cpu()
        start = time.time()
        publish_backlog(producer, running.tenant_id, ids)
        published_s = time.time() - start
        done = running.wait_for(running.succeeded, args.events, args.events / 100 + 60)
        cpu_after = running.cpu()
        latency_ids = [f"lat-{number}-{n}" for n in range(int(args.rate * args.latency_s))]
        sent_at = open_model(producer, running.tenant_id, latency_ids, args.rate)
        done_latency = running.wait_for(running.succeeded, done + len(latency_ids), 120)
        producer.close()
        sent = by_webhook_id(running.tenant_id, [*ids, *latency_ids])
        received = running.arrivals("receiver", sent)
    last = max(received[i] for i in ids if i in received)
    rate = args.events / (last - start)
    latencies = [received[i] - sent_at[i] for i in latency_ids if i in received]
    return {
        "run": number,
        "events": args.events,
        "delivered": done,
        "publish_s": round(published_s, 2),
        "deliveries_per_s": round(rate, 1),
        "baseline_per_s": round(direct, 1),
        "ratio": round(rate / direct, 3),
        "latency_events": len(latency_ids),
        "latency_delivered": done_latency - done,
        "p50_ms": round(1000 * percentile(latencies, 0.50), 1),
        "p99_ms": round(1000 * percentile(latencies, 0.99), 1),
        "cpu_us_per_delivery": cpu_per_delivery_us(cpu_before, cpu_after, args.events),
        "load": [load_before, load_average()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--dispatchers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--latency-s", type=float, default=20.0)
    parser.add_argument("--baseline", type=int, default=10_000)
    args = parser.parse_args()
    runs.repeat(one_run, args, ("deliveries_per_s", "baseline_per_s", "ratio", "p50_ms", "p99_ms"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
