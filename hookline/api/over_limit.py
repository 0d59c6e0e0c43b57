"""Requests of a tenant that this API process already knows is over its limits, refused at
the door.

A tenant's limits are counted where the route knows what to count: `requests_per_s` and
the places in progress when the route admits the key, events once ingest has parsed the
body. Before that, the request has had its body read and parsed (up to 256 KiB, 5 MiB for
a batch, on the event loop every tenant shares) and, for a POST with an `Idempotency-Key`,
a claim written and released. A tenant past its limits could make the API do all of that
for each request it sends, as fast as it sends them. So once this process knows the
tenant's window is spent, or that it holds all its places (`certain_refusal`: no query,
nothing counted), its next requests get the route's own 429 here, before any of it.
Only a key fresh in the process's key cache is recognised here, so this costs no query:
once a cache period, one request of the tenant goes on to the route, which looks the key
up again (and refuses the request); the rest are refused here. With
`HOOKLINE_API_KEY_CACHE_S=0` nothing is refused here, and the routes refuse as before.

The fast ingest path makes the same check itself (`fast_ingest.py`): it answers in front
of this one.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from hookline.api import auth
from hookline.api.errors import send_error
from hookline.api.routes.events import BATCH, SINGLE
from hookline.api.tenant_limits import certain_refusal

INGEST_PATHS = frozenset({SINGLE, BATCH})  # they count events, not requests
TENANT_ROUTES = "/v1/"  # the routes a tenant key calls (not health, metrics or the portal)


class OverLimit:
    """ASGI middleware, outside the idempotency claim and every route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(TENANT_ROUTES):
            await self.app(scope, receive, send)
            return
        services = scope["app"].state.services
        caller = await auth.admitted(Request(scope), services, lookup=False)
        if caller is not None and caller.tenant_id is not None:
            ingest = scope["path"] in INGEST_PATHS
            refusal = await certain_refusal(services, caller.tenant_id, ingest=ingest)
            if refusal is not None:
                await send_error(refusal, scope, receive, send)
                return
        await self.app(scope, receive, send)
