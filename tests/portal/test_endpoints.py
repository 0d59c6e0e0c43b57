"""Endpoint pages through the portal's routes: adding one runs the handshake and shows its
result, editing goes through the API's rules, a test event reaches the one endpoint only."""

from __future__ import annotations

from sqlalchemy import select, update

from common.db.models import AuditEntry, Delivery, ReplayJob, Subscription
from common.db.statuses import DeliveryStatus
from common.transport import topology
from common.wire import utcnow
from tests import builders
from tests.portal.conftest import Portal


def test_an_endpoint_that_does_not_answer_the_handshake_stays_pending(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    browser = portal.open(tenant, scope="manage")
    csrf = portal.csrf(browser)
    form = {"csrf": csrf, "url": "http://127.0.0.1:9/nobody", "event_types": "order.*, a.b"}
    answer = browser.post("/portal/endpoints", data=form)
    assert answer.status_code == 200
    assert "Not verified." in answer.text and "whsec_" in answer.text
    with portal.api.sessionmaker() as session:
        row = session.scalars(select(Subscription)).one()
    assert row.status == "pending_verification" and row.event_types == ["a.b", "order.*"]


def test_a_bad_endpoint_form_is_shown_again_with_the_problems(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    browser = portal.open(tenant, scope="manage")
    form = {"csrf": portal.csrf(browser), "url": "http://127.0.0.1:9/x", "event_types": "no way!"}
    answer = browser.post("/portal/endpoints", data=form)
    assert answer.status_code == 422 and "Please fix" in answer.text
    assert 'value="no way!"' in answer.text
    unsafe = browser.post("/portal/endpoints", data={**form, "url": "ftp://x", "event_types": "a"})
    assert unsafe.status_code == 422 and "url refused" in unsafe.text.lower()
    no_address = {**form, "url": "https://-1.0.0.1/hook", "event_types": "a"}
    refused = browser.post("/portal/endpoints", data=no_address)
    assert refused.status_code == 422 and "not a valid IPv4 address" in refused.text


def test_editing_an_endpoint_follows_the_apis_rules(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    sub = portal.subscribe(tenant)
    browser = portal.open(tenant, scope="manage")
    csrf = portal.csrf(browser)
    form = {"csrf": csrf, "url": "http://127.0.0.1:9/hook", "event_types": "order.*",
            "description": "Orders"}  # fmt: skip
    saved = browser.post(f"/portal/endpoints/{sub}/edit", data=form)
    assert saved.status_code == 200 and "Saved." in saved.text
    bad = browser.post(f"/portal/endpoints/{sub}/edit", data={**form, "event_types": "no way!"})
    assert bad.status_code == 422
    with portal.api.sessionmaker() as session:
        row = session.get(Subscription, sub)
    assert row is not None and row.description == "Orders" and row.event_types == ["order.*"]


def test_a_test_event_goes_to_one_endpoint_only(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    mine = portal.subscribe(tenant, "http://127.0.0.1:9/mine")
    everything = portal.api.client.post(
        f"/v1/tenants/{tenant}/subscriptions",
        json={"url": "http://127.0.0.1:9/all", "event_types": ["*"]},
        headers=portal.api.admin,
    ).json()["id"]
    browser = portal.open(tenant, scope="manage")
    sent = browser.post(f"/portal/endpoints/{mine}/test", data={"csrf": portal.csrf(browser)})
    assert sent.status_code == 200 and "Test event sent" in sent.text
    with portal.api.sessionmaker() as session:
        rows = session.scalars(select(Delivery)).all()
    assert [(r.subscription_id, r.event_type) for r in rows] == [(mine, "hookline.test")]
    assert everything not in {r.subscription_id for r in rows}
    own = topology.shard_queue(topology.shard_of(tenant, portal.api.settings.delivery_shards))
    assert portal.api.transport.queue_depth(own) == 1  # its tenant's shard, as any delivery


def test_retrying_a_failed_delivery_starts_a_replay_job_of_one(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    sub = portal.subscribe(tenant)
    with portal.api.sessionmaker() as session, session.begin():
        message = builders.delivery(session, builders.event(tenant), sub)
        session.execute(
            update(Delivery).where(Delivery.id == message.delivery_id)
            .values(status=DeliveryStatus.DEAD, dead_reason="max_attempts", finished_at=utcnow())
        )  # fmt: skip
    link = portal.mint(tenant, scope="manage")
    browser = portal.browser()
    browser.get(link["url"])
    page = browser.get(f"/portal/deliveries/{message.delivery_id}")
    assert "Retry delivery" in page.text
    answer = browser.post(
        f"/portal/deliveries/{message.delivery_id}/retry", data={"csrf": portal.csrf(browser)}
    )
    assert answer.status_code == 200 and "Re-sending failed deliveries" in answer.text
    job_id = str(answer.url).rsplit("/", 1)[1]
    progress = browser.get(f"/portal/jobs/{job_id}/progress").json()
    assert progress["total"] == 1
    with portal.api.sessionmaker() as session:
        job = session.get(ReplayJob, job_id)
    assert job is not None and job.actor == f"portal:{link['id']}" and job.tenant_id == tenant
    # Another session of the same tenant does not see this session's job.
    other = portal.open(tenant, scope="manage")
    assert other.get(f"/portal/jobs/{job_id}").status_code == 404
    mounted = next(r for r in portal.api.app.routes if getattr(r, "path", "") == "/portal")
    for thread in getattr(mounted.app.state, "replay_threads", {}).values():  # type: ignore[attr-defined]
        thread.join(10)


def test_a_retry_past_the_tenants_replay_starts_says_when_to_come_back(portal: Portal) -> None:
    """A limit's 429 inside the portal keeps the API's Retry-After, and is counted."""
    tenant, _ = portal.tenant()
    sub = portal.subscribe(tenant)
    limited = portal.api.client.patch(f"/v1/tenants/{tenant}/limits", headers=portal.api.admin,
                                      json={"replay_starts_per_min": 1})  # fmt: skip
    assert limited.status_code == 200, limited.text
    ids = []
    with portal.api.sessionmaker() as session, session.begin():
        for _ in range(2):
            message = builders.delivery(session, builders.event(tenant), sub)
            ids.append(message.delivery_id)
        session.execute(
            update(Delivery).where(Delivery.id.in_(ids))
            .values(status=DeliveryStatus.DEAD, dead_reason="max_attempts", finished_at=utcnow())
        )  # fmt: skip
    browser = portal.open(tenant, scope="manage")
    answers = [
        browser.post(f"/portal/deliveries/{d}/retry", data={"csrf": portal.csrf(browser)})
        for d in ids
    ]
    assert answers[0].status_code == 200, answers[0].text
    assert answers[1].status_code == 429 and "text/html" in answers[1].headers["content-type"]
    assert int(answers[1].headers["Retry-After"]) >= 1
    counted = portal.api.metrics.registry.get_sample_value(
        "hookline_api_refusals_total", {"reason": "rate_limited"}
    )
    assert counted == 1
    mounted = next(r for r in portal.api.app.routes if getattr(r, "path", "") == "/portal")
    for thread in getattr(mounted.app.state, "replay_threads", {}).values():  # type: ignore[attr-defined]
        thread.join(10)


def _trace_of(portal: Portal, sub: str) -> bool:
    with portal.api.sessionmaker() as session:
        row = session.get(Subscription, sub)
        assert row is not None
        return row.propagate_trace


def test_an_endpoints_page_shows_whether_it_gets_the_trace_context(portal: Portal) -> None:
    tenant, auth = portal.tenant()
    sub = portal.subscribe(tenant)
    reader = portal.open(tenant, scope="read")
    shown = reader.get(f"/portal/endpoints/{sub}").text
    assert '<dd id="trace-context">off</dd>' in shown
    assert 'name="propagate_trace"' not in shown  # a read-only session sees no form
    patched = portal.api.client.patch(
        f"/v1/subscriptions/{sub}", json={"propagate_trace": True}, headers=auth
    )
    assert patched.status_code == 200, patched.text
    shown = reader.get(f"/portal/endpoints/{sub}").text
    assert '<dd id="trace-context">on: each webhook carries' in shown


def test_a_manage_session_turns_the_trace_context_on_and_off(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    sub = portal.subscribe(tenant)
    link = portal.mint(tenant, scope="manage")
    browser = portal.browser()
    browser.get(link["url"])
    form = {"csrf": portal.csrf(browser), "url": "http://127.0.0.1:9/hook",
            "event_types": "order.*"}  # fmt: skip
    page = browser.get(f"/portal/endpoints/{sub}").text
    assert 'name="propagate_trace" value="off" checked' in page

    on = browser.post(f"/portal/endpoints/{sub}/edit", data={**form, "propagate_trace": "on"})
    assert on.status_code == 200 and "Saved." in on.text
    assert _trace_of(portal, sub) is True
    assert 'name="propagate_trace" value="on" checked' in on.text
    unchanged = browser.post(f"/portal/endpoints/{sub}/edit", data=form)  # an older form
    assert unchanged.status_code == 200 and _trace_of(portal, sub) is True
    bad = browser.post(f"/portal/endpoints/{sub}/edit", data={**form, "propagate_trace": "yes"})
    assert bad.status_code == 422 and _trace_of(portal, sub) is True
    off = browser.post(f"/portal/endpoints/{sub}/edit", data={**form, "propagate_trace": "off"})
    assert off.status_code == 200 and _trace_of(portal, sub) is False

    with portal.api.sessionmaker() as session:
        entries = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.action == "subscription.updated")
            .order_by(AuditEntry.id)
        ).all()
    assert [e.actor for e in entries] == [f"portal:{link['id']}"] * 3
    assert ["propagate_trace" in e.details["fields"] for e in entries] == [True, False, True]


def test_only_a_manage_session_of_the_endpoint_changes_its_trace_context(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    sub = portal.subscribe(tenant)
    other = portal.subscribe(tenant, "http://127.0.0.1:9/other")
    form = {"url": "http://127.0.0.1:9/hook", "event_types": "order.*", "propagate_trace": "on"}
    reader = portal.open(tenant, scope="read")
    refused = reader.post(
        f"/portal/endpoints/{sub}/edit", data={**form, "csrf": portal.csrf(reader)}
    )
    assert refused.status_code == 403
    elsewhere = portal.open(tenant, scope="manage", subscription_ids=[other])
    hidden = elsewhere.post(
        f"/portal/endpoints/{sub}/edit", data={**form, "csrf": portal.csrf(elsewhere)}
    )
    assert hidden.status_code == 404
    assert _trace_of(portal, sub) is False
