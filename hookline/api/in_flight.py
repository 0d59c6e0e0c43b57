"""A tenant's requests in progress in this API process, at most its
`max_concurrent_requests` at once.

`requests_per_s` bounds how often a tenant may ask; this bounds how much of the process it
may hold at a time. Each request of the control plane and the portal runs on one of the
process's request threads, most with one of its database connections, and a slow one (a
summary over millions of dead letters) keeps both until it ends: at 100 requests a second,
a tenant asking for such a thing could hold every thread and connection, and every other
tenant's requests would wait behind them. Counted here, in memory: the threads and the
connections it protects are this process's own, so a second replica has its own count.

A request takes its place where it is counted against `requests_per_s` (`auth.require`,
the portal's session), and `ReleasePlaces` gives it back once the whole response is sent,
whatever happened in between. Beyond the limit: 429 `concurrency_limited` with
`Retry-After`, before the route does any work. Ingest takes no place: it runs on the event
loop and counts events.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from starlette.datastructures import State
from starlette.types import ASGIApp, Receive, Scope, Send

from hookline.api.errors import ApiError

if TYPE_CHECKING:  # the services hold this module's `InFlight`
    from hookline.api.deps import Services

RETRY_AFTER_S = 1
# Where a request keeps the tenant whose place it holds (in `scope["state"]`, which
# `request.state` reads and mounted apps share).
PLACE = "in_flight_tenant"


def concurrency_limited(cap: int) -> ApiError:
    return ApiError(
        429,
        "concurrency_limited",
        f"this tenant already has {cap} requests in progress on this API process (its "
        "limit); retry when one has finished",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


class InFlight:
    """The count of each tenant's requests in progress (one per API app)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}

    def running(self, tenant_id: str) -> int:
        with self._lock:
            return self._running.get(tenant_id, 0)

    def full(self, tenant_id: str, cap: int) -> bool:
        """Whether the tenant holds `cap` places already (a request now would be refused)."""
        return self.running(tenant_id) >= cap

    def enter(self, tenant_id: str, cap: int) -> bool:
        """Take a place for the tenant; False when it holds `cap` already."""
        with self._lock:
            held = self._running.get(tenant_id, 0)
            if held >= cap:
                return False
            self._running[tenant_id] = held + 1
            return True

    def leave(self, tenant_id: str) -> None:
        with self._lock:
            held = self._running.pop(tenant_id, 0) - 1
            if held > 0:
                self._running[tenant_id] = held


def hold(services: Services, state: State, tenant_id: str) -> None:
    """Take a place for the request whose `state` this is (once per request; given back
    by `ReleasePlaces`), or raise 429 when its tenant holds all of its own."""
    if getattr(state, PLACE, None) is not None:
        return
    cap = services.limits.of_now(tenant_id).max_concurrent_requests
    if not services.in_flight.enter(tenant_id, cap):
        raise concurrency_limited(cap)
    setattr(state, PLACE, tenant_id)


class ReleasePlaces:
    """Gives back the place a request took once it has answered (or failed): outside every
    other middleware, so a response still being sent keeps its place."""

    def __init__(self, app: ASGIApp, in_flight: InFlight) -> None:
        self.app = app
        self._in_flight = in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})  # the one dict every `request.state` reads
        try:
            await self.app(scope, receive, send)
        finally:
            tenant_id = state.pop(PLACE, None)
            if tenant_id is not None:
                self._in_flight.leave(tenant_id)
