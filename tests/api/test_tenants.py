"""`POST /v1/tenants` and `POST /v1/tenants/{id}/api-keys`: the operator's routes."""

from __future__ import annotations

import hashlib
import re

from sqlalchemy import func, select

from common.db.models import ApiKey, Base, Tenant
from tests.api.support import Api, assert_error

ALL_SCOPES = {
    "events:write",
    "subscriptions:read",
    "subscriptions:write",
    "deliveries:read",
    "deliveries:replay",
    "event_types:read",
    "event_types:write",
    "audit:read",
    "portal:mint",
}
KEY_FORMAT = re.compile(r"^hl_[A-Za-z0-9_-]{32}$")


def count(api: Api, model: type[Base]) -> int:
    with api.sessionmaker() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_creating_a_tenant_returns_its_first_key_with_every_scope(api):
    response = api.client.post("/v1/tenants", json={"name": " Acme Corp "}, headers=api.admin)

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "name", "api_key"}
    assert body["name"] == "Acme Corp"
    assert KEY_FORMAT.match(body["api_key"])
    assert response.headers["cache-control"] == "no-store"
    with api.sessionmaker() as session:
        tenant = session.get(Tenant, body["id"])
        [key] = session.scalars(select(ApiKey).where(ApiKey.tenant_id == body["id"])).all()
    assert tenant is not None and tenant.name == "Acme Corp"
    assert set(key.scopes) == ALL_SCOPES
    assert key.revoked_at is None


def test_only_a_hash_and_a_short_prefix_of_a_key_are_stored(api):
    body = api.client.post("/v1/tenants", json={"name": "acme"}, headers=api.admin).json()
    plaintext = body["api_key"]

    with api.sessionmaker() as session:
        key = session.scalars(select(ApiKey).where(ApiKey.tenant_id == body["id"])).one()
    assert key.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert plaintext.startswith(key.prefix)
    assert len(key.prefix) < 16
    stored = " ".join(str(value) for value in vars(key).values())
    assert plaintext not in stored


def test_the_first_key_works_on_the_tenant_routes(api):
    body = api.client.post("/v1/tenants", json={"name": "acme"}, headers=api.admin).json()

    response = api.client.get(
        "/v1/subscriptions", headers={"Authorization": f"Bearer {body['api_key']}"}
    )

    assert response.status_code == 200
    assert response.json() == {"data": [], "next_cursor": None}


def test_tenant_routes_refuse_a_missing_or_wrong_admin_token(api):
    _, tenant_key = api.tenant()
    for headers in ({}, {"Authorization": "Bearer nope"}, tenant_key, {"Authorization": "x"}):
        response = api.client.post("/v1/tenants", json={"name": "evil"}, headers=headers)
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"

    assert count(api, Tenant) == 1


def test_admin_routes_are_disabled_without_an_admin_token(make_api):
    api = make_api(admin_token=None)

    response = api.client.post(
        "/v1/tenants", json={"name": "acme"}, headers={"Authorization": "Bearer anything"}
    )

    message = assert_error(response, 403, "admin_disabled")
    assert "HOOKLINE_ADMIN_TOKEN" in message
    assert count(api, Tenant) == 0


def test_a_tenant_needs_a_name(api):
    # The length is the request's, as the schema says: a leading tab does not buy a 201st
    # character (schemathesis found it accepted).
    too_long = {"name": "\t" + "x" * 200}
    for body in (
        {},
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 201},
        too_long,
        {"name": "a", "x": 1},
    ):
        response = api.client.post("/v1/tenants", json=body, headers=api.admin)
        assert_error(response, 422, "validation_error")

    assert count(api, Tenant) == 0
    assert count(api, ApiKey) == 0


def test_another_key_may_only_send_events_unless_told_otherwise(api):
    tenant_id, _ = api.tenant()

    every = api.client.post(f"/v1/tenants/{tenant_id}/api-keys", headers=api.admin)
    some = api.client.post(
        f"/v1/tenants/{tenant_id}/api-keys",
        json={"scopes": ["events:write", "events:write", "deliveries:read"]},
        headers=api.admin,
    )

    assert every.status_code == 201
    assert every.json()["scopes"] == ["events:write"]
    assert KEY_FORMAT.match(every.json()["api_key"])
    assert some.status_code == 201
    assert some.json()["scopes"] == ["events:write", "deliveries:read"]
    assert set(some.json()) == {
        "id", "api_key", "scopes", "name", "prefix", "tenant_id", "allowed_cidrs",
        "created_at", "revoked_at",
    }  # fmt: skip
    assert some.json()["api_key"] != every.json()["api_key"]
    with api.sessionmaker() as session:
        stored = session.get(ApiKey, some.json()["id"])
    assert stored is not None
    assert stored.scopes == ["events:write", "deliveries:read"]


def test_a_key_with_an_unknown_or_no_scope_is_refused(api):
    tenant_id, _ = api.tenant()
    for scopes in (["events:read"], [], "events:write"):
        response = api.client.post(
            f"/v1/tenants/{tenant_id}/api-keys", json={"scopes": scopes}, headers=api.admin
        )
        assert_error(response, 422, "validation_error")

    assert count(api, ApiKey) == 1


def test_a_key_for_an_unknown_tenant_is_not_found(api):
    response = api.client.post("/v1/tenants/ten_missing/api-keys", headers=api.admin)

    assert_error(response, 404, "not_found")
    assert count(api, ApiKey) == 0


def test_issuing_a_key_needs_the_admin_token(api):
    tenant_id, tenant_key = api.tenant()

    response = api.client.post(f"/v1/tenants/{tenant_id}/api-keys", headers=tenant_key)

    assert_error(response, 401, "unauthorized")
    assert count(api, ApiKey) == 1
