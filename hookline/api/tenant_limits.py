"""The per-tenant API limits as the routes apply them: events per second (single and batch
ingest alike, counted in events), events per batch, replay starts per minute, and the
requests per second of every other route a tenant key calls.

The rates are counted in the shared windows of `Quota`, so they hold across API replicas.
Over a rate: 429 `rate_limited` with `Retry-After` (whole seconds until the window that
admits the request; a client that waits that long is not refused for the same reason). A
batch larger than the tenant may send at once: 422 `batch_too_large` (waiting would not
help). The admin token is not limited.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant

from common.db.ratewindow import Window
from hookline.api.deps import Services
from hookline.api.errors import ApiError, describe_status, spec_error
from hookline.api.in_flight import concurrency_limited
from hookline.api.served import served_routes
from hookline.services.limits import Limits

INGEST = "ingest"
REPLAY_STARTS = "replay_starts"
REQUESTS = "requests"
MINUTE_MS = 60_000


def rate_limited(what: str, wait_s: float) -> ApiError:
    retry_after = max(1, math.ceil(wait_s))
    return ApiError(
        429,
        "rate_limited",
        f"{what}; retry after {retry_after} s",
        headers={"Retry-After": str(retry_after)},
    )


async def admit_events(services: Services, tenant_id: str, count: int, *, batch: int = 0) -> None:
    """Admit `count` events of a request carrying `batch` items (0: a single event)."""
    limits = await services.limits.of(tenant_id)
    window = limits.ingest_window
    if batch:
        largest = min(limits.max_batch_events, window.allowance)
        if batch > largest:
            raise ApiError(
                422,
                "batch_too_large",
                f"a batch of {batch} events: this tenant may send at most {largest} at once",
            )
    if count == 0:
        return
    wait_s = await services.quota.take(tenant_id, INGEST, count, window)
    if wait_s is not None:
        raise _ingest_limited(limits, wait_s)


def admit_request(services: Services, tenant_id: str) -> None:
    """Count one request of a tenant key to a route other than ingest (a worker thread):
    the control plane's lists, look-ups and writes share the API's threads and database
    with every tenant."""
    limits = services.limits.of_now(tenant_id)
    wait_s = services.quota.take_now(tenant_id, REQUESTS, 1, limits.requests_window)
    if wait_s is not None:
        raise _requests_limited(limits, wait_s)


async def certain_refusal(services: Services, tenant_id: str, *, ingest: bool) -> ApiError | None:
    """The 429 the route is sure to answer this tenant's request with, when this process
    knows it without asking the database: the rate window the request counts against is
    already spent here (events for `ingest`, requests otherwise), or the tenant holds all
    of its `max_concurrent_requests` places. Counts nothing. For work a middleware would do
    before the route (an idempotency claim and its release: two writes), which a tenant
    over its limits must not be able to make others pay for."""
    limits = await services.limits.of(tenant_id)
    if ingest:
        wait_s = services.quota.spent(tenant_id, INGEST, limits.ingest_window)
        return None if wait_s is None else _ingest_limited(limits, wait_s)
    wait_s = services.quota.spent(tenant_id, REQUESTS, limits.requests_window)
    if wait_s is not None:
        return _requests_limited(limits, wait_s)
    if services.in_flight.full(tenant_id, limits.max_concurrent_requests):
        return concurrency_limited(limits.max_concurrent_requests)
    return None


def _ingest_limited(limits: Limits, wait_s: float) -> ApiError:
    per_s = limits.ingest_rate_per_s
    return rate_limited(f"this tenant's ingest limit of {per_s:g} events/s is reached", wait_s)


def _requests_limited(limits: Limits, wait_s: float) -> ApiError:
    per_s = limits.requests_per_s
    return rate_limited(f"this tenant's limit of {per_s:g} API requests/s is reached", wait_s)


def document_request_limit(app: FastAPI, counting: Collection[Callable[..., object]]) -> None:
    """List the 429 of `requests_per_s` on every operation whose route has one of the
    `counting` dependencies (`auth.COUNTING`), in `/openapi.json`."""
    counted = {
        (route.path_format, method.lower())
        for route in served_routes(app)
        if _uses(route.dependant, counting)
        for method in route.methods or ()
    }
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = build()
        for path, operations in spec.get("paths", {}).items():
            for method, operation in operations.items():
                if (path, method) in counted:
                    operation["responses"].setdefault("429", spec_error(describe_status(429)))
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def _uses(dependant: Dependant, calls: Collection[Callable[..., object]]) -> bool:
    return any(d.call in calls or _uses(d, calls) for d in dependant.dependencies)


def admit_replay_start(services: Services, tenant_id: str) -> None:
    """Count a replay job's start against the tenant's starts per minute (a worker thread)."""
    per_min = services.limits.of_now(tenant_id).replay_starts_per_min
    window = Window(MINUTE_MS, per_min, 1)
    wait_s = services.quota.take_now(tenant_id, REPLAY_STARTS, 1, window)
    if wait_s is not None:
        raise rate_limited(f"this tenant may start {per_min} replays a minute", wait_s)


def replay_rate_cap(services: Services, tenant_id: str) -> float:
    """The fastest replay the tenant's keys may ask for (copies per second)."""
    return services.limits.of_now(tenant_id).replay_rate_per_s
