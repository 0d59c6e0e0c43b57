"""Isolation: ten endpoints at a fixed rate each; one hangs past the timeout for a while.

    .venv/bin/python -m bench.isolation [--endpoints 10] [--rate-per-endpoint 50]
        [--healthy-s 30] [--hang-s 120] [--dispatchers 2] [--concurrency 8] [--runs 1]

Each run: a fresh stack (`bench/stack.py`) and a subscription per endpoint, each for its
own event type. The first `--endpoints - 1` are paths on a receiver process; the last is a
receiver in this process that, during the hang phase, holds every request past the
dispatchers' deadline (`HOOKLINE_REQUEST_TIMEOUT_S`, 2 s here), then answers 200 again.
Events are published in an open model: every 20 ms one event per endpoint, each measured
from its scheduled time. Phases: warm-up 5 s, healthy `--healthy-s`, hang `--hang-s`,
recovery (publishing goes on 10 s, then until everything is delivered).

Reported per healthy endpoint: its receive rate during the hang as a share of its offered
rate, and its p99 latency during the hang against its own p99 in the healthy phase (same
run); for the hanging endpoint, how long its backlog took to drain after recovery; and
whether anything was lost (every event's delivery row `succeeded`, every event of the hung
endpoint received after it recovered).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.stack import by_webhook_id, load_average, percentile, stack
from common.settings import Settings
from hookline.receiver import Receiver, Reply
from producer import Producer

TICK_S = 0.02
WARMUP_S = 5.0
RECOVERY_PUBLISH_S = 10.0
TIMEOUT_S = 2.0
PUBLISHERS = 16


class Publisher:
    """One event per endpoint every tick, until stopped; remembers each scheduled time."""

    def __init__(self, producer: Producer, tenant_id: str, endpoints: int, rate: float) -> None:
        self.sent_at: dict[str, float] = {}
        self._producer = producer
        self._tenant_id = tenant_id
        self._endpoints = endpoints
        self._every_s = 1.0 / rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.begin = time.time() + 0.2

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        # Each tick's batch on one of PUBLISHERS threads, as many producers would: one
        # waiting for its confirm does not hold back the next tick (a stall behind all of
        # them still counts, in the latency of the events it delays).
        with ThreadPoolExecutor(PUBLISHERS) as publishers:
            self._ticks(publishers)

    def _ticks(self, publishers: ThreadPoolExecutor) -> None:
        n = 0
        while not self._stop.is_set():
            scheduled = self.begin + n * self._every_s
            pause = scheduled - time.time()
            if pause > 0:
                time.sleep(pause)
            batch = []
            for e in range(self._endpoints):
                event_id = f"iso-{e}-{n}"
                self.sent_at[event_id] = scheduled
                batch.append({"tenant": self._tenant_id, "type": f"iso.e{e}", "id": event_id,
                              "data": {"n": n}})  # fmt: skip
            publishers.submit(self._producer.publish_batch, batch)
            n += 1


def window_stats(
    sent_at: dict[str, float],
    received: dict[str, float],
    endpoint: int,
    window: tuple[float, float],
    rate: float,
) -> dict[str, float]:
    """Receive rate (share of offered) and latency of one endpoint in a time window."""
    start, end = window
    prefix = f"iso-{endpoint}-"
    ids = [i for i, at in sent_at.items() if i.startswith(prefix) and start <= at < end]
    arrived = [received[i] for i in received if i.startswith(prefix) and start <= received[i] < end]
    latencies = [received[i] - sent_at[i] for i in ids if i in received]
    return {
        "rate_share": round(len(arrived) / ((end - start) * rate), 3),
        "p50_ms": round(1000 * percentile(latencies, 0.5), 1) if latencies else -1,
        "p99_ms": round(1000 * percentile(latencies, 0.99), 1) if latencies else -1,
        "missing": len([i for i in ids if i not in received]),
    }


def one_run(args: argparse.Namespace, number: int, workdir: Path) -> dict[str, Any]:
    load_before = load_average()
    rate = args.rate_per_endpoint
    hanging = threading.Event()
    hold = Reply(200, delay_s=TIMEOUT_S * 3)
    hung = Receiver(respond=lambda _: hold if hanging.is_set() else Reply(200), keep=True)
    with stack(workdir) as running, hung:
        base = running.receiver("healthy")
        healthy = args.endpoints - 1
        running.subscribe_many(
            [(f"{base}/e{e}", [f"iso.e{e}"]) for e in range(healthy)]
            + [(f"{hung.url}/e{healthy}", [f"iso.e{healthy}"])]
        )
        running.env["HOOKLINE_REQUEST_TIMEOUT_S"] = str(TIMEOUT_S)
        running.env["HOOKLINE_RETRY_SCHEDULE"] = "1s,2s,5s,10s,20s,30s,60s,60s,60s,60s"
        running.start("router", "router")
        for n in range(args.dispatchers):
            running.start(f"dispatcher-{n}", "dispatcher", "--concurrency", str(args.concurrency))
        time.sleep(1.0)
        settings = Settings(database_url=running.database_url, broker_url=running.broker_url)
        producer = Producer(settings)
        publisher = Publisher(producer, running.tenant_id, args.endpoints, rate)
        publisher.start()
        t0 = publisher.begin
        healthy_window = (t0 + WARMUP_S, t0 + WARMUP_S + args.healthy_s)
        hang_window = (healthy_window[1], healthy_window[1] + args.hang_s)
        time.sleep(max(0.0, hang_window[0] - time.time()))
        hanging.set()
        time.sleep(max(0.0, hang_window[1] - time.time()))
        hanging.clear()
        recovered_at = time.time()
        time.sleep(RECOVERY_PUBLISH_S)
        publisher.stop()
        producer.close()
        total = len(publisher.sent_at)
        done = running.wait_for(running.succeeded, total, args.drain_timeout_s, tick_s=1.0)
        drained_at = time.time()
        sent = by_webhook_id(running.tenant_id, publisher.sent_at)
        received = running.arrivals("healthy", sent)
        after_recovery: dict[str, float] = {}
        for r in hung.received:
            event_id = sent.get(r.headers.get("webhook-id", ""), "")
            if r.received_at >= recovered_at:
                after_recovery.setdefault(event_id, r.received_at)
            if not hanging.is_set():
                received.setdefault(event_id, r.received_at)
    sent_at = publisher.sent_at
    others: list[dict[str, Any]] = [
        {
            "endpoint": e,
            "healthy": window_stats(sent_at, received, e, healthy_window, rate),
            # From 5 s into the hang: the first requests are still being held then.
            "hang": window_stats(sent_at, received, e, (hang_window[0] + 5, hang_window[1]), rate),
        }
        for e in range(args.endpoints - 1)
    ]
    hung_ids = [i for i in sent_at if i.startswith(f"iso-{args.endpoints - 1}-")]
    hung_during = [i for i in hung_ids if hang_window[0] <= sent_at[i] < hang_window[1]]
    backlog_done = max((after_recovery[i] for i in hung_during if i in after_recovery), default=0)
    return {
        "run": number,
        "offered_per_endpoint": rate,
        "events": total,
        "succeeded": done,
        "not_succeeded_yet": total - done,  # still queued or retrying when waiting stopped
        "hung_endpoint_missing": len([i for i in hung_during if i not in after_recovery]),
        "hung_backlog_drained_s": round(backlog_done - recovered_at, 1) if backlog_done else -1,
        "all_succeeded_after_s": round(drained_at - recovered_at, 1),
        "min_rate_share_during_hang": min(o["hang"]["rate_share"] for o in others),
        "median_rate_share_during_hang": statistics.median(o["hang"]["rate_share"] for o in others),
        "max_p99_ratio": max(o["hang"]["p99_ms"] / max(o["healthy"]["p99_ms"], 1) for o in others),
        "median_healthy_p99_ms": statistics.median(o["healthy"]["p99_ms"] for o in others),
        "median_hang_p99_ms": statistics.median(o["hang"]["p99_ms"] for o in others),
        "endpoints": others,
        "load": [load_before, load_average()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--rate-per-endpoint", type=float, default=50.0)
    parser.add_argument("--healthy-s", type=float, default=30.0)
    parser.add_argument("--hang-s", type=float, default=120.0)
    parser.add_argument("--dispatchers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--drain-timeout-s", type=float, default=300.0)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        for number in range(args.runs):
            print(json.dumps(one_run(args, number, Path(workdir))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
