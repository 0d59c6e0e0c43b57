"""Benchmark v0: sustained deliveries/s and publish->receive latency through the real stack.

    .venv/bin/python -m bench.pipeline [--events 20000] [--runs 3] [--concurrency 32]
        [--dispatchers 1] [--rate 300] [--latency-s 20] [--baseline 10000]

Each run gets a fresh RabbitMQ vhost and PostgreSQL database, a receiver in its own process
(asyncio, keep-alive, TCP_NODELAY), and `hookline router` + `hookline dispatcher` processes:
- baseline: the dispatcher's HTTP client (requests, trust_env=False, one pooled session per
  thread, the same concurrency) posting the same signed bodies straight to the receiver —
  no broker, no database;
- throughput: `--events` events published as fast as the producer SDK goes (batches of 500),
  timed from the first publish to the last receipt; every event, delivery and attempt is
  persisted in PostgreSQL;
- latency: an open model — events scheduled at `--rate`/s for `--latency-s`, each measured
  from its scheduled send time to its receipt.
Prints one JSON line per run, then the medians. Only 127.0.0.1 is ever targeted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import func, select

from common import __version__
from common.db import migrate
from common.db.models import SUCCEEDED, Delivery
from common.db.session import make_engine, make_sessionmaker
from common.secretbox import SecretBox
from common.settings import Settings
from common.signing import signature_header
from common.wire import Event
from producer import Producer
from tests import builders
from tests.processes import HOOKLINE, free_port
from tests.services import temporary_database, temporary_vhost

SECRET_KEY = "bench-secret-key"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wait_http(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


def baseline(url: str, secret: str, count: int, concurrency: int) -> float:
    """Direct POSTs with the dispatcher's client settings: the ceiling for this machine."""
    local = threading.local()
    body_event = Event(tenant="bench", type="order.created", data={"order": 1, "total": 12.5})
    body = json.dumps(body_event.webhook_body(), separators=(",", ":")).encode()

    def post(n: int) -> int:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            session.trust_env = False
        ts = int(time.time())
        headers = {
            "webhook-id": f"baseline-{n}",
            "webhook-timestamp": str(ts),
            "webhook-signature": signature_header([secret], f"baseline-{n}", ts, body),
            "content-type": "application/json",
            "user-agent": f"Hookline/{__version__}",
        }
        response = session.post(url, data=body, headers=headers, timeout=(5, 15),
                                 allow_redirects=False)  # fmt: skip
        return response.status_code

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        codes = list(pool.map(post, range(count), chunksize=64))
    elapsed = time.perf_counter() - start
    assert codes.count(200) == count, "baseline receiver did not answer 200 every time"
    return count / elapsed


