"""A delivery's page shows each attempt's request headers as that attempt sent them (from
its `header_sets` row), not the subscription's headers of today; secrets masked (SQLite
and PostgreSQL)."""

from __future__ import annotations

import re

from sqlalchemy import update

from common.db.models import Subscription
from common.wire import webhook_id_for
from dispatcher.http import MASK, USER_AGENT
from tests import builders
from tests.portal.conftest import Portal


def _attempt(portal: Portal, delivery_id: str, number: int, static: dict[str, str] | None) -> int:
    """An attempt row as the settler writes it; `static=None`: nothing was sent."""
    with portal.api.sessionmaker() as session, session.begin():
        made = builders.attempt(
            session, delivery_id, number, static=static or {}, sent=static is not None
        )
        return int(made.created_at.timestamp())


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
    facts, first, second = page.split('<li class="attempt">')[:3]
    sent_id = webhook_id_for(message.tenant, message.event_id)
    # The page says which webhook-id to look for at the receiver, before any attempt.
    assert f'<dt>Webhook id</dt><dd class="mono">{sent_id}</dd>' in facts
    for name, value in (
        ("X-Api-Key", MASK),
        ("webhook-id", sent_id),
        ("webhook-timestamp", str(stamp)),
        ("webhook-signature", f"v1,{MASK}"),
        ("content-type", "application/json"),
        ("user-agent", USER_AGENT),
    ):
        assert f'<th scope="row" class="mono">{name}</th><td class="mono">{value}</td>' in first
    assert "key-of-then" not in page and "X-Today" not in page
    assert "No request headers recorded" in second and "webhook-id" not in second


def test_the_operators_views_show_the_same_headers_as_the_portal(portal: Portal) -> None:
    """`GET /v1/deliveries/{id}` and `GET /v1/dead-letters/{id}` list each attempt's
    headers exactly as the portal's page does (one function behind all three)."""
    tenant, auth = portal.tenant()
    sub = portal.subscribe(tenant)
    with portal.api.sessionmaker() as session, session.begin():
        message = builders.delivery(session, builders.event(tenant), sub)
    _attempt(portal, message.delivery_id, 1, {"X-Api-Key": "key-of-then", "X-Other": "o"})
    _attempt(portal, message.delivery_id, 2, None)
    _attempt(portal, message.delivery_id, 3, {})
    page = portal.open(tenant).get(f"/portal/deliveries/{message.delivery_id}").text
    in_portal = [
        re.findall(r'<th scope="row" class="mono">([^<]*)</th><td class="mono">([^<]*)</td>', li)
        for li in page.split('<li class="attempt">')[1:]
    ]

    for path in ("deliveries", "dead-letters"):
        response = portal.api.client.get(f"/v1/{path}/{message.delivery_id}", headers=auth)
        assert response.status_code == 200, response.text
        in_api = [
            [(h["name"], h["value"]) for h in a["request_headers"] or []]
            for a in response.json()["attempts"]
        ]
        assert in_api == in_portal, path
    assert [len(headers) for headers in in_portal] == [7, 0, 5]
    assert in_portal[0][:2] == [("X-Api-Key", MASK), ("X-Other", MASK)]
