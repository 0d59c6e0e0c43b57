"""Two requests for a tenant's last subscription place cannot both take it (PostgreSQL).

`subscriptions.subscribe` counts the tenant's subscriptions under a lock on its row. Here
another transaction holds that lock and adds the last subscription the cap allows: the
request must wait for it (not count without it) and then be refused.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import Subscription, Tenant
from common.db.session import make_engine, make_sessionmaker
from common.secretbox import DEV_SECRET_KEY, SecretBox
from common.settings import Settings
from common.ssrf import system_resolver
from hookline.api.subscription_schemas import SubscriptionCreate
from hookline.services import subscriptions
from hookline.services.audit import ADMIN, Actor
from hookline.services.errors import AtLimit
from tests import builders
from tests.security.postgres import database_url  # noqa: F401  (PostgreSQL, not SQLite)

pytestmark = [pytest.mark.postgres]


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:  # noqa: F811
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def test_the_last_place_is_taken_once_under_the_tenants_row_lock(
    sessions: sessionmaker[Session],
) -> None:
    settings = Settings(tenant_max_subscriptions=2, allow_private_targets=True)
    outbound = subscriptions.Outbound(settings, system_resolver, SecretBox(DEV_SECRET_KEY))
    with sessions.begin() as session:
        tenant_id = builders.tenant(session).id
        builders.subscription(session, tenant_id, "http://127.0.0.1:9/first")
    body = SubscriptionCreate(url="http://127.0.0.1:9/late", event_types=["order.paid"])
    outcome: list[BaseException | str] = []

    def late() -> None:
        try:
            row, _, _ = subscriptions.subscribe(
                sessions, tenant_id, body, actor=Actor(ADMIN), verified=True, outbound=outbound
            )
            outcome.append(row.id)
        except BaseException as exc:
            outcome.append(exc)

    with sessions.begin() as holder:
        holder.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
        builders.subscription(holder, tenant_id, "http://127.0.0.1:9/second")
        thread = threading.Thread(target=late, daemon=True)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive(), f"counted without waiting for the lock: {outcome}"
    thread.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], AtLimit), outcome
    with sessions() as session:
        urls = session.scalars(select(Subscription.url)).all()
    assert sorted(urls) == ["http://127.0.0.1:9/first", "http://127.0.0.1:9/second"]
