"""API request metrics: `hookline_api_request_duration_seconds{route,method,status_class}`.

An ASGI middleware outside everything else (the fast ingest path included), so every
answer is counted, ingest too. Labels stay bounded: the route's template as FastAPI
matched it (`/v1/subscriptions/{subscription_id}`), never the path; the fast ingest paths
by name; anything no route matched (404s, probes of random URLs) as `unmatched`. Cheap on
the hot path: two clock reads, one wrapped `send`, and a dict lookup for the histogram
child (prometheus-client's `labels()` builds a tuple and takes a lock on every call).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.metrics import Metrics, status_class

UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class RequestMetrics:
    def __init__(self, app: ASGIApp, metrics: Metrics, fixed_routes: Iterable[str]) -> None:
        self.app = app
        self._histogram = metrics.api_request_duration
        self._fixed = frozenset(fixed_routes)  # answered before routing (fast ingest)
        self._children: dict[tuple[str, str, str], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self._observe(scope, status, time.perf_counter() - started)

    def _observe(self, scope: Scope, status: int, duration_s: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None)
        if not isinstance(template, str):
            template = scope["path"] if scope["path"] in self._fixed else UNMATCHED
        method = scope["method"] if scope["method"] in _METHODS else "other"
        key = (template, method, status_class(status or None))
        child = self._children.get(key)
        if child is None:
            child = self._children.setdefault(key, self._histogram.labels(*key))
        child.observe(duration_s)
