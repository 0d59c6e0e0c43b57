"""Every error the API answers is `{"error": {"code", "message"}}`: never a trace or a secret."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from common.db.session import is_statement_timeout
from common.errors import BrokerUnavailableError, TransportError
from common.metrics import REFUSAL_REASONS, Metrics
from common.wire import EVENT_ID_PATTERN, EVENT_TYPE_PATTERN, OPERATION_PATTERN
from hookline.api.schemas import EVENT_PATTERN_PATTERN, ErrorResponse

log = logging.getLogger(__name__)

MAX_REPORTED_PROBLEMS = 10
RETRY_AFTER_S = 1  # a broker that is away: long enough not to hammer it while it restarts
_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal",
    503: "unavailable",
}
_DESCRIPTIONS = {
    401: "Missing, unknown or revoked credentials",
    403: "The credentials do not allow this operation",
    404: "Not found (resources of other tenants are not found either)",
    409: "Conflicts with the resource's state or with another resource",
    413: "The request body is too large",
    415: "The request body is not of the media type the operation takes",
    422: "The request does not fit the schema",
    429: "Over one of the tenant's API limits; retry after `Retry-After` seconds",
    503: "A dependency (broker or database) is unavailable; retrying may succeed",
}


class ApiError(Exception):
    """An answer other than success, raised anywhere below a route handler."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def error_response(
    status_code: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status_code, headers=dict(headers or {}))


async def send_error(error: ApiError, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer `error` from an ASGI middleware, outside the app's error handler."""
    count_refusal(scope["app"].state.services.metrics, error.status_code, error.code)
    response = error_response(error.status_code, error.code, error.message, error.headers)
    await response(scope, receive, send)


def count_refusal(metrics: Metrics, status_code: int, code: str | None) -> None:
    """Count a 429 that holds a tenant or an address back (`hookline_api_refusals_total`)."""
    if status_code == 429 and code in REFUSAL_REASONS:
        metrics.api_refusals.labels(reason=code).inc()


def documented(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error answers a route can give."""
    return {
        code: {"model": ErrorResponse, "description": describe_status(code)}
        for code in status_codes
    }


def describe_status(code: int) -> str:
    """What an error status means here, as `/openapi.json` says it."""
    return _DESCRIPTIONS.get(code, "Error")


def spec_error(description: str) -> dict[str, Any]:
    """An error answer as an operation of `/openapi.json` lists it (for the answers that
    hooks on the spec add, after FastAPI built it from the routes)."""
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }


# What each pattern in the schemas allows, in words: a message never shows a regex.
_FORMS = {
    EVENT_TYPE_PATTERN: "dotted words of letters, digits, '_' and '-' (e.g. order.created)",
    OPERATION_PATTERN: "letters, digits, '_', '-' and '.' (e.g. sync)",
    EVENT_ID_PATTERN: "letters, digits, '_', '-', '.' and ':' (e.g. evt_42)",
    EVENT_PATTERN_PATTERN: "an event type, a prefix ending in .* (e.g. order.*), or *",
}


def _message(error: Mapping[str, Any]) -> str:
    if error.get("type") == "string_pattern_mismatch":
        pattern = str((error.get("ctx") or {}).get("pattern"))
        return "must be " + _FORMS.get(pattern, "in the documented form (see /docs)")
    if error.get("type") == "timezone_aware":
        return "a date-time needs its offset (Z, or e.g. +02:00)"
    return str(error.get("msg", "invalid"))


def problems(errors: Sequence[Any]) -> str:
    """Pydantic's errors as one readable line: `where: what; where: what`, with every
    pattern put in words."""
    lines = []
    for error in errors[:MAX_REPORTED_PROBLEMS]:
        where = ".".join(str(part) for part in error.get("loc", ())) or "request"
        lines.append(f"{where}: {_message(error)}")
    hidden = len(errors) - MAX_REPORTED_PROBLEMS
    if hidden > 0:
        lines.append(f"and {hidden} more")
    return "; ".join(lines) or "invalid request"


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    count_refusal(request.app.state.services.metrics, exc.status_code, exc.code)
    return error_response(exc.status_code, exc.code, exc.message, exc.headers)


# FastAPI's answer to a body it could not decode (not UTF-8): a 400, where a body that is
# not JSON is a 422. Both are "the body does not fit the schema", answered as documented.
_UNDECODABLE_BODY = "There was an error parsing the body"
NOT_UTF8_JSON = "body: not JSON encoded as UTF-8"  # and `limits.BodyLimit`'s


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == _UNDECODABLE_BODY:
        return error_response(422, "validation_error", NOT_UTF8_JSON)
    code = _CODES.get(exc.status_code, "error")
    if exc.status_code == 404:
        message = f"no such resource: {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
        headers = {**(exc.headers or {}), "Allow": ", ".join(_allowed(request))}
        return error_response(405, code, message, headers)
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, code, message, exc.headers)


def _allowed(request: Request) -> list[str]:
    """Every method the path answers to, from the published schema. Starlette's 405 names
    the methods of the first route that matched the path only, where a path often has a
    route per method. A literal path (`/v1/events/batch`) is its own resource, not an
    instance of a templated one beside it (`/v1/events/{event_id}`)."""
    paths: dict[str, dict[str, Any]] = request.app.openapi().get("paths", {})
    path = request.url.path
    if path in paths:
        return sorted(method.upper() for method in paths[path])
    methods: set[str] = set()
    for template, operations in paths.items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            methods.update(method.upper() for method in operations)
    return sorted(methods)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "validation_error", problems(exc.errors()))


async def _database_down(request: Request, exc: Exception) -> JSONResponse:
    if is_statement_timeout(exc):
        limit_s = request.app.state.services.settings.api_statement_timeout_s
        log.warning("a request's statement ran past its timeout", extra={"path": request.url.path})
        message = (
            f"the database did not answer this request within {limit_s:g} s (the API's "
            "statement timeout); narrow it (a filter, a smaller page) or retry later"
        )
        return error_response(503, "query_timeout", message)
    # The driver's message can name hosts and users; it goes to the log, not the client.
    log.warning("database unavailable", extra={"error": type(exc).__name__})
    return error_response(503, "database_unavailable", "the database is unavailable; retry later")


async def _broker_down(_request: Request, exc: Exception) -> JSONResponse:
    # Whatever route reached the broker: it is away (or refused the work), not a bug here.
    log.warning("broker unavailable", extra={"error": type(exc).__name__})
    retry_after_s = exc.retry_after_s if isinstance(exc, BrokerUnavailableError) else RETRY_AFTER_S
    return error_response(
        503, "broker_unavailable", "the message broker is unavailable; retry later",
        {"Retry-After": str(math.ceil(retry_after_s))},
    )  # fmt: skip


async def _internal(_request: Request, _exc: Exception) -> JSONResponse:
    # Starlette re-raises the exception after this answer, so the server still logs it.
    return error_response(500, "internal", "internal server error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(OperationalError, _database_down)
    app.add_exception_handler(TransportError, _broker_down)
    app.add_exception_handler(Exception, _internal)
