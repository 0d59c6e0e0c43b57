"""Routing scale: the router alone, with few and with many subscriptions, one matching.

    .venv/bin/python -m bench.routing [--events 20000] [--sizes 10,10000] [--runs 3]

Each run, for each size: a fresh stack (`bench/stack.py`) with that many active
subscriptions of one tenant, each for its own event type (`scale.<n>`), so exactly one
matches every event (`scale.0`); `--events` events are queued while no router runs, then
one `hookline router` routes them (event and delivery rows written, delivery messages
published, confirmed). Reported per size: events/s from the first event row written until
the last delivery message is confirmed on the deliveries queue (`rows_per_s`: until the last
event row), CPU per event by component, and the ratio of the largest size to the smallest
in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stack import cpu_per_delivery_us, load_average, profile, stack, stop_profile
from common.settings import Settings
from common.transport import open_transport
from common.transport import topology as tp
from producer import Producer


def route_with(size: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    with stack(workdir) as running:
        url = "http://127.0.0.1:9/never-called"  # nothing is dispatched in this benchmark
        running.subscribe_many([(url, [f"scale.{n}"]) for n in range(size)])
        # The queues exist before anything is published: a router declares and leaves.
        running.start("declare", "router")
        running.wait_for(lambda: int(tp.EVENTS in running.queue_names()), 1, 30)
        running.stop("declare")
        with Producer(Settings(database_url=running.database_url,
                               broker_url=running.broker_url)) as producer:  # fmt: skip
            ids = [f"r-{n}" for n in range(args.events)]
            for offset in range(0, len(ids), 500):
                producer.publish_batch(
                    [{"tenant": running.tenant_id, "type": "scale.0", "id": i, "data": {"n": 1}}
                     for i in ids[offset : offset + 500]]
                )  # fmt: skip
        running.start("router", "router", metrics=False)
        with open_transport(running.broker_url) as broker:
            # Timed from the first event written, so the router's start-up is not counted,
            # to the last delivery message confirmed (counted exactly, by a passive declare).
            running.wait_for(running.events, 1, 60, tick_s=0.02)
            cpu_before, start, first = running.cpu(), time.time(), running.events()
            profiler = profile(running.procs["router"].pid, args.profile) if args.profile else None
            done = running.wait_for(running.events, args.events, args.events / 100 + 60, 0.1)
            rows_s = time.time() - start
            queues = tp.build(()).delivery_queues
            queued = running.wait_for(
                lambda: sum(broker.queue_depth(q) for q in queues), done, 60, 0.05
            )
            elapsed = time.time() - start
            cpu_after = running.cpu()
            stop_profile(profiler)
        deliveries = running.deliveries()
    return {
        "subscriptions": size,
        "routed": done,
        "deliveries": deliveries,
        "queued": queued,
        "events_per_s": round((done - first) / elapsed, 1),
        "rows_per_s": round((done - first) / rows_s, 1),
        "cpu_us_per_event": cpu_per_delivery_us(cpu_before, cpu_after, done - first),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--sizes", default="10,10000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", help="py-spy raw output for the router (last size wins)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    ratios = []
    per_size: dict[int, list[float]] = {s: [] for s in sizes}
    with tempfile.TemporaryDirectory() as workdir:
        for number in range(args.runs):
            load_before = load_average()
            results = [route_with(size, args, Path(workdir)) for size in sizes]
            for result in results:
                per_size[result["subscriptions"]].append(result["events_per_s"])
            ratio = results[-1]["events_per_s"] / results[0]["events_per_s"]
            ratios.append(ratio)
            print(json.dumps({"run": number, "sizes": results, "ratio": round(ratio, 3),
                              "load": [load_before, load_average()]}), flush=True)  # fmt: skip
    medians = {str(s): statistics.median(v) for s, v in per_size.items()}
    print(json.dumps({"median_events_per_s": medians, "median_ratio": statistics.median(ratios),
                      "runs": args.runs}), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
