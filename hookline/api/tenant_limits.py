"""The per-tenant API limits as the routes apply them: events per second (single and batch
ingest alike, counted in events), events per batch, and replay starts per minute.

The rates are counted in the shared windows of `Quota`, so they hold across API replicas.
Over a rate: 429 `rate_limited` with `Retry-After` (whole seconds until the window that
admits the request; a client that waits that long is not refused for the same reason). A
batch larger than the tenant may send at once: 422 `batch_too_large` (waiting would not
help). The admin token is not limited.
"""

from __future__ import annotations

import math

from common.db.ratewindow import Window
from hookline.api.deps import Services
from hookline.api.errors import ApiError

INGEST = "ingest"
REPLAY_STARTS = "replay_starts"
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
        per_s = limits.ingest_rate_per_s
        raise rate_limited(f"this tenant's ingest limit of {per_s:g} events/s is reached", wait_s)


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
