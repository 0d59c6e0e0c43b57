"""Request and response bodies of the subscription routes."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, field_validator

from common import filters, ssrf
from common.errors import UnsafeTargetError
from hookline.api.schemas import EventTypePattern, OperationName, Strict, SubscriptionStatus

# RFC 9110 tokens. Checked with `fullmatch`: `match` with `$` also takes a name ending in
# "\n" (Python's `$` matches before a final newline), which no request can carry.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 field values: visible characters, space and tab, and obs-text (latin-1 above
# 0x7f), which is what the HTTP client can encode; anything else fails every delivery.
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
# Headers Hookline sets itself: a subscription may not override the signature, framing
# or trace context (`propagate_trace` sends the attempt's own).
RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "host", "connection", "transfer-encoding",
     "user-agent", "webhook-id", "webhook-timestamp", "webhook-signature",
     "traceparent", "tracestate"}
)  # fmt: skip
# A name longer than any real header's, and a block that stays well inside the 16 KiB most
# servers take for a whole request head (Node's default; nginx's is 4 lines of 8 KiB) with
# Hookline's own headers beside it: past that a receiver refuses every webhook.
MAX_HEADER_NAME_CHARS = 256
MAX_HEADER_VALUE_CHARS = 4096
MAX_HEADER_BLOCK_CHARS = 8192
MAX_OVERLAP_S = 7 * 86400
DEFAULT_OVERLAP_S = 86400

Url = Annotated[str, StringConstraints(min_length=1, max_length=2048)]
Description = Annotated[str, StringConstraints(max_length=1000)]
FILTER_DESCRIPTION = (
    "Optional payload filter on `data`: `{path: value}` equality, or `{path: {op: operand}}` "
    "with `eq`, `ne`, `in`, `not_in`, `exists`, `gt`, `gte`, `lt`, `lte`; `any`/`all`/`not` "
    "combine filters. Paths are dotted (`customer.tier`, `items.0.sku`). See "
    "docs/architecture.md section 7."
)

PROPAGATE_TRACE_DESCRIPTION = (
    "Send the W3C `traceparent` (and `tracestate`) of each attempt with its webhooks, when "
    "Hookline traces (docs/operations.md, Tracing), so the receiver's spans join the "
    "event's trace. Not signed: the signature covers the id, timestamp and body only."
)


def check_headers(headers: dict[str, str] | None) -> dict[str, str] | None:
    for name, value in (headers or {}).items():
        if len(name) > MAX_HEADER_NAME_CHARS:
            raise ValueError(
                f"header name {name[:40]!r}... is too long: at most "
                f"{MAX_HEADER_NAME_CHARS} characters"
            )
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"header name {name!r} is not a valid HTTP token")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"header {name!r} is set by Hookline and cannot be overridden")
        if not _HEADER_VALUE.fullmatch(value) or len(value) > MAX_HEADER_VALUE_CHARS:
            raise ValueError(
                f"header {name!r} has a value that cannot be sent: at most 4,096 characters, "
                "visible latin-1 (ISO-8859-1), spaces or tabs"
            )
    if sum(len(name) + len(value) for name, value in (headers or {}).items()) > (
        MAX_HEADER_BLOCK_CHARS
    ):
        raise ValueError(
            f"headers: names and values together at most {MAX_HEADER_BLOCK_CHARS:,} characters"
        )
    return headers


def check_url(url: str | None) -> str | None:
    """The URL with its host in ASCII (IDNA A-labels): stored so, and so sent and checked,
    as browsers and HTTP clients send an internationalised name."""
    if url is None:
        return None
    try:
        return ssrf.ascii_url(url)
    except UnsafeTargetError as exc:
        raise ValueError(str(exc)) from None


def check_filter(spec: dict[str, Any] | None) -> dict[str, Any] | None:
    if spec is None:
        return None
    try:
        return filters.validate(spec)
    except filters.FilterError as exc:
        raise ValueError(f"filter: {exc}") from None


class SubscriptionFields(Strict):
    """What a subscriber may choose; `url`, `event_types` and `operations` identify it."""

    headers: dict[str, str] = Field(
        default_factory=dict,
        max_length=50,
        description="Static headers sent with every webhook (e.g. a receiver-issued token).",
    )
    filter: dict[str, Any] | None = Field(default=None, description=FILTER_DESCRIPTION)
    description: Description | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    rate_limit_per_s: float | None = Field(default=None, gt=0, le=100_000)
    max_in_flight: int | None = Field(default=None, ge=1, le=10_000)
    propagate_trace: bool = Field(default=False, description=PROPAGATE_TRACE_DESCRIPTION)

    _headers = field_validator("headers")(check_headers)
    _filter = field_validator("filter")(check_filter)


class SubscriptionCreate(SubscriptionFields):
    url: Url
    event_types: list[EventTypePattern] = Field(min_length=1, max_length=100)
    operations: list[OperationName] = Field(default_factory=list, max_length=100)
    ed25519: bool = Field(
        default=False,
        description="Also sign with an ed25519 key (`v1a`); receivers verify with the "
        "public key from `GET /v1/subscriptions/{id}/public-key`.",
    )

    _url = field_validator("url")(check_url)


class AdminSubscriptionCreate(SubscriptionCreate):
    verify: bool = Field(
        default=False,
        description="Run the verification handshake first; by default an operator's "
        "subscription is trusted and starts active.",
    )


class SubscriptionUpdate(Strict):
    """Only the fields present change. A new URL must pass the handshake again."""

    url: Url | None = None
    event_types: list[EventTypePattern] | None = Field(default=None, min_length=1, max_length=100)
    operations: list[OperationName] | None = Field(default=None, max_length=100)
    headers: dict[str, str] | None = Field(default=None, max_length=50)
    filter: dict[str, Any] | None = Field(default=None, description=FILTER_DESCRIPTION)
    description: Description | None = None
    metadata: dict[str, Any] | None = None
    rate_limit_per_s: float | None = Field(default=None, gt=0, le=100_000)
    max_in_flight: int | None = Field(default=None, ge=1, le=10_000)
    propagate_trace: bool | None = Field(default=None, description=PROPAGATE_TRACE_DESCRIPTION)

    _url = field_validator("url")(check_url)
    _headers = field_validator("headers")(check_headers)
    _filter = field_validator("filter")(check_filter)


class SubscriptionOut(BaseModel):
    id: str
    tenant_id: str
    url: str
    event_types: list[str]
    operations: list[str]
    filter: dict[str, Any] | None
    header_names: list[str] = Field(
        description="Names of the static headers sent with every webhook; values stay secret."
    )
    description: str | None
    metadata: dict[str, Any]
    rate_limit_per_s: float | None
    max_in_flight: int | None
    propagate_trace: bool = Field(description=PROPAGATE_TRACE_DESCRIPTION)
    status: SubscriptionStatus
    disabled_reason: str | None = Field(
        description="Why Hookline disabled it (e.g. the endpoint answered 410); cleared on resume."
    )
    public_key: str | None = Field(description="`whpk_...` when the subscription signs `v1a`.")
    verified_at: datetime | None
    previous_secret_expires_at: datetime | None = Field(
        description="While set and in the future, webhooks carry the old signature too."
    )
    created_at: datetime
    updated_at: datetime


class HandshakeOut(BaseModel):
    status: Literal["passed", "failed", "not_run"] = Field(
        description="`not_run` when the operator registered it pre-verified."
    )
    reason: str | None = Field(
        description="Why it failed (e.g. the endpoint answered HTTP 404, not 2xx), or what "
        "the endpoint answered when it passed."
    )


class SubscriptionCreated(SubscriptionOut):
    secret: str = Field(
        description="The signing secret (`whsec_...`), shown only in this response."
    )
    verification: HandshakeOut = Field(
        description="The verification handshake run on creation; on `failed`, fix the "
        "endpoint and call `POST /v1/subscriptions/{id}/verify`."
    )


class SubscriptionList(BaseModel):
    data: list[SubscriptionOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class RotateSecret(Strict):
    overlap_s: int = Field(
        default=DEFAULT_OVERLAP_S,
        ge=0,
        le=MAX_OVERLAP_S,
        description="How long the previous secret keeps signing (default 24 h).",
    )


class SecretOut(BaseModel):
    secret: str
    previous_secret_expires_at: datetime | None


class PublicKeyOut(BaseModel):
    algorithm: Literal["ed25519"]
    public_key: str = Field(description="`whpk_<base64 raw key>`; verifies `v1a` signatures.")


class VerificationOut(BaseModel):
    verified: bool
    status: SubscriptionStatus
    detail: str = Field(description="What the endpoint answered, or why it failed.")
