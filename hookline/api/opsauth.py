"""Who may run operations: a tenant's API key (its own tenant), or the admin token (any).

The operations routes answer both, so an operator with the admin token can look across
tenants (and at poison messages no tenant can be read from) while a tenant sees its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hookline.api import auth
from hookline.api.deps import Services, get_services
from hookline.api.errors import ApiError
from hookline.services.keys import KEY_PREFIX

_bearer = HTTPBearer(
    scheme_name="ApiKeyOrAdmin",
    description="A tenant's API key (`hl_...`) or the operator's admin token",
    auto_error=False,
)


@dataclass(frozen=True)
class Caller:
    """`tenant_id` None means the admin token: every tenant, unless a filter names one."""

    tenant_id: str | None
    actor: str

    def tenant(self, requested: str | None) -> str | None:
        """The tenant a request may see: its own, or (admin) the one it asks for."""
        if self.tenant_id is None:
            return requested
        if requested is not None and requested != self.tenant_id:
            raise ApiError(403, "forbidden", "an API key may only see its own tenant")
        return self.tenant_id


def caller(scope: str) -> Callable[..., Caller]:
    def check(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
        services: Services = Depends(get_services),
    ) -> Caller:
        token = credentials.credentials if credentials else ""
        # The admin token first: it may itself start with `hl_` (the dev server's does).
        if auth.is_admin_token(token, services.settings.admin_token):
            return Caller(None, "admin")
        if token.startswith(KEY_PREFIX) or not token:
            principal = auth.require(scope)(request, credentials, services)
            return Caller(principal.tenant_id, principal.key_id)
        auth.require_admin(credentials, services)
        return Caller(None, "admin")

    auth.COUNTING.add(check)  # a tenant key's request is counted, through `require`
    return check
