"""The API as `hookline api` serves it: uvicorn on a real port, not the test client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from common.settings import Settings
from tests.api.support import ADMIN_TOKEN
from tests.served import served_api


@pytest.fixture
def served(database_url: str) -> Iterator[str]:
    """The base URL of a served API on SQLite and the in-memory broker."""
    settings = Settings(database_url=database_url, broker_url="memory://", admin_token=ADMIN_TOKEN)
    with served_api(settings) as (host, port):
        yield f"http://{host}:{port}"


def test_a_forwarded_for_header_does_not_change_the_address_a_key_is_checked_against(
    served: str,
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    tenant = requests.post(f"{served}/v1/tenants", json={"name": "acme"}, headers=admin, timeout=10)
    assert tenant.status_code == 201, tenant.text
    created = requests.post(
        f"{served}/v1/tenants/{tenant.json()['id']}/api-keys",
        json={"scopes": ["events:write"], "allowed_cidrs": ["10.0.0.0/8"]},
        headers=admin,
        timeout=10,
    )
    assert created.status_code == 201, created.text
    auth = {"Authorization": f"Bearer {created.json()['api_key']}"}
    event = {"type": "order.paid", "data": {}}

    # From 127.0.0.1, claiming to forward for an allowed address: still refused.
    forged = {**auth, "X-Forwarded-For": "10.1.2.3", "Forwarded": "for=10.1.2.3"}
    response = requests.post(f"{served}/v1/events", json=event, headers=forged, timeout=10)
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "forbidden"
    assert "address" in response.json()["error"]["message"]
