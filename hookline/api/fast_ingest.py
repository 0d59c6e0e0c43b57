"""`POST /v1/events` for the plain request, answered before the framework sees it.

Routing, dependency resolution and the middleware stack cost several times what accepting
an event does. Most requests need none of it: a cached key with the scope, a JSON body that
fits the schema, no `Idempotency-Key`. Those are validated against the route's own model
and published here; every other request (unknown or uncached key, restricted networks,
schema errors, a key to remember, a body without a length or over the limit) goes on to
the full route untouched, so its answers cannot differ. Same event, same checks, same
producer: only the way there is shorter.
"""

from __future__ import annotations

from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.errors import TransportError
from hookline.api.auth import EVENTS_WRITE, KEY_PREFIX, cached_key
from hookline.api.deps import Services
from hookline.api.errors import ApiError, error_response
from hookline.api.routes.events import broker_unavailable
from hookline.api.schemas import EventAccepted, EventIn
from producer import InvalidEvent

PATH = "/v1/events"
_BEARER = b"bearer "
_JSON = b"application/json"
_ACCEPTED_HEADERS = [(b"content-type", b"application/json")]


class FastIngest:
    """ASGI middleware, outermost: the plain `POST /v1/events` here, the rest to `app`."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        services: Services = scope["app"].state.services
        principal = await self._plain(scope, services)
        if principal is None:
            await self.app(scope, receive, send)
            return
        body = await _read(receive)
        if body is None:
            return  # the client went away
        try:
            event = EventIn.model_validate_json(body)
        except ValidationError:
            await self.app(scope, _replaying(body, receive), send)  # the route words the 422
            return
        try:
            event_id = await services.producer.publish_async(
                event.type,
                event.data,
                tenant=principal,
                id=event.id,
                operation=event.operation,
                timestamp=event.timestamp,
            )
        except InvalidEvent as exc:
            await _error(ApiError(422, "invalid_event", str(exc)), scope, receive, send)
            return
        except TransportError as exc:
            await _error(broker_unavailable(exc), scope, receive, send)
            return
        answer = EventAccepted(id=event_id).model_dump_json().encode()
        headers = [*_ACCEPTED_HEADERS, (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    async def _plain(self, scope: Scope, services: Services) -> str | None:
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
        if not length.isdigit() or int(length) > self.max_bytes:
            return None
        if authorization[: len(_BEARER)].lower() != _BEARER:
            return None
        token = authorization[len(_BEARER) :].decode("latin-1")
        if not token.startswith(KEY_PREFIX) or not token.isprintable() or " " in token:
            return None
        try:
            key = await cached_key(token, services)
        except Exception:  # the database is down: the route gives that answer
            return None
        # Only a live, unrestricted key with the scope; the route answers for the others.
        if key is None or key.revoked_at is not None or key.allowed_cidrs:
            return None
        return key.tenant_id if EVENTS_WRITE in key.scopes else None


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


async def _error(error: ApiError, scope: Scope, receive: Receive, send: Send) -> None:
    response = error_response(error.status_code, error.code, error.message, error.headers)
    await response(scope, receive, send)
