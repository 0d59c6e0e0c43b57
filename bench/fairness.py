"""Fairness: a burst from one tenant queued ahead, other tenants' latency beside it.

    .venv/bin/python -m bench.fairness [--burst 100000] [--light-tenants 1]
        [--light-rate 10] [--dispatchers 2] [--concurrency 8] [--runs 3]

Each run (`bench/stack.py`: a fresh vhost and database, receiver processes, a router and
`--dispatchers` dispatchers), two phases on the same stack:
- alone: `--burst` events of the heavy tenant (one subscription) are queued with no
  dispatcher running, then the dispatchers start and drain them: the burst's rate alone,
  from its first receipt until 99 % had arrived (`DRAINED`; and to the last, `*_full`);
- shared: another burst the same size is queued, the dispatchers start again, and from
  their start until the burst is drained `--light-tenants` other tenants (one subscription
  each, to a second receiver) publish `--light-rate` events per second between them,
  through the SDK. A lone light tenant is picked in another shard than the heavy one, or
  in the same one with `--same-shard`. Reported: the burst's rate beside them and its
  ratio to the alone rate (same run), and the light tenants' latency from each event's
  scheduled publish time to its receipt (p50/p99/max), also for those hashed to the heavy
  tenant's own shard. Per phase also: the deliveries the lanes deferred, and each
  process's CPU per burst delivery (`stack.cpu`; the broker's is the whole machine's).
Even runs take the alone phase first, odd runs the shared one (a machine whose load
drifts during a run then does not favour one phase every time). Both phases start from the
same state: the database's statistics are refreshed once the burst is queued (`analyze`),
the dispatchers start together, and the drain is watched through a count that reads only
that phase's rows.
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

from bench import runs
from bench.fairness_legs import light_legs
from bench.pipeline import publish_backlog
from bench.stack import (
    BOX,
    Stack,
    by_webhook_id,
    cpu_per_delivery_us,
    load_average,
    percentile,
    stack,
)
from common.db.models import Delivery
from common.db.statuses import DeliveryStatus
from common.settings import Settings
from common.transport import topology as tp
from common.wire import utcnow, webhook_id_for
from producer import Producer
from tests import builders

PUBLISHERS = 16
# The drain rate counts the burst up to this share of its receipts. The last deliveries of
# a burst include those the endpoint lanes deferred to the soonest retry tier (5 s) when
# the lane held more than its park budget (architecture §3): a few dozen, whose return
# adds up to 5 s to a drain when they happen to be deferred near its end, in either
# phase. The whole span is reported too (`*_full`).
DRAINED = 0.99


def queued(running: Stack) -> int:
    """Messages ready in every delivery queue (shards, overflow, unsharded)."""
    return running.deliveries_queued()


def light_tenants(running: Stack, url: str, count: int, same_shard: bool) -> list[str]:
    """`count` tenants with a subscription each; a lone one is picked in the heavy tenant's
    shard with `same_shard`, in another one without (many fall where the hash puts them)."""
    shards = Settings().delivery_shards
    heavy = tp.shard_of(running.tenant_id, shards)
    ids = [f"ten_light_{n}" for n in range(count)]
    if count == 1:
        ids = [next(f"ten_light_{n}" for n in range(10_000)
                    if (tp.shard_of(f"ten_light_{n}", shards) == heavy) == same_shard)]  # fmt: skip
    with running.sessions.begin() as session:
        for tenant_id in ids:
            builders.tenant(session, name=tenant_id, id=tenant_id)
        for tenant_id in ids:
            builders.subscription(session, tenant_id, url, event_types=["order.*"], box=BOX)
    return ids


def analyze(running: Stack) -> None:
    """Statistics of every table, as autovacuum keeps them in a deployment. This machine's
    PostgreSQL runs with autovacuum off (its CI configuration), so a day's partition has
    none: the planner then joins each batch the settler updates by reading the whole
    partition, and a phase drained with the other phase's burst already in it ran at about
    half the rate of the first phase, whichever phase that was (30,000: 0.50 alone first,
    1.69 shared first)."""
    with running.sessions.begin() as session:
        session.execute(text("ANALYZE"))


def start_dispatchers(running: Stack, args: argparse.Namespace) -> None:
    running.start_together(
        {f"dispatcher-{n}": ("dispatcher", "--concurrency", str(args.concurrency))
         for n in range(args.dispatchers)}
    )  # fmt: skip


def burst_succeeded(running: Stack, since: datetime) -> int:
    """The heavy tenant's deliveries routed since `since` that succeeded: one phase's burst,
    read through its index on (tenant, status, created_at), so that watching the drain
    costs the same in both phases (a count of every succeeded row reads the other
    phase's too, and grows with it)."""
    with running.sessions() as session:
        query = (
            select(func.count())
            .select_from(Delivery)
            .where(
                Delivery.tenant_id == running.tenant_id,
                Delivery.status == DeliveryStatus.SUCCEEDED,
                Delivery.created_at >= since,
            )
        )
        return int(session.scalar(query) or 0)


def wait_drained(running: Stack, args: argparse.Namespace, since: datetime) -> None:
    done = running.wait_for(
        lambda: burst_succeeded(running, since), args.burst, args.burst / 50 + 300, tick_s=0.5
    )
    assert done >= args.burst, f"only {done} of {args.burst} deliveries succeeded"


def stop_dispatchers(running: Stack, args: argparse.Namespace) -> None:
    for n in range(args.dispatchers):
        running.stop(f"dispatcher-{n}")


def publish_light(
    producer: Producer, tenants: list[str], rate: float, prefix: str, stop: threading.Event
) -> dict[str, tuple[str, float]]:
    """Events at `rate`/s over `tenants` in turn until `stop`: id -> (tenant, scheduled)."""
    sent: dict[str, tuple[str, float]] = {}
    begin = time.time() + 0.2
    with ThreadPoolExecutor(PUBLISHERS) as publishers:
        n = 0
        while not stop.is_set():
            scheduled = begin + n / rate
            pause = scheduled - time.time()
            if pause > 0:
                time.sleep(pause)
            tenant, event_id = tenants[n % len(tenants)], f"{prefix}-{n}"
            sent[event_id] = (tenant, scheduled)
            publishers.submit(producer.publish, "order.created", {"n": n}, tenant=tenant,
                              id=event_id)  # fmt: skip
            n += 1
    return sent


def drained_beside_light(
    producer: Producer,
    running: Stack,
    args: argparse.Namespace,
    light: list[str],
    number: int,
    since: datetime,
) -> dict[str, tuple[str, float]]:
    """Publish the light tenants' events while the dispatchers drain the queued burst
    (routed since `since`): what was sent, id -> (tenant, scheduled time). At a rate of 0
    nothing is published: both phases drain alone, and their ratio is the noise floor."""
    if args.light_rate <= 0:
        wait_drained(running, args, since)
        return {}
    stop = threading.Event()
    sent: dict[str, tuple[str, float]] = {}
    publisher = threading.Thread(
        target=lambda: sent.update(publish_light(producer, light, args.light_rate,
                                                 f"l{number}", stop))
    )  # fmt: skip
    publisher.start()
    wait_drained(running, args, since)
    stop.set()
    publisher.join()
    return sent


def rate_of(times: list[float], share: float = 1.0) -> float:
    """Receipts per second from the first until `share` of them had arrived."""
    times = sorted(times)
    count = max(2, math.ceil(share * len(times)))
    return count / (times[count - 1] - times[0])


def deferred(running: Stack, args: argparse.Namespace) -> int:
    """Deliveries the dispatchers deferred without an attempt (full lanes, open circuits)."""
    sample = 'hookline_delivery_attempts_total{outcome="deferred"'
    return round(sum(running.metric(f"dispatcher-{n}", sample) for n in range(args.dispatchers)))


def one_run(args: argparse.Namespace, number: int, workdir: Path) -> dict[str, Any]:
    load_before = load_average()
    shards = Settings().delivery_shards
    with stack(workdir) as running:
        heavy_url = running.receiver("heavy") + "/hooks"
        running.subscribe(heavy_url, ["order.*"])
        light_url = running.receiver("light") + "/hooks"
        light = light_tenants(running, light_url, args.light_tenants, args.same_shard)
        running.start("router", "router")
        settings = Settings(database_url=running.database_url, broker_url=running.broker_url)
        sent: dict[str, tuple[str, float]] = {}
        cpu: dict[str, dict[str, float]] = {}
        held: dict[str, int] = {}
        shared_start = 0.0
        in_shard: dict[str, int] = {}
        with Producer(settings) as producer:
            # Odd runs drain the shared burst first, so that a machine growing busier (or
            # calmer) over a run does not always favour the same phase.
            order = ("a", "s") if number % 2 == 0 else ("s", "a")
            for phase in order:
                ids = [f"{phase}-{n}" for n in range(args.burst)]
                since = utcnow()
                publish_backlog(producer, running.tenant_id, ids)
                assert running.wait_for(lambda: queued(running), args.burst, 600, 1.0) == args.burst
                own = running.queue_depth(tp.shard_queue(tp.shard_of(running.tenant_id, shards)))
                in_shard[phase] = own
                analyze(running)
                start_dispatchers(running, args)
                shared_start = time.time() if phase == "s" else shared_start
                before = running.cpu()
                if phase == "a":
                    wait_drained(running, args, since)
                else:
                    sent = drained_beside_light(producer, running, args, light, number, since)
                cpu[phase] = cpu_per_delivery_us(before, running.cpu(), args.burst)
                held[phase] = deferred(running, args)
                stop_dispatchers(running, args)
            running.wait_for(running.succeeded, 2 * args.burst + len(sent), 120)
        burst = (f"{phase}-{n}" for phase in order for n in range(args.burst))
        heavy = running.arrival_times("heavy", by_webhook_id(running.tenant_id, burst))
        light_ids = {webhook_id_for(tenant, i): i for i, (tenant, _) in sent.items()}
        received = running.arrivals("light", light_ids)
        where = light_legs(running, sent, received, shared_start) if sent else {}
    alone_times = [at for i, at in heavy if i.startswith("a-")]
    shared_times = [at for i, at in heavy if i.startswith("s-")]
    alone, shared = rate_of(alone_times, DRAINED), rate_of(shared_times, DRAINED)
    alone_full, shared_full = rate_of(alone_times), rate_of(shared_times)
    own_shard = tp.shard_of(running.tenant_id, shards)
    latencies = [received[i] - at for i, (_, at) in sent.items() if i in received]
    beside = [
        received[i] - at
        for i, (tenant, at) in sent.items()
        if i in received and tp.shard_of(tenant, shards) == own_shard
    ]
    return {
        "run": number,
        "first": "alone" if number % 2 == 0 else "shared",
        "burst": args.burst,
        "light_tenants": args.light_tenants,
        "light_events": len(sent),
        "light_received": len(latencies),
        "burst_alone_per_s": round(alone, 1),
        "burst_shared_per_s": round(shared, 1),
        "burst_ratio": round(shared / alone, 3),
        "burst_alone_full_per_s": round(alone_full, 1),
        "burst_shared_full_per_s": round(shared_full, 1),
        "burst_ratio_full": round(shared_full / alone_full, 3),
        "in_own_shard": in_shard["s"],
        "deferred_alone": held["a"],
        "deferred_shared": held["s"],
        "cpu_us_alone": cpu["a"],
        "cpu_us_shared": cpu["s"],
        "light_p50_ms": round(1000 * percentile(latencies, 0.50), 1) if latencies else None,
        "light_p99_ms": round(1000 * percentile(latencies, 0.99), 1) if latencies else None,
        "light_max_ms": round(1000 * max(latencies), 1) if latencies else None,
        "same_shard_events": len(beside),
        "same_shard_p99_ms": round(1000 * percentile(beside, 0.99), 1) if beside else None,
        **where,
        "load": [load_before, load_average()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=100_000)
    parser.add_argument("--light-tenants", type=int, default=1)
    parser.add_argument("--light-rate", type=float, default=10.0,
                        help="events/s of all light tenants; 0: none (noise floor)")  # fmt: skip
    parser.add_argument("--same-shard", action="store_true",
                        help="a lone light tenant hashed to the heavy tenant's shard")  # fmt: skip
    parser.add_argument("--dispatchers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    keys = ["burst_alone_per_s", "burst_shared_per_s", "burst_ratio", "burst_ratio_full"]
    if args.light_rate > 0:
        keys += ["light_p50_ms", "light_p99_ms", "light_max_ms"]
    runs.repeat(one_run, args, keys)
    return 0


if __name__ == "__main__":
    sys.exit(main())
