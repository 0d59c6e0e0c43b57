"""Fan-out: every event matches `--subscriptions` subscriptions (one receiver, a path each).

    .venv/bin/python -m bench.fanout [--subscriptions 100] [--events 200] [--dispatchers 2]
        [--concurrency 8] [--runs 3] [--baseline 10000]

Each run: a fresh stack (`bench/stack.py`), a router and `--dispatchers` dispatchers;
`--events` events published as fast as the SDK goes, each becoming `--subscriptions`
deliveries (rows and attempts persisted). Reported: deliveries/s from the first publish to
the last receipt, next to the direct-POST baseline of the same run, and CPU per delivery.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from bench import runs
from bench.pipeline import publish_backlog, start_services
from bench.stack import baseline, by_webhook_id, cpu_per_delivery_us, load_average, stack
from common.settings import Settings
from producer import Producer


def one_run(args: argparse.Namespace, number: int, workdir: Path) -> dict[str, Any]:
    load_before = load_average()
    count = args.events * args.subscriptions
    with stack(workdir) as running:
        base = running.receiver("receiver")
        running.subscribe_many(
            [(f"{base}/hooks/{n}", ["order.*"]) for n in range(args.subscriptions)]
        )
        _, secret = running.subscribe(f"{base}/baseline", ["baseline.only"])
        direct = baseline(f"{base}/baseline", secret, args.baseline,
                          args.concurrency * args.dispatchers)  # fmt: skip
        start_services(running, args)
        cpu_before = running.cpu()
        start = time.time()
        with Producer(Settings(database_url=running.database_url,
                               broker_url=running.broker_url)) as producer:  # fmt: skip
            publish_backlog(producer, running.tenant_id, [f"f-{n}" for n in range(args.events)])
        done = running.wait_for(running.succeeded, count, count / 100 + 60)
        cpu_after = running.cpu()
        sent = by_webhook_id(running.tenant_id, (f"f-{n}" for n in range(args.events)))
        received = running.arrival_times("receiver", sent)
    times = [at for _, at in received]
    rate = count / (max(times) - start)
    return {
        "run": number,
        "events": args.events,
        "subscriptions": args.subscriptions,
        "deliveries": count,
        "succeeded": done,
        "received": len(times),
        "deliveries_per_s": round(rate, 1),
        "baseline_per_s": round(direct, 1),
        "ratio": round(rate / direct, 3),
        "cpu_us_per_delivery": cpu_per_delivery_us(cpu_before, cpu_after, count),
        "load": [load_before, load_average()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=100)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--dispatchers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", type=int, default=10_000)
    args = parser.parse_args()
    runs.repeat(one_run, args, ("deliveries_per_s", "baseline_per_s", "ratio"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
