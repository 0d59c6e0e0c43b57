"""API keys and the admin token: the dependencies that check them on every request.

Keys are issued by `hookline/services/keys.py` (only their SHA-256 is stored).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from common.db.models import ApiKey
from hookline.api.deps import Services, get_services
from hookline.api.errors import ApiError
from hookline.api.in_flight import hold
from hookline.api.keycache import KeyRecord
from hookline.api.tenant_limits import admit_request
from hookline.services.keys import KEY_PREFIX, KEY_SHAPE, hash_key

EVENTS_WRITE = "events:write"
SUBSCRIPTIONS_READ = "subscriptions:read"
SUBSCRIPTIONS_WRITE = "subscriptions:write"
DELIVERIES_READ = "deliveries:read"
DELIVERIES_REPLAY = "deliveries:replay"
EVENT_TYPES_READ = "event_types:read"
EVENT_TYPES_WRITE = "event_types:write"
AUDIT_READ = "audit:read"
ADMIN = "admin"  # who the admin token is

_api_key = HTTPBearer(
    scheme_name="ApiKey",
    description="A tenant's API key: `Authorization: Bearer hl_...`",
    auto_error=False,
)
_admin_token = HTTPBearer(
    scheme_name="AdminToken",
    description="The operator's token: `Authorization: Bearer <HOOKLINE_ADMIN_TOKEN>`",
    auto_error=False,
)


@dataclass(frozen=True)
class Principal:
    """Who is calling: one tenant, through one API key, with these scopes."""

    tenant_id: str
    key_id: str
    scopes: frozenset[str]
    source_ip: str | None = None


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def client_ip(request: Request) -> str | None:
    """The connecting address (a proxy in front must not be trusted to rewrite it)."""
    return request.client.host if request.client else None


def _source_allowed(request: Request, cidrs: list[str]) -> bool:
    if not cidrs:
        return True
    host = client_ip(request) or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def _load(token: str, services: Services, address: str | None) -> KeyRecord | None:
    """The key's record, looked up; None when no key has it. 429 for an address that has
    had its share of look-ups that found nothing this second (`misses.py`)."""
    if KEY_SHAPE.fullmatch(token) is None:
        return None  # no key has that form: answered without a query, database up or not
    digest = hash_key(token)
    if services.key_cache.refused(digest):
        return None  # looked up less than a TTL ago, and none had it
    services.misses.check(address, digest)
    with services.sessionmaker() as session:
        key = session.scalars(select(ApiKey).where(ApiKey.key_hash == digest)).first()
    if key is None:
        services.key_cache.refuse(digest)
        services.misses.charge(address)
        return None
    services.misses.found(digest)
    record = KeyRecord(
        id=key.id,
        tenant_id=key.tenant_id,
        scopes=frozenset(key.scopes),
        allowed_cidrs=tuple(key.allowed_cidrs),
        revoked_at=key.revoked_at,
    )
    services.key_cache.put(digest, record)
    return record


def _token(credentials: HTTPAuthorizationCredentials | None) -> str:
    token = credentials.credentials if credentials else None
    if not token:
        raise _unauthorized("missing API key: send Authorization: Bearer hl_...")
    if not token.startswith(KEY_PREFIX):
        raise _unauthorized("unknown API key")
    return token


def _principal(request: Request, token: str | None, services: Services) -> Principal:
    checked = _token(HTTPAuthorizationCredentials(scheme="Bearer", credentials=token or ""))
    key = services.key_cache.get(hash_key(checked)) or _load(checked, services, client_ip(request))
    return _admit(request, key)


def _admit(request: Request, key: KeyRecord | None) -> Principal:
    if key is None:
        raise _unauthorized("unknown API key")
    if key.revoked_at is not None:
        raise _unauthorized("this API key has been revoked")
    if not _source_allowed(request, list(key.allowed_cidrs)):
        raise ApiError(403, "forbidden", "this API key may not be used from this address")
    return Principal(
        tenant_id=key.tenant_id,
        key_id=key.id,
        scopes=key.scopes,
        source_ip=client_ip(request),
    )


# The dependencies that count a request against its tenant's `requests_per_s`: the routes
# that use one (directly or through another) document its 429 (`document_request_limit`).
COUNTING: set[Callable[..., object]] = set()


def require(scope: str) -> Callable[..., Principal]:
    """A dependency that admits API keys holding `scope` and returns the caller, once the
    request holds one of its tenant's `max_concurrent_requests` places in this process and
    is counted against its `requests_per_s` (429 beyond either). The ingest routes use
    `require_on_loop`, which counts nothing: they count events."""

    def check(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_api_key),
        services: Services = Depends(get_services),
    ) -> Principal:
        token = credentials.credentials if credentials else None
        principal = _principal(request, token, services)
        if not getattr(request.state, "counted", False):  # once, however many checks
            request.state.counted = True
            hold(services, request.state, principal.tenant_id)
            admit_request(services, principal.tenant_id)
        return _scoped(principal, scope)

    COUNTING.add(check)
    return check


def _scoped(principal: Principal, scope: str) -> Principal:
    if scope not in principal.scopes:
        raise ApiError(403, "forbidden", f"this API key lacks the scope {scope!r}")
    return principal


def require_on_loop(scope: str) -> Callable[..., Awaitable[Principal]]:
    """`require` for the ingest routes: a cached key is checked on the event loop, and only
    a lookup goes to a worker thread (each hop costs more than the check itself)."""

    async def check(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_api_key),
        services: Services = Depends(get_services),
    ) -> Principal:
        key = await cached_key(_token(credentials), services, client_ip(request))
        return _scoped(_admit(request, key), scope)

    return check


@dataclass(frozen=True)
class Admitted:
    """A caller `admitted` lets past: a tenant's key, or the admin token (no tenant)."""

    tenant_id: str | None
    who: str  # the key's id, or "admin": never anything derived from the credential itself


