"""The delivery log a page at a time: keyset pages (no OFFSET) older and newer, the filters
kept from page to page, the session's scope on every page (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from html import unescape
from typing import Any

from sqlalchemy import event, update

from common.db.models import Delivery
from common.db.statuses import DeliveryStatus
from common.wire import utcnow
from hookline.api.cursor import encode_position
from hookline.services.delivery_log import PAGE_SIZE
from tests import builders
from tests.api.support import TestClient
from tests.portal.conftest import Portal

ROW = re.compile(r'href="/portal/deliveries/(dlv_[^"]+)"')
OLDER = re.compile(r'<a class="btn" href="([^"]+)" rel="next">')
NEWER = re.compile(r'<a class="btn" href="([^"]+)" rel="prev">')


def _seed(portal: Portal, tenant: str, sub: str, count: int, **values: Any) -> list[str]:
    """`count` deliveries, one second apart, newest first in the returned order."""
    base = utcnow() - timedelta(hours=1)
    ids = []
    with portal.api.sessionmaker() as session, session.begin():
        for n in range(count):
            message = builders.delivery(session, builders.event(tenant), sub)
            session.execute(
                update(Delivery)
                .where(Delivery.id == message.delivery_id)
                .values(created_at=base + timedelta(seconds=n), **values)
            )
            ids.append(message.delivery_id)
    return ids[::-1]


def _page(browser: TestClient, url: str) -> tuple[list[str], str | None, str | None]:
    answer = browser.get(url)
    assert answer.status_code == 200, answer.text
    older, newer = OLDER.search(answer.text), NEWER.search(answer.text)
    return (
        ROW.findall(answer.text),
        unescape(older.group(1)) if older else None,
        unescape(newer.group(1)) if newer else None,
    )


@contextmanager
def _statements(portal: Portal) -> Iterator[list[tuple[str, Any]]]:
    """The statements that read `deliveries` meanwhile, with their parameters."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM deliveries" in statement:
            seen.append((statement, parameters))

    event.listen(portal.api.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(portal.api.engine, "before_cursor_execute", record)


def test_the_log_pages_older_and_back_newer_without_offset(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    sub = portal.subscribe(tenant)
    newest_first = _seed(portal, tenant, sub, 2 * PAGE_SIZE + 20)
    browser = portal.open(tenant)
    with _statements(portal) as sql:
        first, older, newer = _page(browser, "/portal/deliveries")
        assert first == newest_first[:PAGE_SIZE] and newer is None and older is not None
        second, older, newer = _page(browser, older)
        assert second == newest_first[PAGE_SIZE : 2 * PAGE_SIZE] and newer and older
        third, last, back = _page(browser, older)
        assert third == newest_first[2 * PAGE_SIZE :] and last is None and back
        assert _page(browser, back)[0] == second
        top, _, none = _page(browser, newer)
        assert top == first and none is None
    # SQLite's dialect writes `LIMIT ? OFFSET ?` with 0 for every LIMIT: no rows skipped.
    skipped = [params[-1] for statement, params in sql if "OFFSET" in statement.upper()]
    assert sql and all(offset == 0 for offset in skipped)


def test_new_deliveries_arriving_between_pages_neither_repeat_nor_vanish(
    portal: Portal,
) -> None:
    tenant, _ = portal.tenant()
    sub = portal.subscribe(tenant)
    older_ones = _seed(portal, tenant, sub, PAGE_SIZE + 5)
    browser = portal.open(tenant)
    first, older, _ = _page(browser, "/portal/deliveries")
    assert older is not None
    with portal.api.sessionmaker() as session, session.begin():  # arrives meanwhile
        builders.delivery(session, builders.event(tenant), sub)
    second, _, newer = _page(browser, older)
    assert first + second == older_ones
    assert newer is not None
    back, _, newest = _page(browser, newer)
    assert back == first and newest is not None  # and the new one above it
    top, _, _ = _page(browser, newest)
    assert top[0] not in older_ones and top[1:] == older_ones[: PAGE_SIZE - 1]


def test_the_filters_stay_on_every_page(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    sub = portal.subscribe(tenant)
    other = portal.subscribe(tenant, "http://127.0.0.1:9/other")
    dead = _seed(portal, tenant, sub, PAGE_SIZE + 3, status=DeliveryStatus.DEAD)
    _seed(portal, tenant, sub, 10)
    _seed(portal, tenant, other, 10, status=DeliveryStatus.DEAD)
    browser = portal.open(tenant)
    first, older, _ = _page(browser, f"/portal/deliveries?status=dead&endpoint={sub}")
    assert older is not None and "status=dead" in older and f"endpoint={sub}" in older
    second, last, newer = _page(browser, older)
    assert first + second == dead and last is None
    assert newer is not None and "status=dead" in newer and f"endpoint={sub}" in newer


def test_a_restricted_link_pages_through_its_endpoints_only(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    shown = portal.subscribe(tenant, "http://127.0.0.1:9/a")
    hidden = portal.subscribe(tenant, "http://127.0.0.1:9/b")
    mine = _seed(portal, tenant, shown, PAGE_SIZE + 2)
    _seed(portal, tenant, hidden, PAGE_SIZE)
    browser = portal.open(tenant, subscription_ids=[shown])
    first, older, _ = _page(browser, "/portal/deliveries")
    assert older is not None
    second, _, _ = _page(browser, older)
    assert first + second == mine
    # Naming the hidden endpoint in the address finds nothing either.
    assert _page(browser, f"/portal/deliveries?endpoint={hidden}")[0] == []


def test_a_page_position_not_made_by_the_portal_is_a_422(portal: Portal) -> None:
    tenant, _ = portal.tenant()
    browser = portal.open(tenant)
    # Positions of a row whose id holds NUL or a lone surrogate: a 500 from the driver.
    unstorable = [f"older={encode_position(utcnow(), f'dlv_{c}')}" for c in ("\x00", "\ud800")]
    for bad in ("older=nope", "newer=%25%25", "older=" + "A" * 301, *unstorable):
        answer = browser.get(f"/portal/deliveries?{bad}")
        assert answer.status_code == 422, bad