def wait_succeeded(sessions: Any, target: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    done = 0
    while time.monotonic() < deadline:
        with sessions() as session:
            done = session.scalar(
                select(func.count()).select_from(Delivery).where(Delivery.status == SUCCEEDED)
            )
        if done >= target:
            return int(done)
        time.sleep(0.25)
    return int(done)


def one_run(args: argparse.Namespace, number: int, workdir: Path) -> dict[str, Any]:
    with ExitStack() as stack:
        broker_url = stack.enter_context(temporary_vhost())
        database_url = stack.enter_context(temporary_database())
        migrate.upgrade(database_url)
        engine = make_engine(database_url)
        stack.callback(engine.dispose)
        sessions = make_sessionmaker(engine)
        port = free_port()
        arrivals = workdir / f"arrivals-{number}.tsv"
        receiver = subprocess.Popen(
            [sys.executable, "-m", "hookline.receiver", "--port", str(port),
             "--log", str(arrivals), "--every-s", "3600"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}/hooks"
        wait_http(f"http://127.0.0.1:{port}/")
        with sessions.begin() as session:
            tenant = builders.tenant(session, name="bench")
            _, secret = builders.subscription(
                session, tenant.id, url, event_types=["order.*"], box=SecretBox(SECRET_KEY)
            )
            tenant_id = tenant.id
        direct = baseline(url, secret, args.baseline, args.concurrency)

        env = {
            **os.environ,
            "HOOKLINE_DATABASE_URL": database_url,
            "HOOKLINE_BROKER_URL": broker_url,
            "HOOKLINE_SECRET_KEY": SECRET_KEY,
            "HOOKLINE_ALLOW_PRIVATE_TARGETS": "true",
            "HOOKLINE_LOG_LEVEL": "WARNING",
        }
        procs = []
        metric_ports = []
        for name, extra in [("router", [])] + [
            ("dispatcher", ["--concurrency", str(args.concurrency)])
        ] * args.dispatchers:
            metrics_port = free_port()
            metric_ports.append(metrics_port)
            procs.append(subprocess.Popen(
                [*HOOKLINE, name, *extra, "--metrics-port", str(metrics_port)], env=env
            ))  # fmt: skip
        for metrics_port in metric_ports:
            wait_http(f"http://127.0.0.1:{metrics_port}/metrics")
        time.sleep(1.0)  # consumers attach after the metrics port opens

        settings = Settings(database_url=database_url, broker_url=broker_url)
        producer = Producer(settings)
        sent_at: dict[str, float] = {}
        # Throughput: a backlog as fast as the SDK publishes.
        ids = [f"tp-{number}-{n}" for n in range(args.events)]
        start = time.time()
        for offset in range(0, args.events, 500):
            batch = [
                {"tenant": tenant_id, "type": "order.created", "id": event_id,
                 "data": {"order": offset, "total": 12.5}}
                for event_id in ids[offset : offset + 500]
            ]  # fmt: skip
            producer.publish_batch(batch)
        published_s = time.time() - start
        done = wait_succeeded(sessions, args.events, timeout_s=args.events / 100 + 60)
        # Latency: open model at a fixed arrival rate.
        latency_ids = [f"lat-{number}-{n}" for n in range(int(args.rate * args.latency_s))]
        begin = time.time() + 0.5
        for n, event_id in enumerate(latency_ids):
            scheduled = begin + n / args.rate
            pause = scheduled - time.time()
            if pause > 0:
                time.sleep(pause)
            sent_at[event_id] = scheduled
            producer.publish("order.created", {"n": n}, tenant=tenant_id, id=event_id)
        done_latency = wait_succeeded(sessions, args.events + len(latency_ids), 120)
        producer.close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)
        receiver.terminate()
        receiver.wait(30)
        received = dict(
            (line.split("\t")[0], float(line.split("\t")[1]))
            for line in arrivals.read_text().splitlines()
        )
        last = max(received[i] for i in ids if i in received)
        latencies = [received[i] - sent_at[i] for i in latency_ids if i in received]
        return {
            "run": number,
            "events": args.events,
            "delivered": done,
            "publish_s": round(published_s, 2),
            "deliveries_per_s": round(args.events / (last - start), 1),
            "baseline_per_s": round(direct, 1),
            "ratio": round(args.events / (last - start) / direct, 3),
            "latency_events": len(latency_ids),
            "latency_delivered": done_latency - done,
            "p50_ms": round(1000 * percentile(latencies, 0.50), 1),
            "p99_ms": round(1000 * percentile(latencies, 0.99), 1),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--dispatchers", type=int, default=1)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--latency-s", type=float, default=20.0)
    parser.add_argument("--baseline", type=int, default=10_000)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for number in range(args.runs):
            result = one_run(args, number, Path(workdir))
            print(json.dumps(result), flush=True)
            results.append(result)
    keys = ("deliveries_per_s", "baseline_per_s", "ratio", "p50_ms", "p99_ms")
    medians = {k: statistics.median(r[k] for r in results) for k in keys}
    print(json.dumps({"median": medians, "runs": len(results)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
