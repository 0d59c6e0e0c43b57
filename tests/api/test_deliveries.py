"""`GET /v1/deliveries/{id}`: a delivery and its attempts, within one tenant."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from common.db.models import Attempt, Delivery
from common.db.statuses import DeliveryStatus
from common.wire import utcnow, webhook_id_for
from tests import builders
from tests.api.support import assert_error


def delivered_twice(api, tenant_id: str) -> str:
    """A delivery that failed once with a 500, then died on a timeout."""
    with api.sessionmaker() as session, session.begin():
        sub, _ = builders.subscription(session, tenant_id, "http://127.0.0.1:9/hook")
        message = builders.delivery(session, builders.event(tenant_id), sub.id)
        row = session.get(Delivery, message.delivery_id)
        now = utcnow()
        row.status = DeliveryStatus.DEAD
        row.attempts = 2
        row.last_error = "timed out after 15s"
        row.dead_reason = "max_attempts"
        row.finished_at = now
        session.add_all(
            [
                Attempt(
                    delivery_id=row.id, attempt=1, outcome="retry", status_code=500,
                    duration_s=0.25, response_body="oops", created_at=now - timedelta(seconds=5),
                ),
                Attempt(
                    delivery_id=row.id, attempt=2, outcome="dead", status_code=None,
                    duration_s=15.0, error="timed out after 15s", created_at=now,
                ),
            ]
        )  # fmt: skip
    return message.delivery_id


def test_a_delivery_is_shown_with_its_attempts_in_order(api):
    tenant_id, headers = api.tenant()
    delivery_id = delivered_twice(api, tenant_id)

    response = api.client.get(f"/v1/deliveries/{delivery_id}", headers=headers)

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == delivery_id
    assert body["webhook_id"] == webhook_id_for(tenant_id, body["event_id"])
    assert body["event_type"] == "order.created"
    assert body["status"] == "dead"
    assert body["attempt_count"] == 2
    assert body["dead_reason"] == "max_attempts"
    assert body["finished_at"] is not None
    assert [a["attempt"] for a in body["attempts"]] == [1, 2]
    assert [a["outcome"] for a in body["attempts"]] == ["retry", "dead"]
    assert body["attempts"][0]["status_code"] == 500
    assert body["attempts"][0]["response_body"] == "oops"
    assert body["attempts"][1]["status_code"] is None
    assert body["attempts"][1]["error"] == "timed out after 15s"


def test_a_delivery_without_attempts_yet_has_an_empty_list(api):
    tenant_id, headers = api.tenant()
    with api.sessionmaker() as session, session.begin():
        sub, _ = builders.subscription(session, tenant_id, "http://127.0.0.1:9/hook")
        delivery_id = builders.delivery(session, builders.event(tenant_id), sub.id).delivery_id

    body = api.client.get(f"/v1/deliveries/{delivery_id}", headers=headers).json()

    assert body["status"] == "pending"
    assert body["attempts"] == []


def test_another_tenants_delivery_is_not_found(api):
    acme_id, acme = api.tenant("acme")
    globex_id, globex = api.tenant("globex")
    theirs = delivered_twice(api, globex_id)

    assert_error(api.client.get(f"/v1/deliveries/{theirs}", headers=acme), 404, "not_found")
    assert_error(api.client.get("/v1/deliveries/dlv_missing", headers=acme), 404, "not_found")
    assert api.client.get(f"/v1/deliveries/{theirs}", headers=globex).status_code == 200
    assert acme_id != globex_id


def test_reading_a_delivery_needs_the_deliveries_read_scope(api):
    tenant_id, _ = api.tenant()
    delivery_id = delivered_twice(api, tenant_id)
    writer = api.key(tenant_id, "events:write", "deliveries:replay")

    response = api.client.get(f"/v1/deliveries/{delivery_id}", headers=writer)

    assert "deliveries:read" in assert_error(response, 403, "forbidden")
    assert_error(api.client.get(f"/v1/deliveries/{delivery_id}"), 401, "unauthorized")


def many_deliveries(api, tenant_id: str) -> dict[str, list[str]]:
    """Six deliveries a second apart: two subscriptions, two types, three statuses."""
    ids: dict[str, list[str]] = {"all": []}
    start = utcnow() - timedelta(hours=1)
    with api.sessionmaker() as session, session.begin():
        subs = [
            builders.subscription(session, tenant_id, f"http://127.0.0.1:9/{n}")[0] for n in "ab"
        ]
        for n in range(6):
            event = builders.event(tenant_id, type="order.created" if n % 2 else "order.paid")
            message = builders.delivery(session, event, subs[n % 2].id)
            row = session.get(Delivery, message.delivery_id)
            row.created_at = start + timedelta(seconds=n)
            row.status = ("pending", "succeeded", "dead")[n % 3]
            ids["all"].append(row.id)
            ids.setdefault(row.status, []).append(row.id)
            ids.setdefault(subs[n % 2].id, []).append(row.id)
            ids.setdefault(event.type, []).append(row.id)
        ids["subs"] = [s.id for s in subs]
        ids["start"] = [start.isoformat()]
    return ids


def listed(api, headers, query: str = "") -> list[str]:
    response = api.client.get(f"/v1/deliveries{query}", headers=headers)
    assert response.status_code == 200, response.text
    return [d["id"] for d in response.json()["data"]]


def test_the_list_is_newest_first_and_pages_through_every_delivery_once(api):
    tenant_id, headers = api.tenant()
    ids = many_deliveries(api, tenant_id)
    seen: list[str] = []
    cursor = None

    for _ in range(10):
        query = "?limit=4" + (f"&cursor={cursor}" if cursor else "")
        page = api.client.get(f"/v1/deliveries{query}", headers=headers).json()
        seen += [d["id"] for d in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == list(reversed(ids["all"]))
    assert "attempts" not in api.client.get("/v1/deliveries", headers=headers).json()["data"][0]


def test_the_list_filters_by_status_subscription_event_type_and_time(api):
    from urllib.parse import quote

    tenant_id, headers = api.tenant()
    ids = many_deliveries(api, tenant_id)
    sub = ids["subs"][0]
    start = datetime.fromisoformat(ids["start"][0])
    since = quote((start + timedelta(seconds=2)).isoformat())
    until = quote((start + timedelta(seconds=4)).isoformat())

    assert listed(api, headers, "?status=dead") == list(reversed(ids["dead"]))
    assert listed(api, headers, f"?subscription_id={sub}") == list(reversed(ids[sub]))
    assert listed(api, headers, "?event_type=order.paid") == list(reversed(ids["order.paid"]))
    assert listed(api, headers, f"?since={since}&until={until}") == list(reversed(ids["all"][2:4]))
    assert listed(api, headers, f"?status=pending&subscription_id={sub}") == [ids["all"][0]]


@pytest.mark.parametrize(
    "query",
    ["?status=lost", "?since=yesterday", "?since=2026-01-01T00:00:00", "?limit=0",
     "?limit=501", "?cursor=bm9wZQ", "?event_type=a%20b"],
)  # fmt: skip
def test_bad_list_filters_are_refused_with_the_reason(api, query):
    _, headers = api.tenant()

    assert_error(api.client.get(f"/v1/deliveries{query}", headers=headers), 422)


def test_listing_deliveries_needs_the_read_scope(api):
    tenant_id, _ = api.tenant()
    writer = api.key(tenant_id, "events:write")

    response = api.client.get("/v1/deliveries", headers=writer)

    assert "deliveries:read" in assert_error(response, 403, "forbidden")
