"""A portal on an API app: SQLite and PostgreSQL (the root `database_url`), the memory
broker, and helpers that mint links and open them like a browser would."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from common.db.session import make_engine, make_sessionmaker
from common.metrics import Metrics
from common.settings import Settings
from common.transport import MemoryTransport, topology
from hookline.api.app import create_app
from tests.api.support import ADMIN_TOKEN, Api, TestClient

CSRF = re.compile(r'name="csrf-token" content="([0-9a-f]{64})"')


@dataclass
class Portal:
    api: Api

    def tenant(self, name: str = "acme") -> tuple[str, dict[str, str]]:
        return self.api.tenant(name)

    def subscribe(self, tenant_id: str, url: str = "http://127.0.0.1:9/hook") -> str:
        response = self.api.client.post(
            f"/v1/tenants/{tenant_id}/subscriptions",
            json={"url": url, "event_types": ["order.*"]},
            headers=self.api.admin,
        )
        assert response.status_code == 201, response.text
        sub_id: str = response.json()["id"]
        return sub_id

    def mint(self, tenant_id: str, **body: Any) -> dict[str, Any]:
        response = self.api.client.post(
            "/v1/portal/links", json={"tenant_id": tenant_id, **body}, headers=self.api.admin
        )
        assert response.status_code == 201, response.text
        link: dict[str, Any] = response.json()
        return link

    def browser(self, *, https: bool = False) -> TestClient:
        """A client of its own (its own cookie jar), as a second browser would be; over
        https, it sends Secure cookies (an embeddable portal's are)."""
        base = "https://testserver" if https else "http://testserver"
        client = TestClient(self.api.app, base_url=base, client=("testclient", 1))
        self._clients.append(client)
        return client

    def open(self, tenant_id: str, *, https: bool = False, **body: Any) -> TestClient:
        """A browser signed in through a fresh link."""
        link = self.mint(tenant_id, **body)
        client = self.browser(https=https)
        response = client.get(link["url"].replace("http://testserver", ""))
        assert response.status_code == 200, response.text
        return client

    def csrf(self, client: TestClient, path: str = "/portal/endpoints") -> str:
        page = client.get(path)
        assert page.status_code == 200, page.text
        found = CSRF.search(page.text)
        assert found, "no CSRF token on the page"
        return found.group(1)

    def __post_init__(self) -> None:
        self._clients: list[TestClient] = []

    def close(self) -> None:
        for client in self._clients:
            client.close()


def make_portal_api(database_url: str, **overrides: Any) -> Api:
    """An API app on the in-memory broker, as the portal's tests use it."""
    settings = Settings(
        database_url=database_url,
        broker_url="memory://",
        admin_token=ADMIN_TOKEN,
        allow_private_targets=True,
        allow_http=True,
        retry_schedule="1s,2s",
        **overrides,
    )
    engine = make_engine(database_url)
    transport = MemoryTransport()
    transport.declare(topology.build(settings.retry_delays_s))
    metrics = Metrics()
    sessions = make_sessionmaker(engine)
    app = create_app(settings, transport=transport, sessionmaker=sessions, metrics=metrics)
    client = TestClient(app, client=("testclient", 50000))
    return Api(client, app, settings, transport, sessions, metrics, engine)


@pytest.fixture
def portal(database_url: str) -> Iterator[Portal]:
    made = Portal(make_portal_api(database_url))
    yield made
    made.close()
    made.api.close()
