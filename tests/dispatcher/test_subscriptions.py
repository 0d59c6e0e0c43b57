"""The subscription cache: loaded on demand, refreshed by one query, never per delivery."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, delete, event, update
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import Subscription
from common.db.statuses import SubscriptionStatus
from common.signing import new_secret
from common.transport import MemoryTransport
from common.wire import utcnow
from dispatcher.subscriptions import SubscriptionCache
from hookline.receiver import Receiver
from tests import builders
from tests.builders import DEV_BOX
from tests.dispatcher.conftest import Harness, make_settings, wait_until


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement the engine runs during the test."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def selects_from(statements: list[str], table: str) -> int:
    return sum(1 for s in statements if s.startswith("SELECT") and f"FROM {table}" in s)


def given_subscription(db: sessionmaker[Session], **fields: Any) -> tuple[str, str]:
    with db() as session, session.begin():
        tenant = builders.tenant(session)
        sub, secret = builders.subscription(session, tenant.id, "http://a.test/h", **fields)
    return sub.id, secret


def test_a_subscription_is_loaded_once_and_decrypted(
    db: sessionmaker[Session], statements: list[str]
) -> None:
    sub_id, secret = given_subscription(db, headers={"x-token": "t"}, max_in_flight=3)
    cache = SubscriptionCache(db, DEV_BOX, refresh_s=3600)
    first = cache.get(sub_id)
    assert first is not None and cache.get(sub_id) is first
    assert (first.secret, first.headers, first.max_in_flight) == (secret, {"x-token": "t"}, 3)
    assert cache.get("sub_missing") is None
    assert selects_from(statements, "subscriptions") == 2  # one per id, not per get


def test_a_refresh_is_one_query_for_changed_rows(
    db: sessionmaker[Session], statements: list[str]
) -> None:
    sub_id, _ = given_subscription(db)
    other_id, _ = given_subscription(db)
    # A refresh interval long enough that a busy machine does not pass it between the two
    # reads below (0.05 s did, beside another test worker: two refreshes, two queries).
    cache = SubscriptionCache(db, DEV_BOX, refresh_s=1.0)
    cache.get(sub_id)
    cache.get(other_id)
    with db() as session, session.begin():
        session.execute(
            update(Subscription)
            .where(Subscription.id == sub_id)
            .values(url="http://b.test/h", updated_at=utcnow())
        )
    time.sleep(1.05)
    statements.clear()
    endpoint = cache.get(sub_id)
    assert endpoint is not None and endpoint.url == "http://b.test/h"
    assert selects_from(statements, "subscriptions") == 1
    assert cache.get(other_id) is not None
    assert selects_from(statements, "subscriptions") == 1


def test_a_deleted_subscription_is_forgotten_at_the_next_refresh(
    db: sessionmaker[Session], statements: list[str]
) -> None:
    sub_id, _ = given_subscription(db)
    kept_id, _ = given_subscription(db)
    cache = SubscriptionCache(db, DEV_BOX, refresh_s=0.05)
    time.sleep(0.06)
    assert cache.get(sub_id) is not None and cache.get(kept_id) is not None
    with db() as session, session.begin():
        session.execute(delete(Subscription).where(Subscription.id == sub_id))
    time.sleep(0.06)
    assert cache.get(sub_id) is None
    assert cache.get(kept_id) is not None
    time.sleep(0.06)
    statements.clear()
    cache.get(kept_id)  # nothing changed since: the refresh is one query again
    assert selects_from(statements, "subscriptions") == 1


def test_the_previous_secret_signs_until_it_expires(db: sessionmaker[Session]) -> None:
    previous = new_secret()
    expires = utcnow() + timedelta(minutes=5)
    sub_id, secret = given_subscription(
        db, previous_secret_enc=DEV_BOX.seal(previous), previous_secret_expires_at=expires
    )
    endpoint = SubscriptionCache(db, DEV_BOX, refresh_s=3600).get(sub_id)
    assert endpoint is not None
    assert endpoint.secrets_at(utcnow()) == (secret, previous)
    assert endpoint.secrets_at(expires + timedelta(seconds=1)) == (secret,)


def test_mark_disabled_is_seen_before_the_next_refresh(db: sessionmaker[Session]) -> None:
    sub_id, _ = given_subscription(db)
    cache = SubscriptionCache(db, DEV_BOX, refresh_s=3600)
    cache.get(sub_id)
    cache.mark_disabled(sub_id)
    endpoint = cache.get(sub_id)
    assert endpoint is not None and endpoint.status == SubscriptionStatus.DISABLED


def test_first_deliveries_read_nothing_per_message(
    db: sessionmaker[Session], statements: list[str]
) -> None:
    harness = Harness(make_settings(subscription_refresh_s=3600), MemoryTransport(), db)
    with Receiver() as receiver:
        with db() as session, session.begin():
            tenant = builders.tenant(session)
            sub, _ = builders.subscription(session, tenant.id, receiver.url)
            messages = [
                builders.delivery(session, builders.event(tenant.id), sub.id) for _ in range(20)
            ]
        statements.clear()
        with harness.running():
            for message in messages:
                harness.publish(message)
            assert receiver.wait_for(20, 10)
            wait_until(
                lambda: harness.metrics.finished.labels(result="succeeded")._value.get() == 20
            )
    assert selects_from(statements, "subscriptions") == 1
    assert selects_from(statements, "deliveries") == 0
