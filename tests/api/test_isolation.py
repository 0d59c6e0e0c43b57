"""Tenant isolation: every route the app serves, called with another tenant's key, answers
404 (or refuses the key) and never shows the first tenant's data.

The routes are listed from the app itself, so a route added later is covered without
touching this test; a path parameter this test does not know fails it until it is added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import update

from common.db.models import Attempt, Delivery
from common.db.statuses import DeliveryStatus
from common.wire import utcnow
from tests import builders
from tests.api.support import Api, served_routes

MARKER = "tenant-a-private-marker"
SUB_BODY = {"url": "http://127.0.0.1:9/b", "event_types": ["b.*"]}
# Bodies that pass validation, so the answer is about ownership, not shape.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/tenants"): {"name": "mallory"},
    ("POST", "/v1/tenants/{tenant_id}/subscriptions"): SUB_BODY,
    ("POST", "/v1/subscriptions"): SUB_BODY,
    ("PATCH", "/v1/subscriptions/{subscription_id}"): {"description": "mine now"},
    ("POST", "/v1/events"): {"type": "b.x", "data": {}},
    ("POST", "/v1/events/batch"): {"events": [{"type": "b.x", "data": {}}]},
    ("POST", "/v1/event-types"): {"name": "b.x"},
    ("PATCH", "/v1/event-types/{event_type_name}"): {"description": "mine now"},
    ("POST", "/v1/tenants/{tenant_id}/event-types"): {"name": "b.x"},
    ("PATCH", "/v1/tenants/{tenant_id}/event-types/{event_type_name}"): {"description": "x"},
    ("PATCH", "/v1/tenants/{tenant_id}/settings"): {"schema_validation": "warn"},
    ("POST", "/v1/replays"): {"all": True, "dry_run": True},
    ("POST", "/v1/subscriptions/{subscription_id}/recover"): {
        "since": "2020-01-01T00:00:00Z",
        "dry_run": True,
    },
}
# Routes that are not about one tenant's data at all.
PUBLIC = {"/healthz", "/readyz", "/metrics"}


@dataclass
class Owned:
    """Tenant A's resources, by the path parameter that names them."""

    ids: dict[str, str]
    auth: dict[str, str]

    def secrets(self) -> list[str]:
        return [*self.ids.values(), MARKER]


@pytest.fixture
def owned(api: Api) -> Owned:
    tenant_id, auth = api.tenant("tenant-a")
    key = api.client.post(f"/v1/tenants/{tenant_id}/api-keys", json={}, headers=api.admin)
    sub = api.client.post(
        f"/v1/tenants/{tenant_id}/subscriptions",
        json={"url": "http://127.0.0.1:9/a", "event_types": ["a.*"], "ed25519": True},
        headers=api.admin,
    ).json()
    with api.sessionmaker.begin() as session:
        event = builders.event(tenant_id, type="a.created", data={"note": MARKER})
        message = builders.delivery(session, event, sub["id"])
        session.add(
            Attempt(
                delivery_id=message.delivery_id, attempt=1, outcome="failed", status_code=500,
                duration_s=0.1, error=MARKER, response_body=MARKER, created_at=utcnow(),
            )
        )  # fmt: skip
        session.execute(
            update(Delivery)
            .where(Delivery.id == message.delivery_id)
            .values(
                status=DeliveryStatus.DEAD,
                dead_reason="attempts_exhausted",
                attempts=1,
                finished_at=utcnow(),
            )
        )
    catalogued = api.client.post(
        "/v1/event-types", json={"name": "a.created", "description": MARKER}, headers=auth
    )
    assert catalogued.status_code == 201, catalogued.text
    job = api.client.post("/v1/replays", json={"all": True}, headers=auth)
    ids = {
        "tenant_id": tenant_id,
        "key_id": key.json()["id"],
        "subscription_id": sub["id"],
        "event_id": event.id,
        "delivery_id": message.delivery_id,
        "event_type_name": "a.created",
    }
    assert job.status_code == 202, job.text
    ids["job_id"] = job.json()["id"]
    link = api.client.post("/v1/portal/links", json={}, headers=auth)
    assert link.status_code == 201, link.text
    ids["link_id"] = link.json()["id"]
    return Owned(ids=ids, auth=auth)


def calls(api: Api, owned: Owned) -> list[tuple[str, str, str]]:
    """(method, route path, concrete path) for every route, with tenant A's ids filled in."""
    found = []
    for route in served_routes(api.app):
        if route.path in PUBLIC:
            continue
        path = route.path
        for name in route.param_convertors:
            # Poison messages belong to no tenant: a made-up id stands for one.
            value = owned.ids.get(name) or ("poison-x" if name == "poison_id" else None)
            assert value is not None, f"{route.path}: add a tenant-A resource for {{{name}}}"
            path = path.replace(f"{{{name}}}", value)
        for method in sorted(route.methods or ()):
            found.append((method, route.path, path))
    return found


def test_every_route_refuses_another_tenants_resources_without_showing_them(api, owned):
    _, mallory = api.tenant("tenant-b")
    checked = 0

    for method, template, path in calls(api, owned):
        body = BODIES.get((method, template))
        response = api.client.request(method, path, json=body, headers=mallory)

        where = f"{method} {template} -> {response.status_code}: {response.text[:300]}"
        assert response.status_code < 500, where
        for secret in owned.secrets():
            assert secret not in response.text, where
        if "{" in template:
            assert response.status_code in (401, 403, 404), where
        checked += 1

    assert checked >= 30


def test_the_same_reads_succeed_for_the_owner_so_the_ids_are_real(api, owned):
    reads = [
        (template, path)
        for method, template, path in calls(api, owned)
        if method == "GET" and "{" in template and not template.startswith("/v1/tenants")
        and "poison" not in template and not template.endswith("/public-key")
    ]  # fmt: skip

    for template, path in reads:
        response = api.client.get(path, headers=owned.auth)
        assert response.status_code == 200, f"{template}: {response.text[:300]}"
    assert len(reads) >= 5
    key = api.client.get(f"/v1/subscriptions/{owned.ids['subscription_id']}/public-key",
                         headers=owned.auth)  # fmt: skip
    assert key.status_code == 200


def test_lists_show_a_tenant_only_its_own_resources(api, owned):
    _, mallory = api.tenant("tenant-b")

    for path in ["/v1/subscriptions", "/v1/deliveries", "/v1/events", "/v1/event-types",
                 "/v1/replays"]:  # fmt: skip
        theirs = api.client.get(path, headers=mallory)
        mine = api.client.get(path, headers=owned.auth)
        assert theirs.status_code == mine.status_code == 200, path
        assert theirs.json()["data"] == [], path
        assert len(mine.json()["data"]) == 1, path
