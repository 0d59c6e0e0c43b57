"""The event-type catalogue page: the tenant's types with their schemas and examples, and
never another tenant's."""

from __future__ import annotations

from tests.portal.conftest import Portal

ORDER = {
    "name": "order.created",
    "description": "An order was placed.",
    "group": "orders",
    "data_schema": {"type": "object", "properties": {"order": {"type": "integer"}}},
    "examples": [{"order": 42}],
}


def test_the_catalogue_shows_the_tenants_types_only(portal: Portal) -> None:
    mine, _ = portal.tenant("mine")
    theirs, _ = portal.tenant("theirs")
    for tenant, body in ((mine, ORDER), (theirs, {"name": "secret.thing", "examples": []})):
        answer = portal.api.client.post(
            f"/v1/tenants/{tenant}/event-types", json=body, headers=portal.api.admin
        )
        assert answer.status_code == 201, answer.text
    browser = portal.open(mine)
    page = browser.get("/portal/event-types")
    assert page.status_code == 200
    assert "order.created" in page.text and "An order was placed." in page.text
    assert "&#34;order&#34;: 42" in page.text or '"order": 42' in page.text
    assert "secret.thing" not in page.text
    assert portal.browser().get("/portal/event-types").status_code == 401
