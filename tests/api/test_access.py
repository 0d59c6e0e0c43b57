"""Keys through the admin API: names, CIDR allow-lists, listing, revocation; the audit log
of every change; and `Idempotency-Key` on every POST."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import event, func, select

from common.db.models import ApiKey, IdempotencyRecord, Subscription
from tests.api.support import Api, assert_error

URL = "http://127.0.0.1:9/hooks"


def keys_stored(api: Api) -> int:
    with api.sessionmaker() as session:
        return session.scalar(select(func.count()).select_from(ApiKey)) or 0


def test_a_key_with_an_allow_list_works_only_from_those_networks(make_api):
    inside = make_api(client_address=("10.1.2.3", 40000))
    outside = make_api(client_address=("192.0.2.7", 40000))
    tenant_id, _ = inside.tenant()

    created = inside.client.post(
        f"/v1/tenants/{tenant_id}/api-keys",
        json={"name": "ci", "scopes": ["subscriptions:read"], "allowed_cidrs": ["10.0.0.0/8"]},
        headers=inside.admin,
    )
    auth = {"Authorization": f"Bearer {created.json()['api_key']}"}

    assert created.status_code == 201
    assert created.json()["allowed_cidrs"] == ["10.0.0.0/8"]
    assert created.json()["name"] == "ci"
    assert inside.client.get("/v1/subscriptions", headers=auth).status_code == 200
    refused = outside.client.get("/v1/subscriptions", headers=auth)
    assert "address" in assert_error(refused, 403, "forbidden")


@pytest.mark.parametrize("cidrs", [["10.0.0.0/33"], ["not-a-network"], ["x" * 65]])
def test_an_allow_list_entry_that_is_not_a_network_is_refused(api, cidrs):
    tenant_id, _ = api.tenant()
    before = keys_stored(api)

    response = api.client.post(
        f"/v1/tenants/{tenant_id}/api-keys", json={"allowed_cidrs": cidrs}, headers=api.admin
    )

    assert_error(response, 422, "validation_error")
    assert keys_stored(api) == before


def test_keys_are_listed_by_prefix_and_never_in_clear(api):
    tenant_id, first = api.tenant()
    token = first["Authorization"].removeprefix("Bearer ")

    listed = api.client.get(f"/v1/tenants/{tenant_id}/api-keys", headers=api.admin)

    assert listed.status_code == 200
    (key,) = listed.json()["data"]
    assert token not in listed.text
    assert token.startswith(key["prefix"])
    assert key["revoked_at"] is None


def test_keys_are_listed_a_page_at_a_time_oldest_first(api):
    tenant_id, _ = api.tenant()
    for _ in range(4):
        api.key(tenant_id, "events:write")
    url = f"/v1/tenants/{tenant_id}/api-keys"

    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.client.get(url, params=params, headers=api.admin)
        assert page.status_code == 200, page.text
        seen += page.json()["data"]
        pages += 1
        if (cursor := page.json()["next_cursor"]) is None:
            break

    assert pages == 3 and len(seen) == 5 and len({k["id"] for k in seen}) == 5
    assert [k["created_at"] for k in seen] == sorted(k["created_at"] for k in seen)
    assert_error(api.client.get(url, params={"cursor": "nonsense"}, headers=api.admin), 422)


def test_a_revoked_key_is_refused_at_once_and_revoking_again_changes_nothing(api):
    tenant_id, auth = api.tenant()
    (key,) = api.client.get(f"/v1/tenants/{tenant_id}/api-keys", headers=api.admin).json()["data"]

    revoked = api.client.delete(f"/v1/tenants/{tenant_id}/api-keys/{key['id']}", headers=api.admin)
    again = api.client.delete(f"/v1/tenants/{tenant_id}/api-keys/{key['id']}", headers=api.admin)

    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    assert "revoked" in assert_error(api.client.get("/v1/subscriptions", headers=auth), 401)


def test_revoking_needs_the_admin_token_and_the_right_tenant(api):
    tenant_id, auth = api.tenant()
    other_id, _ = api.tenant("other")
    (key,) = api.client.get(f"/v1/tenants/{tenant_id}/api-keys", headers=api.admin).json()["data"]

    as_tenant = api.client.delete(f"/v1/tenants/{tenant_id}/api-keys/{key['id']}", headers=auth)
    wrong_tenant = api.client.delete(
        f"/v1/tenants/{other_id}/api-keys/{key['id']}", headers=api.admin
    )

    assert_error(as_tenant, 401)
    assert_error(wrong_tenant, 404, "not_found")
    assert api.client.get("/v1/subscriptions", headers=auth).status_code == 200


def test_tenants_are_listed_and_read_by_the_admin(api):
    first, _ = api.tenant("a")
    second, _ = api.tenant("b")

    page = api.client.get("/v1/tenants?limit=1", headers=api.admin).json()
    rest = api.client.get(f"/v1/tenants?cursor={page['next_cursor']}", headers=api.admin).json()
    one = api.client.get(f"/v1/tenants/{second}", headers=api.admin)

    assert [t["id"] for t in page["data"] + rest["data"]] == [first, second]
    assert rest["next_cursor"] is None
    assert one.json()["name"] == "b"
    assert_error(api.client.get("/v1/tenants/ten_nope", headers=api.admin), 404)


def audit_log(api: Api, query: str = "") -> list[dict[str, Any]]:
    response = api.client.get(f"/v1/audit-log{query}", headers=api.admin)
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def test_every_change_is_in_the_audit_log_with_who_what_and_where(make_api):
    api = make_api(client_address=("198.51.100.9", 41000))
    tenant_id, auth = api.tenant()
    key_id = api.client.get(f"/v1/tenants/{tenant_id}/api-keys", headers=api.admin).json()["data"][
        0
    ]["id"]
    sub = api.client.post(
        "/v1/subscriptions", json={"url": URL, "event_types": ["a"]}, headers=auth
    ).json()
    api.client.patch(f"/v1/subscriptions/{sub['id']}", json={"description": "d"}, headers=auth)
    api.client.post(f"/v1/subscriptions/{sub['id']}/rotate-secret", headers=auth)
    api.client.delete(f"/v1/subscriptions/{sub['id']}", headers=auth)

    entries = audit_log(api, f"?tenant_id={tenant_id}")

    assert [e["action"] for e in entries] == [
        "subscription.deleted",
        "subscription.secret_rotated",
        "subscription.updated",
        "subscription.verify_failed",
        "subscription.created",
        "tenant.created",
    ]
    by_key = [e for e in entries if e["actor"] == key_id]
    assert len(by_key) == 5
    assert entries[-1]["actor"] == "admin"
    assert {e["source_ip"] for e in entries} == {"198.51.100.9"}
    assert entries[2]["details"] == {"fields": ["description"]}
    assert sub["secret"] not in str(entries)


def test_the_audit_log_filters_and_pages(api):
    for name in ("a", "b", "c"):
        api.tenant(name)

    created = audit_log(api, "?action=tenant.created&limit=2")
    response = api.client.get("/v1/audit-log?action=tenant.created&limit=2", headers=api.admin)
    rest = audit_log(api, f"?action=tenant.created&cursor={response.json()['next_cursor']}")

    assert len(created) == 2 and len(rest) == 1
    assert audit_log(api, "?since=2999-01-01T00:00:00Z") == []
    assert_error(api.client.get("/v1/audit-log?cursor=xyz", headers=api.admin), 422)
    # "²" is a digit to str.isdigit, not to int(): refused, not a 500.
    assert_error(api.client.get("/v1/audit-log?cursor=%C2%B2", headers=api.admin), 422)
    assert_error(api.client.get("/v1/audit-log?since=yesterday", headers=api.admin), 422)
    # An age reaching back past year 1: refused, not a 500.
    assert_error(api.client.get("/v1/audit-log?since=999999d", headers=api.admin), 422)


@pytest.mark.parametrize("path", ["/v1/audit-log", "/v1/audit"])
def test_an_audit_cursor_past_the_bigint_ids_is_refused(api, path):
    """19 digits, but above 2**63 - 1: binding it to the id column was a 500."""
    tenant_id, _ = api.tenant()
    headers = api.admin if path == "/v1/audit-log" else api.key(tenant_id, "audit:read")
    top = api.client.get(path, params={"cursor": str(2**63 - 1)}, headers=headers)
    assert top.status_code == 200, top.text

    for cursor in (str(2**63), "9" * 19):
        response = api.client.get(path, params={"cursor": cursor}, headers=headers)
        assert_error(response, 422, "invalid_cursor")


def test_the_audit_log_is_for_the_admin_only(api):
    _, auth = api.tenant()

    assert_error(api.client.get("/v1/audit-log", headers=auth), 401)


def subscribe_keyed(api: Api, auth: dict[str, str], key: str, **body: Any) -> Any:
    payload = {"url": URL, "event_types": ["a"], **body}
    return api.client.post(
        "/v1/subscriptions", json=payload, headers={**auth, "Idempotency-Key": key}
    )


def test_a_repeated_post_with_the_same_key_gets_the_stored_answer_secret_and_all(api):
    _, auth = api.tenant()

    first = subscribe_keyed(api, auth, "sub-1")
    again = subscribe_keyed(api, auth, "sub-1")

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["cache-control"] == "no-store"
    with api.sessionmaker() as session:
        assert session.scalar(select(func.count()).select_from(Subscription)) == 1


def test_the_same_key_for_a_different_request_is_refused(api):
    _, auth = api.tenant()
    subscribe_keyed(api, auth, "sub-1")

    other = subscribe_keyed(api, auth, "sub-1", event_types=["b"])

    assert "different request" in assert_error(other, 422, "idempotency_key_reused")


def test_keys_of_different_callers_never_meet(api):
    _, alice = api.tenant("alice")
    _, bob = api.tenant("bob")

    mine = subscribe_keyed(api, alice, "same-key")
    theirs = subscribe_keyed(api, bob, "same-key")

    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]


def test_a_failed_request_releases_its_key_so_a_retry_runs(make_api):
    broken = {"on": True}

    def resolver(host: str, port: int) -> list[str]:
        if broken["on"]:
            raise RuntimeError("resolver crashed")
        return ["127.0.0.1"]

    api = make_api(resolver=resolver, raise_server_exceptions=False)
    _, auth = api.tenant()
    url = "http://receiver.test:9/h"

    failed = subscribe_keyed(api, auth, "k", url=url)
    broken["on"] = False
    retried = subscribe_keyed(api, auth, "k", url=url)

    assert failed.status_code == 500
    assert retried.status_code == 201
    assert "idempotent-replayed" not in retried.headers


def test_a_request_still_in_progress_makes_a_concurrent_repeat_wait_with_409(make_api):
    entered, release = threading.Event(), threading.Event()

    def resolver(host: str, port: int) -> list[str]:
        entered.set()
        release.wait(10)
        return ["127.0.0.1"]

    api = make_api(resolver=resolver)
    _, auth = api.tenant()
    results: list[Any] = []
    slow = threading.Thread(
        target=lambda: results.append(subscribe_keyed(api, auth, "k", url="http://r.test:9/"))
    )
    slow.start()
    assert entered.wait(10)

    concurrent = subscribe_keyed(api, auth, "k", url="http://r.test:9/")
    release.set()
    slow.join(10)

    assert_error(concurrent, 409, "idempotency_in_progress")
    assert results[0].status_code == 201


@pytest.mark.parametrize("key", ["", "x" * 201, "has space", "tab\there", "trailing-newline\n"])
def test_a_malformed_idempotency_key_is_refused_and_nothing_is_stored(api, key):
    _, auth = api.tenant()

    response = subscribe_keyed(api, auth, key)

    assert_error(response, 422)
    with api.sessionmaker() as session:
        assert session.scalar(select(func.count()).select_from(Subscription)) == 0
        assert session.scalar(select(func.count()).select_from(IdempotencyRecord)) == 0


def test_an_auth_failure_is_not_stored_as_the_answer(api):
    tenant_id, _ = api.tenant()
    reader = api.key(tenant_id, "subscriptions:read")

    refused = subscribe_keyed(api, reader, "k")

    assert_error(refused, 403)
    with api.sessionmaker() as session:
        assert session.scalar(select(func.count()).select_from(IdempotencyRecord)) == 0


def test_a_request_without_valid_credentials_writes_nothing_for_its_key(api):
    """The claim of an `Idempotency-Key` (and its release) are writes to the database
    every tenant shares: a request the route refuses as 401 or 403 for its credentials
    (none, not a key, unknown, revoked, from an address the key does not allow) makes
    neither; a live key still claims."""
    tenant_id, auth = api.tenant()
    revoked = api.key(tenant_id, "subscriptions:write")
    keys = api.client.get(f"/v1/tenants/{tenant_id}/api-keys", headers=api.admin).json()
    for row in keys["data"][1:]:  # all but the tenant's first key
        api.client.delete(f"/v1/tenants/{tenant_id}/api-keys/{row['id']}", headers=api.admin)
    fenced = api.client.post(
        f"/v1/tenants/{tenant_id}/api-keys",
        json={"scopes": ["subscriptions:write"], "allowed_cidrs": ["10.0.0.0/8"]},
        headers=api.admin,
    ).json()["api_key"]
    callers = {
        "no credential": {},
        "not a bearer": {"Authorization": "Basic dXNlcjpwYXNz"},
        "not a key": {"Authorization": "Bearer nope"},
        "unknown key": {"Authorization": f"Bearer hl_{'A' * 32}"},
        "revoked key": revoked,
        "another address's key": {"Authorization": f"Bearer {fenced}"},
    }
    touched: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "idempotency_keys" in statement:
            touched.append(statement.split()[0])

    event.listen(api.engine, "before_cursor_execute", seen)
    try:
        for n, (name, headers) in enumerate(callers.items()):
            refused = subscribe_keyed(api, headers, f"key-{n}")
            assert refused.status_code in (401, 403), (name, refused.text)
            assert touched == [], (name, touched)
        assert subscribe_keyed(api, auth, "live").status_code == 201
        assert "INSERT" in touched
    finally:
        event.remove(api.engine, "before_cursor_execute", seen)
