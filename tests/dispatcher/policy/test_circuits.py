"""The breaker's transitions and their record in the database: open, re-open and close are
told; the writer puts them in `circuit_states` with the dispatcher's heartbeat, off the
sending threads, and takes them out when the dispatcher stops. On SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from common.db.models import CircuitState, DispatcherRow
from common.db.session import make_engine, make_sessionmaker
from common.wire import utcnow
from dispatcher.policy.admission import Breaker, CircuitLog, CircuitWriter, Transition
from dispatcher.policy.admission.circuits import FORGET_AFTER_S
from hookline.services import circuits
from tests.dispatcher.policy.test_admission import Clock


@pytest.fixture
def db(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def test_the_breaker_tells_opening_reopening_and_closing_but_not_each_failure() -> None:
    clock = Clock()
    told: list[Transition] = []
    breaker = Breaker(threshold=2, open_s=10.0, on_transition=told.append, clock=clock)
    breaker.record("e", False)
    assert told == []  # one failure: still closed
    breaker.record("e", False)
    assert told == [Transition("e", True, 0.0, 10.0)]
    clock.now += 10.0
    assert breaker.admit("e") is None  # half-open: the probe, which is no transition
    clock.now += 2.0
    breaker.record("e", False)  # the probe failed: open again, still open since the first
    assert told[-1] == Transition("e", True, 12.0, 10.0)
    breaker.record("e", True)
    assert told[-1] == Transition("e", False)
    breaker.record("e", True)  # already closed: nothing to tell
    assert len(told) == 3
    breaker.record("other", False)
    assert breaker.open_circuits() == []


def test_the_breakers_open_circuits_are_its_whole_state() -> None:
    clock = Clock()
    breaker = Breaker(threshold=1, open_s=10.0, clock=clock)
    breaker.record("a", False)
    clock.now += 4.0
    breaker.record("b", False)
    assert sorted(breaker.open_circuits(), key=lambda t: t.key) == [
        Transition("a", True, 4.0, 6.0),
        Transition("b", True, 0.0, 10.0),
    ]


def _rows(db: sessionmaker[Session]) -> list[tuple[str, str]]:
    with db() as session:
        query = select(CircuitState.subscription_id, CircuitState.dispatcher_id)
        return sorted(session.execute(query).tuples().all())


def test_transitions_reach_the_table_and_the_portal_reads_them(
    db: sessionmaker[Session],
) -> None:
    log = CircuitLog()
    breaker = Breaker(threshold=1, open_s=30.0, on_transition=log.note)
    writer = CircuitWriter(log, breaker, db)
    writer.tick()  # the heartbeat and a first (empty) sync
    with db() as session:
        assert circuits.circuit(session, "sub_a").state == "closed"
    breaker.record("sub_a", False)
    assert _rows(db) == [], "written by the writer's thread, not by the one that failed"
    writer.tick()
    assert _rows(db) == [("sub_a", log.dispatcher_id)]
    with db() as session:
        seen = circuits.circuit(session, "sub_a")
    assert (seen.state, seen.open_on, seen.dispatchers) == ("open", 1, 1)
    assert seen.since is not None and seen.probe_at is not None
    assert timedelta(seconds=29) < seen.probe_at - seen.since <= timedelta(seconds=30)
    with db() as session:  # past the open time: half-open, the next delivery probes
        later = circuits.circuit(session, "sub_a", now=utcnow() + timedelta(seconds=31))
    assert (later.state, later.open_on, later.half_open_on) == ("half-open", 0, 1)
    breaker.record("sub_a", True)
    writer.tick()
    assert _rows(db) == []
    writer.forget()
    with db() as session:
        assert session.scalars(select(DispatcherRow)).all() == []


def test_a_restarted_writer_puts_the_breakers_whole_state(db: sessionmaker[Session]) -> None:
    log = CircuitLog()
    breaker = Breaker(threshold=1, open_s=30.0, on_transition=log.note)
    breaker.record("sub_a", False)
    breaker.record("sub_b", False)
    first = CircuitWriter(log, breaker, db)
    first.tick()
    first.forget()  # the connection session ended: nothing of it is left
    assert _rows(db) == []
    CircuitWriter(log, breaker, db).tick()  # the next session, with nothing newly noted
    assert [sub for sub, _ in _rows(db)] == ["sub_a", "sub_b"]


def test_a_dead_dispatcher_never_keeps_an_endpoint_open(db: sessionmaker[Session]) -> None:
    dead_log, live_log = CircuitLog(), CircuitLog()
    dead = Breaker(threshold=1, open_s=300.0, on_transition=dead_log.note)
    live = Breaker(threshold=1, open_s=300.0, on_transition=live_log.note)
    dead.record("sub_a", False)
    CircuitWriter(dead_log, dead, db).tick()  # then the process is killed: no forget
    live_writer = CircuitWriter(live_log, live, db, heartbeat_s=0.0)  # beats every tick
    live_writer.tick()
    with db() as session:
        assert circuits.circuit(session, "sub_a").open_on == 1
        session.execute(  # the dead one's heartbeat ages past DISPATCHER_LIVE_S
            update(DispatcherRow)
            .where(DispatcherRow.id == dead_log.dispatcher_id)
            .values(seen_at=utcnow() - timedelta(minutes=2))
        )
        session.commit()
        seen = circuits.circuit(session, "sub_a")
    assert (seen.state, seen.open_on, seen.dispatchers) == ("closed", 0, 1)
    with db() as session:  # an hour on, the next live heartbeat removes its rows
        session.execute(
            update(DispatcherRow)
            .where(DispatcherRow.id == dead_log.dispatcher_id)
            .values(seen_at=utcnow() - timedelta(seconds=FORGET_AFTER_S + 1))
        )
        session.commit()
    live_writer.tick()
    assert _rows(db) == []
    with db() as session:
        assert session.scalars(select(DispatcherRow.id)).all() == [live_log.dispatcher_id]


def test_without_a_database_a_transition_waits_in_memory_and_is_written_later(
    database_url: str,
) -> None:
    engine, away = make_engine(database_url), make_engine("sqlite:////nonexistent/dir/x.db")
    db = make_sessionmaker(engine)
    log = CircuitLog()
    breaker = Breaker(threshold=1, open_s=30.0, on_transition=log.note)
    writer = CircuitWriter(log, breaker, db)
    writer.tick()
    db.configure(bind=away)  # the database goes away
    breaker.record("sub_a", False)  # told all the same: only noted
    writer.tick()  # cannot write: keeps the change
    db.configure(bind=engine)
    writer.tick()
    assert [sub for sub, _ in _rows(db)] == ["sub_a"]
    writer.forget()
    engine.dispose()
