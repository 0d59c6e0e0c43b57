"""The ingest routes for the plain request, answered before the framework sees it.

Routing, dependency resolution and the middleware stack cost several times what accepting
an event does. Most requests need none of it: a cached key with the scope, a JSON body that
fits the schema, no `Idempotency-Key`. Those are validated against the routes' own models
(a batch in one pass over the raw body, every item valid) and published here; every other
request (unknown key, restricted networks, a schema error anywhere, a key to remember, a
body without a length or over its limit, data that a tenant in `reject` mode must be
refused for) goes on to the full route untouched, so its answers cannot differ. Same
events, same checks (the tenant's limits too, with the same `admit_events`; the
catalogue's `SchemaCheck.screen`), same producer: only the way is shorter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from pydantic import Field, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.errors import TransportError
from common.tracing import TraceContext
from hookline.api import traces
from hookline.api.auth import EVENTS_WRITE, cached_key
from hookline.api.deps import Services
from hookline.api.errors import ApiError, send_error
from hookline.api.routes.events import (
    SINGLE,
    accepted_batch,
    broker_unavailable,
    wire_fields,
)
from hookline.api.schema_check import Screen
from hookline.api.schemas import MAX_BATCH_EVENTS, EventAccepted, EventIn, Strict
from hookline.api.tenant_limits import admit_events, certain_refusal
from hookline.services.keys import KEY_PREFIX
from producer import InvalidEvent

log = logging.getLogger(__name__)
_BEARER = b"bearer "
_JSON = b"application/json"


class _ValidBatch(Strict):
    """A batch whose every item is valid: the only kind answered here."""

    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)


class FastIngest:
    """ASGI middleware, outermost: plain ingest requests here, the rest to `app`.

    It stands outside the app's error handler, so it answers its own failures: a 500 in
    the API's error shape, and the exception in the log."""

    def __init__(self, app: ASGIApp, limits: Mapping[str, int]) -> None:
        self.app = app
        self.limits = dict(limits)  # body limit per path: the paths answered here

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        if scope["type"] != "http" or path not in self.limits or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        services: Services = scope["app"].state.services
        started_ns = time.time_ns() if services.tracing is not None else None
        tenant = await self._plain(scope, services, self.limits[path])
        if tenant is None:  # the route's; `OverLimit` refuses a tenant past its rate there
            await self.app(scope, receive, send)
            return
        # A tenant this process knows is over its ingest rate is refused before its body is
        # read and parsed (up to 5 MiB): else it could spend the event loop's CPU, which
        # every tenant's ingest shares, as fast as it can send (`over_limit.py`).
        refusal = await certain_refusal(services, tenant, ingest=True)
        if refusal is not None:
            await send_error(refusal, scope, receive, send)
            return
        body = await _read(receive)
        if body is None:
            return  # the client went away
        try:
            parsed = (EventIn if path == SINGLE else _ValidBatch).model_validate_json(body)
        except ValidationError:
            await self.app(scope, _replaying(body, receive), send)  # the route words the 422
            return
        events = [parsed] if isinstance(parsed, EventIn) else parsed.events
        try:
            screen = await services.schema_check.screen(tenant, events)
        except Exception:  # the database is down: the route gives that answer
            screen = None
        if screen is None or screen.refused:  # the route words (and counts) the 422
            await self.app(scope, _replaying(body, receive), send)
            return
        traceparent, tracestate = _trace_headers(scope) if started_ns else (None, None)
        span = traces.ingest(
            services.tracing, traceparent, tracestate,
            route=path, tenant=tenant, events=len(events), start_ns=started_ns,
        )  # fmt: skip
        try:
            with span as trace:
                answer = await _admit_and_accept(parsed, events, tenant, services, screen, trace)
        except ApiError as exc:  # over one of the tenant's limits
            await send_error(exc, scope, receive, send)
            return
        except InvalidEvent as exc:
            await send_error(ApiError(422, "invalid_event", str(exc)), scope, receive, send)
            return
        except TransportError as exc:
            await send_error(broker_unavailable(exc), scope, receive, send)
            return
        except Exception:
            log.exception("ingest request failed")
            internal = ApiError(500, "internal", "internal server error")
            await send_error(internal, scope, receive, send)
            return
        headers = [(b"content-type", _JSON), (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    async def _plain(self, scope: Scope, services: Services, limit: int) -> str | None:
        """The tenant of a request the fast path may answer, or None to hand it on."""
        authorization = length = content_type = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"content-length":
                length = value
            elif name == b"content-type":
                content_type = value
            elif name in (b"idempotency-key", b"transfer-encoding"):
                return None
        if authorization is None or length is None or content_type is None:
            return None
        if content_type.split(b";", 1)[0].strip().lower() != _JSON:
            return None
        if not length.isdigit() or int(length) > limit:
            return None
        if authorization[: len(_BEARER)].lower() != _BEARER:
            return None
        token = authorization[len(_BEARER) :].decode("latin-1")
        if not token.startswith(KEY_PREFIX) or not token.isprintable() or " " in token:
            return None
        try:
            client = scope.get("client")
            key = await cached_key(token, services, client[0] if client else None)
        except Exception:  # the database is down, or a 429: the route gives that answer
            return None
        # Only a live, unrestricted key with the scope; the route answers for the others.
        if key is None or key.revoked_at is not None or key.allowed_cidrs:
            return None
        return key.tenant_id if EVENTS_WRITE in key.scopes else None


async def _admit_and_accept(
    parsed: EventIn | _ValidBatch,
    events: list[EventIn],
    tenant: str,
    services: Services,
    screen: Screen,
    trace: TraceContext | None,
) -> bytes:
    """Within the tenant's limits, publish the event(s), confirmed; the 202's body."""
    if isinstance(parsed, EventIn):
        await admit_events(services, tenant, 1)
    else:
        size = len(parsed.events)
        await admit_events(services, tenant, size, batch=size)
    services.schema_check.report(tenant, screen, events)  # `warn`: accepted
    return await _accept(parsed, tenant, services, trace)


async def _accept(
    parsed: EventIn | _ValidBatch, tenant: str, services: Services, trace: TraceContext | None
) -> bytes:
    """Publish the event(s), confirmed, and return the 202's body."""
    producer = services.producer
    if isinstance(parsed, EventIn):
        (event_id,) = await producer.publish_fields_async([wire_fields(parsed, tenant)], trace)
        return EventAccepted(id=event_id).model_dump_json().encode()
    events = [wire_fields(event, tenant) for event in parsed.events]
    return accepted_batch(await producer.publish_fields_async(events, trace))


def _trace_headers(scope: Scope) -> tuple[bytes | None, bytes | None]:
    """The request's `traceparent` and `tracestate` as sent (checked by `traces.ingest`)."""
    traceparent = tracestate = None
    for name, value in scope["headers"]:
        if name == b"traceparent":
            traceparent = value
        elif name == b"tracestate":
            tracestate = value
    return traceparent, tracestate


async def _read(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    pending: list[Message] = [{"type": "http.request", "body": body}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
