"""A/B of the HTTP path: the skeleton's Sender (requests) against the current one.

    .venv/bin/python -m bench.ab_sender [--posts 3000] [--threads 8] [--rounds 3]
        [--before 3946daa]

Loads `dispatcher/sender.py` and its HTTP modules as they were at `--before`
(via `git show`) beside the current ones and alternates them, round by round, posting the
same signed deliveries to one receiver process: so both see the same machine load.
Reported per side (medians over rounds): POSTs/s, client CPU and receiver CPU per POST.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.stack import _cpu_s, wait_http
from common.settings import Settings
from common.signing import new_secret
from common.wire import DeliveryMessage, Event
from dispatcher.http import client as current
from dispatcher.subscriptions import Endpoint
from tests.processes import free_port


def load_before(commit: str, workdir: Path) -> ModuleType:
    for name in ("sender", "connection", "http_exchange"):
        shown = subprocess.run(["git", "show", f"{commit}:dispatcher/{name}.py"],
                               capture_output=True, text=True)  # fmt: skip
        if shown.returncode != 0:
            continue  # not there yet at that commit (http_exchange.py came later)
        text = shown.stdout
        for module in ("connection", "http_exchange"):
            text = text.replace(f"from dispatcher.{module} import", f"from before_{module} import")
        (workdir / f"before_{name}.py").write_text(text)
    sys.path.insert(0, str(workdir))
    return importlib.import_module("before_sender")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", default="3946daa")
    args = parser.parse_args()
    port = free_port()
    receiver = subprocess.Popen(
        [sys.executable, "-m", "hookline.receiver", "--port", str(port), "--every-s", "3600"],
        stdout=subprocess.DEVNULL,
    )
    wait_http(f"http://127.0.0.1:{port}/")
    endpoint = Endpoint(id="ab", tenant_id="t", url=f"http://127.0.0.1:{port}/hooks",
                        status="active", secret=new_secret())  # fmt: skip
    deliveries = []
    for n in range(args.posts):
        event = Event(tenant="t", type="order.created", id=f"ab-{n}", data={"order": n})
        delivery = DeliveryMessage(delivery_id=f"d-{n}", event_id=event.id, tenant="t",
                                   subscription_id="ab", attempt=1, event=event)  # fmt: skip
        deliveries.append(delivery)
    results: dict[str, list[tuple[float, float, float]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as workdir:
        sides: dict[str, Any] = {"before": load_before(args.before, Path(workdir)),
                                 "after": current}  # fmt: skip
        settings = Settings(allow_private_targets=True, dispatcher_concurrency=args.threads)
        for _ in range(args.rounds):
            for name, module in sides.items():
                sender = module.Sender(settings)
                cpu, wall, served = time.process_time(), time.perf_counter(), _cpu_s(receiver.pid)
                post = functools.partial(sender.send, endpoint)
                with ThreadPoolExecutor(args.threads) as pool:
                    codes = [r.status_code for r in pool.map(post, deliveries, chunksize=32)]
                wall = time.perf_counter() - wall
                cpu = time.process_time() - cpu
                served = _cpu_s(receiver.pid) - served
                sender.close()
                assert codes.count(200) == args.posts
                n = args.posts
                results[name].append((n / wall, 1e6 * cpu / n, 1e6 * served / n))
    receiver.terminate()
    receiver.wait(10)
    for name, rows in results.items():
        print(json.dumps({
            "side": name,
            "posts_per_s": round(statistics.median(r[0] for r in rows)),
            "client_cpu_us_per_post": round(statistics.median(r[1] for r in rows)),
            "receiver_cpu_us_per_post": round(statistics.median(r[2] for r in rows)),
            "rounds": [round(r[0]) for r in rows],
        }))  # fmt: skip
    print(json.dumps({"load": round(os.getloadavg()[0], 2), "threads": args.threads}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
