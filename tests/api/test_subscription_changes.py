"""Changing a subscription: update, delete, pause and resume, reveal and rotate the secret,
payload filters; with bad input (a clear 4xx, nothing written) and the wrong scope."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from common.db.models import AuditEntry, Subscription
from common.db.statuses import SubscriptionStatus
from common.secretbox import DEV_SECRET_KEY, SecretBox
from tests.api.support import Api, assert_error

URL = "http://127.0.0.1:9/hooks"


def active(api: Api, **fields: Any) -> tuple[dict[str, Any], dict[str, str], str]:
    """An operator-registered (so active) subscription, and its tenant's key and id."""
    tenant_id, auth = api.tenant()
    body = {"url": URL, "event_types": ["order.*"], **fields}
    created = api.client.post(
        f"/v1/tenants/{tenant_id}/subscriptions", json=body, headers=api.admin
    )
    assert created.status_code == 201, created.text
    return created.json(), auth, tenant_id


def stored(api: Api, subscription_id: str) -> Subscription | None:
    with api.sessionmaker() as session:
        return session.get(Subscription, subscription_id)


def test_patch_changes_only_the_fields_sent(api):
    sub, auth, _ = active(api, description="old", metadata={"a": 1})

    response = api.client.patch(
        f"/v1/subscriptions/{sub['id']}",
        json={
            "description": "new",
            "headers": {"Authorization": "Bearer t"},
            "filter": {"total": {"gte": 100}},
            "rate_limit_per_s": 2.5,
            "max_in_flight": 4,
            "operations": ["sync", "sync"],
        },
        headers=auth,
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["description"] == "new"
    assert body["metadata"] == {"a": 1}
    assert body["header_names"] == ["Authorization"]
    assert body["filter"] == {"total": {"gte": 100}}
    assert (body["rate_limit_per_s"], body["max_in_flight"]) == (2.5, 4)
    assert body["operations"] == ["sync"]
    assert body["status"] == SubscriptionStatus.ACTIVE
    assert body["updated_at"] > sub["updated_at"]
    row = stored(api, sub["id"])
    assert row is not None and row.payload_filter == {"total": {"gte": 100}}


@pytest.mark.parametrize(
    "change",
    [
        {"filter": {"total": {"gte": "a lot"}}},
        {"filter": {"total": {"between": [1, 2]}}},
        {"headers": {"webhook-signature": "forged"}},
        {"headers": {"Traceparent": "00-forged"}},  # Hookline's own, with propagate_trace
        {"propagate_trace": None},
        {"propagate_trace": "sometimes"},
        {"event_types": []},
        {"event_types": None},
        {"url": None},
        {"url": "ftp://example.com/"},
        {"max_in_flight": 0},
        {"colour": "blue"},
    ],
)
def test_a_bad_change_is_refused_and_nothing_changes(api, change):
    sub, auth, _ = active(api, description="kept")
    before = stored(api, sub["id"])

    response = api.client.patch(f"/v1/subscriptions/{sub['id']}", json=change, headers=auth)

    assert_error(response, 422)
    after = stored(api, sub["id"])
    assert after is not None and before is not None
    assert (after.url, after.event_types, after.headers, after.payload_filter) == (
        before.url, before.event_types, before.headers, before.payload_filter,
    )  # fmt: skip
    assert after.updated_at == before.updated_at


def test_trace_propagation_is_off_until_a_subscription_opts_in_and_can_be_turned_off(api):
    sub, auth, _ = active(api)
    assert sub["propagate_trace"] is False
    opted, _, _ = active(api, propagate_trace=True)
    assert opted["propagate_trace"] is True

    on = api.client.patch(f"/v1/subscriptions/{sub['id']}", json={"propagate_trace": True},
                          headers=auth)  # fmt: skip
    assert on.status_code == 200, on.text
    assert on.json()["propagate_trace"] is True
    assert api.client.get(f"/v1/subscriptions/{sub['id']}", headers=auth).json()["propagate_trace"]
    row = stored(api, sub["id"])
    assert row is not None and row.propagate_trace is True
    off = api.client.patch(f"/v1/subscriptions/{sub['id']}", json={"propagate_trace": False},
                           headers=auth)  # fmt: skip
    assert off.json()["propagate_trace"] is False
    with api.sessionmaker() as session:
        (entry,) = session.scalars(
            select(AuditEntry).where(AuditEntry.resource_id == sub["id"],
                                     AuditEntry.action == "subscription.updated")
        ).all()[-1:]  # fmt: skip
    assert entry.details == {"fields": ["propagate_trace"]}


def test_a_change_that_makes_it_identical_to_another_subscription_is_a_conflict(api):
    sub, auth, tenant_id = active(api)
    api.client.post(
        f"/v1/tenants/{tenant_id}/subscriptions",
        json={"url": URL, "event_types": ["invoice.*"]},
        headers=api.admin,
    )

    response = api.client.patch(
        f"/v1/subscriptions/{sub['id']}", json={"event_types": ["invoice.*"]}, headers=auth
    )

    assert_error(response, 409, "conflict")
    row = stored(api, sub["id"])
    assert row is not None and row.event_types == ["order.*"]


def test_a_filter_outside_the_language_is_refused_at_creation(api):
    _, auth = api.tenant()

    response = api.client.post(
        "/v1/subscriptions",
        json={"url": URL, "event_types": ["a"], "filter": {"n": {"in": 3}}},
        headers=auth,
    )

    assert "list of values" in assert_error(response, 422, "validation_error")


@pytest.mark.parametrize(
    "spec", ['{"\\ud800": {"bogus": 1}}', '{"a\\ud800": {"in": 1}}', '{"not": {"\\ud800": {}}}']
)
def test_a_bad_filter_whose_key_holds_a_lone_surrogate_is_refused_not_a_crash(api, spec):
    """The refusal names the key: as it was, pydantic could not encode the message (a 500)."""
    _, auth = api.tenant()
    body = f'{{"url": "{URL}", "event_types": ["a"], "filter": {spec}}}'
    headers = {**auth, "content-type": "application/json"}

    response = api.client.post("/v1/subscriptions", content=body, headers=headers)

    assert "\\ud800" in assert_error(response, 422, "validation_error")


def test_delete_removes_the_subscription_and_a_second_delete_is_not_found(api):
    sub, auth, _ = active(api)

    first = api.client.delete(f"/v1/subscriptions/{sub['id']}", headers=auth)
    second = api.client.delete(f"/v1/subscriptions/{sub['id']}", headers=auth)

    assert first.status_code == 204
    assert first.content == b""
    assert_error(second, 404, "not_found")
    assert stored(api, sub["id"]) is None


def test_pause_and_resume(api):
    sub, auth, _ = active(api)
    base = f"/v1/subscriptions/{sub['id']}"

    paused = api.client.post(f"{base}/pause", headers=auth)
    resumed = api.client.post(f"{base}/resume", headers=auth)

    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    assert resumed.status_code == 200 and resumed.json()["status"] == "active"


def test_a_disabled_subscription_can_be_resumed_but_not_paused(api):
    sub, auth, _ = active(api)
    with api.sessionmaker.begin() as session:
        row = session.get(Subscription, sub["id"])
        assert row is not None
        row.status = SubscriptionStatus.DISABLED
        row.disabled_reason = "gone"
        row.consecutive_dead = 7
    assert (
        api.client.get(f"/v1/subscriptions/{sub['id']}", headers=auth).json()["disabled_reason"]
        == "gone"
    )

    paused = api.client.post(f"/v1/subscriptions/{sub['id']}/pause", headers=auth)
    resumed = api.client.post(f"/v1/subscriptions/{sub['id']}/resume", headers=auth)

    assert_error(paused, 409, "conflict")
    assert resumed.json()["status"] == "active"
    assert resumed.json()["disabled_reason"] is None
    row = stored(api, sub["id"])
    assert row is not None and row.consecutive_dead == 0


def test_an_unverified_subscription_cannot_be_resumed(api):
    _, auth = api.tenant()
    sub = api.client.post(
        "/v1/subscriptions", json={"url": URL, "event_types": ["a"]}, headers=auth
    ).json()
    pending = api.client.post(f"/v1/subscriptions/{sub['id']}/resume", headers=auth)
    assert "verify first" in assert_error(pending, 409, "not_verified")
    row = stored(api, sub["id"])
    assert row is not None and row.status == "pending_verification"

    api.client.post(f"/v1/subscriptions/{sub['id']}/pause", headers=auth)
    response = api.client.post(f"/v1/subscriptions/{sub['id']}/resume", headers=auth)

    assert "verify first" in assert_error(response, 409, "not_verified")
    row = stored(api, sub["id"])
    assert row is not None and row.status == "paused"


def test_the_secret_is_revealed_only_by_its_route_and_the_reveal_is_audited(api):
    sub, auth, _ = active(api)

    shown = api.client.get(f"/v1/subscriptions/{sub['id']}/secret", headers=auth)
    listed = api.client.get("/v1/subscriptions", headers=auth)

    assert shown.status_code == 200
    assert shown.json()["secret"] == sub["secret"]
    assert shown.headers["cache-control"] == "no-store"
    assert sub["secret"] not in listed.text
    with api.sessionmaker() as session:
        actions = session.scalars(select(AuditEntry.action)).all()
    assert "subscription.secret_revealed" in actions


def test_rotation_keeps_the_old_secret_sealed_until_the_overlap_ends(api):
    sub, auth, _ = active(api)

    rotated = api.client.post(
        f"/v1/subscriptions/{sub['id']}/rotate-secret", json={"overlap_s": 3600}, headers=auth
    ).json()

    row = stored(api, sub["id"])
    assert row is not None and row.previous_secret_enc is not None
    box = SecretBox(DEV_SECRET_KEY)
    assert box.open(row.secret_enc) == rotated["secret"]
    assert box.open(row.previous_secret_enc) == sub["secret"]
    assert row.previous_secret_expires_at is not None
    shown = api.client.get(f"/v1/subscriptions/{sub['id']}", headers=auth).json()
    assert shown["previous_secret_expires_at"] == rotated["previous_secret_expires_at"]


@pytest.mark.parametrize("overlap", [-1, 7 * 86400 + 1, "a day"])
def test_an_overlap_outside_zero_to_seven_days_is_refused(api, overlap):
    sub, auth, _ = active(api)

    response = api.client.post(
        f"/v1/subscriptions/{sub['id']}/rotate-secret", json={"overlap_s": overlap}, headers=auth
    )

    assert_error(response, 422, "validation_error")
    row = stored(api, sub["id"])
    assert row is not None and row.previous_secret_enc is None


WRITES = [
    ("patch", "", {"description": "x"}),
    ("delete", "", None),
    ("post", "/pause", None),
    ("post", "/resume", None),
    ("post", "/verify", None),
    ("post", "/rotate-secret", None),
    ("get", "/secret", None),
]


@pytest.mark.parametrize(("method", "suffix", "body"), WRITES)
def test_changes_and_the_secret_need_the_write_scope(api, method, suffix, body):
    sub, _, tenant_id = active(api)
    reader = api.key(tenant_id, "subscriptions:read", "deliveries:read")

    response = api.client.request(
        method.upper(), f"/v1/subscriptions/{sub['id']}{suffix}", json=body, headers=reader
    )

    assert "subscriptions:write" in assert_error(response, 403, "forbidden")
    row = stored(api, sub["id"])
    assert row is not None and row.status == SubscriptionStatus.ACTIVE and row.description is None


def test_reading_the_public_key_needs_the_read_scope(api):
    sub, _, tenant_id = active(api, ed25519=True)
    writer = api.key(tenant_id, "events:write")

    response = api.client.get(f"/v1/subscriptions/{sub['id']}/public-key", headers=writer)

    assert "subscriptions:read" in assert_error(response, 403, "forbidden")


def test_the_list_filters_by_status(api):
    sub, auth, tenant_id = active(api)
    api.client.post(f"/v1/subscriptions/{sub['id']}/pause", headers=auth)
    api.client.post(
        f"/v1/tenants/{tenant_id}/subscriptions",
        json={"url": URL, "event_types": ["other"]},
        headers=api.admin,
    )

    paused = api.client.get("/v1/subscriptions?status=paused", headers=auth).json()["data"]
    bad = api.client.get("/v1/subscriptions?status=sleeping", headers=auth)

    assert [s["id"] for s in paused] == [sub["id"]]
    assert_error(bad, 422, "validation_error")
