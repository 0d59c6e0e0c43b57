"""Metrics vs benchmark: do the Prometheus counters tell the benchmark's story?

    .venv/bin/python -m tests.observability.bench_metrics [--events 20000] [--runs 3]
        [--concurrency 32] [--scrape-interval 0.2s]

Each run is the throughput half of `bench.pipeline` (a fresh vhost and database, a
receiver process, real `hookline router` and `hookline dispatcher` processes, events
published as fast as the producer SDK goes), with a real Prometheus scraping the router
and the dispatcher. It prints, per run:
- `measured_per_s`: what the benchmark reports — events / (last receipt - first publish),
  from the receiver's own arrival log;
- `prometheus_per_s`: `sum(rate(hookline_deliveries_finished_total{result="succeeded"}[W]))`
  evaluated at the first scrape that counted every delivery, W = that time - first publish;
- `counted`: what the counter says was delivered, and the ratio of the two rates.
Only 127.0.0.1 is targeted. Reuses bench.stack and bench.pipeline; changes nothing there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.pipeline import publish_backlog
from bench.stack import by_webhook_id, load_average, stack, wait_http
from common.settings import Settings
from producer import Producer
from tests.observability.prom import Prometheus
from tests.processes import free_port

SUCCEEDED = 'sum(hookline_deliveries_finished_total{result="succeeded"})'


def counted_at(
    prom: Prometheus, start: float, end: float, step_s: float
) -> list[tuple[float, float]]:
    data = prom.api("query_range", query=SUCCEEDED, start=f"{start:.3f}", end=f"{end:.3f}",
                    step=f"{step_s:g}")  # fmt: skip
    if not data["result"]:
        return []
    return [(float(t), float(v)) for t, v in data["result"][0]["values"]]


def one_run(prometheus_binary: str, events: int, concurrency: int, scrape_interval_s: float,
            workdir: Path) -> dict[str, Any]:  # fmt: skip
    load_before = load_average()
    with stack(workdir) as running, ExitStack() as exits:
        url = running.receiver("receiver") + "/hooks"
        running.subscribe(url, ["order.*"])
        ports = {"router": free_port(), "dispatcher": free_port()}
        running.start("router", "router", "--metrics-port", str(ports["router"]), metrics=False)
        running.start("dispatcher", "dispatcher", "--concurrency", str(concurrency),
                      "--metrics-port", str(ports["dispatcher"]), metrics=False)  # fmt: skip
        for port in ports.values():
            wait_http(f"http://127.0.0.1:{port}/metrics")
        prom = Prometheus(prometheus_binary, workdir,
                          {f"hookline-{name}": [port] for name, port in ports.items()},
                          scrape_interval=f"{round(scrape_interval_s * 1000)}ms")  # fmt: skip
        exits.callback(prom.close)
        prom.wait_ready()
        prom.wait_scraping(len(ports))  # the zero samples before the run are in

        producer = Producer(Settings(database_url=running.database_url,
                                     broker_url=running.broker_url))  # fmt: skip
        exits.callback(producer.close)
        ids = [f"bm-{n}" for n in range(events)]
        start = time.time()
        publish_backlog(producer, running.tenant_id, ids)
        done = running.wait_for(running.succeeded, events, events / 100 + 60)
        time.sleep(4 * scrape_interval_s + 1)  # the last increments get scraped
        end = time.time()
        received = running.arrivals("receiver", by_webhook_id(running.tenant_id, ids))
        last = max(received[i] for i in ids if i in received)
        measured = events / (last - start)

        series = counted_at(prom, start - 1, end, scrape_interval_s / 2)
        counted = max(value for _, value in series)
        complete_at = min(t for t, value in series if value >= counted)
        whole = prom_rate(prom, complete_at - start, complete_at)
        # Steady state: from the 10th to the 90th percentile of arrivals, where neither
        # the ramp-up nor the last batch's settle lag weighs in.
        times = sorted(received[i] for i in ids if i in received)
        t10, t90 = times[len(times) // 10], times[len(times) * 9 // 10]
        steady_measured = (len(times) * 8 // 10) / (t90 - t10)
        steady = prom_rate(prom, t90 - t10, t90)
    return {
        "events": events,
        "delivered": done,
        "counted": round(counted),
        "measured_per_s": round(measured, 1),
        "prometheus_per_s": round(whole, 1),
        "ratio": round(whole / measured, 4),
        "steady_measured_per_s": round(steady_measured, 1),
        "steady_prometheus_per_s": round(steady, 1),
        "steady_ratio": round(steady / steady_measured, 4),
        "run_s": round(last - start, 2),
        "counter_complete_s": round(complete_at - start, 2),
        "load": [load_before, load_average()],
    }


def prom_rate(prom: Prometheus, window_s: float, at: float) -> float:
    """Deliveries/s as a dashboard shows them: `rate()` of the success counter over the
    `window_s` before `at`."""
    expr = (f'sum(rate(hookline_deliveries_finished_total{{result="succeeded"}}'
            f"[{round(window_s * 1000)}ms]))")  # fmt: skip
    [sample] = prom.api("query", query=expr, time=f"{at:.3f}")["result"]
    return float(sample["value"][1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--scrape-interval-s", type=float, default=0.2)
    parser.add_argument("--prometheus", default="prometheus")
    args = parser.parse_args(argv)
    results = []
    for number in range(args.runs):
        with tempfile.TemporaryDirectory() as workdir:
            result = one_run(args.prometheus, args.events, args.concurrency,
                             args.scrape_interval_s, Path(workdir))  # fmt: skip
        result["run"] = number
        print(json.dumps(result), flush=True)
        results.append(result)
    keys = ("measured_per_s", "prometheus_per_s", "ratio", "steady_measured_per_s",
            "steady_prometheus_per_s", "steady_ratio")  # fmt: skip
    medians = {k: statistics.median(r[k] for r in results) for k in keys}
    print(json.dumps({"median": medians, "runs": len(results)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
