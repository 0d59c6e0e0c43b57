"""`Idempotency-Key` on every POST of the API (`/v1/`): a repeated request gets the first
one's stored answer. The portal's forms are not kept (their HTML may show a secret).

The first request with a key claims it (a row without an answer) before it runs, so a
concurrent repeat is told 409 instead of running twice; its answer is stored when it is
final (2xx and 4xx other than auth and conflicts). 5xx answers release the key, so a retry
runs again. The same key with a different method, path or body is a client error (422).
Keys are scoped to the caller (its API key's id, or the admin token) and kept for
`HOOKLINE_IDEMPOTENCY_TTL_S`.

Credentials in an answer (`api_key`, `secret`, a portal link's `url`) are never
stored in clear: they are sealed like subscription secrets into `secrets_enc` and the stored
body holds `null` in their place; a replay puts them back, so it is byte for byte the first
answer. If they can no longer be opened (the key that sealed them left the key ring), the
replay carries `null` and names the fields in `Idempotent-Secrets-Omitted`
(`idempotency_seal`).

Expired rows are deleted as the API goes and by `hookline gc` (`idempotency_gc`).

`POST /v1/events` also makes the key the event id (the router then drops duplicates even
if the stored answer has expired).
"""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.db.models import IdempotencyRecord
from common.secretbox import SecretBox
from common.wire import utcnow
from hookline.api import auth
from hookline.api.errors import error_response, spec_error
from hookline.api.idempotency_gc import Sweep
from hookline.api.idempotency_seal import opened, sealed
from hookline.api.served import API_ROUTES  # the portal's forms (HTML) are never kept

HEADER = b"idempotency-key"
OMITTED_HEADER = "idempotent-secrets-omitted"
KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,200}")  # with fullmatch: `$` would take a final "\n"
# Answers that say nothing final about the request: a retry must run it again.
NOT_STORED = frozenset({401, 403, 409, 429})
REPLAYED_HEADER = "idempotent-replayed"
_KEPT_HEADERS = ("content-type", "cache-control", "location", "retry-after")


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


