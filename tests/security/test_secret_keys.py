"""`HOOKLINE_SECRET_KEY`: a canary refuses a wrong key at start, a key ring changes keys,
`hookline secrets rewrap` re-seals everything, and weak keys are refused (issue 14)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from common.db.models import IdempotencyRecord, SecretCanary, Subscription, Tenant
from common.errors import ConfigurationError
from common.secretbox import DEV_SECRET_KEY, SecretBox, check_secret_key
from common.settings import Settings
from common.wire import utcnow
from hookline.cli import app
from hookline.cli.secrets import require_usable_key
from tests import builders
from tests.api.support import Api

OLD_KEY = secrets.token_hex(32)
NEW_KEY = secrets.token_urlsafe(32)
runner = CliRunner()


def _settings(db_url: str, secret_key: str) -> Settings:
    return Settings(database_url=db_url, secret_key=secret_key)


def _env(db_url: str, secret_key: str) -> dict[str, str]:
    return {
        "HOOKLINE_DATABASE_URL": db_url,
        "HOOKLINE_BROKER_URL": "memory://",
        "HOOKLINE_ALLOW_MEMORY_BROKER": "true",
        "HOOKLINE_SECRET_KEY": secret_key,
        "HOOKLINE_ADMIN_TOKEN": secrets.token_hex(16),
    }


def _subscription(sessions: sessionmaker[Session], box: SecretBox) -> str:
    with sessions.begin() as session:
        session.add(Tenant(id="ten_a", name="a", created_at=utcnow()))
        session.flush()
        row, _ = builders.subscription(session, "ten_a", "http://127.0.0.1:9/h", box=box)
        return row.id


# (a) the canary


def test_the_first_start_writes_the_canary_and_a_later_start_with_another_key_is_refused(
    db_url: str, db_sessions: sessionmaker[Session]
):
    sessions = db_sessions
    require_usable_key(_settings(db_url, OLD_KEY))

    with pytest.raises(ConfigurationError) as refused:
        require_usable_key(_settings(db_url, NEW_KEY))

    message = str(refused.value)
    assert "HOOKLINE_SECRET_KEY" in message and "\n" not in message
    assert OLD_KEY not in message and NEW_KEY not in message
    with sessions() as session:
        assert SecretBox(OLD_KEY).open(session.get_one(SecretCanary, 1).token)


def test_a_first_start_with_a_key_that_cannot_open_stored_secrets_writes_no_canary(
    db_url: str, db_sessions: sessionmaker[Session]
):
    sessions = db_sessions
    _subscription(sessions, SecretBox(OLD_KEY))

    with pytest.raises(ConfigurationError, match="cannot open the secrets stored"):
        require_usable_key(_settings(db_url, NEW_KEY))

    with sessions() as session:
        assert session.get(SecretCanary, 1) is None
    require_usable_key(_settings(db_url, OLD_KEY))


@pytest.mark.parametrize("command", [["api", "--port", "1"], ["dispatcher"], ["router"]])
def test_services_refuse_to_start_on_a_key_that_does_not_open_the_canary(
    db_url: str, command: list[str]
):
    assert runner.invoke(app, ["migrate"], env=_env(db_url, OLD_KEY)).exit_code == 0

    result = runner.invoke(app, command, env=_env(db_url, NEW_KEY))

    assert result.exit_code == 2, result.output
    assert "refusing to start" in result.output
    assert "cannot open the secrets stored in this database" in result.output


# (b) the key ring


def test_a_key_ring_seals_under_its_first_key_and_opens_with_every_key():
    old_token = SecretBox(OLD_KEY).seal("whsec_old")

    ring = SecretBox(f"{NEW_KEY},{OLD_KEY}")
    new_token = ring.seal("whsec_new")

    assert ring.open(old_token) == "whsec_old"
    assert SecretBox(NEW_KEY).open(new_token) == "whsec_new"
    with pytest.raises(ConfigurationError):
        SecretBox(OLD_KEY).open(new_token)
    assert require_ring_is_checked_as_a_whole()


def require_ring_is_checked_as_a_whole() -> bool:
    # A weak old key may stay in the ring until rewrap has run; the first must be strong.
    check_secret_key(f"{NEW_KEY}, aaaaaaaaaaaaaaaa")
    with pytest.raises(ConfigurationError):
        check_secret_key(f"aaaaaaaaaaaaaaaa,{NEW_KEY}")
    return True


def test_a_service_with_the_new_key_first_and_the_old_one_after_it_starts(db_url: str):
    require_usable_key(_settings(db_url, OLD_KEY))

    require_usable_key(_settings(db_url, f"{NEW_KEY},{OLD_KEY}"))


# (c) rewrap


def _sealed_values(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        values: list[Any] = []
        for row in session.scalars(select(Subscription).order_by(Subscription.id)):
            values += [row.secret_enc, row.previous_secret_enc, row.signing_key_enc]
            values += list(row.headers.values())
        order = (IdempotencyRecord.scope, IdempotencyRecord.key)
        values += list(session.scalars(select(IdempotencyRecord.secrets_enc).order_by(*order)))
        values += list(session.scalars(select(SecretCanary.token)))
    return [v for v in values if v is not None]


def test_rewrap_reseals_every_stored_secret_under_the_first_key(make_db_api, db_url: str):
    old: Api = make_db_api(secret_key=OLD_KEY)
    require_usable_key(_settings(db_url, OLD_KEY))
    tenant = old.client.post(
        "/v1/tenants", json={"name": "a"}, headers={**old.admin, "Idempotency-Key": "t"}
    )
    auth = {"Authorization": f"Bearer {tenant.json()['api_key']}"}
    for n in range(3):
        created = old.client.post(
            "/v1/subscriptions",
            json={
                "url": f"http://127.0.0.1:9/{n}",
                "event_types": ["a"],
                "ed25519": True,
                "headers": {"X-Pass": f"pass-{n}"},
            },
            headers={**auth, "Idempotency-Key": f"s{n}"},
        )
        old.client.post(f"/v1/subscriptions/{created.json()['id']}/rotate-secret", headers=auth)
    before = _sealed_values(old.sessionmaker)
    assert len(before) == 3 * 4 + 4 + 1  # secret, previous, key, header; 4 answers; canary
    env = _env(db_url, f"{NEW_KEY},{OLD_KEY}")

    first = runner.invoke(app, ["secrets", "rewrap", "--batch-size", "2"], env=env)
    again = runner.invoke(app, ["secrets", "rewrap"], env=env)

    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout) == {
        "subscriptions": 3, "idempotency_keys": 4, "canary": 1, "current": 0, "changed": 0,
    }  # fmt: skip
    assert json.loads(again.stdout)["current"] == 3 + 4
    new_only = SecretBox(NEW_KEY)
    after = _sealed_values(old.sessionmaker)
    assert [new_only.open(v) for v in after] == [SecretBox(OLD_KEY).open(v) for v in before]
    require_usable_key(_settings(db_url, NEW_KEY))


def test_rewrap_refuses_to_run_with_a_key_that_opens_nothing(db_url: str):
    require_usable_key(_settings(db_url, OLD_KEY))

    result = runner.invoke(app, ["secrets", "rewrap"], env=_env(db_url, NEW_KEY))

    assert result.exit_code == 2
    assert "cannot open the secrets stored" in result.output


# (d) weak keys


@pytest.mark.parametrize(
    "weak",
    [
        "aaaaaaaaaaaaaaaa",
        "a" * 64,
        "correct horse battery staple",
        "a-real-key-of-enough-length-yes",
        "9f2c4e7a1b8d3f60c5a2e9b147d0836f",  # 128 random bits in 32 characters: too short
        "0123456789" * 4,
    ],
)
def test_weak_keys_are_refused_with_how_to_make_one(weak: str):
    with pytest.raises(ConfigurationError, match="openssl rand -hex 32"):
        check_secret_key(weak)


@pytest.mark.parametrize(
    "make",
    [lambda: secrets.token_hex(32), lambda: secrets.token_urlsafe(32),
     lambda: Fernet.generate_key().decode()],
    ids=["hex", "urlsafe", "fernet"],
)  # fmt: skip
def test_random_keys_are_accepted(make: Callable[[], str]):
    # Made in the test, not at collection: parallel workers must collect the same ids.
    strong = make()
    assert check_secret_key(strong) == strong


def test_a_weak_key_stops_the_dispatcher_before_it_starts(db_url: str):
    result = runner.invoke(app, ["dispatcher"], env=_env(db_url, "aaaaaaaaaaaaaaaa"))

    assert result.exit_code == 2
    assert "openssl rand -hex 32" in result.output


def test_the_dev_key_still_works_where_no_key_is_configured(api: Api):
    created = api.client.post("/v1/tenants", json={"name": "dev"}, headers=api.admin)

    assert created.status_code == 201
    assert SecretBox(DEV_SECRET_KEY).seal("x") != "x"
