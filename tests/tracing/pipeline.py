"""The whole pipeline in one process, traced into the SDK's in-memory exporter: the API on
uvicorn (127.0.0.1), a router and a dispatcher on threads, SQLite and the in-memory broker
(what `hookline dev` runs), and a real receiver on 127.0.0.1."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from common.db import migrate
from common.service import run_until_stopped
from common.settings import Settings
from common.tracing import configure
from common.transport import MemoryBroker
from dispatcher import Dispatcher
from hookline.receiver import Received, Receiver, Reply
from hookline.runtime import api_server, build_runtime
from router import Router
from tests.api.support import ADMIN_TOKEN
from tests.processes import free_port

WAIT_S = 20.0


@dataclass
class Pipeline:
    url: str
    receiver: Receiver
    exported: InMemorySpanExporter | None  # None: tracing off
    tenant_id: str
    key: dict[str, str]

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def subscribe(self, path: str, *, propagate_trace: bool) -> tuple[str, str]:
        """An active subscription (registered by the operator) to `path` on the receiver;
        its id and secret."""
        body = {
            "url": f"{self.receiver.url}{path}",
            "event_types": ["order.*"],
            "propagate_trace": propagate_trace,
        }
        made = requests.post(
            f"{self.url}/v1/tenants/{self.tenant_id}/subscriptions",
            json=body, headers=self.admin, timeout=10,
        )  # fmt: skip
        assert made.status_code == 201, made.text
        assert made.json()["propagate_trace"] is propagate_trace
        return made.json()["id"], made.json()["secret"]

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        assert self.exported is not None
        found = self.exported.get_finished_spans()
        return [span for span in found if name is None or span.name == name]

    def wait_for_spans(self, name: str, count: int) -> list[ReadableSpan]:
        wait_until(lambda: len(self.spans(name)) >= count)
        return self.spans(name)


def wait_until(predicate: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout_s} s")


@contextlib.contextmanager
def pipeline(
    workdir: Path, *, traced: bool, respond: Callable[[Received], Reply] | None = None
) -> Iterator[Pipeline]:
    settings = Settings(
        database_url=f"sqlite:///{workdir}/hookline.db",
        broker_url="memory://",
        admin_token=ADMIN_TOKEN,
        allow_private_targets=True,
        allow_http=True,
        retry_schedule="100ms,100ms",
        retry_jitter=0,
        subscription_refresh_s=0.1,
        dispatcher_concurrency=4,
    )
    migrate.upgrade(settings.database_url)
    exported = InMemorySpanExporter() if traced else None
    runtime = build_runtime(settings, memory=MemoryBroker(), dev=True)
    if exported is not None:
        runtime.tracing = configure("dev", processor=SimpleSpanProcessor(exported))
    stop = threading.Event()
    router = Router(
        settings, runtime.transport, runtime.sessionmaker, runtime.metrics,
        tracing=runtime.tracing,
    )  # fmt: skip
    dispatcher = Dispatcher(
        settings, runtime.transport, runtime.sessionmaker, runtime.metrics,
        secret_box=runtime.secret_box, tracing=runtime.tracing,
    )  # fmt: skip
    threads = [
        threading.Thread(target=run_until_stopped, args=(router.run, stop), daemon=True),
        threading.Thread(target=run_until_stopped, args=(dispatcher.run, stop), daemon=True),
    ]
    port = free_port()
    server = api_server(runtime, "127.0.0.1", port)
    threads.append(threading.Thread(target=server.run, daemon=True))
    for thread in threads:
        thread.start()
    wait_until(lambda: server.started)
    receiver = Receiver(respond=respond).start()
    url = f"http://127.0.0.1:{port}"
    tenant = requests.post(
        f"{url}/v1/tenants",
        json={"name": "acme"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    ).json()
    key = {"Authorization": f"Bearer {tenant['api_key']}"}
    try:
        yield Pipeline(url, receiver, exported, tenant["id"], key)
    finally:
        receiver.stop()
        server.should_exit = True
        stop.set()
        for thread in threads:
            thread.join(20)
        runtime.close()
