"""The router's subscription index as its writer threads share it (real database)."""

from __future__ import annotations

import threading
import time

from sqlalchemy.orm import Session, sessionmaker

from router.index import SubscriptionIndex
from router.loader import IndexLoader
from tests import builders

REFRESH_S = 0.05


def test_a_writer_arriving_while_another_refreshes_waits_for_the_new_index(
    sessions: sessionmaker[Session],
) -> None:
    loader = IndexLoader(sessions, REFRESH_S)
    with sessions.begin() as session:
        tenant_id = builders.tenant(session).id
    assert loader.current(force=True).match(tenant_id, "order.created") == []
    with sessions.begin() as session:
        builders.subscription(session, tenant_id, "http://127.0.0.1:1/a", event_types=["order.*"])
    time.sleep(REFRESH_S * 2)  # the index is due for a look

    # The first writer's look is held inside the refresh until the second has asked.
    inside, release = threading.Event(), threading.Event()
    refresh = loader._refresh

    def slow_refresh(now: float) -> None:
        inside.set()
        release.wait(5)
        refresh(now)

    loader._refresh = slow_refresh  # type: ignore[method-assign]
    seen: dict[str, SubscriptionIndex] = {}
    first = threading.Thread(target=lambda: seen.update(first=loader.current()))
    second = threading.Thread(target=lambda: seen.update(second=loader.current()))
    first.start()
    assert inside.wait(5)
    second.start()
    time.sleep(0.2)
    assert "second" not in seen, "the second writer went on with the index before the look"
    release.set()
    first.join(5)
    second.join(5)
    for name in ("first", "second"):
        assert len(seen[name].match(tenant_id, "order.created")) == 1, name
