"""Requests refused at the door, before their bodies are read or parsed: a caller the
route will refuse, and a tenant this API process already knows is over its limits.

**A caller the route will refuse.** The framework reads and parses a request's JSON body
(up to 256 KiB, 5 MiB for a batch, on the event loop every tenant shares) before the
route's dependencies check who is calling. So anyone who can reach the API, with no
credential at all, could make it parse 5 MiB for each request sent. Here, a request that
declares a body is first asked who sent it (`auth.admitted`: the admin token, or a live
key usable from its address, looked up like the route would and cached for it). If
nobody, the route gets the request with an empty body instead: every API route checks its
caller in a dependency, which runs before the body is validated, so the answer (401, 403,
or the 429 of too many unknown credentials) is the route's own, word for word, and the
body is never parsed. Like the 413 of `BodyLimit`, the answer does not wait for the rest
of the body. (With `HOOKLINE_API_KEY_CACHE_S=0` nothing is cached, so a request with a
body has its key looked up twice, here and by the route, as a keyed POST's idempotency
claim already had.)

**A tenant over its limits.** A tenant's limits are counted where the route knows what to
count: `requests_per_s` and the places in progress when the route admits the key, events
once ingest has parsed the body. Before that, the request has had its body read and
parsed and, for a POST with an `Idempotency-Key`, a claim written and released. A tenant
past its limits could make the API do all of that for each request it sends, as fast as
it sends them. So once this process knows the tenant's window is spent, or that it holds
all its places (`certain_refusal`: no query, nothing counted), its next requests get the
route's own 429 here, before any of it. Only a key fresh in the process's key cache is
recognised for that, so a request without a body costs no query: once a cache period,
one request of the tenant goes on to the route, which looks the key up again (and refuses
the request); the rest are refused here. With `HOOKLINE_API_KEY_CACHE_S=0` nothing is
refused here for its limits, and the routes refuse as before.

The fast ingest path makes the same checks itself (`fast_ingest.py`: it answers only keys
in the cache, and hands every other request here unread).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hookline.api import auth
from hookline.api.errors import send_error
from hookline.api.routes.events import BATCH, SINGLE
from hookline.api.served import API_ROUTES
from hookline.api.tenant_limits import certain_refusal

INGEST_PATHS = frozenset({SINGLE, BATCH})  # they count events, not requests


class OverLimit:
    """ASGI middleware, outside the size limit, the idempotency claim and every route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_ROUTES):
            await self.app(scope, receive, send)
            return
        services = scope["app"].state.services
        with_body = declares_body(scope)
        caller = await auth.admitted(Request(scope), services, lookup=with_body)
        if caller is None and with_body:
            await self.app(scope, _empty_body(receive), send)
            return
        if caller is not None and caller.tenant_id is not None:
            ingest = scope["path"] in INGEST_PATHS
            refusal = await certain_refusal(services, caller.tenant_id, ingest=ingest)
            if refusal is not None:
                await send_error(refusal, scope, receive, send)
                return
        await self.app(scope, receive, send)


def declares_body(scope: Scope) -> bool:
    """Whether the request says a body follows: a Content-Length other than 0, or any
    Transfer-Encoding (chunked)."""
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


def _empty_body(receive: Receive) -> Receive:
    """`receive` with the body left unread: an empty one first, then the real messages
    (a response that listens for the client's disconnect gets them)."""
    given = False

    async def empty() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return await receive()

    return empty
