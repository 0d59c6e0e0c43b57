"""Between the control-plane routes and `hookline.services`: who acts (for the audit log),
what the services need from the app, and their refusals as the API's error answers."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.routing import APIRoute

from hookline.api.auth import Principal, client_ip
from hookline.api.deps import Services
from hookline.api.errors import ApiError
from hookline.services.audit import ADMIN, Actor
from hookline.services.errors import (
    Conflict,
    Invalid,
    NotFound,
    ServiceError,
    UnsafeTarget,
)
from hookline.services.subscriptions import Outbound

T = TypeVar("T")
_STATUS: dict[type[ServiceError], int] = {
    NotFound: 404,
    Conflict: 409,
    Invalid: 422,
    UnsafeTarget: 422,
}


def api_error(exc: ServiceError) -> ApiError:
    status = next(code for kind, code in _STATUS.items() if isinstance(exc, kind))
    return ApiError(status, exc.code, exc.message)


class ServiceRoute(APIRoute):
    """A route whose handler's `ServiceError` answers as the matching `ApiError`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def translated(request: Request) -> Response:
            try:
                return await handler(request)
            except ServiceError as exc:
                raise api_error(exc) from None

        return translated


def acting(request: Request, principal: Principal) -> Actor:
    """The tenant's key making this request, from the connecting address."""
    return Actor(principal.key_id, client_ip(request))


def admin(request: Request) -> Actor:
    """The operator (admin token) making this request, from the connecting address."""
    return Actor(ADMIN, client_ip(request))


def outbound(services: Services) -> Outbound:
    return Outbound(services.settings, services.resolver, services.secret_box)


async def reaching_endpoint(services: Services, tenant_id: str, call: Callable[[], T]) -> T:
    """Run `call`, which reaches the tenant's endpoint (name lookup, handshake), on the
    handshake gate's threads under the tenant's cap: never on the request pool."""
    limits = await services.limits.of(tenant_id)
    return await services.handshakes.run(tenant_id, limits.max_handshakes, call)
