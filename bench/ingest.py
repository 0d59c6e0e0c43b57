"""Ingest benchmark: events/s through one `hookline api` process, 202 after the broker's
confirm, on a fresh RabbitMQ vhost and PostgreSQL database.

    .venv/bin/python -m bench.ingest --runs 3
    .venv/bin/python -m bench.ingest --catalogue --runs 5   # with and without schema checks

Per run, against the same API process:
- baseline: `GET /healthz` requests/s (FastAPI without broker or database; a coroutine
  since issue 15, with no worker-thread hop, so it runs about twice what it did when it
  was a sync route: compare single ingest with `floor` across that change);
- floor: requests/s of a bare ASGI app answering 202 on its own uvicorn process, the same
  client and connections (what one uvicorn process can serve here at all);
- single: `POST /v1/events` events/s, one event per request, from `--connections`
  keep-alive connections (concurrent requests share confirm round-trips);
- batch: `POST /v1/events/batch` events/s, `--batch` events per request;
- transport baseline: confirmed publishes/s of `RabbitTransport` itself from this process,
  `--batch` messages per publish on a bench-only queue (what a batch can at best reach).
The client is raw asyncio HTTP/1.1 (a few µs per request), so on this 2-core machine it
leaves the API process most of a core. Every accepted event is checked on the queue
afterwards (count of `hookline.events`), so a 202 without a confirm would show.
Only 127.0.0.1 is ever targeted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from bench import runs, transport_publish
from common.settings import Settings
from common.transport import Outgoing, open_transport, topology
from common.transport.rabbitmq import RabbitTransport
from common.transport.topology import Exchange, Queue, Topology
from tests.processes import Services, free_port
from tests.services import temporary_database, temporary_vhost

ADMIN = "bench-admin-token-0123456789"
SECRET_KEY = "YqF080ihHeseupq6fBXzUvpqco11dK4RjAczF1qqadU"


def _request(method: str, path: str, token: str, body: bytes = b"") -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _one_connection(
    port: int, requests_: list[bytes], statuses: list[int], per_request: int
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for raw in requests_:
            writer.write(raw)
            await writer.drain()
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            statuses.extend([int(status_line.split()[1])] * per_request)
    finally:
        writer.close()


def load(port: int, raws: list[bytes], connections: int, per_request: int) -> tuple[float, int]:
    """(units per second, units answered 2xx) for sending `raws` over `connections`."""
    statuses: list[int] = []
    shares = [raws[n::connections] for n in range(connections)]

    async def run() -> None:
        await asyncio.gather(*(_one_connection(port, s, statuses, per_request) for s in shares))

    started = time.perf_counter()
    asyncio.run(run())
    elapsed = time.perf_counter() - started
    ok = sum(1 for status in statuses if 200 <= status < 300)
    return len(statuses) / elapsed, ok


def one_run(args: argparse.Namespace, number: int, workdir: Path) -> dict[str, float]:
    with temporary_vhost("hookline_bench") as broker_url, temporary_database() as database_url:
        port = free_port()
        env = {
            **os.environ,
            "HOOKLINE_DATABASE_URL": database_url,
            "HOOKLINE_BROKER_URL": broker_url,
            "HOOKLINE_SECRET_KEY": SECRET_KEY,
            "HOOKLINE_ADMIN_TOKEN": ADMIN,
            "HOOKLINE_LOG_LEVEL": "WARNING",
        }
        logs = workdir / f"run{number}"
        logs.mkdir()
        services = Services(env, logs)
        services.start("migrate", "migrate")
        services.procs.pop("migrate").wait(60)
        services.start("api", "api", "--port", str(port))
        try:
            base = f"http://127.0.0.1:{port}"
            _wait(f"{base}/healthz")
            tenant = requests.post(
                f"{base}/v1/tenants", json={"name": "bench"},
                headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10,
            ).json()  # fmt: skip
            key = tenant["api_key"]
            # Warm the connection pools and the broker channel before measuring.
            load(port, [_request("POST", "/v1/events", key, _event(-1))] * 200, 20, 1)
            health = [_request("GET", "/healthz", key)] * args.events
            baseline, _ = load(port, health, args.connections, 1)
            singles = [_request("POST", "/v1/events", key, _event(n)) for n in range(args.events)]
            single, single_ok = load(port, singles, args.connections, 1)
            batches = [
                _request("POST", "/v1/events/batch", key, _batch(n, args.batch))
                for n in range(args.batch_events // args.batch)
            ]
            batch, batch_ok = load(port, batches, args.batch_connections, args.batch)
            floor = _floor(singles, args.connections)
            loadavg = round(os.getloadavg()[0], 2)
            queued = _queued(broker_url)
            transport_rate = _transport_baseline(broker_url, args.batch_events, args.batch)
        finally:
            services.stop()
    expected = 200 + args.events + (args.batch_events // args.batch) * args.batch
    return {
        "baseline_healthz_per_s": round(baseline),
        "floor_asgi_per_s": round(floor),
        "single_events_per_s": round(single),
        "batch_events_per_s": round(batch),
        "transport_publish_per_s": round(transport_rate),
        "single_ratio_to_baseline": round(single / baseline, 3),
        "single_ratio_to_floor": round(single / floor, 3),
        "batch_ratio_to_transport": round(batch / transport_rate, 3),
        "accepted": single_ok + batch_ok,
        "queued": queued,
        "queued_matches_accepted": float(queued == expected - (args.events - single_ok)
                                         - (args.batch_events // args.batch * args.batch
                                            - batch_ok)),
        "loadavg_1m": loadavg,
    }  # fmt: skip


def _event(n: int) -> bytes:
    return json.dumps({"type": "order.created", "data": {"order": n, "total": 10.5}}).encode()


def _batch(n: int, size: int) -> bytes:
    events = [{"type": "order.created", "data": {"order": n * size + i}} for i in range(size)]
    return json.dumps({"events": events}).encode()


async def _floor_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the request and answers 202 with an id, as ingest does, and nothing else."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    body = b'{"id":"evt_0123456789abcdef01234567"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 202, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _floor(raws: list[bytes], connections: int) -> float:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench.ingest", "--serve-floor", str(port)])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        rate, _ = load(port, raws, connections, 1)
        return rate
    finally:
        server.terminate()
        server.wait(10)


def _wait(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def _queued(broker_url: str) -> int:
    transport = open_transport(broker_url)
    try:
        transport.declare(topology.build(Settings().retry_delays_s))
        return transport.queue_depth(topology.EVENTS)
    finally:
        transport.close()


def _transport_baseline(broker_url: str, messages: int, batch: int) -> float:
    name = "hookline.bench.ingest"
    queue = Queue(name, {"x-queue-type": "quorum"}, ((name, name),))
    with RabbitTransport(broker_url) as transport:
        transport.declare(Topology((Exchange(name, "direct"),), (queue,)))
        transport.publish([Outgoing(name, name, _event(0))])  # connect outside the timing
        return transport_publish.run(transport, name, messages, batch, 4)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--batch-events", type=int, default=100_000)
    parser.add_argument("--batch-connections", type=int, default=4)
    parser.add_argument(
        "--catalogue", action="store_true",
        help="measure ingest with and without the event-type catalogue's schema check "
        "(`bench/ingest_catalogue.py`)",
    )  # fmt: skip
    parser.add_argument("--slices", type=int, default=8, help="--catalogue: interleaved slices")
    parser.add_argument("--serve-floor", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.catalogue:
        from bench import ingest_catalogue  # it builds on this module's client

        runs.repeat(ingest_catalogue.one_run, args, lambda first: list(first))
        return 0
    if args.serve_floor:
        import uvicorn

        uvicorn.run(_floor_app, host="127.0.0.1", port=args.serve_floor, log_level="warning",
                    access_log=False, lifespan="off")  # fmt: skip
        return 0
    runs.repeat(one_run, args, lambda first: [k for k in first if k not in ("accepted", "queued")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
