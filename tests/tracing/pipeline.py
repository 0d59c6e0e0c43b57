"""The whole pipeline in one process (tests/dev_stack.py: what `hookline dev` runs), traced
into the SDK's in-memory exporter, with a real receiver on 127.0.0.1."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from common.settings import Settings
from common.tracing import configure
from hookline.receiver import Received, Receiver, Reply
from tests.api.support import ADMIN_TOKEN
from tests.dev_stack import dev_stack
from tests.dispatcher.conftest import wait_until


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
    exported = InMemorySpanExporter() if traced else None
    tracing = configure("dev", processor=SimpleSpanProcessor(exported)) if exported else None
    with dev_stack(settings, tracing=tracing) as (url, _), Receiver(respond=respond) as receiver:
        tenant = requests.post(
            f"{url}/v1/tenants",
            json={"name": "acme"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=10,
        ).json()
        key = {"Authorization": f"Bearer {tenant['api_key']}"}
        yield Pipeline(url, receiver, exported, tenant["id"], key)