async def admitted(request: Request, services: Services, *, lookup: bool = True) -> Admitted | None:
    """Who the request's bearer is, when it is the admin token or a live API key usable
    from its address: what `require` or `require_admin` would let past before scopes and
    limits; else None. For the work a middleware does before the route (an idempotency
    claim), which a request the route will refuse as 401 or 403 must not cost. Without
    `lookup`, only a key fresh in this process's cache is known (no query, no thread)."""
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    if is_admin_token(token, services.settings.admin_token):
        return Admitted(tenant_id=None, who=ADMIN)
    if not token.startswith(KEY_PREFIX):
        return None
    try:
        if lookup:
            key = await cached_key(token, services, client_ip(request))
        else:
            key = services.key_cache.peek(hash_key(token))
        _admit(request, key)
    except ApiError:  # the route gives that answer
        return None
    assert key is not None  # `_admit` refuses None
    return Admitted(tenant_id=key.tenant_id, who=key.id)


async def cached_key(token: str, services: Services, address: str | None) -> KeyRecord | None:
    """The key's record: from the cache on the event loop, else looked up (and cached) on
    a worker thread; None for a key that does not exist. 429 instead of a look-up for an
    address that has had its share of unknown credentials this second."""
    if KEY_SHAPE.fullmatch(token) is None:
        return None  # not even the form of a key: no thread, no query
    digest = hash_key(token)
    key = services.key_cache.get(digest)
    if key is None and not services.key_cache.refused(digest):
        services.misses.check(address, digest)  # before a thread is taken
        key = await run_in_threadpool(_load, token, services, address)
    return key


def require_admin(
    credentials: HTTPAuthorizationCredentials | None = Depends(_admin_token),
    services: Services = Depends(get_services),
) -> None:
    """Admit only the operator's `HOOKLINE_ADMIN_TOKEN`, compared in constant time."""
    expected = services.settings.admin_token
    if not expected:
        raise ApiError(403, "admin_disabled", "admin routes are disabled: set HOOKLINE_ADMIN_TOKEN")
    if credentials is None:
        raise _unauthorized("missing admin token: send Authorization: Bearer <admin token>")
    if not is_admin_token(credentials.credentials, expected):
        raise _unauthorized("invalid admin token")


def is_admin_token(token: str, expected: str | None) -> bool:
    """Whether `token` is the configured admin token, compared in constant time."""
    if not expected or not token:
        return False
    # Digests of equal length, so the comparison reveals nothing, not even the token's length.
    return hmac.compare_digest(hash_key(token), hash_key(expected))
