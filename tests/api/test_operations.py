"""The operations routes: dead letters found by filter and cursor, replays started and watched."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from common.db.models import Delivery, Subscription
from common.db.statuses import DeliveryStatus
from common.wire import utcnow
from dispatcher.http import MASK, USER_AGENT
from tests import builders
from tests.api.support import Api, assert_error
from tests.dead_letters import Dead, dead_letter, published_copies


@pytest.fixture
def world(ops_api: Api) -> dict[str, Any]:
    """A tenant with two subscriptions and dead letters of several kinds, and a stranger."""
    tenant, auth = ops_api.tenant("acme")
    other, other_auth = ops_api.tenant("stranger")
    now = utcnow()
    with ops_api.sessionmaker() as session, session.begin():
        a, _ = builders.subscription(
            session,
            tenant,
            "http://127.0.0.1:9/a",
            headers={"Authorization": "Bearer receiver-token", "X-Site": "b"},
        )
        b, _ = builders.subscription(session, tenant, "http://127.0.0.1:9/b")
        s, _ = builders.subscription(session, other, "http://127.0.0.1:9/s")
        rows = {
            "a_500": [
                dead_letter(session, tenant, a.id, died_at=now - timedelta(hours=h))
                for h in (1, 2, 3)
            ],
            "a_410": [
                dead_letter(session, tenant, a.id, reason="endpoint_disabled", status_code=410)
            ],
            "b_conn": [
                dead_letter(
                    session,
                    tenant,
                    b.id,
                    type="order.paid",
                    status_code=None,
                    died_at=now - timedelta(hours=30),
                )
            ],
            "stranger": [dead_letter(session, other, s.id)],
        }
    return {"tenant": tenant, "auth": auth, "other_auth": other_auth, "a": a.id, "b": b.id, **rows}


def ids(dead: list[Dead]) -> set[str]:
    return {d.id for d in dead}


def listed(api: Api, auth: dict[str, str], **params: Any) -> set[str]:
    response = api.client.get("/v1/dead-letters", params=params, headers=auth)
    assert response.status_code == 200, response.text
    return {row["id"] for row in response.json()["data"]}


def test_the_filters_select_exactly_what_they_say(ops_api: Api, world: dict[str, Any]) -> None:
    auth = world["auth"]
    mine = world["a_500"] + world["a_410"] + world["b_conn"]
    assert listed(ops_api, auth) == ids(mine)
    assert listed(ops_api, auth, subscription_id=world["a"]) == ids(world["a_500"] + world["a_410"])
    assert listed(ops_api, auth, event_type="order.paid") == ids(world["b_conn"])
    assert listed(ops_api, auth, reason="endpoint_disabled") == ids(world["a_410"])
    assert listed(ops_api, auth, status_class="5xx") == ids(world["a_500"])
    assert listed(ops_api, auth, status_class="4xx") == ids(world["a_410"])
    assert listed(ops_api, auth, status_class="none") == ids(world["b_conn"])
    since = (utcnow() - timedelta(hours=2, minutes=30)).isoformat()
    until = (utcnow() - timedelta(minutes=90)).isoformat()
    assert listed(ops_api, auth, since=since, until=until) == {world["a_500"][1].id}
    assert listed(ops_api, world["other_auth"]) == ids(world["stranger"])


def test_an_api_key_cannot_look_at_another_tenant(ops_api: Api, world: dict[str, Any]) -> None:
    response = ops_api.client.get(
        "/v1/dead-letters", params={"tenant": world["tenant"]}, headers=world["other_auth"]
    )
    assert_error(response, 403, "forbidden")
    stranger_id = world["stranger"][0].id
    assert_error(ops_api.client.get(f"/v1/dead-letters/{stranger_id}", headers=world["auth"]), 404)


def test_the_admin_token_sees_every_tenant_or_one(ops_api: Api, world: dict[str, Any]) -> None:
    everyone = world["a_500"] + world["a_410"] + world["b_conn"] + world["stranger"]
    assert listed(ops_api, ops_api.admin) == ids(everyone)
    assert listed(ops_api, ops_api.admin, tenant=world["tenant"]) == ids(everyone[:-1])


def test_pages_follow_the_cursor_newest_death_first(ops_api: Api, world: dict[str, Any]) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = ops_api.client.get("/v1/dead-letters", params=params, headers=world["auth"]).json()
        seen += [row["id"] for row in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5
    assert seen[-1] == world["b_conn"][0].id  # died 30 h ago: the oldest


def test_summary_counts_by_reason_and_subscription(ops_api: Api, world: dict[str, Any]) -> None:
    body = ops_api.client.get("/v1/dead-letters/summary", headers=world["auth"]).json()
    assert body["total"] == 5
    assert body["by_reason"] == {"max_attempts": 4, "endpoint_disabled": 1}
    assert body["by_subscription"] == {world["a"]: 4, world["b"]: 1}


def test_a_dead_letter_shows_event_attempts_and_headers_without_secrets(
    ops_api: Api, world: dict[str, Any]
) -> None:
    target = world["a_500"][0]
    static = {"Authorization": "Bearer receiver-token", "X-Site": "b"}
    with ops_api.sessionmaker() as session, session.begin():
        made = builders.attempt(session, target.id, 1, static=static, status_code=500)
        stamp = str(int(made.created_at.timestamp()))
        builders.attempt(session, target.id, 2, sent=False, status_code=None)
    body = ops_api.client.get(f"/v1/dead-letters/{target.id}", headers=world["auth"]).json()
    assert body["event"]["id"] == target.event_id
    assert body["webhook_id"] == target.webhook_id  # what the receiver saw, to find it by
    first, second = body["attempts"]
    assert {k: v for k, v in first.items() if k != "request_headers"} == {
        "attempt": 1,
        "outcome": "retry",
        "status_code": 500,
        "duration_s": 0.1,
        "error": None,
        "response_body": None,
        "created_at": first["created_at"],
    }
    sent = [(h["name"], h["value"]) for h in first["request_headers"]]
    assert sent == [
        ("Authorization", MASK),  # every value of the subscription's own headers
        ("X-Site", MASK),
        ("webhook-id", target.webhook_id),
        ("webhook-timestamp", stamp),
        ("webhook-signature", f"v1,{MASK}"),
        ("content-type", "application/json"),
        ("user-agent", USER_AGENT),
    ]
    assert second["request_headers"] is None  # nothing was sent
    assert body["headers"] == dict(sent)  # the newest attempt that sent something
    assert "receiver-token" not in str(body) and "whsec_" not in str(body)


def test_a_dry_run_replay_counts_and_changes_nothing(ops_api: Api, world: dict[str, Any]) -> None:
    response = ops_api.client.post(
        "/v1/replays", json={"subscription_id": world["a"], "dry_run": True}, headers=world["auth"]
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["dry_run"], body["total"], body["by_reason"]) == (
        True,
        4,
        {"max_attempts": 3, "endpoint_disabled": 1},
    )
    with ops_api.sessionmaker() as session:
        statuses = set(session.scalars(select(Delivery.status)))
    assert statuses == {DeliveryStatus.DEAD}
    assert published_copies(ops_api.transport) == []


def test_a_replay_without_filter_is_refused_unless_all(ops_api: Api, world: dict[str, Any]) -> None:
    assert_error(ops_api.client.post("/v1/replays", json={}, headers=world["auth"]), 409)


def wait_job(api: Api, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        body: dict[str, Any] = api.client.get(f"/v1/replays/{job_id}", headers=auth).json()
        if body["state"] not in ("running", "cancelling"):
            return body
        time.sleep(0.05)
    pytest.fail(f"job {job_id} still running")


def test_a_replay_job_runs_in_the_background_and_is_watched(
    ops_api: Api, world: dict[str, Any]
) -> None:
    response = ops_api.client.post(
        "/v1/replays", json={"reason": "max_attempts", "rate_per_s": None}, headers=world["auth"]
    )
    assert response.status_code == 202, response.text
    job = wait_job(ops_api, world["auth"], response.json()["id"])
    assert (job["state"], job["total"], job["done"], job["todo"]) == ("completed", 4, 4, 0)
    copies = {c.delivery_id for c in published_copies(ops_api.transport)}
    assert copies == ids(world["a_500"] + world["b_conn"])
    other = ops_api.client.get(f"/v1/replays/{job['id']}", headers=world["other_auth"])
    assert_error(other, 404)


def test_a_read_only_key_watches_a_replay_job_and_a_replay_key_cancels_it(
    ops_api: Api, world: dict[str, Any]
) -> None:
    reader = ops_api.key(world["tenant"], "deliveries:read")
    refused = ops_api.client.post("/v1/replays", json={"all": True}, headers=reader)
    assert_error(refused, 403, "forbidden")
    # Slow enough to be still running when it is cancelled.
    started = ops_api.client.post(
        "/v1/replays", json={"all": True, "rate_per_s": 0.5}, headers=world["auth"]
    )
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    watched = ops_api.client.get(f"/v1/replays/{job_id}", headers=reader)
    assert watched.status_code == 200, watched.text
    assert watched.json()["total"] == 5
    assert_error(ops_api.client.post(f"/v1/replays/{job_id}/cancel", headers=reader), 403)
    cancel = ops_api.client.post(f"/v1/replays/{job_id}/cancel", headers=world["auth"])
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["state"] in ("cancelling", "cancelled")
    job = wait_job(ops_api, reader, job_id)
    assert job["state"] == "cancelled" and job["done"] < job["total"]
    stranger = ops_api.client.post(f"/v1/replays/{job_id}/cancel", headers=world["other_auth"])
    assert_error(stranger, 404)


def test_one_delivery_is_replayed_by_id(ops_api: Api, world: dict[str, Any]) -> None:
    target = world["a_410"][0].id
    response = ops_api.client.post(f"/v1/deliveries/{target}/replay", headers=world["auth"])
    assert response.status_code == 202, response.text
    assert wait_job(ops_api, world["auth"], response.json()["id"])["done"] == 1
    assert [c.delivery_id for c in published_copies(ops_api.transport)] == [target]
    with ops_api.sessionmaker() as session:
        row = session.get(Delivery, target)
        assert row is not None and (row.status, row.replay_count) == (DeliveryStatus.PENDING, 1)
    again = ops_api.client.post(f"/v1/deliveries/{target}/replay", headers=world["auth"])
    assert_error(again, 409, "not_dead")


def test_recover_replays_what_a_subscription_lost_since_a_time(
    ops_api: Api, world: dict[str, Any]
) -> None:
    since = (utcnow() - timedelta(hours=2, minutes=30)).isoformat()
    response = ops_api.client.post(
        f"/v1/subscriptions/{world['a']}/recover",
        json={"since": since, "rate_per_s": None},
        headers=world["auth"],
    )
    assert response.status_code == 202, response.text
    assert wait_job(ops_api, world["auth"], response.json()["id"])["done"] == 3
    recovered = {c.delivery_id for c in published_copies(ops_api.transport)}
    assert recovered == ids(world["a_500"][:2] + world["a_410"])


def test_a_paused_subscription_is_refused_unless_forced(
    ops_api: Api, world: dict[str, Any]
) -> None:
    with ops_api.sessionmaker() as session, session.begin():
        row = session.get(Subscription, world["b"])
        assert row is not None
        row.status = "paused"
    body = {"subscription_id": world["b"], "rate_per_s": None}
    refused = assert_error(
        ops_api.client.post("/v1/replays", json=body, headers=world["auth"]), 409
    )
    assert "paused" in refused
    forced = ops_api.client.post("/v1/replays", json={**body, "force": True}, headers=world["auth"])
    assert forced.status_code == 202 and "held" in forced.json()["note"]


def test_poison_messages_are_listed_with_their_raw_body_and_resubmitted(ops_api: Api) -> None:
    from common.transport import Message, poison_copy
    from common.transport import topology as tp

    raw = Message(tp.DELIVERIES, b'{"tenant": "ten_x", "oops": 1}', "delivery", {}, False, None)
    ops_api.transport.publish([poison_copy(raw, "undecodable", "DeliveryMessage: bad")])

    body = ops_api.client.get("/v1/dead-letters/poison", headers=ops_api.admin).json()

    (row,) = body["data"]
    assert (row["body"], row["error"], row["source_queue"], row["tenant_id"]) == (
        '{"tenant": "ten_x", "oops": 1}',
        "DeliveryMessage: bad",
        tp.DELIVERIES,
        "ten_x",
    )
    sent = ops_api.client.post(
        f"/v1/dead-letters/poison/{row['id']}/resubmit", headers=ops_api.admin
    )
    assert sent.status_code == 200 and sent.json()["resubmitted_at"] is not None
    # To its tenant's shard, as every delivery (architecture §3).
    shard = tp.shard_queue(tp.shard_of("ten_x", ops_api.settings.delivery_shards))
    assert ops_api.transport.queue_depth(shard) == 1
