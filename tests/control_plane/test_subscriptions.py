"""`hookline.services.subscriptions` where no route test reaches: a subscribe that loses
the insert to a concurrent identical one (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import AuditEntry, Subscription
from common.settings import Settings
from common.ssrf import system_resolver
from hookline.api.subscription_schemas import SubscriptionCreate
from hookline.services import subscriptions
from hookline.services.audit import ADMIN, Actor
from hookline.services.subscriptions import Outbound
from tests import builders


def test_a_subscribe_that_loses_the_insert_race_answers_with_the_winner_and_no_secret(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    with sessions() as session, session.begin():
        tenant_id = builders.tenant(session).id
    settings = Settings(allow_private_targets=True, allow_http=True)
    outbound = Outbound(settings, system_resolver, builders.DEV_BOX)
    body = SubscriptionCreate(url="http://127.0.0.1:9/hook", event_types=["order.created"])
    actor = Actor(ADMIN)
    won, secret, _ = subscriptions.subscribe(
        sessions, tenant_id, body, actor=actor, verified=True, outbound=outbound
    )
    # The loser looked before the winner committed: its own look finds nothing.
    find = subscriptions._find
    looks: list[str] = []

    def too_early(session: Session, tenant: str, key: str) -> Subscription | None:
        looks.append(key)
        return None if len(looks) == 1 else find(session, tenant, key)

    monkeypatch.setattr(subscriptions, "_find", too_early)

    lost, no_secret, _ = subscriptions.subscribe(
        sessions, tenant_id, body, actor=actor, verified=True, outbound=outbound
    )

    assert secret is not None and no_secret is None
    assert lost.id == won.id and len(looks) == 2
    with sessions() as session:
        rows = session.scalar(select(func.count()).select_from(Subscription))
        created = session.scalar(
            select(func.count()).where(AuditEntry.action == "subscription.created")
        )
    assert (rows, created) == (1, 1)
