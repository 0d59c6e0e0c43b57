"""What API tests share: the `Api` handle, queue draining and the error-shape check."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import StarletteDeprecationWarning

from common.metrics import Metrics
from common.settings import Settings
from common.transport import Message, Transport
from common.wire import Event
from tests.queues import events_waiting

with warnings.catch_warnings():
    # Starlette asks for `httpx2` in its test client; the project pins `httpx`, which works.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

__all__ = ["ADMIN_TOKEN", "Api", "TestClient", "assert_error", "served_routes"]

ADMIN_TOKEN = "test-admin-token-0123456789"


@dataclass
class Api:
    client: TestClient
    app: FastAPI
    settings: Settings
    transport: Transport
    sessionmaker: sessionmaker[Session]
    metrics: Metrics
    engine: Engine

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def tenant(self, name: str = "acme") -> tuple[str, dict[str, str]]:
        """A new tenant (through the API) and auth headers for its all-scopes key."""
        response = self.client.post("/v1/tenants", json={"name": name}, headers=self.admin)
        assert response.status_code == 201, response.text
        body = response.json()
        return body["id"], {"Authorization": f"Bearer {body['api_key']}"}

    def key(self, tenant_id: str, *scopes: str) -> dict[str, str]:
        """Auth headers for a new key of `tenant_id` holding only `scopes`."""
        response = self.client.post(
            f"/v1/tenants/{tenant_id}/api-keys", json={"scopes": list(scopes)}, headers=self.admin
        )
        assert response.status_code == 201, response.text
        return {"Authorization": f"Bearer {response.json()['api_key']}"}

    def published(self) -> list[tuple[Message, Event]]:
        """Consume (and ack) every event waiting in `hookline.events`."""
        return events_waiting(self.transport)


def assert_error(response: Any, status_code: int, code: str | None = None) -> str:
    """Check the error shape and status; returns the message for further checks."""
    assert response.status_code == status_code, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    if code is not None:
        assert body["error"]["code"] == code
    message: str = body["error"]["message"]
    assert message
    assert "Traceback" not in response.text
    return message


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
