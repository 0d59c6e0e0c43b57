"""Who gets into the portal and what a session may see and do: one tenant (and, for a
restricted link, some of its endpoints) only; expired, used and revoked links are 401; a
read-only session changes nothing; every POST needs the session's CSRF token."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from common.db.models import AuditEntry, Delivery, IdempotencyRecord, PortalLink, Subscription
from common.db.statuses import DeliveryStatus
from common.wire import utcnow
from hookline.services import portal_links
from tests import builders
from tests.api.support import served_routes
from tests.portal.conftest import Portal

# Every POST that changes something, with the path to try it on (`{sub}`, `{delivery}`).
POSTS = [
    "/portal/endpoints",
    "/portal/endpoints/{sub}/edit",
    "/portal/endpoints/{sub}/pause",
    "/portal/endpoints/{sub}/resume",
    "/portal/endpoints/{sub}/verify",
    "/portal/endpoints/{sub}/delete",
    "/portal/endpoints/{sub}/rotate",
    "/portal/endpoints/{sub}/reveal",
    "/portal/endpoints/{sub}/test",
    "/portal/endpoints/{sub}/recover",
    "/portal/deliveries/{delivery}/retry",
]
# Every session may end itself, a read-only one too (tests/portal/test_signout.py).
SIGN_OUT = "/portal/signout"


def _dead_delivery(portal: Portal, tenant_id: str, sub_id: str) -> str:
    with portal.api.sessionmaker() as session, session.begin():
        message = builders.delivery(session, builders.event(tenant_id), sub_id)
        session.execute(
            update(Delivery)
            .where(Delivery.id == message.delivery_id)
            .values(
                status=DeliveryStatus.DEAD, dead_reason="attempts_exhausted", finished_at=utcnow()
            )
        )
    return message.delivery_id


def test_the_portal_posts_listed_here_are_all_it_serves(portal: Portal) -> None:
    mounted = next(r for r in portal.api.app.routes if getattr(r, "path", "") == "/portal")
    served = {
        "/portal"
        + route.path.replace("{subscription_id}", "{sub}").replace("{delivery_id}", "{delivery}")
        for route in served_routes(mounted.app)  # type: ignore[attr-defined]
        if "POST" in (route.methods or set())
    }
    assert served == {*POSTS, SIGN_OUT}


def test_a_portal_session_never_sees_another_tenant(portal: Portal) -> None:
    mine, _ = portal.tenant("mine")
    theirs, _ = portal.tenant("theirs")
    my_sub = portal.subscribe(mine, "http://127.0.0.1:9/mine")
    their_sub = portal.subscribe(theirs, "http://127.0.0.1:9/theirs")
    their_delivery = _dead_delivery(portal, theirs, their_sub)
    my_delivery = _dead_delivery(portal, mine, my_sub)
    browser = portal.open(mine, scope="manage")

    listed = browser.get("/portal/endpoints").text
    assert my_sub in listed and their_sub not in listed and "/theirs" not in listed
    log = browser.get("/portal/deliveries").text
    assert my_delivery in log and their_delivery not in log
    assert browser.get(f"/portal/deliveries?endpoint={their_sub}").text.count(their_delivery) == 0
    assert browser.get(f"/portal/endpoints/{their_sub}").status_code == 404
    assert browser.get(f"/portal/deliveries/{their_delivery}").status_code == 404
    csrf = portal.csrf(browser)
    for path in POSTS[1:]:
        target = path.format(sub=their_sub, delivery=their_delivery)
        form = {"csrf": csrf, "url": "http://127.0.0.1:9/x", "event_types": "a.b"}
        answer = browser.post(target, data={**form, "since": utcnow().isoformat()})
        assert answer.status_code == 404, (target, answer.status_code)
    with portal.api.sessionmaker() as session:
        assert session.get(Subscription, their_sub) is not None


def test_a_restricted_link_sees_only_its_endpoints(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    shown = portal.subscribe(tenant, "http://127.0.0.1:9/a")
    hidden = portal.subscribe(tenant, "http://127.0.0.1:9/b")
    hidden_delivery = _dead_delivery(portal, tenant, hidden)
    browser = portal.open(tenant, scope="manage", subscription_ids=[shown])
    listed = browser.get("/portal/endpoints").text
    assert shown in listed and hidden not in listed
    assert browser.get(f"/portal/endpoints/{hidden}").status_code == 404
    assert browser.get(f"/portal/deliveries/{hidden_delivery}").status_code == 404
    assert hidden_delivery not in browser.get("/portal/deliveries").text
    csrf = portal.csrf(browser)
    created = browser.post("/portal/endpoints", data={"csrf": csrf, "url": "http://127.0.0.1:9/c"})
    assert created.status_code == 403


def test_a_link_for_another_tenants_endpoint_is_refused(portal: Portal) -> None:
    mine, _ = portal.tenant("mine")
    theirs, _ = portal.tenant("theirs")
    their_sub = portal.subscribe(theirs)
    answer = portal.api.client.post(
        "/v1/portal/links",
        json={"tenant_id": mine, "subscription_ids": [their_sub]},
        headers=portal.api.admin,
    )
    assert answer.status_code == 422


def test_an_expired_link_gets_401(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    link = portal.mint(tenant)
    with portal.api.sessionmaker() as session, session.begin():
        session.execute(
            update(PortalLink)
            .where(PortalLink.id == link["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    browser = portal.browser()
    assert browser.get(link["url"]).status_code == 401
    assert browser.get("/portal/endpoints").status_code == 401


def test_a_session_ends_when_its_link_expires(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    browser = portal.open(tenant)
    assert browser.get("/portal/endpoints").status_code == 200
    with portal.api.sessionmaker() as session, session.begin():
        session.execute(update(PortalLink).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert browser.get("/portal/endpoints").status_code == 401


def test_a_revoked_link_and_its_session_get_401(portal: Portal) -> None:
    tenant, key = portal.tenant()
    opened = portal.mint(tenant)
    unopened = portal.mint(tenant)
    browser = portal.browser()
    assert browser.get(opened["url"]).status_code == 200
    for link in (opened, unopened):
        revoked = portal.api.client.delete(f"/v1/portal/links/{link['id']}", headers=key)
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["revoked_at"] is not None
    assert browser.get("/portal/endpoints").status_code == 401
    assert portal.browser().get(unopened["url"]).status_code == 401


def test_a_link_opens_once(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    link = portal.mint(tenant)
    assert portal.browser().get(link["url"]).status_code == 200
    assert portal.browser().get(link["url"]).status_code == 401


def test_without_a_session_every_page_is_401(portal: Portal) -> None:
    browser = portal.browser()
    for path in ("/portal/endpoints", "/portal/deliveries", "/portal/theme.css"):
        assert browser.get(path).status_code == 401
    browser.cookies.set("hookline_portal", "hls_forged", path="/portal")
    assert browser.get("/portal/endpoints").status_code == 401
    assert browser.post("/portal/endpoints", data={"csrf": "x"}).status_code == 401


def test_a_read_only_session_cannot_change_anything(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    sub = portal.subscribe(tenant)
    delivery = _dead_delivery(portal, tenant, sub)
    browser = portal.open(tenant, scope="read")
    page = browser.get(f"/portal/endpoints/{sub}").text
    assert "Rotate secret" not in page and "Pause" not in page
    csrf = portal.csrf(browser)
    for path in POSTS:
        target = path.format(sub=sub, delivery=delivery)
        answer = browser.post(
            target, data={"csrf": csrf, "url": "http://127.0.0.1:9/x", "event_types": "a.b"}
        )
        assert answer.status_code == 403, (target, answer.status_code)
    with portal.api.sessionmaker() as session:
        row = session.get(Subscription, sub)
        assert row is not None and row.status == "active" and row.url.endswith("/hook")
        assert session.get(Delivery, delivery).replay_count == 0  # type: ignore[union-attr]
        done = session.scalars(
            select(AuditEntry.action).where(AuditEntry.actor.startswith("portal:"))
        ).all()
    assert done == ["portal_session.opened"]


@pytest.mark.parametrize("token", [None, "", "0" * 64, "é" * 64])
def test_a_post_without_the_right_csrf_token_is_refused(portal: Portal, token: str | None) -> None:
    tenant, _ = portal.tenant()
    sub = portal.subscribe(tenant)
    browser = portal.open(tenant, scope="manage")
    data = {} if token is None else {"csrf": token}
    answer = browser.post(f"/portal/endpoints/{sub}/pause", data=data)
    assert answer.status_code == 403
    assert "CSRF" in answer.text
    with portal.api.sessionmaker() as session:
        assert session.get(Subscription, sub).status == "active"  # type: ignore[union-attr]


def test_another_sessions_csrf_token_is_refused(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    sub = portal.subscribe(tenant)
    mine, other = portal.open(tenant, scope="manage"), portal.open(tenant, scope="manage")
    answer = mine.post(f"/portal/endpoints/{sub}/pause", data={"csrf": portal.csrf(other)})
    assert answer.status_code == 403


def test_a_manage_session_acts_as_its_link_in_the_audit_log(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    sub = portal.subscribe(tenant)
    link = portal.mint(tenant, scope="manage")
    browser = portal.browser()
    browser.get(link["url"])
    csrf = portal.csrf(browser)
    paused = browser.post(f"/portal/endpoints/{sub}/pause", data={"csrf": csrf})
    assert paused.status_code == 200  # followed the 303 to the endpoint's page
    assert "Paused" in paused.text
    with portal.api.sessionmaker() as session:
        assert session.get(Subscription, sub).status == "paused"  # type: ignore[union-attr]
        entry = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "subscription.paused")
        ).one()
    assert entry.actor == f"portal:{link['id']}"
    assert entry.tenant_id == tenant


def test_portal_pages_count_toward_their_tenants_requests_per_second(portal: Portal) -> None:
    """A receiver holding a link shares the API's threads and database with every tenant:
    its pages are counted like the tenant's API keys' requests, and only its tenant's."""
    a_id, _ = portal.tenant("a")
    b_id, _ = portal.tenant("b")
    portal.subscribe(a_id)
    limited = portal.api.client.patch(f"/v1/tenants/{a_id}/limits", headers=portal.api.admin,
                                      json={"requests_per_s": 3})  # fmt: skip
    assert limited.status_code == 200, limited.text
    a_browser, b_browser = portal.open(a_id), portal.open(b_id)
    for _ in range(3):  # a window can end amid the pages on a slow machine
        time.sleep(1.0 - time.time() % 1.0 + 0.01)
        window = int(time.time())
        pages = [a_browser.get("/portal/endpoints") for _ in range(4)]
        other = b_browser.get("/portal/endpoints")
        if int(time.time()) == window:
            break
    assert [p.status_code for p in pages[:3]] == [200] * 3
    assert pages[3].status_code == 429
    assert "3 API requests/s" in pages[3].text and pages[3].headers["Retry-After"] == "1"
    assert "text/html" in pages[3].headers["content-type"]
    assert other.status_code == 200


