"""The admin token is recognised before API keys, and new keys start narrow (issue 14)."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from common.db.models import ApiKey
from hookline.cli import app
from tests.api.support import Api

# Shaped like the token `hookline dev` makes up: it starts with the API-key prefix.
KEY_LIKE_TOKEN = "hl_admin_0123456789abcdef"


def test_an_admin_token_that_looks_like_an_api_key_is_admitted_on_the_ops_routes(make_db_api):
    api: Api = make_db_api(admin_token=KEY_LIKE_TOKEN)
    admin = {"Authorization": f"Bearer {KEY_LIKE_TOKEN}"}

    listed = api.client.get("/v1/dead-letters", headers=admin)
    summary = api.client.get("/v1/dead-letters/summary", headers=admin)

    assert listed.status_code == 200, listed.text
    assert summary.status_code == 200, summary.text


def test_api_keys_and_wrong_tokens_still_meet_their_own_checks_on_the_ops_routes(make_db_api):
    api: Api = make_db_api(admin_token=KEY_LIKE_TOKEN)
    response = api.client.post(
        "/v1/tenants", json={"name": "acme"}, headers={"Authorization": f"Bearer {KEY_LIKE_TOKEN}"}
    )
    tenant_key = {"Authorization": f"Bearer {response.json()['api_key']}"}

    assert api.client.get("/v1/dead-letters", headers=tenant_key).status_code == 200
    for token in ("hl_not-a-key", KEY_LIKE_TOKEN + "x", "not-the-admin-token"):
        wrong = api.client.get("/v1/dead-letters", headers={"Authorization": f"Bearer {token}"})
        assert wrong.status_code == 401, token
    assert api.client.get("/v1/dead-letters").status_code == 401


def test_a_key_created_without_scopes_may_only_send_events(api: Api):
    tenant_id, _ = api.tenant()

    created = api.client.post(f"/v1/tenants/{tenant_id}/api-keys", headers=api.admin)
    empty_body = api.client.post(f"/v1/tenants/{tenant_id}/api-keys", json={}, headers=api.admin)

    for response in (created, empty_body):
        assert response.status_code == 201, response.text
        assert response.json()["scopes"] == ["events:write"]
    key = {"Authorization": f"Bearer {created.json()['api_key']}"}
    assert api.client.get("/v1/subscriptions", headers=key).status_code == 403
    assert api.client.get("/v1/deliveries", headers=key).status_code == 403
    sent = api.client.post("/v1/events", json={"type": "order.created", "data": {}}, headers=key)
    assert sent.status_code == 202, sent.text


def test_explicit_scopes_are_kept(api: Api):
    tenant_id, _ = api.tenant()
    scopes = ["subscriptions:read", "deliveries:read"]

    created = api.client.post(
        f"/v1/tenants/{tenant_id}/api-keys", json={"scopes": scopes}, headers=api.admin
    )

    assert created.status_code == 201
    assert created.json()["scopes"] == scopes
    key = {"Authorization": f"Bearer {created.json()['api_key']}"}
    assert api.client.get("/v1/subscriptions", headers=key).status_code == 200


def test_the_cli_creates_narrow_keys_by_default(api: Api, monkeypatch: pytest.MonkeyPatch):
    tenant_id, _ = api.tenant()
    monkeypatch.setenv("HOOKLINE_DATABASE_URL", api.engine.url.render_as_string(False))
    monkeypatch.setenv("HOOKLINE_BROKER_URL", "memory://")
    monkeypatch.setenv("HOOKLINE_ALLOW_MEMORY_BROKER", "true")

    default = CliRunner().invoke(app, ["tenant", "key", "create", tenant_id])
    explicit = CliRunner().invoke(
        app, ["tenant", "key", "create", tenant_id, "--scope", "deliveries:read"]
    )

    assert default.exit_code == explicit.exit_code == 0, default.output + explicit.output
    with api.sessionmaker() as session:
        scopes = sorted(session.scalars(select(ApiKey.scopes)), key=str)
    assert ["deliveries:read"] in scopes and ["events:write"] in scopes
