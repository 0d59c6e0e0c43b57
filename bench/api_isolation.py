"""API isolation: another tenant's calls and the probes while one tenant's handshakes hang.

    .venv/bin/python -m bench.api_isolation [--runs 3] [--calm-s 10] [--hang-s 15]

Each run serves one API app with uvicorn on 127.0.0.1 (SQLite in a temporary directory, the
in-memory broker, in this process as `hookline dev` serves it). Tenant B calls, one after
another, `GET /v1/subscriptions`, `POST /v1/events` and `GET /healthz` for `--calm-s`
(calm), then again while 45 client threads of tenant A keep `POST /v1/subscriptions/{id}/
verify` running against a 127.0.0.1 port that accepts and never answers (hang; a thread
whose call was refused with 429 asks again after its Retry-After). Reported per call: p50 and p99 of
each phase, the same run, and whether the hang p99 stays within the calm p99 + 50 ms; and
how A's calls were answered. Only 127.0.0.1 is ever targeted.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from bench.stack import percentile
from common.db.migrate import upgrade
from common.settings import Settings
from common.transport import topology
from hookline.runtime import api_server, build_runtime

ADMIN = "bench-admin-token-0123456789"
HANDSHAKES = 45
MARGIN_S = 0.050


def black_hole() -> tuple[int, Callable[[], None]]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    held: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    threading.Thread(target=hold, daemon=True).start()

    def close() -> None:
        stop.set()
        for connection in held:
            connection.close()
        listener.close()

    return int(listener.getsockname()[1]), close


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(calls: dict[str, Callable[[], Any]], seconds: float) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {name: [] for name in calls}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name, call in calls.items():
            started = time.monotonic()
            response = call()
            timings[name].append(time.monotonic() - started)
            assert response.status_code in (200, 202), response.text
    return timings


def one_run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    database_url = f"sqlite:///{workdir}/hookline.db"
    upgrade(database_url)
    settings = Settings(
        database_url=database_url, broker_url="memory://", admin_token=ADMIN,
        allow_private_targets=True, allow_http=True, log_level="WARNING",
    )  # fmt: skip
    runtime = build_runtime(settings, dev=True)
    runtime.transport.declare(topology.build(settings.retry_tiers_s))
    port = free_port()
    server = api_server(runtime, "127.0.0.1", port)
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base, admin = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {ADMIN}"}
    hole, close_hole = black_hole()
    session = requests.Session()

    def tenant(name: str, url: str) -> tuple[dict[str, str], str]:
        made = session.post(f"{base}/v1/tenants", json={"name": name}, headers=admin).json()
        body = {"url": url, "event_types": ["order.*"]}
        sub = session.post(f"{base}/v1/tenants/{made['id']}/subscriptions", json=body,
                           headers=admin).json()  # fmt: skip
        return {"Authorization": f"Bearer {made['api_key']}"}, sub["id"]

    a_auth, hanging = tenant("a", f"http://127.0.0.1:{hole}/hooks")
    b_auth, _ = tenant("b", "http://127.0.0.1:9/b")
    event = {"type": "order.paid", "data": {"n": 1}}
    calls = {
        "list": lambda: session.get(f"{base}/v1/subscriptions", headers=b_auth),
        "ingest": lambda: session.post(f"{base}/v1/events", json=event, headers=b_auth),
        "healthz": lambda: session.get(f"{base}/healthz"),
    }
    measure(calls, 1.0)  # warm-up
    calm = measure(calls, args.calm_s)
    answers: Counter[int] = Counter()
    stop = threading.Event()

    def handshakes() -> None:
        with requests.Session() as own:
            while not stop.is_set():
                url = f"{base}/v1/subscriptions/{hanging}/verify"
                answer = own.post(url, headers=a_auth, timeout=60)
                answers[answer.status_code] += 1
                if answer.status_code == 429:  # as a client that honours Retry-After
                    stop.wait(float(answer.headers["Retry-After"]))

    with ThreadPoolExecutor(HANDSHAKES) as pool:
        for _ in range(HANDSHAKES):
            pool.submit(handshakes)
        time.sleep(1.0)
        hang = measure(calls, args.hang_s)
        stop.set()
    close_hole()
    server.should_exit = True
    runtime.close()
    result: dict[str, Any] = {}
    for name in calls:
        calm_p99, hang_p99 = percentile(calm[name], 0.99), percentile(hang[name], 0.99)
        result.update({
            f"{name}_calm_p50_ms": round(1000 * percentile(calm[name], 0.5), 2),
            f"{name}_calm_p99_ms": round(1000 * calm_p99, 2),
            f"{name}_hang_p50_ms": round(1000 * percentile(hang[name], 0.5), 2),
            f"{name}_hang_p99_ms": round(1000 * hang_p99, 2),
            f"{name}_hang_max_ms": round(1000 * max(hang[name]), 2),
            f"{name}_within_margin": int(hang_p99 <= calm_p99 + MARGIN_S),
        })  # fmt: skip
    result["a_answers"] = dict(answers)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api_isolation", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--calm-s", type=float, default=10.0)
    parser.add_argument("--hang-s", type=float, default=15.0)
    args = parser.parse_args()
    results = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as workdir:
            results.append(one_run(args, Path(workdir)))
        print(json.dumps(results[-1]), flush=True)
    numeric = [key for key, value in results[0].items() if isinstance(value, (int, float))]
    median = {key: statistics.median(r[key] for r in results) for key in numeric}
    print(json.dumps({"median": median}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
