"""Signing out ends the portal session on the server: the same cookie afterwards gets the
401 page, the audit log has it, and only that session ends (SQLite and PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import select

from common.db.models import AuditEntry, PortalLink
from tests.portal.conftest import Portal


def test_signing_out_ends_the_session_for_good(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    link = portal.mint(tenant, scope="manage")
    browser = portal.browser()
    browser.get(link["url"])
    cookie = browser.cookies.get("hookline_portal")
    assert cookie
    answer = browser.post("/portal/signout", data={"csrf": portal.csrf(browser)})
    assert answer.status_code == 200 and "Signed out" in answer.text
    removals = [v for k, v in answer.headers.multi_items() if k == "set-cookie"]
    assert removals and all(v.startswith("hookline_portal=;") for v in removals)
    # Whatever the browser did with its cookie: the one it had opens nothing any more.
    replayed = portal.browser()
    replayed.cookies.set("hookline_portal", cookie, path="/portal")
    again = replayed.get("/portal/endpoints")
    assert again.status_code == 401 and "signed out" in again.text
    assert replayed.post("/portal/signout", data={"csrf": "x"}).status_code == 401
    with portal.api.sessionmaker() as session:
        row = session.get(PortalLink, link["id"])
        entries = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "portal_session.signed_out")
        ).all()
    assert row is not None and row.signed_out_at is not None
    assert [(e.actor, e.tenant_id, e.resource_id) for e in entries] == [
        (f"portal:{link['id']}", tenant, link["id"])
    ]


def test_a_read_only_session_may_sign_out(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    browser = portal.open(tenant, scope="read")
    assert browser.post("/portal/signout", data={"csrf": portal.csrf(browser)}).status_code == 200
    assert browser.get("/portal/endpoints").status_code == 401


def test_signing_out_needs_the_csrf_token_and_the_portals_origin(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    browser = portal.open(tenant)
    csrf = portal.csrf(browser)
    assert browser.post("/portal/signout", data={}).status_code == 403
    forged = browser.post(
        "/portal/signout", data={"csrf": csrf}, headers={"Origin": "https://evil.test"}
    )
    assert forged.status_code == 403
    assert browser.get("/portal/endpoints").status_code == 200  # still signed in


def test_signing_out_ends_that_session_only(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    leaving, staying = portal.open(tenant), portal.open(tenant)
    leaving.post("/portal/signout", data={"csrf": portal.csrf(leaving)})
    assert leaving.get("/portal/endpoints").status_code == 401
    assert staying.get("/portal/endpoints").status_code == 200


def test_every_page_of_a_session_offers_to_sign_out(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    browser = portal.open(tenant, scope="read")
    for path in ("/portal/endpoints", "/portal/deliveries", "/portal/event-types"):
        page = browser.get(path).text
        assert 'action="/portal/signout"' in page and ">Sign out</button>" in page
