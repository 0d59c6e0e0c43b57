"""CPU per event when events come one at a time, against when they stream.

    .venv/bin/python -m bench.trickle [--tenants 1000] [--trickle 10] [--stream 300]
        [--seconds 30] [--no-warm] [--runs 3] [--profile /tmp/trickle]

Each run: one stack (`bench/stack.py`: a router and one dispatcher delivering to a
receiver on 127.0.0.1), `--tenants` tenants with a subscription each, each sent one event
first (unless `--no-warm`: then the trickle is every subscription's first delivery, and
the dispatcher's caches are cold, as in a benchmark that starts it). Three phases of
`--seconds`: idle (nothing published: what the processes and the broker spend standing
still), a trickle (`--trickle` events/s over the tenants in turn), and a stream
(`--stream` events/s, the same way: the same-run baseline). For each component the CPU of
a phase less the idle phase's, per event: the trickle's, the stream's, and their ratio.
With `--profile PREFIX`, py-spy samples the router and the dispatcher through the trickle
(`bench.stack.profile`: where their CPU goes) into `PREFIX-router-N.txt` and
`PREFIX-dispatcher-N.txt` for run N.

Why: with 1,000 tenants beside a burst (`bench.fairness`) the burst drained at 0.72 of its
rate alone with 50 light events/s between them, and 0.85 with 10/s, on a machine the burst
already saturates. What the light events take from it is what they cost each, and a lone
event costs several times what an event in a stream does (batches of one, every thread and
process woken for it).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench import runs
from bench.fairness import light_tenants, publish_light
from bench.stack import Stack, load_average, profile, stack, stop_profile
from common.settings import Settings
from producer import Producer

COMPONENTS = ("router", "dispatcher", "rabbitmq", "postgres", "bench")


def _phase(running: Stack, producer: Producer, tenants: list[str], rate: float, name: str,
           seconds: float, before_phase: int, profile_to: str | None = None,
           ) -> tuple[int, dict[str, float]]:  # fmt: skip
    """Events sent, and CPU seconds per component, over one phase (until each of its
    events, and the `before_phase` ones, was delivered); `profile_to`: py-spy's output
    prefix for the router's and the dispatcher's samples over the phase."""
    profilers = [
        profile(running.procs[c].pid, f"{profile_to}-{c}.txt") for c in ("router", "dispatcher")
    ] if profile_to else []  # fmt: skip
    before = running.cpu()
    sent: dict[str, Any] = {}
    stop = threading.Event()
    publisher = threading.Thread(
        target=lambda: sent.update(publish_light(producer, tenants, rate, name, stop))
    )
    if rate:
        publisher.start()
    time.sleep(seconds)
    stop.set()
    if rate:
        publisher.join()
    expected = before_phase + len(sent)
    assert running.wait_for(running.succeeded, expected, 120) == expected, "events were lost"
    after = running.cpu()
    for profiler in profilers:
        stop_profile(profiler)
    return len(sent), {c: after[c] - before[c] for c in COMPONENTS}


def _warm(running: Stack, producer: Producer, tenants: list[str]) -> int:
    """One event for each tenant, all delivered: the count."""
    producer.publish_batch(
        [{"tenant": t, "type": "order.created", "data": {"warm": True}} for t in tenants]
    )
    assert running.wait_for(running.succeeded, len(tenants), 120) == len(tenants)
    return len(tenants)


def one_run(args: argparse.Namespace, number: int, workdir: Path) -> dict[str, Any]:
    load_before = load_average()
    with stack(workdir) as running:
        url = running.receiver("light") + "/hooks"
        tenants = light_tenants(running, url, args.tenants, same_shard=False)
        running.start("router", "router")
        running.start("dispatcher", "dispatcher", "--concurrency", "16")
        settings = Settings(database_url=running.database_url, broker_url=running.broker_url)
        with Producer(settings) as producer:
            time.sleep(3)  # start-up settles
            # Every tenant once first, so that the phases measure processes that have run a
            # while (caches of subscriptions, header sets, clean endpoints warm), not a start.
            warmed = _warm(running, producer, tenants) if args.warm else 0
            seconds = args.seconds
            _, idle = _phase(running, producer, tenants, 0, "idle", seconds, warmed)
            profile_to = f"{args.profile}-{number}" if args.profile else None
            trickled, trickle = _phase(
                running, producer, tenants, args.trickle, "trickle", seconds, warmed, profile_to
            )
            streamed, stream = _phase(
                running, producer, tenants, args.stream, "stream", seconds, warmed + trickled
            )
    trickle_us = {c: round(1e6 * (trickle[c] - idle[c]) / trickled) for c in COMPONENTS}
    stream_us = {c: round(1e6 * (stream[c] - idle[c]) / streamed) for c in COMPONENTS}
    total_trickle, total_stream = sum(trickle_us.values()), sum(stream_us.values())
    return {
        "run": number,
        "tenants": args.tenants,
        "warm": args.warm,
        "events": {"trickle": trickled, "stream": streamed},
        "idle_cpu_ms_per_s": {c: round(1000 * idle[c] / args.seconds, 1) for c in COMPONENTS},
        "trickle_us_per_event": trickle_us,
        "stream_us_per_event": stream_us,
        "trickle_total_us": total_trickle,
        "stream_total_us": total_stream,
        "trickle_to_stream": round(total_trickle / total_stream, 2),
        "load": [load_before, load_average()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--trickle", type=float, default=10.0)
    parser.add_argument("--stream", type=float, default=300.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--no-warm", dest="warm", action="store_false", help="measure from a cold start"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", help="py-spy output prefix for the trickle phase")
    args = parser.parse_args()
    keys = ("trickle_total_us", "stream_total_us", "trickle_to_stream")
    runs.repeat(one_run, args, keys)
    return 0


if __name__ == "__main__":
    sys.exit(main())
