"""Caps on what a request may carry: its head (at the protocol), its body and its encoding,
and NUL in its path or query, each refused before any handler reads it."""

from __future__ import annotations

import asyncio
import codecs
import json
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hookline.api.errors import NOT_UTF8_JSON, error_response

# Events are notifications, not file transfers; bigger bodies belong in the receiver's API.
# A request body's limit, an event's with it (and a poison message's corrected body's).
MAX_BODY_BYTES = 256 * 1024
# A batch holds up to 1,000 events; it may be as large as a few hundred single ones.
MAX_BATCH_BODY_BYTES = 5 * 1024 * 1024


class BodyLimit:
    """Answer 413 to any request whose body exceeds `max_bytes`, and 422 to a JSON body that
    is not UTF-8 (a byte order mark included).

    The body is read here (at most `max_bytes` of it) and handed on whole, so a chunked
    request that lies about its size is cut off as early as one with a Content-Length.
    The framework parses a body with `json.loads(bytes)`, which sniffs UTF-16 and UTF-32
    and skips a UTF-8 BOM: such bodies were accepted where the contract takes UTF-8 alone.
    The fast ingest path's parser is strict already and hands such a body on to here, so
    plain ingest pays nothing for the check.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, per_path: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = dict(per_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope["path"], self.max_bytes)
        if self._declared_size(scope) > limit:
            await self._too_large(scope, receive, send, limit)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._too_large(scope, receive, send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if _is_json(scope) and not _is_utf8_json(body):
            await error_response(422, "validation_error", NOT_UTF8_JSON)(scope, receive, send)
            return
        pending: list[Message] = [{"type": "http.request", "body": body}]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)

    @staticmethod
    def _declared_size(scope: Scope) -> int:
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return 0
        return 0

    @staticmethod
    async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        message = f"request body exceeds the limit of {limit} bytes"
        await error_response(413, "payload_too_large", message)(scope, receive, send)


def _is_json(scope: Scope) -> bool:
    """Whether the framework would parse the body as JSON (its test: application/json or
    application/*+json; without a content type it does not)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media: bytes = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or (
                media.startswith(b"application/") and media.endswith(b"+json")
            )
    return False


def _is_utf8_json(body: bytes) -> bool:
    """False for what `json.loads(bytes)` would read other than as strict UTF-8: UTF-16 and
    UTF-32 (which it tells by their NUL bytes, never in JSON as UTF-8: a control character),
    a UTF-8 BOM (which it skips), and invalid UTF-8 (surrogates it lets through)."""
    if b"\x00" in body:
        return False
    if body.isascii():
        return True
    if body.startswith(codecs.BOM_UTF8):
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class RefuseNul:
    """Answer 422 to a request whose path or query holds NUL (`%00`).

    No identifier or filter value can hold one, and PostgreSQL refuses it in any text
    parameter, so a lookup would otherwise fail as a database error (a 500). Checked once
    here for every route, rather than in each parameter's type."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            where = None
            if "\x00" in scope["path"]:
                where = "path"
            elif b"%00" in scope.get("query_string", b""):
                where = "query"
            if where is not None:
                message = f"{where}: holds NUL (%00), which no value here can contain"
                response = error_response(422, "validation_error", message)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def bounded_http(max_head_bytes: int) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, answering 431 (and closing) once a request's line and
    headers exceed `max_head_bytes`.

    httptools (llhttp) sets no limit of its own and uvicorn's only knob is for h11, so
    without this an unauthenticated client could make the server buffer a header of any
    size. Counted as the bytes read while a request's head is incomplete: the most it
    holds is the limit plus one read."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class BoundedHead(HttpToolsProtocol):
        _unparsed: int | None = 0  # bytes read since the head began; None in a body
        _head_size = 0  # of the head's parsed line and headers
        _refused = False

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._unparsed is not None:
                self._unparsed += len(data)
            super().data_received(data)
            # A head still incomplete (one endless header, say) is buffered by the parser.
            if not self._refused and (self._unparsed or 0) > max_head_bytes:
                self._refuse()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_size = 0

        def on_url(self, url: bytes) -> None:
            self._head_size += len(url)
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_size += len(name) + len(value) + 4
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._unparsed = None
            if self._refused or self._head_size > max_head_bytes:
                self._refuse()
                return
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if not self._refused:
                super().on_message_complete()
                self._unparsed = 0

        def _refuse(self) -> None:
            if self._refused:
                return
            self._refused = True
            body = json.dumps(
                {
                    "error": {
                        "code": "headers_too_large",
                        "message": f"request line and headers exceed {max_head_bytes} bytes",
                    }
                }
            ).encode()
            head = (
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"content-type: application/json\r\nconnection: close\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
            )
            self.transport.write(head + body)
            self.transport.close()

    return BoundedHead
