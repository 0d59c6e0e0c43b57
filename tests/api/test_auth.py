"""API keys: missing, unknown, revoked, out of scope, or used from the wrong address."""

from __future__ import annotations

import re
import time
from typing import Any

from sqlalchemy import event, update

from common.db.models import ApiKey
from common.wire import utcnow
from hookline.api.keycache import KeyCache, KeyRecord
from hookline.services.keys import hash_key, new_api_key
from tests.api.support import assert_error
from tests.api.test_health import missing_database


def test_new_keys_are_hl_and_32_url_safe_characters_and_never_repeat():
    keys = {new_api_key() for _ in range(200)}

    assert len(keys) == 200
    assert all(re.fullmatch(r"hl_[A-Za-z0-9_-]{32}", key) for key in keys)
    assert hash_key("hl_x") != hash_key("hl_y")
    assert re.fullmatch(r"[0-9a-f]{64}", hash_key("hl_x"))


def test_a_request_without_a_key_is_unauthorized_with_a_bearer_challenge(api):
    response = api.client.get("/v1/subscriptions")

    message = assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in message


def test_an_unknown_or_malformed_key_is_unauthorized(api):
    api.tenant()
    for value in ("Bearer hl_" + "A" * 32, "Bearer not-a-key", "Basic dXNlcjpwYXNz", "Bearer"):
        response = api.client.get("/v1/subscriptions", headers={"Authorization": value})
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"


def test_the_admin_token_is_not_an_api_key(api):
    response = api.client.get("/v1/subscriptions", headers=api.admin)

    assert_error(response, 401, "unauthorized")


def test_a_key_revoked_elsewhere_is_refused_once_the_key_cache_expires(make_api):
    # Another API process revoked it: this one trusts its cached lookup for at most 0.2 s.
    api = make_api(api_key_cache_s=0.2)
    _, headers = api.tenant()
    assert api.client.get("/v1/subscriptions", headers=headers).status_code == 200
    token = headers["Authorization"].removeprefix("Bearer ")
    with api.sessionmaker() as session, session.begin():
        session.execute(
            update(ApiKey).where(ApiKey.key_hash == hash_key(token)).values(revoked_at=utcnow())
        )
    time.sleep(0.3)

    response = api.client.get("/v1/subscriptions", headers=headers)

    message = assert_error(response, 401, "unauthorized")
    assert "revoked" in message


def test_a_key_without_the_scope_is_forbidden(api):
    tenant_id, _ = api.tenant()
    writer = api.key(tenant_id, "events:write")

    response = api.client.get("/v1/subscriptions", headers=writer)

    message = assert_error(response, 403, "forbidden")
    assert "subscriptions:read" in message


def test_a_key_limited_to_source_addresses_is_refused_from_elsewhere(make_api):
    outside = make_api(client_address=("192.0.2.7", 40000))
    inside = make_api(client_address=("10.1.2.3", 40000))
    _, headers = outside.tenant()
    token = headers["Authorization"].removeprefix("Bearer ")
    with outside.sessionmaker() as session, session.begin():
        session.execute(
            update(ApiKey)
            .where(ApiKey.key_hash == hash_key(token))
            .values(allowed_cidrs=["10.0.0.0/8"])
        )

    refused = outside.client.get("/v1/subscriptions", headers=headers)
    allowed = inside.client.get("/v1/subscriptions", headers=headers)

    assert_error(refused, 403, "forbidden")
    assert allowed.status_code == 200


def test_a_token_no_key_has_the_form_of_is_refused_without_a_query(make_api, tmp_path):
    """Only real keys are cached, so a made-up token costs a lookup; one that is not even
    `hl_` and 32 URL-safe characters is refused without it, with the database down too."""
    engine, broken = missing_database(tmp_path)
    api = make_api(sessionmaker=broken)
    for token in ("not-a-key", "hl_short", "hl_" + "A" * 31 + "!", "hl_" + "A" * 33):
        response = api.client.get("/v1/subscriptions", headers={"Authorization": f"Bearer {token}"})
        assert_error(response, 401, "unauthorized")
    shaped = api.client.get("/v1/subscriptions", headers={"Authorization": "Bearer hl_" + "A" * 32})
    assert shaped.status_code == 503  # a key of the right form is looked up: the database
    engine.dispose()


def test_a_wrong_key_costs_one_look_up_a_cache_period_not_one_a_request(make_api):
    """A client retrying a key that does not exist: the first request looks it up, the
    next ones within `HOOKLINE_API_KEY_CACHE_S` are refused without a query, including the
    second layer of a POST with an `Idempotency-Key` (its claim's check, then the route's);
    once the period is over it is looked up again. A real key is unaffected."""
    api = make_api(api_key_cache_s=0.5)
    _, real = api.tenant()
    wrong = {"Authorization": f"Bearer hl_{'B' * 32}"}
    looked_up: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "FROM api_keys" in statement:
            looked_up.append(statement)

    event.listen(api.engine, "before_cursor_execute", seen)
    try:
        for _ in range(5):
            assert_error(api.client.get("/v1/subscriptions", headers=wrong), 401, "unauthorized")
        keyed = {**wrong, "Idempotency-Key": "k-1"}
        assert_error(api.client.post("/v1/subscriptions", json={}, headers=keyed), 401)
        assert len(looked_up) == 1
        time.sleep(0.6)
        assert_error(api.client.get("/v1/subscriptions", headers=wrong), 401, "unauthorized")
        assert len(looked_up) == 2
        assert api.client.get("/v1/subscriptions", headers=real).status_code == 200
    finally:
        event.remove(api.engine, "before_cursor_execute", seen)


def test_a_peek_at_the_key_cache_never_delays_a_keys_refresh() -> None:
    """`OverLimit` peeks at the cache and never looks a key up: were its peek taken for the
    caller that refreshes an expired entry, the others would keep the old record (a
    revocation unseen) for one more period, and nobody would look the key up meanwhile."""
    cache = KeyCache(ttl_s=0.05)
    record = KeyRecord("k1", "t1", frozenset({"events:write"}), (), None)
    cache.put("h", record)
    assert cache.peek("h") == record
    time.sleep(0.06)
    assert cache.peek("h") is None  # expired: a peek does not serve it
    assert cache.peek("h") is None
    assert cache.get("h") is None  # the first real caller is the one told to look it up
    assert cache.get("h") == record  # the others keep the old record while it does
