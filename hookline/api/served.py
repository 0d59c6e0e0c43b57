"""The API routes an app serves, walked from the app itself."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

# Where every API route lives: what a tenant key or the admin token calls (not health,
# metrics or the portal, whose forms have their own session).
API_ROUTES = "/v1/"


def served_routes(app: FastAPI) -> list[APIRoute]:
    """Every API route the app serves, from the app itself (so a new module is included).

    FastAPI 0.165 keeps included routers as wrappers holding the original router; older
    versions copy the routes. Both are walked; our routers carry their prefix themselves.
    """
    found: list[APIRoute] = []
    pending: list[Any] = list(app.routes)
    while pending:
        route = pending.pop(0)
        if isinstance(route, APIRoute):
            found.append(route)
        elif getattr(route, "original_router", None) is not None:
            pending.extend(route.original_router.routes)
    return found
