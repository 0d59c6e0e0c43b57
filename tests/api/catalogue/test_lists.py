"""`GET /v1/events` (with each event's deliveries counted by status) and `GET /v1/replays`
(a tenant's own jobs; every tenant's for the admin token), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import update

from common.db.models import DEAD, SUCCEEDED, Delivery, EventRow, ReplayJob
from common.wire import new_id, utcnow
from tests import builders
from tests.api.support import Api, assert_error

T0 = utcnow() - timedelta(hours=10)


def stored_events(api: Api, tenant_id: str, count: int, **fields: Any) -> list[str]:
    """`count` events of the tenant, one a minute from T0, with three deliveries each:
    one succeeded, one dead, one pending."""
    ids = []
    with api.sessionmaker() as session, session.begin():
        for n in range(count):
            event = builders.event(tenant_id, id=f"{fields.get('prefix', 'evt_')}{n:03d}",
                                   type=fields.get("type", "order.created"))  # fmt: skip
            ok, dead, _ = (builders.delivery(session, event, f"sub_{k}") for k in range(3))
            session.execute(update(Delivery).where(Delivery.id == ok.delivery_id)
                            .values(status=SUCCEEDED))  # fmt: skip
            session.execute(update(Delivery).where(Delivery.id == dead.delivery_id)
                            .values(status=DEAD))  # fmt: skip
            session.execute(
                update(EventRow)
                .where(EventRow.tenant_id == tenant_id, EventRow.id == event.id)
                .values(received_at=T0 + timedelta(minutes=n + fields.get("offset_min", 0)))
            )
            ids.append(event.id)
    return ids


def page_through(api: Api, path: str, auth: dict[str, str], **params: Any) -> list[Any]:
    seen, cursor = [], None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = api.client.get(path, params=query, headers=auth)
        assert response.status_code == 200, response.text
        seen += response.json()["data"]
        if (cursor := response.json()["next_cursor"]) is None:
            return seen


def test_events_are_listed_newest_first_with_their_deliveries_counted(api: Api) -> None:
    tenant_id, auth = api.tenant()
    ids = stored_events(api, tenant_id, 5)

    listed = page_through(api, "/v1/events", auth, limit=2)

    assert [event["id"] for event in listed] == list(reversed(ids))
    assert listed[0]["deliveries"] == {"succeeded": 1, "dead": 1, "pending": 1}
    assert set(listed[0]) == {"id", "type", "operation", "timestamp", "received_at", "deliveries"}


def test_events_are_filtered_by_type_time_and_id_prefix(api: Api) -> None:
    tenant_id, auth = api.tenant()
    orders = stored_events(api, tenant_id, 4)
    users = stored_events(api, tenant_id, 2, type="user.created", prefix="usr_", offset_min=100)
    odd = stored_events(api, tenant_id, 1, prefix="evtX", offset_min=200)

    def ids(**params: Any) -> list[str]:
        return [event["id"] for event in page_through(api, "/v1/events", auth, **params)]

    assert ids(event_type="user.created") == list(reversed(users))
    since, until = T0 + timedelta(minutes=1), T0 + timedelta(minutes=3)
    assert ids(since=since.isoformat(), until=until.isoformat()) == [orders[2], orders[1]]
    assert ids(id_prefix="usr_") == list(reversed(users))
    # `_` is literal, and case counts (SQLite's LIKE ignores it).
    assert ids(id_prefix="evt_") == list(reversed(orders))
    assert ids(id_prefix="EVT") == [] and ids(id_prefix="evtX") == odd
    assert_error(api.client.get("/v1/events", params={"id_prefix": "a%"}, headers=auth), 422)
    assert_error(api.client.get("/v1/events", params={"cursor": "x"}, headers=auth), 422)


def test_a_tenant_lists_only_its_own_events_and_needs_deliveries_read(api: Api) -> None:
    tenant_id, auth = api.tenant("a")
    other_id, other = api.tenant("b")
    stored_events(api, tenant_id, 2)
    writer = api.key(other_id, "events:write", "event_types:read")

    assert len(api.client.get("/v1/events", headers=auth).json()["data"]) == 2
    assert api.client.get("/v1/events", headers=other).json()["data"] == []
    assert "deliveries:read" in assert_error(api.client.get("/v1/events", headers=writer), 403)
    assert_error(api.client.get("/v1/events"), 401)


def replay_job(api: Api, tenant_id: str | None, minutes: int, state: str = "completed") -> str:
    now = T0 + timedelta(minutes=minutes)
    job = ReplayJob(
        id=new_id("rpl"), tenant_id=tenant_id, actor="admin", filters={}, state=state,
        total=1, done=1, failed=0, skipped=0, created_at=now, updated_at=now,
    )  # fmt: skip
    with api.sessionmaker() as session, session.begin():
        session.add(job)
    return job.id


def test_replay_jobs_are_listed_to_their_tenant_and_all_of_them_to_the_admin(api: Api) -> None:
    tenant_id, auth = api.tenant("a")
    other_id, other = api.tenant("b")
    mine = [replay_job(api, tenant_id, n) for n in range(3)]
    running = replay_job(api, tenant_id, 3, state="running")
    theirs = replay_job(api, other_id, 4)
    everyone = replay_job(api, None, 5)  # an operator's job across tenants

    def ids(headers: dict[str, str], **params: Any) -> list[str]:
        return [job["id"] for job in page_through(api, "/v1/replays", headers, limit=2, **params)]

    assert ids(auth) == [running, *reversed(mine)]
    assert ids(auth, state="running") == [running]
    assert ids(other) == [theirs]
    assert ids(api.admin) == [everyone, theirs, running, *reversed(mine)]
    assert ids(api.admin, tenant=other_id) == [theirs]
    assert_error(api.client.get("/v1/replays", params={"tenant": other_id}, headers=auth), 403)
    reader = api.key(tenant_id, "deliveries:read")
    assert len(ids(reader)) == 4
    events_only = api.key(tenant_id, "events:write")
    assert_error(api.client.get("/v1/replays", headers=events_only), 403)
    assert_error(api.client.get("/v1/replays"), 401)
