"""A tenant whose theme lets other sites frame the portal gets a cookie that a browser sends
inside a cross-site iframe (`SameSite=None; Secure; Partitioned`); every other tenant keeps
`SameSite=Strict`. Either way a POST from another site is refused by its token and its
Origin, not by SameSite (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from common.db.models import PortalLink, Subscription
from common.wire import utcnow
from tests.portal.conftest import Portal

PARENT = "https://app.acme.test"


def _embeddable(portal: Portal, tenant: str) -> None:
    theme = {"tenant_id": tenant, "frame_ancestors": [PARENT]}
    answer = portal.api.client.put("/v1/portal/theme", json=theme, headers=portal.api.admin)
    assert answer.status_code == 200, answer.text


def _set_cookie(portal: Portal, tenant: str) -> list[str]:
    link = portal.mint(tenant)
    answer = portal.browser(https=True).get(link["url"])
    assert answer.status_code == 200
    return [part.strip() for part in answer.headers["set-cookie"].split(";")]


def test_an_embeddable_portals_cookie_is_sent_in_a_cross_site_frame(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    _embeddable(portal, tenant)
    parts = _set_cookie(portal, tenant)
    assert parts[0].startswith("hookline_portal=hls_")
    assert {"HttpOnly", "Secure", "SameSite=None", "Partitioned", "Path=/portal"} <= set(parts)
    assert "SameSite=Strict" not in parts


def test_every_other_portals_cookie_stays_strict(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    parts = _set_cookie(portal, tenant)
    assert "SameSite=Strict" in parts and "Partitioned" not in parts
    assert "SameSite=None" not in parts


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": PARENT},  # the embedding page itself may not post into the portal
        {"Origin": "null"},  # a sandboxed frame, a data: URL
        {"Origin": "http://testserver.evil.test"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_a_post_from_another_site_changes_nothing_even_with_the_token(
    portal: Portal, headers: dict[str, str]
) -> None:
    tenant, _ = portal.tenant()
    _embeddable(portal, tenant)
    sub = portal.subscribe(tenant)
    browser = portal.open(tenant, scope="manage", https=True)
    csrf = portal.csrf(browser)
    answer = browser.post(f"/portal/endpoints/{sub}/pause", data={"csrf": csrf}, headers=headers)
    assert answer.status_code == 403 and "another site" in answer.text
    with portal.api.sessionmaker() as session:
        assert session.get(Subscription, sub).status == "active"  # type: ignore[union-attr]


def test_a_post_from_the_portals_own_pages_goes_through(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    _embeddable(portal, tenant)
    sub = portal.subscribe(tenant)
    browser = portal.open(tenant, scope="manage", https=True)
    own = {"Origin": "https://testserver", "Sec-Fetch-Site": "same-origin"}
    answer = browser.post(
        f"/portal/endpoints/{sub}/pause", data={"csrf": portal.csrf(browser)}, headers=own
    )
    assert answer.status_code == 200 and "Paused" in answer.text


def test_an_embeddable_portals_refusals_may_show_in_its_frame(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    _embeddable(portal, tenant)
    browser = portal.open(tenant, https=True)
    with portal.api.sessionmaker() as session, session.begin():
        session.execute(update(PortalLink).values(expires_at=utcnow() - timedelta(seconds=1)))
    expired = browser.get("/portal/endpoints")
    assert expired.status_code == 401 and "expired" in expired.text
    assert f"frame-ancestors {PARENT}" in expired.headers["content-security-policy"]
    assert "x-frame-options" not in expired.headers
    link = portal.mint(tenant)
    assert portal.browser(https=True).get(link["url"]).status_code == 200
    again = portal.browser(https=True).get(link["url"])  # used already
    assert again.status_code == 401
    assert f"frame-ancestors {PARENT}" in again.headers["content-security-policy"]
    stranger = portal.browser(https=True).get("/portal/endpoints")  # no session: no tenant
    assert "frame-ancestors 'none'" in stranger.headers["content-security-policy"]
