"""What API tests share: the `Api` handle, queue draining and the error-shape check."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import StarletteDeprecationWarning

from common.db.session import make_engine, make_sessionmaker
from common.metrics import Metrics
from common.settings import Settings
from common.ssrf import Resolver, system_resolver
from common.transport import MemoryTransport, Message, Transport, topology
from common.wire import Event
from hookline.api.app import create_app
from hookline.api.served import served_routes
from tests.queues import events_waiting

with warnings.catch_warnings():
    # Starlette asks for `httpx2` in its test client; the project pins `httpx`, which works.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

__all__ = ["ADMIN_TOKEN", "Api", "TestClient", "assert_error", "build_api", "served_routes"]

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

    def close(self) -> None:
        self.client.close()
        self.transport.close()
        self.engine.dispose()

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


def build_api(
    database_url: str,
    *,
    transport: Transport | None = None,
    sessionmaker: sessionmaker[Session] | None = None,
    raise_server_exceptions: bool = True,
    client_address: tuple[str, int] = ("testclient", 50000),
    declare: bool = True,
    resolver: Resolver = system_resolver,
    **overrides: Any,
) -> Api:
    """An app on the migrated `database_url` and (by default) the in-memory broker, with
    the test settings; `overrides` are more settings. The caller closes it."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "broker_url": "memory://",
        "admin_token": ADMIN_TOKEN,
        "allow_private_targets": True,
        "retry_schedule": "1s,2s",
    }
    values.update(overrides)
    settings = Settings(**values)
    engine = make_engine(database_url)
    transport = transport or MemoryTransport()
    if declare:
        # Declared up front, so a test can look into queues before anything is published.
        transport.declare(topology.build(settings.retry_delays_s))
    metrics = Metrics()
    # The test looks at the database through its own sessions, even when the app is handed
    # a broken sessionmaker.
    sessions = make_sessionmaker(engine)
    app = create_app(
        settings, transport=transport, sessionmaker=sessionmaker or sessions, metrics=metrics,
        resolver=resolver,
    )  # fmt: skip
    client = TestClient(app, raise_server_exceptions=raise_server_exceptions, client=client_address)
    return Api(client, app, settings, transport, sessions, metrics, engine)