class Idempotency:
    """ASGI middleware; the app's `Services` supplies the database."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._sweep = Sweep()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        api = scope["type"] == "http" and scope["path"].startswith(API_ROUTES)
        key_bytes = _header(scope, HEADER) if api else None
        if key_bytes is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        key = key_bytes.decode("latin-1")
        if not KEY_PATTERN.fullmatch(key):
            problem = "Idempotency-Key must be 1 to 200 visible ASCII characters"
            await error_response(422, "invalid_idempotency_key", problem)(scope, receive, send)
            return
        services = scope["app"].state.services
        caller = await auth.admitted(Request(scope), services)
        if caller is None:
            # No claim: the route refuses the request (401, 403), and a refusal is never
            # stored. Claiming and releasing would be two writes to the shared database for
            # anyone who can reach the API, with no credential at all.
            await self.app(scope, receive, send)
            return
        # Nor for a tenant this process knows is over its limits: `OverLimit`, outside this
        # middleware, has answered its 429 already.
        body, more = await _read_body(receive)
        # Who, not a digest of the credential: a copy of the database could test guesses
        # of a weak admin token against its digest.
        owner = caller.who
        request_hash = hashlib.sha256(
            b"\0".join([scope["method"].encode(), scope["path"].encode(),
                        scope.get("query_string", b""), body])
        ).hexdigest()  # fmt: skip
        sessions: sessionmaker[Session] = services.sessionmaker
        box: SecretBox = services.secret_box
        ttl_s: float = services.settings.idempotency_ttl_s
        try:
            stored = await run_in_threadpool(_claim, sessions, owner, key, request_hash, ttl_s)
        except OperationalError:
            await error_response(
                503, "database_unavailable", "the database is unavailable; retry later"
            )(scope, receive, send)
            return
        if stored is not None:
            await _replay(stored, request_hash, box, scope, receive, send)
            return
        captured: list[Message] = []

        async def replay_body() -> Message:
            return more.pop(0) if more else await receive()

        async def capture(message: Message) -> None:
            captured.append(message)

        try:
            await self.app(scope, replay_body, capture)
        finally:
            await run_in_threadpool(_finish, sessions, box, owner, key, scope["path"], captured)
        for answer in captured:
            await send(answer)
        if self._sweep.due():
            await run_in_threadpool(self._sweep.run, sessions, ttl_s)


async def _read_body(receive: Receive) -> tuple[bytes, list[Message]]:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), [message]
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            body = b"".join(chunks)
            return body, [{"type": "http.request", "body": body}]


def _claim(
    sessions: sessionmaker[Session], owner: str, key: str, request_hash: str, ttl_s: float
) -> IdempotencyRecord | None:
    """None when this request now owns the key; else the row that already holds it."""
    with sessions() as session:
        try:
            with session.begin():
                expired = utcnow() - timedelta(seconds=ttl_s)
                session.execute(
                    delete(IdempotencyRecord).where(
                        IdempotencyRecord.scope == owner,
                        IdempotencyRecord.key == key,
                        IdempotencyRecord.created_at < expired,
                    )
                )
                session.add(
                    IdempotencyRecord(
                        scope=owner, key=key, request_hash=request_hash, headers={},
                        created_at=utcnow(),
                    )
                )  # fmt: skip
            return None
        except IntegrityError:
            pass
    with sessions() as session:
        row = session.scalars(
            select(IdempotencyRecord).where(
                IdempotencyRecord.scope == owner, IdempotencyRecord.key == key
            )
        ).first()
    if row is None:  # released between our insert and our read: treat as in progress
        return IdempotencyRecord(scope=owner, key=key, request_hash=request_hash, headers={})
    return row


def _finish(
    sessions: sessionmaker[Session],
    box: SecretBox,
    owner: str,
    key: str,
    path: str,
    captured: list[Message],
) -> None:
    start = next((m for m in captured if m["type"] == "http.response.start"), None)
    status = int(start["status"]) if start is not None else 500
    with sessions() as session, session.begin():
        row = session.get(IdempotencyRecord, (owner, key))
        if row is None:
            return
        if status >= 500 or status in NOT_STORED or start is None:
            session.delete(row)
            return
        headers = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in start.get("headers", ())
            if k.decode("latin-1").lower() in _KEPT_HEADERS
        }
        body = b"".join(m.get("body", b"") for m in captured if m["type"] == "http.response.body")
        row.status_code = status
        row.headers = headers
        row.body, row.secrets_enc = sealed(body, box, path)


async def _replay(
    row: IdempotencyRecord,
    request_hash: str,
    box: SecretBox,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    if row.request_hash != request_hash:
        message = "this Idempotency-Key was used for a different request"
        await error_response(422, "idempotency_key_reused", message)(scope, receive, send)
        return
    if row.status_code is None:
        message = "a request with this Idempotency-Key is still in progress; retry shortly"
        await error_response(409, "idempotency_in_progress", message)(scope, receive, send)
        return
    body, omitted = opened(row, box, scope["path"])
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in row.headers.items()]
    headers += [
        (b"content-length", str(len(body)).encode()),
        (REPLAYED_HEADER.encode(), b"true"),
    ]
    if omitted:
        headers.append((OMITTED_HEADER.encode(), ", ".join(omitted).encode()))
    await send({"type": "http.response.start", "status": row.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def document(app: FastAPI) -> None:
    """Publish the header on every POST in `/openapi.json`, with the answers it can add
    (and the 413 of the body limit on every operation with a body)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = build()
        for operations in spec.get("paths", {}).values():
            for operation in operations.values():
                # The body limit holds for every request (`BodyLimit`), documented or not.
                if "requestBody" in operation:
                    operation["responses"].setdefault("413", spec_error(_TOO_LARGE))
            operation = operations.get("post")
            if operation is None:
                continue
            parameters = operation.setdefault("parameters", [])
            if not any(p.get("name") == "Idempotency-Key" for p in parameters):
                parameters.append(_PARAMETER)
            for status, description in (("409", _IN_PROGRESS), ("422", _INVALID)):
                operation["responses"].setdefault(status, spec_error(description))
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Repeat the request safely: the same key (per API key, for "
    "`HOOKLINE_IDEMPOTENCY_TTL_S`, default 24 h) gets the first answer again, marked "
    "`Idempotent-Replayed: true`.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[!-~]+$"},
}
_TOO_LARGE = "The request body is too large"
_IN_PROGRESS = "A request with the same Idempotency-Key is still in progress"
_INVALID = "The request does not fit the schema, or its Idempotency-Key was used differently"
