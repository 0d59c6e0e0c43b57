"""Drain: a backlog of queued deliveries, emptied by dispatcher processes; their memory.

    .venv/bin/python -m bench.drain [--deliveries 20000] [--dispatchers 2] [--concurrency 8]
        [--processes N] [--runs 3] [--baseline 10000] [--profile out.txt]

Each run: the router turns `--deliveries` events into as many queued deliveries (one
subscription per event; rows in PostgreSQL, messages in the `hookline.deliveries*` queues) and is
stopped; then `--dispatchers` processes start and drain the queue, each attempt and
delivery state persisted. With `--processes N`, one `hookline dispatcher --processes N`
(a supervisor and N children, issue 17) drains instead of separate dispatchers; its RSS
and CPU are the whole tree's. Reported: deliveries/s from the first receipt to the last (and
from the dispatchers' start), next to the direct-POST baseline of the same run; CPU per
delivery of each component; dispatcher RSS at the start, its peak and at the end of the
drain (the memory figure, with `--deliveries 100000`). `--profile` runs py-spy (`--gil`:
where the interpreter's time goes) on the first dispatcher for the whole drain (py-spy
must be installed in the virtualenv).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from bench import runs
from bench.pipeline import publish_backlog
from bench.stack import (
    Sampler,
    baseline,
    by_webhook_id,
    cpu_per_delivery_us,
    load_average,
    profile,
    stack,
    stop_profile,
    tree_rss_mib,
)
from common.settings import Settings
from producer import Producer


def one_run(args: argparse.Namespace, number: int, workdir: Path) -> dict[str, Any]:
    load_before = load_average()
    count = args.deliveries
    with stack(workdir) as running:
        url = running.receiver("receiver") + "/hooks"
        _, secret = running.subscribe(url, ["order.*"])
        workers = args.processes or args.dispatchers
        direct = baseline(url, secret, args.baseline, args.concurrency * workers)
        running.start("router", "router")
        with Producer(Settings(database_url=running.database_url,
                               broker_url=running.broker_url)) as producer:  # fmt: skip
            publish_backlog(producer, running.tenant_id, [f"d-{n}" for n in range(count)])
        queued = running.wait_for(running.deliveries_queued, count, count / 50 + 60, tick_s=1.0)
        running.stop("router")
        assert queued == count, f"only {queued} of {count} deliveries queued"
        cpu_before = running.cpu()
        started = time.time()
        concurrency = ("--concurrency", str(args.concurrency))
        if args.processes:
            names = ["dispatcher-0"]
            running.start(names[0], "dispatcher", *concurrency, "--processes", str(args.processes))
        else:
            names = [f"dispatcher-{n}" for n in range(args.dispatchers)]
            for name in names:
                running.start(name, "dispatcher", *concurrency)
        pid = running.procs[names[0]].pid
        profiler = profile(pid, args.profile) if args.profile else None

        def rss() -> list[float]:
            return [sum(tree_rss_mib(running.procs[name].pid)) for name in names]

        with Sampler(rss, every_s=0.5) as sampler:
            done = running.wait_for(running.succeeded, count, count / 100 + 120)
        cpu_after = running.cpu()
        stop_profile(profiler)
        end_rss = rss()
        sent = by_webhook_id(running.tenant_id, (f"d-{n}" for n in range(count)))
        received = running.arrival_times("receiver", sent)
    times = sorted(at for _, at in received)
    first, last = times[0], times[-1]
    rate = count / (last - first)
    peaks = [round(max(s[i] for s in sampler.values), 1) for i in range(len(names))]
    return {
        "run": number,
        "mode": f"one dispatcher, {args.processes} processes"
        if args.processes
        else f"{args.dispatchers} dispatchers",
        "deliveries": count,
        "succeeded": done,
        "received": len(received),
        "deliveries_per_s": round(rate, 1),
        "per_s_from_start": round(count / (last - started), 1),
        "baseline_per_s": round(direct, 1),
        "ratio": round(rate / direct, 3),
        "rss_mib_start": [round(v, 1) for v in sampler.values[0]] if sampler.values else [],
        "rss_mib_peak": peaks,
        "rss_mib_end": [round(v, 1) for v in end_rss],
        "cpu_us_per_delivery": cpu_per_delivery_us(cpu_before, cpu_after, count),
        "load": [load_before, load_average()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument("--dispatchers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--processes", type=int, default=0,
                        help="one dispatcher, this many processes, not --dispatchers")  # fmt: skip
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", type=int, default=10_000)
    parser.add_argument("--profile", help="py-spy raw output for the first dispatcher")
    args = parser.parse_args()
    runs.repeat(one_run, args, ("deliveries_per_s", "baseline_per_s", "ratio"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
