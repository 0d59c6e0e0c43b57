"""`/v1/tenants/{id}/settings` (admin) and the subscription rule it holds:
`require_catalogued_types` refuses subscriptions to event types the catalogue lacks."""

from __future__ import annotations

import pytest

from tests.api.support import Api, assert_error

URL = "http://127.0.0.1:9/hooks"


def settings(api: Api, tenant_id: str, **changes: object) -> dict[str, object]:
    response = api.client.patch(
        f"/v1/tenants/{tenant_id}/settings", json=changes, headers=api.admin
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_settings_start_at_their_defaults_and_change_through_the_admin_token(api: Api) -> None:
    tenant_id, auth = api.tenant()
    path = f"/v1/tenants/{tenant_id}/settings"

    before = api.client.get(path, headers=api.admin).json()
    after = settings(api, tenant_id, schema_validation="reject")
    both = settings(api, tenant_id, require_catalogued_types=True)

    assert before == {"tenant_id": tenant_id, "schema_validation": "off",
                      "require_catalogued_types": False, "updated_at": None}  # fmt: skip
    assert after["schema_validation"] == "reject" and after["updated_at"] is not None
    assert both["schema_validation"] == "reject" and both["require_catalogued_types"] is True
    assert api.client.get(path, headers=api.admin).json() == both
    assert_error(api.client.get(path, headers=auth), 401)
    assert_error(api.client.patch(path, json={"schema_validation": "loud"},
                                  headers=api.admin), 422)  # fmt: skip
    assert_error(api.client.patch(path, json={"schema_validation": None},
                                  headers=api.admin), 422)  # fmt: skip
    assert_error(api.client.get("/v1/tenants/ten_nobody/settings", headers=api.admin), 404)


def test_subscriptions_to_uncatalogued_types_are_allowed_by_default(api: Api) -> None:
    _, auth = api.tenant()

    response = api.client.post(
        "/v1/subscriptions", json={"url": URL, "event_types": ["never.catalogued"]}, headers=auth
    )

    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("patterns", "allowed"),
    [
        (["order.created"], True),
        (["order.*"], True),  # a wildcard that matches at least one catalogued name
        (["*"], True),
        (["hookline.subscription.disabled"], True),  # Hookline's own events
        (["order.refunded"], False),
        (["user.*"], False),
        (["order.created", "user.created"], False),
    ],
)
def test_a_tenant_that_requires_catalogued_types_subscribes_only_to_those(
    api: Api, patterns: list[str], allowed: bool
) -> None:
    tenant_id, auth = api.tenant()
    api.client.post("/v1/event-types", json={"name": "order.created"}, headers=auth)
    settings(api, tenant_id, require_catalogued_types=True)

    response = api.client.post(
        "/v1/subscriptions", json={"url": URL, "event_types": patterns}, headers=auth
    )

    if allowed:
        assert response.status_code == 201, response.text
    else:
        message = assert_error(response, 422, "uncatalogued_event_type")
        assert "catalogue" in message


def test_the_rule_holds_for_changes_and_for_the_operators_subscriptions(api: Api) -> None:
    tenant_id, auth = api.tenant()
    api.client.post("/v1/event-types", json={"name": "order.created"}, headers=auth)
    sub = api.client.post(
        "/v1/subscriptions", json={"url": URL, "event_types": ["user.created"]}, headers=auth
    ).json()
    settings(api, tenant_id, require_catalogued_types=True)

    change = api.client.patch(
        f"/v1/subscriptions/{sub['id']}", json={"event_types": ["user.*"]}, headers=auth
    )
    fine = api.client.patch(
        f"/v1/subscriptions/{sub['id']}", json={"event_types": ["order.*"]}, headers=auth
    )
    on_behalf = api.client.post(
        f"/v1/tenants/{tenant_id}/subscriptions",
        json={"url": URL + "/2", "event_types": ["user.created"]}, headers=api.admin,
    )  # fmt: skip

    assert_error(change, 422, "uncatalogued_event_type")
    assert fine.status_code == 200 and fine.json()["event_types"] == ["order.*"]
    assert_error(on_behalf, 422, "uncatalogued_event_type")
