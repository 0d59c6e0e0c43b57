"""A delivery's page shows each attempt's request headers as that attempt sent them (from
its `header_sets` row), not the subscription's headers of today; secrets masked (SQLite
and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from common.db.models import Attempt, HeaderSet, Subscription
from common.signing import new_secret
from common.wire import utcnow
from dispatcher.http import MASK, USER_AGENT, build_headers, header_shape
from tests import builders
from tests.portal.conftest import Portal


def _attempt(portal: Portal, delivery_id: str, number: int, static: dict[str, str] | None) -> int:
    """An attempt row as the settler writes it; `static=None`: nothing was sent."""
    at = utcnow().replace(microsecond=0) + timedelta(seconds=number)
    with portal.api.sessionmaker() as session, session.begin():
        header_set = None
        if static is not None:
            shape = header_shape(build_headers(static, "x", 0, b"{}", [new_secret()]))
            row = HeaderSet(digest=shape.digest, headers=[list(h) for h in shape.headers])
            session.add(row)
            session.flush()
            header_set = row.id
        attempt = Attempt(
            delivery_id=delivery_id, attempt=number, outcome="retry", status_code=503,
            duration_s=0.1, created_at=at, header_set_id=header_set,
        )  # fmt: skip
        session.add(attempt)
        session.flush()
        return int(at.timestamp())


def test_each_attempt_shows_the_headers_it_was_sent_with(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    sub = portal.subscribe(tenant)
    with portal.api.sessionmaker() as session, session.begin():
        message = builders.delivery(session, builders.event(tenant), sub)
    stamp = _attempt(portal, message.delivery_id, 1, {"X-Api-Key": "key-of-then"})
    _attempt(portal, message.delivery_id, 2, None)
    with portal.api.sessionmaker() as session, session.begin():  # the headers of today
        session.execute(
            update(Subscription).where(Subscription.id == sub).values(headers={"X-Today": "t"})
        )
    browser = portal.open(tenant)
    page = browser.get(f"/portal/deliveries/{message.delivery_id}").text
    first, second = page.split('<li class="attempt">')[1:3]
    for name, value in (
        ("X-Api-Key", MASK),
        ("webhook-id", message.event_id),
        ("webhook-timestamp", str(stamp)),
        ("webhook-signature", f"v1,{MASK}"),
        ("content-type", "application/json"),
        ("user-agent", USER_AGENT),
    ):
        assert f'<th scope="row" class="mono">{name}</th><td class="mono">{value}</td>' in first
    assert "key-of-then" not in page and "X-Today" not in page
    assert "No request headers recorded" in second and "webhook-id" not in second
