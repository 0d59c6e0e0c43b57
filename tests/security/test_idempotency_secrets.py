"""The idempotency store keeps no credential in clear, and forgets answers after the TTL.

A POST with `Idempotency-Key` that answers with an API key, a webhook secret or a portal
link (its `url` carries the token that opens the portal) stores its answer with those
fields sealed (like subscription secrets); a replay restores them. Rows
older than `HOOKLINE_IDEMPOTENCY_TTL_S` are deleted by the API as it goes and by
`hookline gc` (docs/security.md, "Idempotency store").
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from common.db.models import ApiKey, IdempotencyRecord
from common.wire import utcnow
from hookline.api import idempotency_gc
from hookline.services.keys import hash_key
from tests.api.support import Api


def _keyed(api: Api, path: str, body: Any, auth: dict[str, str], key: str) -> Any:
    return api.client.post(path, json=body, headers={**auth, "Idempotency-Key": key})


# A receiver-issued credential in a static header: sealed in the table too (issue 14).
PASS = {"X-Shared-Pass": "receiver-pass-7f3a9c"}


def _credentials_issued(api: Api) -> tuple[list[Any], list[str]]:
    """A tenant, a key, a subscription, a rotation and a portal link, each with an
    Idempotency-Key: the responses, and every credential they returned."""
    tenant = _keyed(api, "/v1/tenants", {"name": "acme"}, api.admin, "tenant-1")
    tenant_id = tenant.json()["id"]
    auth = {"Authorization": f"Bearer {tenant.json()['api_key']}"}
    key = _keyed(
        api, f"/v1/tenants/{tenant_id}/api-keys", {"scopes": ["events:write"]}, api.admin, "key-1"
    )
    subscription = _keyed(
        api,
        "/v1/subscriptions",
        {"url": "http://127.0.0.1:9/hook", "event_types": ["order.*"], "headers": PASS},
        auth,
        "sub-1",
    )
    rotated = _keyed(
        api,
        f"/v1/subscriptions/{subscription.json()['id']}/rotate-secret",
        {"overlap_s": 60},
        auth,
        "rotate-1",
    )
    link = _keyed(api, "/v1/portal/links", {"scope": "manage"}, auth, "link-1")
    responses = [tenant, key, subscription, rotated, link]
    for response in responses:
        assert response.status_code in (200, 201), response.text
    credentials = [
        tenant.json()["api_key"],
        key.json()["api_key"],
        subscription.json()["secret"],
        rotated.json()["secret"],
        link.json()["url"].rsplit("token=", 1)[1],
    ]
    assert all(c.startswith(("hl_", "whsec_", "hlp_")) for c in credentials)
    return responses, credentials


def test_stored_answers_hold_no_credential_in_clear(api: Api):
    _, credentials = _credentials_issued(api)

    with api.sessionmaker() as session:
        rows = list(session.scalars(select(IdempotencyRecord)))
    assert len(rows) == 5
    stored = " ".join(f"{r.body} {r.headers} {r.secrets_enc}" for r in rows)
    for credential in credentials:
        assert credential not in stored


def test_the_store_names_its_callers_not_digests_of_their_credentials(api: Api):
    """A digest of `Bearer <admin token>` in the table would let a copy of the database
    test guesses of a weak admin token offline."""
    responses, _ = _credentials_issued(api)
    tenant_key = responses[0].json()["api_key"]
    with api.sessionmaker() as session:
        scopes = set(session.scalars(select(IdempotencyRecord.scope)))
        (key_id,) = session.scalars(
            select(ApiKey.id).where(ApiKey.key_hash == hash_key(tenant_key))
        )
    assert scopes == {"admin", key_id}


def test_a_replay_still_answers_with_the_credentials_byte_for_byte(api: Api):
    responses, _ = _credentials_issued(api)
    tenant_id = responses[0].json()["id"]
    auth = {"Authorization": f"Bearer {responses[0].json()['api_key']}"}
    sub_id = responses[2].json()["id"]

    again = [
        _keyed(api, "/v1/tenants", {"name": "acme"}, api.admin, "tenant-1"),
        _keyed(
            api,
            f"/v1/tenants/{tenant_id}/api-keys",
            {"scopes": ["events:write"]},
            api.admin,
            "key-1",
        ),
        _keyed(
            api,
            "/v1/subscriptions",
            {"url": "http://127.0.0.1:9/hook", "event_types": ["order.*"], "headers": PASS},
            auth,
            "sub-1",
        ),
        _keyed(
            api, f"/v1/subscriptions/{sub_id}/rotate-secret", {"overlap_s": 60}, auth, "rotate-1"
        ),
        _keyed(api, "/v1/portal/links", {"scope": "manage"}, auth, "link-1"),
    ]

    for first, replayed in zip(responses, again, strict=True):
        assert replayed.headers["idempotent-replayed"] == "true"
        assert replayed.status_code == first.status_code
        assert replayed.content == first.content


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_pg_dump_of_the_database_holds_none_of_the_credentials(make_db_api, db_url):
    pg_dump = shutil.which("pg_dump")
    assert pg_dump is not None, "pg_dump is installed with PostgreSQL"
    api: Api = make_db_api()
    _, credentials = _credentials_issued(api)

    dump = subprocess.run(
        [pg_dump, "--data-only", db_url.replace("postgresql+psycopg://", "postgresql://")],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout

    assert "idempotency_keys" in dump and "whsec_" not in dump
    for credential in [*credentials, *PASS.values()]:
        assert credential not in dump


def _age(api: Api, count: int, *, age: timedelta, prefix: str) -> None:
    with api.sessionmaker.begin() as session:
        session.add_all(
            IdempotencyRecord(
                scope="s" * 64,
                key=f"{prefix}-{i}",
                request_hash="h" * 64,
                status_code=201,
                body="{}",
                headers={},
                created_at=utcnow() - age,
            )
            for i in range(count)
        )


def _count(api: Api) -> int:
    with api.sessionmaker() as session:
        return int(session.scalar(select(func.count()).select_from(IdempotencyRecord)) or 0)


def test_expired_answers_are_deleted_in_bounded_batches(make_db_api):
    api: Api = make_db_api(idempotency_ttl_s=3600)
    _age(api, 25, age=timedelta(hours=2), prefix="old")
    _age(api, 3, age=timedelta(minutes=5), prefix="young")

    first = idempotency_gc.delete_expired(api.sessionmaker, ttl_s=3600, batch_size=10)
    rest = idempotency_gc.collect_expired(api.sessionmaker, ttl_s=3600, batch_size=10)

    assert first == 10
    assert rest == 15
    assert _count(api) == 3


def test_the_api_deletes_expired_answers_as_it_takes_new_ones(make_db_api):
    api: Api = make_db_api(idempotency_ttl_s=3600)
    _age(api, 30, age=timedelta(hours=2), prefix="old")

    fresh = _keyed(api, "/v1/tenants", {"name": "acme"}, api.admin, "tenant-1")

    assert fresh.status_code == 201
    assert _count(api) == 1


def test_an_answer_older_than_the_ttl_is_not_replayed(make_db_api):
    api: Api = make_db_api(idempotency_ttl_s=3600)
    first = _keyed(api, "/v1/tenants", {"name": "acme"}, api.admin, "tenant-1")
    with api.sessionmaker.begin() as session:
        for row in session.scalars(select(IdempotencyRecord)):
            row.created_at = utcnow() - timedelta(hours=2)

    again = _keyed(api, "/v1/tenants", {"name": "acme"}, api.admin, "tenant-1")

    assert again.status_code == 201
    assert "idempotent-replayed" not in again.headers
    assert again.json()["id"] != first.json()["id"]


def test_a_replay_whose_credentials_cannot_be_opened_says_it_left_them_out(make_db_api):
    first_key, other_key = "1f" * 32, "2e" * 32
    api: Api = make_db_api(secret_key=first_key)
    first = _keyed(api, "/v1/tenants", {"name": "acme"}, api.admin, "tenant-1")
    auth = {"Authorization": f"Bearer {first.json()['api_key']}"}
    link = _keyed(api, "/v1/portal/links", {"scope": "manage"}, auth, "link-1")
    rekeyed: Api = make_db_api(secret_key=other_key)

    again = _keyed(rekeyed, "/v1/tenants", {"name": "acme"}, api.admin, "tenant-1")
    link_again = _keyed(rekeyed, "/v1/portal/links", {"scope": "manage"}, auth, "link-1")

    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["idempotent-secrets-omitted"] == "api_key"
    assert again.json() == {**first.json(), "api_key": None}
    assert link_again.headers["idempotent-secrets-omitted"] == "url"
    assert link_again.json() == {**link.json(), "url": None}
