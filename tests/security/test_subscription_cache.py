"""Issue 14.2: a change to a subscription takes effect within the refresh period, even while
another thread's refresh is under way.

The cache's refresh took its lock without blocking, so a delivery that came while another
thread refreshed got the cached entry as it was, up to five minutes old: a secret rotated
out could still sign, an old URL or header could still be used.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import Subscription
from common.signing import new_secret
from common.wire import utcnow
from dispatcher.subscriptions import Endpoint, SubscriptionCache
from tests import builders
from tests.builders import DEV_BOX

REFRESH_S = 0.3
REFRESHER = "refresher"


def given_subscription(sessions: sessionmaker[Session]) -> tuple[str, str]:
    with sessions() as session, session.begin():
        tenant = builders.tenant(session)
        sub, secret = builders.subscription(
            session, tenant.id, "http://a.test/h", headers={"x-token": "old"}
        )
    return sub.id, secret


def change(sessions: sessionmaker[Session], sub_id: str, **values: Any) -> None:
    with sessions() as session, session.begin():
        session.execute(
            update(Subscription)
            .where(Subscription.id == sub_id)
            .values(**values, updated_at=utcnow())
        )


def read_during_a_slow_refresh(
    sessions: sessionmaker[Session], before: Callable[[SubscriptionCache], None], sub_id: str
) -> Endpoint | None:
    """What a delivery thread gets from the cache once the refresh period has passed, while
    another thread's refresh waits on a slow database."""
    reading, answer = threading.Event(), threading.Event()

    def slow_for_the_refresher() -> Session:
        if threading.current_thread().name == REFRESHER:
            reading.set()
            answer.wait(10)
        return sessions()

    cache = SubscriptionCache(
        cast(sessionmaker[Session], slow_for_the_refresher), DEV_BOX, refresh_s=REFRESH_S
    )
    before(cache)
    time.sleep(REFRESH_S + 0.05)
    refresher = threading.Thread(target=cache.refresh_if_due, name=REFRESHER, daemon=True)
    refresher.start()
    assert reading.wait(5), "the refresh did not start"
    got: list[Endpoint | None] = []
    delivery = threading.Thread(target=lambda: got.append(cache.get(sub_id)), daemon=True)
    delivery.start()
    delivery.join(0.5)  # time for the delivery to find its entry stale, refresh running
    answer.set()
    delivery.join(5)
    refresher.join(5)
    assert not delivery.is_alive() and not refresher.is_alive()
    [endpoint] = got
    return endpoint


def test_a_rotated_out_secret_never_signs_past_the_refresh_period(
    sessions: sessionmaker[Session],
) -> None:
    sub_id, old = given_subscription(sessions)
    rotated = new_secret()

    def cached_then_rotated(cache: SubscriptionCache) -> None:
        endpoint = cache.get(sub_id)
        assert endpoint is not None and endpoint.secret == old
        change(sessions, sub_id, secret_enc=DEV_BOX.seal(rotated))

    endpoint = read_during_a_slow_refresh(sessions, cached_then_rotated, sub_id)
    assert endpoint is not None
    assert endpoint.secrets_at(utcnow()) == (rotated,), "a rotated-out secret still signs"


def test_a_changed_url_and_headers_are_used_within_the_refresh_period(
    sessions: sessionmaker[Session],
) -> None:
    sub_id, _ = given_subscription(sessions)

    def cached_then_moved(cache: SubscriptionCache) -> None:
        endpoint = cache.get(sub_id)
        assert endpoint is not None and endpoint.url == "http://a.test/h"
        change(sessions, sub_id, url="http://b.test/h", headers={"x-token": "new"})

    endpoint = read_during_a_slow_refresh(sessions, cached_then_moved, sub_id)
    assert endpoint is not None
    assert (endpoint.url, endpoint.headers) == ("http://b.test/h", {"x-token": "new"})
