"""An endpoint's page shows its circuit as the dispatchers that are delivering hold it:
open on N of M since when, half-open past its open time, closed; a dead dispatcher's row
counts for nothing (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

from common.db.models import CircuitState, DispatcherRow
from common.wire import utcnow
from tests.portal.conftest import Portal

# (seconds since the dispatcher's heartbeat, its circuit: time to the probe, or None: closed)
Dispatchers = list[tuple[int, timedelta | None]]


def _circuit_line(portal: Portal, dispatchers: Dispatchers) -> str:
    tenant, _ = portal.tenant()
    sub = portal.subscribe(tenant)
    now = utcnow()
    with portal.api.sessionmaker() as session, session.begin():
        for n, (age_s, probe_in) in enumerate(dispatchers):
            seen = now - timedelta(seconds=age_s)
            session.add(DispatcherRow(id=f"host:{n}", started_at=seen, seen_at=seen))
            if probe_in is not None:
                opened = now - timedelta(minutes=5)
                session.add(CircuitState(subscription_id=sub, dispatcher_id=f"host:{n}",
                                         opened_at=opened, probe_at=now + probe_in))  # fmt: skip
    page = portal.open(tenant).get(f"/portal/endpoints/{sub}").text
    return " ".join(page.split('<dd id="circuit">')[1].split("</dd>")[0].split())


def test_without_a_delivering_dispatcher_the_circuit_is_unknown(portal: Portal) -> None:
    assert "unknown" in _circuit_line(portal, [])


def test_open_on_some_of_the_live_dispatchers_and_never_by_a_dead_one(portal: Portal) -> None:
    soon = timedelta(seconds=20)
    line = _circuit_line(portal, [(1, soon), (2, None), (600, soon)])  # the last one is dead
    assert "open</span> on 1 of 2 dispatchers since" in line and "next probe" in line


def test_past_its_open_time_a_circuit_is_half_open(portal: Portal) -> None:
    line = _circuit_line(portal, [(1, -timedelta(seconds=1))])
    assert "half-open</span> on 1 of 1 dispatcher, open since" in line


def test_with_every_circuit_closed_the_endpoint_says_so(portal: Portal) -> None:
    assert "closed</span> on all 2 dispatchers" in _circuit_line(portal, [(1, None), (2, None)])
