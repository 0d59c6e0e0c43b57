"""Latency: publish -> receive at a fixed offered rate (open model), one subscription.

    .venv/bin/python -m bench.latency [--rate 300] [--duration-s 30] [--dispatchers 2]
        [--concurrency 8] [--runs 3]

Each run: a fresh stack (`bench/stack.py`), a router and `--dispatchers` dispatchers;
events are scheduled at `--rate`/s for `--duration-s` (the first 2 s are warm-up and not
counted), each measured from its *scheduled* send time to its receipt, so a stalled
publisher or a growing queue counts. Baseline, same run: the latency of direct POSTs of the
dispatcher's `Sender` to the same receiver, one at a time (the floor of the HTTP leg).
Also printed: the CPU each component spent per event from the first publish until the
last receipt (`cpu_us_per_event`, and `cpu_total_us`): near saturation the latency follows
it, so an A/B of two trees (`bench.ab_builds`) says whether a gap is the cost per event.
`--ids sdk` sends ids that carry their day (`common.ids.new_id`) instead of the default
`lat-<run>-<n>`, whose look-up in every events partition is part of what the router pays.
`--publisher async` generates the load from one event loop (`Producer.publish_async`)
instead of 16 threads (`Producer.publish`); the generator shares the two cores with the
stack, and costs 255-271 µs of CPU per event that way against 278-289 with the threads
(docs/benchmarks.md, session 14): most of it is the SDK's publish itself.
`--tap` splits the leg from the router's row to the attempt where the broker routes each
delivery message (`bench/tap.py`): `row_to_broker` and `broker_to_attempt`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench import runs
from bench.pipeline import open_model, start_services
from bench.stack import Stack, by_webhook_id, cpu_per_delivery_us, load_average, percentile, stack
from bench.tap import Tap
from common.ids import new_id
from common.settings import Settings
from common.wire import DeliveryMessage, Event
from dispatcher.http import Sender
from dispatcher.subscriptions import Endpoint
from producer import Producer

WARMUP_S = 2.0


def direct_latencies(url: str, secret: str, count: int) -> list[float]:
    sender = Sender(Settings(allow_private_targets=True, dispatcher_concurrency=1))
    endpoint = Endpoint(id="direct", tenant_id="bench", url=url, status="active", secret=secret)
    took = []
    for n in range(count):
        event = Event(tenant="bench", type="order.created", id=f"direct-{n}", data={"n": n})
        delivery = DeliveryMessage(delivery_id=f"d-{n}", event_id=event.id, tenant="bench",
                                   subscription_id="direct", attempt=1, event=event)  # fmt: skip
        started = time.perf_counter()
        assert sender.send(endpoint, delivery).status_code == 200
        took.append(time.perf_counter() - started)
        time.sleep(0.002)
    sender.close()
    return took


async def open_model_async(
    producer: Producer, tenant_id: str, ids: list[str], rate: float
) -> dict[str, float]:
    """`pipeline.open_model` on one event loop: each arrival is a task awaiting its own
    confirm (`Producer.publish_async`), as the requests of an async web service would be,
    so the generator needs no thread per waiting publish. Returns each scheduled time."""
    sent_at: dict[str, float] = {}
    pending: set[asyncio.Task[str]] = set()
    begin = time.time() + 0.5
    for n, event_id in enumerate(ids):
        scheduled = begin + n / rate
        pause = scheduled - time.time()
        if pause > 0:
            await asyncio.sleep(pause)
        sent_at[event_id] = scheduled
        task = asyncio.create_task(
            producer.publish_async("order.created", {"n": n}, tenant=tenant_id, id=event_id)
        )
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    return sent_at


def one_run(args: argparse.Namespace, number: int, workdir: Path) -> dict[str, Any]:
    load_before = load_average()
    with stack(workdir) as running:
        url = running.receiver("receiver") + "/hooks"
        _, secret = running.subscribe(url, ["order.*"])
        direct = direct_latencies(url, secret, 1000)
        start_services(running, args)
        settings = Settings(database_url=running.database_url, broker_url=running.broker_url)
        count = int(args.rate * args.duration_s)
        ids = [f"lat-{number}-{n}" for n in range(count)] if args.ids == "own" else [
            new_id("evt") for _ in range(count)
        ]  # fmt: skip
        tap = Tap(running.broker_url) if args.tap else None
        with Producer(settings) as producer:
            cpu_before = running.cpu()
            if args.publisher == "threads":
                sent_at = open_model(producer, running.tenant_id, ids, args.rate)
            else:
                sent_at = asyncio.run(open_model_async(producer, running.tenant_id, ids, args.rate))
        done = running.wait_for(running.succeeded, len(ids), 120)
        cpu = cpu_per_delivery_us(cpu_before, running.cpu(), len(ids))
        received = running.arrivals("receiver", by_webhook_id(running.tenant_id, ids))
        first = min(sent_at.values()) + WARMUP_S
        if tap is not None:
            tap.close()
        legs = breakdown(running, sent_at, received, first, tap.seen if tap else {})
    latencies = [received[i] - at for i, at in sent_at.items() if at >= first and i in received]
    return {
        "run": number,
        "rate": args.rate,
        "events": len(ids),
        "delivered": done,
        "p50_ms": round(1000 * percentile(latencies, 0.50), 1),
        "p99_ms": round(1000 * percentile(latencies, 0.99), 1),
        "max_ms": round(1000 * max(latencies), 1),
        "direct_p50_ms": round(1000 * percentile(direct, 0.50), 2),
        "direct_p99_ms": round(1000 * percentile(direct, 0.99), 2),
        "legs_p50_ms": legs,
        "cpu_us_per_event": cpu,
        "cpu_total_us": sum(cpu.values()),
        "load": [load_before, load_average()],
    }


def breakdown(
    running: Stack,
    sent_at: dict[str, float],
    received: dict[str, float],
    first: float,
    tapped: dict[str, float],
) -> dict[str, float]:
    """Median of each leg, from the rows' own times: scheduled -> the router's write of the
    delivery row -> the dispatcher's start of the attempt -> the receipt; with `tapped`
    (delivery id -> its message's arrival at the broker) the middle leg in two."""
    query = text(
        "SELECT d.id, d.event_id, extract(epoch FROM d.created_at),"
        " extract(epoch FROM a.created_at)"
        " FROM deliveries d JOIN attempts a ON a.delivery_id = d.id AND a.attempt = 1"
    )
    with running.sessions() as session:
        rows = session.execute(query).tuples().all()
    legs: dict[str, list[float]] = {"to_router_write": [], "to_attempt": [], "to_receipt": [],
                                    "row_to_broker": [], "broker_to_attempt": []}  # fmt: skip
    for delivery_id, event_id, routed, attempted in rows:
        at = sent_at.get(event_id)
        if at is None or at < first or event_id not in received:
            continue
        legs["to_router_write"].append(float(routed) - at)
        legs["to_attempt"].append(float(attempted) - float(routed))
        legs["to_receipt"].append(received[event_id] - float(attempted))
        if delivery_id in tapped:
            legs["row_to_broker"].append(tapped[delivery_id] - float(routed))
            legs["broker_to_attempt"].append(float(attempted) - tapped[delivery_id])
    return {k: round(1000 * percentile(v, 0.5), 1) for k, v in legs.items() if v}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--duration-s", type=float, default=30.0)
    parser.add_argument("--dispatchers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--ids", choices=("own", "sdk"), default="own",
        help="events' ids: the benchmark's own (`lat-…`, which the router looks up in every "
        "events partition) or ones that carry their day, as the SDK and the API make them",
    )  # fmt: skip
    parser.add_argument(
        "--publisher", choices=("threads", "async"), default="threads",
        help="the load generator: 16 threads calling `Producer.publish` (the default, as "
        "earlier figures were taken) or one event loop calling `Producer.publish_async`, "
        "which takes a little less of the CPU the stack shares with it",
    )  # fmt: skip
    parser.add_argument("--tap", action="store_true",
                        help="also time each delivery message's arrival at the broker")  # fmt: skip
    args = parser.parse_args()
    runs.repeat(one_run, args, ("p50_ms", "p99_ms", "direct_p50_ms", "direct_p99_ms"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