def test_links_expired_more_than_a_day_ago_are_deleted_as_new_ones_are_minted(
    portal: Portal,
) -> None:
    """Nothing else deleted a link: a tenant minting one a second left 86,400 rows a day,
    forever. Each mint deletes a few long-expired ones (any tenant's), oldest first; an
    expired link stays a day to say so, and a live one is never touched."""
    a_id, _ = portal.tenant("a")
    b_id, _ = portal.tenant("b")
    minted = [portal.mint(tenant, expires_in_s=60)["id"] for tenant in (a_id, b_id, a_id, a_id)]
    long_gone, other_tenants, yesterday, live = minted
    ages = {long_gone: timedelta(days=3), other_tenants: timedelta(days=2),
            yesterday: timedelta(hours=23)}  # fmt: skip
    with portal.api.sessionmaker.begin() as session:
        for link_id, age in ages.items():
            session.execute(
                update(PortalLink).where(PortalLink.id == link_id)
                .values(expires_at=utcnow() - age)
            )  # fmt: skip
    fresh = portal.mint(a_id)["id"]
    with portal.api.sessionmaker() as session:
        left = set(session.scalars(select(PortalLink.id)))
    assert left == {yesterday, live, fresh}
    assert portal_links.SWEEP_PER_MINT > 1  # each mint deletes more than it adds


def test_a_portal_answer_is_never_kept_by_the_idempotency_store(portal: Portal) -> None:
    """`Idempotency-Key` belongs to the /v1 API. A portal POST that carries one, with any
    live API key beside its session, was stored whole: the HTML of a Reveal (or Rotate, or
    a new endpoint) holds a webhook secret, kept in clear in `idempotency_keys` for a day."""
    tenant_id, auth = portal.tenant()
    sub = portal.subscribe(tenant_id)
    browser = portal.open(tenant_id, scope="manage")
    keyed = {**auth, "Idempotency-Key": "reveal-1"}
    reveal = f"/portal/endpoints/{sub}/reveal"
    shown = [browser.post(reveal, data={"csrf": portal.csrf(browser)}, headers=keyed)
             for _ in range(2)]  # fmt: skip
    assert [page.status_code for page in shown] == [200, 200]
    assert all("idempotent-replayed" not in page.headers for page in shown)  # served twice
    assert "whsec_" in shown[0].text
    with portal.api.sessionmaker() as session:
        assert list(session.scalars(select(IdempotencyRecord.key))) == []
